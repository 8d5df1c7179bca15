"""The stub src/pqkit/engine/_core.pyi describes the compiled module exactly.

Every name of ``pqkit.engine._core`` (functions, classes, their methods and properties) is in
the stub and every name of the stub is in the module; each callable's parameter names, in
order, and which of them have defaults equal those of the signature pybind11 writes as the
first line of its ``__doc__`` (``name(arg: type, arg: type = default) -> ret``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

STUB = Path(__file__).resolve().parent.parent / "src" / "pqkit" / "engine" / "_core.pyi"


@pytest.fixture(scope="module")
def core():
    try:
        return importlib.import_module("pqkit.engine._core")
    except ImportError as exc:
        skip_or_fail(f"the compiled core is not built: {exc}")


@pytest.fixture(scope="module")
def stub():
    """(functions, classes) of the stub: name -> FunctionDef, name -> {member: FunctionDef}."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))
    functions, classes = {}, {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
    return functions, classes


def _split_top_level(text: str) -> list[str]:
    """Split at the commas that are not inside brackets or parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return [p.strip() for p in parts]


def pybind_params(obj, name: str) -> list[tuple[str, bool]]:
    """(parameter name, has a default) from pybind11's signature line, ``self`` dropped."""
    first = (obj.__doc__ or "").splitlines()[0] if obj.__doc__ else ""
    assert first.startswith(f"{name}(") and ") -> " in first, f"{name}: no pybind11 signature in {first!r}"
    inner = first[len(name) + 1:first.rindex(") -> ")]
    params = []
    for part in _split_top_level(inner):
        params.append((part.split(":", 1)[0].strip(), " = " in part))
    return [p for p in params if p[0] != "self"]


def stub_params(node: ast.FunctionDef) -> list[tuple[str, bool]]:
    args = node.args.posonlyargs + node.args.args
    n_plain = len(args) - len(node.args.defaults)
    params = [(a.arg, i >= n_plain) for i, a in enumerate(args)]
    assert not node.args.kwonlyargs and node.args.vararg is None and node.args.kwarg is None, node.name
    return [p for p in params if p[0] != "self"]


def is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def module_names(core) -> set[str]:
    return {name for name in dir(core) if not name.startswith("__")}


def class_members(cls) -> dict[str, object]:
    """Methods and properties the class defines, with __init__; no other dunders, no pybind11
    internals."""
    return {name: value for name, value in vars(cls).items()
            if name == "__init__" or not (name.startswith("__") or name.startswith("_pybind11"))}


def test_every_module_name_is_in_the_stub_and_back(core, stub):
    functions, classes = stub
    in_stub = set(functions) | set(classes)
    assert sorted(module_names(core) - in_stub) == [], "names of the module missing from the stub"
    assert sorted(in_stub - module_names(core)) == [], "names of the stub the module does not have"
    for name in module_names(core):
        assert isinstance(getattr(core, name), type) == (name in classes), f"{name}: class vs function"


def test_function_parameters_match_the_pybind_signatures(core, stub):
    functions, _ = stub
    checked = 0
    for name, node in sorted(functions.items()):
        assert pybind_params(getattr(core, name), name) == stub_params(node), name
        checked += 1
    assert checked >= 25  # the module's functions, not a vacuous pass


def test_class_members_and_parameters_match(core, stub):
    _, classes = stub
    for cls_name, members in sorted(classes.items()):
        cls = getattr(core, cls_name)
        actual = class_members(cls)
        assert sorted(actual) == sorted(members), cls_name
        for name, node in members.items():
            value = actual[name]
            assert isinstance(value, property) == is_property(node), f"{cls_name}.{name}: property vs method"
            if not is_property(node):
                assert pybind_params(value, name) == stub_params(node), f"{cls_name}.{name}"


def test_the_signature_parser_reads_defaults_and_nested_types(core):
    """The parser itself: a default and a parameter after a type with brackets."""
    assert pybind_params(core.all_finite, "all_finite") == [("x", False), ("max_abs", True)]
    assert pybind_params(core.InvertedLists.locate, "locate") == [("ids", False)]
    assert _split_top_level("a: tuple[int, int], b: str = 'x'") == ["a: tuple[int, int]", "b: str = 'x'"]
