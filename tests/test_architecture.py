"""The shape of the package (docs/architecture.md): no import cycle, an ``__init__`` that only
re-exports, and an index type that needs nothing but its own module and one registry entry."""

from __future__ import annotations

import ast
import pickle
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import pqkit
from pqkit.indexes import registry

PACKAGE = Path(pqkit.__file__).parent


def _modules() -> dict:
    """Dotted name -> (path, is_package) of every module of the pqkit package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("pqkit",) + path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict:
    """module -> modules of pqkit it imports, anywhere in its code (function-level imports count:
    they are dependencies too), a submodule import counting as an import of its packages."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{target}.{alias.name}" for alias in node.names]
                targets = [t if t in modules else target for t in targets]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    # a module's own packages are imported before it: not a dependency of it
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        graph[name].add(prefix)
    return graph


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["pqkit.io"] >= {"pqkit.indexes.registry"}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pqkit_init_only_reexports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        allowed = isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # docstring
        allowed |= isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]
        assert allowed, f"pqkit/__init__.py line {node.lineno} is more than a re-export"
    assert sorted(pqkit.__all__) == sorted(set(pqkit.__all__))
    for name in pqkit.__all__:
        assert hasattr(pqkit, name), name


def test_no_index_module_imports_the_readers_of_the_registry():
    """io, factory, interop and tune read the registry; the index modules never import them
    (except io, for save and pickle), so a new index type needs no change there."""
    graph = import_graph()
    readers = {"pqkit.factory", "pqkit.interop", "pqkit.tune"}
    for name, targets in graph.items():
        if name.startswith("pqkit.indexes."):
            assert not targets & readers, (name, targets & readers)


def test_every_registry_entry_names_its_class():
    for name, cls in registry.index_classes().items():
        assert cls.__name__ == name and issubclass(cls, pqkit.Index)
        assert getattr(pqkit, name) is cls


TOY_MODULE = textwrap.dedent('''
    """A toy index type (test only): exact search that stores vectors negated."""
    import numpy as np

    from pqkit.indexes._state import _N, _check_arrays, _check_params
    from pqkit.indexes.flat import IndexFlat


    class IndexToy(IndexFlat):
        _factory_pattern = r"Toy"
        _factory_grammar = '"Toy"'

        def _add(self, x, ids):
            super()._add(-x, ids)

        def _search(self, x, k, params):
            return super()._search(-x, k, params)

        def _reconstruct(self, ids):
            return -super()._reconstruct(ids)

        @classmethod
        def _from_factory(cls, d, match, metric, n_threads, backend, inner=None):
            return cls(d, metric, n_threads=n_threads, backend=backend)

        @classmethod
        def _from_state(cls, params, arrays):
            _check_params(params, ("d", "metric"))
            index = cls(params["d"], params["metric"])
            _check_arrays(arrays, {"vectors": (np.float32, (_N, index.d), True),
                                   "ids": (np.int64, (_N,), True)})
            index._store.append(arrays["vectors"], arrays["ids"])
            return index
''')


def test_a_new_index_type_needs_only_its_module_and_one_registry_entry(monkeypatch, tmp_path):
    """The claim of docs/architecture.md, exercised: a type defined in a module of its own and
    added to registry.ENTRIES is saved, loaded, pickled, built by index_factory and sized by
    estimate_memory, with no other change."""
    module = types.ModuleType("pqkit_toy_index")
    exec(compile(TOY_MODULE, "pqkit_toy_index.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "pqkit_toy_index", module)
    monkeypatch.setattr(registry, "ENTRIES", registry.ENTRIES + (("IndexToy", "pqkit_toy_index"),))
    monkeypatch.setattr(registry, "NAMES", registry.NAMES + ("IndexToy",))
    monkeypatch.setitem(registry._MODULES, "IndexToy", "pqkit_toy_index")

    index = pqkit.index_factory(8, "Toy")
    assert type(index).__name__ == "IndexToy"
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    index.add(x)
    D, I = index.search(x[:5], 3)
    assert I[:, 0].tolist() == [0, 1, 2, 3, 4]
    index.save(tmp_path / "toy.pqkit")
    loaded = pqkit.load(tmp_path / "toy.pqkit")
    assert type(loaded).__name__ == "IndexToy"
    np.testing.assert_array_equal(loaded.search(x[:5], 3)[1], I)
    np.testing.assert_array_equal(loaded.reconstruct(7), x[7])
    assert type(pickle.loads(pickle.dumps(index))).__name__ == "IndexToy"
    assert pqkit.estimate_memory("Toy", 100, 8) == 100 * 4 * 8  # an IndexFlat: ids implicit
    refined = pqkit.index_factory(8, "Toy,RFlat")
    assert type(refined.base_index).__name__ == "IndexToy"
    with pytest.raises(ValueError, match='"Toy"'):  # the grammar in messages lists it too
        pqkit.index_factory(8, "Toy2")
