"""Every engine satisfies pqkit.engine.protocol, and the Python layer calls nothing outside it.

The Numba and torch engines' calls are compared with the protocol by ``inspect.signature``; the compiled
core's functions carry no inspectable signature, so their parameter names and defaults are read
from the first line of the pybind11 docstring, ``name(arg: type, ...) -> result``.
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import numpy as np
import pytest

import pqkit
from tests.test_core_stub import _split_top_level  # one splitter of pybind signatures
from pqkit import engine
from pqkit.engine import protocol
from tests.conftest import skip_or_fail

PACKAGE = Path(pqkit.__file__).resolve().parent
CLASSES = {"PQCodebooks": protocol.PQCodebooks, "CoarseQuantizer": protocol.CoarseQuantizer,
           "InvertedLists": protocol.InvertedLists, "IDSelector": protocol.IDSelector}
NO_DEFAULT = "<no default>"


def _declared(cls) -> dict:
    """The calls and properties a protocol class declares, by name (not typing's own members)."""
    return {name: value for name, value in vars(cls).items()
            if not (name.startswith("__") and name.endswith("__"))
            and isinstance(value, (property, type(lambda: None)))}


def _methods(cls) -> list:
    return sorted(name for name, value in _declared(cls).items() if not isinstance(value, property))


def _properties(cls) -> list:
    return sorted(name for name, value in _declared(cls).items() if isinstance(value, property))


ENGINE_CALLS = _methods(protocol.Engine)
OPTIONAL_CALLS = _methods(protocol.OptionalCalls)
RESIDENT_CALLS = _methods(protocol.ResidentCalls)
CLASS_METHODS = [(cls, name) for cls in CLASSES for name in _methods(CLASSES[cls])]


def _protocol_params(func) -> list:
    """[(name, default)] of a protocol method, without ``self``; defaults as Python values."""
    params = list(inspect.signature(func).parameters.values())
    assert params and params[0].name == "self", func
    return [(p.name, NO_DEFAULT if p.default is p.empty else p.default) for p in params[1:]]


def _pybind_params(obj, name: str) -> list:
    """[(name, default text)] from a pybind11 docstring's first line, without ``self``."""
    first = (obj.__doc__ or "").lstrip().split("\n", 1)[0]
    match = re.fullmatch(rf"{re.escape(name)}\((.*)\) -> .+", first)
    assert match, f"{name}: no pybind11 signature line in its docstring: {first!r}"
    out = []
    for arg in _split_top_level(match.group(1)):
        arg_name, _, rest = arg.partition(":")
        default = rest.split(" = ", 1)[1].strip() if " = " in rest else NO_DEFAULT
        out.append((arg_name.strip(), default))
    return [p for p in out if p[0] != "self"]


def _as_pybind_text(params: list) -> list:
    """Protocol defaults as pybind11 prints them (``inf``, ``None``, ``False``)."""
    return [(name, d if d == NO_DEFAULT else repr(d)) for name, d in params]


@pytest.fixture(scope="module")
def numba_engine():
    if "numba" not in engine.available_backends():
        skip_or_fail("the numba extra is not installed: pip install 'pqkit[numba]'")
    return engine.core("numba")


@pytest.fixture(scope="module")
def torch_engine():
    if "torch" not in engine.available_backends():
        skip_or_fail("the gpu extra is not installed: pip install 'pqkit[gpu]'")
    return engine.core("torch", "cpu")


@pytest.fixture(scope="module")
def cpp_engine():
    if "cpp" not in engine.available_backends():
        skip_or_fail("the compiled core is not built for this platform")
    return engine.core("cpp")


# ------------------------------------------------------------------------------- the protocol
def test_protocol_members_are_collected_and_documented():
    """The lists the other tests run over hold the protocol's members; each has a docstring and
    annotations that resolve."""
    assert len(ENGINE_CALLS) >= 24, ENGINE_CALLS
    assert {"flat_search", "ivfpq_search", "pq_encode", "all_finite", "simd_level",
            "PQCodebooks", "CoarseQuantizer", "InvertedLists"} <= set(ENGINE_CALLS)
    assert {"_set_min_split_bytes", "greedy_kcenter", "micro_memory_read",
            "micro_scan"} <= set(OPTIONAL_CALLS)
    assert not set(ENGINE_CALLS) & set(OPTIONAL_CALLS)
    assert RESIDENT_CALLS == ["resident"] and not set(RESIDENT_CALLS) & set(ENGINE_CALLS)
    assert {"add", "export", "list_codes", "list_ids", "list_sizes", "locate",
            "memory_usage_bytes", "remove_ids", "reset", "set_bias"} <= set(
                _methods(protocol.InvertedLists))
    for cls in (protocol.Engine, protocol.OptionalCalls, protocol.ResidentCalls,
                *CLASSES.values()):
        for name, member in _declared(cls).items():
            doc = (member.fget if isinstance(member, property) else member).__doc__
            assert doc and doc.strip(), f"{cls.__name__}.{name} has no docstring"
            typing.get_type_hints(member.fget if isinstance(member, property) else member)


# ------------------------------------------------------------------------------- Python engines
def test_numba_engine_exports_exactly_the_protocol(numba_engine):
    assert sorted(numba_engine.__all__) == ENGINE_CALLS
    assert isinstance(numba_engine, protocol.Engine)
    assert not isinstance(numba_engine, protocol.OptionalCalls)
    assert not isinstance(numba_engine, protocol.ResidentCalls)


def test_torch_engine_exports_exactly_the_protocol(torch_engine):
    """The torch engine has the Engine calls and the resident call, nothing optional."""
    assert sorted(torch_engine.__all__) == sorted(ENGINE_CALLS + RESIDENT_CALLS)
    assert isinstance(torch_engine, protocol.Engine)
    assert isinstance(torch_engine, protocol.ResidentCalls)
    assert not isinstance(torch_engine, protocol.OptionalCalls)


PYTHON_ENGINE_CALLS = ([("numba", name) for name in ENGINE_CALLS]
                       + [("torch", name) for name in ENGINE_CALLS + RESIDENT_CALLS])


@pytest.mark.parametrize("backend, name", PYTHON_ENGINE_CALLS)
def test_python_engine_call_matches_the_protocol(request, backend, name):
    core = request.getfixturevalue(f"{backend}_engine")
    call = getattr(core, name, None)
    assert call is not None, f"the {backend} engine has no {name}"
    params = list(inspect.signature(call).parameters.values())
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params), (name, params)
    got = [(p.name, NO_DEFAULT if p.default is p.empty else p.default) for p in params]
    declared = getattr(protocol.ResidentCalls if name in RESIDENT_CALLS else protocol.Engine,
                       name)
    assert got == _protocol_params(declared)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("cls, name", CLASS_METHODS)
def test_python_engine_method_matches_the_protocol(request, backend, cls, name):
    core = request.getfixturevalue(f"{backend}_engine")
    method = getattr(getattr(core, cls), name, None)
    assert callable(method), f"the {backend} engine's {cls} has no method {name}"
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    got = [(p.name, NO_DEFAULT if p.default is p.empty else p.default) for p in params]
    assert got == _protocol_params(getattr(CLASSES[cls], name))


# ------------------------------------------------------------------------------- compiled core
def test_compiled_engine_declares_every_binding(cpp_engine):
    """Every name the compiled module binds is an Engine call or an optional one (a new binding
    needs its protocol entry), and every protocol call is there."""
    bound = {name for name in dir(cpp_engine)
             if not (name.startswith("__") and name.endswith("__"))}
    assert bound == set(ENGINE_CALLS) | set(OPTIONAL_CALLS)
    assert isinstance(cpp_engine, protocol.Engine)
    assert isinstance(cpp_engine, protocol.OptionalCalls)


@pytest.mark.parametrize("name", ENGINE_CALLS + OPTIONAL_CALLS)
def test_compiled_call_matches_the_protocol(cpp_engine, name):
    call = getattr(cpp_engine, name, None)
    assert call is not None, f"the compiled engine has no {name}"
    declared = getattr(protocol.Engine if name in ENGINE_CALLS else protocol.OptionalCalls, name)
    if isinstance(call, type):  # a class: its constructor
        got = _pybind_params(call.__init__, "__init__")
    else:
        got = _pybind_params(call, name)
    assert got == _as_pybind_text(_protocol_params(declared))


@pytest.mark.parametrize("cls, name", CLASS_METHODS)
def test_compiled_method_matches_the_protocol(cpp_engine, cls, name):
    method = getattr(getattr(cpp_engine, cls), name, None)
    assert callable(method), f"the compiled engine's {cls} has no method {name}"
    assert _pybind_params(method, name) == _as_pybind_text(
        _protocol_params(getattr(CLASSES[cls], name)))


# ------------------------------------------------------------------------------- both: objects
EXPECTED_PROPERTIES = {
    "PQCodebooks": {"d": 8, "M": 2, "nbits": 4, "code_size": 1},
    "CoarseQuantizer": {"nlist": 3, "d": 8},
    "InvertedLists": {"nlist": 2, "code_size": 8, "ntotal": 0, "with_bias": True, "read_only": False},
    "IDSelector": {"n_sets": 2, "exclude": True},
}


def _objects(core) -> dict:
    return {
        "PQCodebooks": core.PQCodebooks(np.zeros((2, 16, 4), dtype=np.float32), 4),
        "CoarseQuantizer": core.CoarseQuantizer(np.zeros((3, 8), dtype=np.float32), "l2"),
        "InvertedLists": core.InvertedLists(2, 8, "blocked", True),
        "IDSelector": core.IDSelector(None, 0, np.array([3, 1, 5], dtype=np.int64),
                                      np.array([0, 1, 3], dtype=np.int64), True),
    }


@pytest.mark.parametrize("backend", ["numba", "cpp", "torch"])
def test_engine_objects_have_the_protocol_properties(request, backend):
    core = request.getfixturevalue(f"{backend}_engine")
    for cls, obj in _objects(core).items():
        assert isinstance(obj, CLASSES[cls]), (backend, cls)
        assert sorted(EXPECTED_PROPERTIES[cls]) == _properties(CLASSES[cls])
        for name, expected in EXPECTED_PROPERTIES[cls].items():
            value = getattr(obj, name)
            declared = typing.get_type_hints(_declared(CLASSES[cls])[name].fget)["return"]
            assert type(value) is declared, (backend, cls, name, type(value), declared)
            assert value == expected, (backend, cls, name, value)


# ------------------------------------------------------------------------------- the Python layer
FACTORIES = {"core", "_load"}  # engine.core(name) and engine._load(name) return an engine module


def _is_engine(node, engine_names: set) -> bool:
    """Whether an expression evaluates to an engine module."""
    if isinstance(node, ast.Attribute) and node.attr == "_engine":  # the indexes' property
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in FACTORIES
    return isinstance(node, ast.Name) and node.id in engine_names


def engine_uses(sources: dict) -> tuple:
    """Engine calls and engine-object members used by modules (``{label: source}``).

    Calls: ``x._engine.NAME``, ``engine.core(...).NAME``, ``engine._load(...).NAME``, and through
    a name bound to one of these (``core = engine._load("cpp")``: ``core.NAME``, ``hasattr(core,
    "NAME")``). Members: ``holder.NAME`` where the holder was made by an engine constructor,
    ``lists = self._engine.InvertedLists(...)`` (a name, within its module) or
    ``self._invlists = self._engine.InvertedLists(...)`` (an attribute, across the modules: the
    index mixins use what the index classes build).

    Returns
    -------
    calls : dict of label -> set of str
    members : dict of label -> set of (class name, member name)
    """
    trees = {label: ast.parse(source) for label, source in sources.items()}
    calls = {label: set() for label in trees}
    made_names = {label: {} for label in trees}  # module -> {variable: engine class}
    made_attributes = {}  # attribute name -> engine class
    for label, tree in trees.items():
        scopes = [tree] + [n for n in ast.walk(tree)
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope in scopes:
            engine_names = {t.id for n in ast.walk(scope) if isinstance(n, ast.Assign)
                            and _is_engine(n.value, set()) for t in n.targets
                            if isinstance(t, ast.Name)}
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute) and _is_engine(node.value, engine_names):
                    calls[label].add(node.attr)
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2
                      and _is_engine(node.args[0], engine_names)
                      and isinstance(node.args[1], ast.Constant)):
                    calls[label].add(node.args[1].value)
                elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                      and isinstance(node.value.func, ast.Attribute)
                      and node.value.func.attr in CLASSES
                      and _is_engine(node.value.func.value, engine_names)):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            made_names[label][target.id] = node.value.func.attr
                        elif isinstance(target, ast.Attribute):
                            made_attributes[target.attr] = node.value.func.attr
    members = {label: set() for label in trees}
    for label, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            holder = node.value
            if isinstance(holder, ast.Name) and holder.id in made_names[label]:
                members[label].add((made_names[label][holder.id], node.attr))
            elif isinstance(holder, ast.Attribute) and holder.attr in made_attributes:
                members[label].add((made_attributes[holder.attr], node.attr))
    return calls, members


def _python_layer() -> list:
    files = [p for p in sorted(PACKAGE.rglob("*.py"))
             if (PACKAGE / "engine") not in p.parents]
    assert len(files) > 20, files
    return files


def test_the_scan_finds_calls_outside_the_protocol():
    """The scanner itself: every pattern is seen, unknown names among them."""
    calls, members = engine_uses({
        "index": "from pqkit import engine\n"
                 "class Index:\n"
                 "    def search(self, x):\n"
                 "        self._invlists = self._engine.InvertedLists(1, 8, 'rows')\n"
                 "        lists = self._engine.InvertedLists(1, 8, 'rows')\n"
                 "        lists.add(a, b, c)\n"
                 "        return self._engine.flat_search_fast(x)\n"
                 "def f(x):\n"
                 "    engine.core('cpp').kmeans(x)\n"
                 "    core = engine._load('cpp')\n"
                 "    if hasattr(core, 'greedy_kcenter'):\n"
                 "        return core.coreset(x)\n",
        "mixin": "class Mixin:\n"
                 "    def f(self, lists):\n"
                 "        self._invlists.compact()\n"
                 "        lists.append(1)\n",
    })
    assert calls == {"index": {"InvertedLists", "flat_search_fast", "kmeans", "greedy_kcenter",
                               "coreset"}, "mixin": set()}
    assert members == {"index": {("InvertedLists", "add")},
                       "mixin": {("InvertedLists", "compact")}}
    allowed = set(ENGINE_CALLS) | set(OPTIONAL_CALLS)
    assert calls["index"] - allowed == {"flat_search_fast", "coreset"}


def test_python_layer_calls_only_the_protocol():
    allowed = set(ENGINE_CALLS) | set(OPTIONAL_CALLS) | set(RESIDENT_CALLS)
    sources = {str(p.relative_to(PACKAGE.parent)): p.read_text(encoding="utf-8")
               for p in _python_layer()}
    calls, members = engine_uses(sources)
    outside = [f"{label}: {name}" for label in sorted(calls)
               for name in sorted(calls[label] - allowed)]
    bad_members = [f"{label}: {cls}.{name}" for label in sorted(members)
                   for cls, name in sorted(members[label]) if name not in _declared(CLASSES[cls])]
    assert not outside, "engine calls missing from pqkit/engine/protocol.py:\n" + "\n".join(outside)
    assert not bad_members, ("engine object members missing from pqkit/engine/protocol.py:\n"
                             + "\n".join(bad_members))
    # The scan sees the Python layer's engine use (a scan that finds nothing would pass above).
    all_calls = set().union(*calls.values())
    assert {"flat_search", "rerank", "rerank_pq", "sqnorms", "coarse_assign", "kmeans",
            "pq_train", "pq_encode", "pq_decode", "pq_search", "ivfflat_search", "ivfpq_search",
            "ivfpq_code_bias", "all_finite", "greedy_kcenter", "resident", "InvertedLists",
            "CoarseQuantizer", "PQCodebooks"} <= all_calls
    used_members = {name for found in members.values() for cls, name in found}
    assert {"add", "export", "locate", "remove_ids", "reset", "ntotal"} <= used_members
