"""The declared schema of a PatchCore sweep config (``pqkit patchcore sweep --config FILE``).

:func:`read_config` parses the YAML file and validates it against :class:`SweepConfig`
(pydantic v2, strict types, unknown keys forbidden); :func:`pqkit.patchcore.sweep.load_config`
turns the result into the plain dict the experiments read. Every problem is reported as one
:class:`ValueError` line that names the key, what was expected and what was found, e.g.::

    exp3.yaml: experiment: unknown key 'serach_methods'; did you mean 'search_methods'? (valid keys: ...)
    exp3.yaml: features.image_size: expected an integer, got str 'big'
    exp3.yaml:12:3: invalid YAML: mapping values are not allowed here

Sections and their keys are documented in :mod:`pqkit.patchcore.sweep`; the defaults below are
the ones the experiments always used.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import typing
from typing import Annotated, List, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .._validation import MAX_K_FACTOR
from .coreset import COMPRESSION_METHODS
from .neighbors import BACKENDS

__all__ = ["SweepConfig", "config_error_message", "read_config"]

#: Largest config file read (a sweep config is a few dozen lines).
MAX_CONFIG_BYTES = 1 << 20

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


def _as_list(value):
    # a grid axis may be written as one value or as a list of values
    return value if isinstance(value, list) else [value]


PositiveIntGrid = Annotated[List[PositiveInt], BeforeValidator(_as_list), Field(min_length=1)]
NonNegativeIntGrid = Annotated[List[NonNegativeInt], BeforeValidator(_as_list), Field(min_length=1)]

SearchMethod = Literal[tuple(sorted(BACKENDS))]  # type: ignore[valid-type]
CoresetMethod = Literal[COMPRESSION_METHODS]  # type: ignore[valid-type]
#: An index size, or "auto": chosen from the memory bank (pqkit.patchcore.neighbors.auto_params).
SizeOrAuto = Union[PositiveInt, Literal["auto"]]
SizeOrAutoGrid = Annotated[List[SizeOrAuto], BeforeValidator(_as_list), Field(min_length=1)]
KFactor = Annotated[float, Field(ge=1, le=MAX_K_FACTOR, allow_inf_nan=False)]
IVF_METHODS = ("pqkit_ivfpq", "faiss_ivfpq", "pqkit_ivfpq_refine", "faiss_ivfpq_refine")
#: "package.module:callable": a function returning a torch.nn.Module (experiment 1's user backbones).
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class _Section(BaseModel):
    # strict: a YAML string "3" is not an integer, 2.5 is not an integer, true is not a number
    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(_Section):
    kind: Literal["mvtec", "elpv", "sample"]
    root: Optional[str] = Field(None, min_length=1)
    cell_type: Literal["mono", "poly", "all"] = "mono"
    train_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    seed: NonNegativeInt = 0
    category: Optional[str] = Field(None, min_length=1)

    @model_validator(mode="after")
    def _keys_of_the_kind(self):
        if self.kind == "mvtec":
            if self.root is None:
                raise ValueError("data.root (an MVTec-layout category folder) is required for kind mvtec; "
                                 "set it or pass --root DIR")
        elif "root" in self.model_fields_set:
            raise ValueError("data.root applies to kind mvtec only; remove it or set kind: mvtec")
        if self.kind != "elpv":
            extra = sorted(self.model_fields_set & {"cell_type", "train_fraction", "seed"})
            if extra:
                raise ValueError(f"data.{extra[0]} applies to kind elpv only; remove it or set kind: elpv")
        return self


class FeaturesConfig(_Section):
    backbone: str = Field("efficientnet_lite0", min_length=1)
    layers: Optional[Annotated[List[str], Field(min_length=1)]] = None
    image_size: PositiveInt = 160
    target_dim: PositiveInt = 128
    batch_size: PositiveInt = 16
    cache_dir: str = Field("/tmp/pqkit_patchcore_cache", min_length=1)


class CoresetConfig(_Section):
    method: CoresetMethod = "v1"
    ratio: Fraction = 0.1
    projection_dim: PositiveInt = 128
    seed: NonNegativeInt = 0


class ScoringConfig(_Section):
    num_neighbors: Annotated[int, Field(ge=2)] = 9
    reweight: bool = True
    pixel_auroc: bool = True
    pixel_stride: PositiveInt = 1


class FaissGridConfig(_Section):
    pq_bits: PositiveIntGrid = [8]
    nprobe: PositiveIntGrid = [1]
    n_clusters: SizeOrAuto = 100
    m: PositiveIntGrid = [8]
    k_factor: KFactor = 4
    refine_m: NonNegativeIntGrid = [0]


class BackboneConfig(_Section):
    """One backbone of experiment 1: a known ``name`` or a user ``module``, and its layer choices."""

    name: Optional[str] = Field(None, min_length=1)
    module: Optional[str] = Field(None, min_length=1)
    label: Optional[str] = Field(None, min_length=1)
    layers: Optional[Annotated[List[Annotated[List[str], Field(min_length=1)]], Field(min_length=1)]] = None
    image_sizes: Optional[PositiveIntGrid] = None  # this backbone's sizes instead of experiment.image_sizes

    @model_validator(mode="after")
    def _name_or_module(self):
        from ..vision.features import BACKBONES

        if (self.name is None) == (self.module is None):
            raise ValueError("experiment.backbones: give each backbone either name (one of "
                             f"{', '.join(sorted(BACKBONES))}) or module ('package.module:function' returning a "
                             "torch.nn.Module), not both")
        if self.name is not None and self.name not in BACKBONES:
            close = difflib.get_close_matches(self.name, list(BACKBONES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"experiment.backbones: unknown name {self.name!r}{hint} (known: "
                             f"{', '.join(sorted(BACKBONES))}; any torch module can be given as module:)")
        if self.module is not None:
            if not _MODULE_PATH.fullmatch(self.module):
                raise ValueError(f"experiment.backbones: module must look like 'package.module:function', "
                                 f"got {self.module!r}")
            if self.layers is None:
                raise ValueError(f"experiment.backbones: module {self.module!r} needs layers (a list of layer "
                                 "choices, each a list of layer names, e.g. [[layer2, layer3]])")
        return self


class BankConfig(_Section):
    """One memory bank of the full-bank experiment: how it is subsampled and searched."""

    label: Optional[str] = Field(None, min_length=1)
    coreset_method: CoresetMethod = "v1"
    coreset_ratio: Fraction = 0.1
    search_method: SearchMethod = "pqkit_flat"
    nlist: SizeOrAuto = "auto"
    m: SizeOrAuto = "auto"
    nbits: SizeOrAuto = "auto"
    nprobe: SizeOrAutoGrid = ["auto"]
    k_factor: KFactor = 4
    refine_m: NonNegativeInt = 0

    @model_validator(mode="after")
    def _keys_of_the_method(self):
        ivf = {"nlist", "m", "nbits", "nprobe", "k_factor", "refine_m"} & self.model_fields_set
        if ivf and self.search_method not in IVF_METHODS:
            raise ValueError(f"experiment.banks: {sorted(ivf)[0]} applies to the IVF-PQ search methods "
                             f"({', '.join(IVF_METHODS)}), not {self.search_method}")
        refine = {"k_factor", "refine_m"} & self.model_fields_set
        if refine and not self.search_method.endswith("_refine"):
            raise ValueError(f"experiment.banks: {sorted(refine)[0]} applies to the *_ivfpq_refine search methods "
                             f"only, not {self.search_method}")
        if "coreset_ratio" in self.model_fields_set and self.coreset_method == "all":
            raise ValueError("experiment.banks: coreset_ratio does not apply to coreset_method all (the full bank)")
        return self


#: Keys of the experiment section and the experiments they apply to.
_KEY_OWNERS = {"search_methods": ("exp3",), "faiss_config": ("exp3",), "methods": ("exp2",),
               "compression_ratios": ("exp2",), "backbones": ("exp1",), "image_sizes": ("exp1",),
               "timing_images": ("exp1", "exp3"), "search_method": ("exp1",), "banks": ("fullbank",),
               "timing_repeats": ("exp3", "fullbank"), "timing_budget_s": ("exp3", "fullbank")}
_REQUIRED = {"exp1": ("backbones", "image_sizes"), "fullbank": ("banks",)}


class ExperimentConfig(_Section):
    name: Literal["exp3", "exp2", "exp1", "fullbank"] = "exp3"
    threads: Optional[PositiveInt] = None
    # exp3
    search_methods: Optional[Annotated[List[SearchMethod], Field(min_length=1)]] = None
    faiss_config: Optional[FaissGridConfig] = None
    timing_repeats: PositiveInt = 5
    timing_budget_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 3.0
    # exp2
    methods: Optional[Annotated[List[CoresetMethod], Field(min_length=1)]] = None
    compression_ratios: Optional[Annotated[List[Fraction], Field(min_length=1)]] = None
    # exp1
    backbones: Optional[Annotated[List[BackboneConfig], Field(min_length=1)]] = None
    image_sizes: Optional[PositiveIntGrid] = None
    timing_images: PositiveInt = 32
    search_method: SearchMethod = "pqkit_flat"
    # fullbank
    banks: Optional[Annotated[List[BankConfig], Field(min_length=1)]] = None

    @model_validator(mode="after")
    def _keys_of_the_experiment(self):
        for key, owners in _KEY_OWNERS.items():
            if key in self.model_fields_set and self.name not in owners:
                raise ValueError(f"experiment.{key} applies to experiment {' and '.join(owners)} only; this config "
                                 f"runs {self.name} (experiment.name)")
        for key in _REQUIRED.get(self.name, ()):
            if getattr(self, key) is None:
                raise ValueError(f"experiment.{key} is required for experiment {self.name}")
        return self


class OutputConfig(_Section):
    dir: str = Field(min_length=1)


class SweepConfig(_Section):
    """A sweep config: the sections of :mod:`pqkit.patchcore.sweep`'s docstring."""

    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    coreset: CoresetConfig = CoresetConfig()
    scoring: ScoringConfig = ScoringConfig()
    experiment: ExperimentConfig
    output: OutputConfig

    @model_validator(mode="after")
    def _grid_keys_of_exp1(self):
        if self.experiment.name == "exp1":
            given = sorted(self.features.model_fields_set & {"backbone", "layers", "image_size"})
            if given:
                raise ValueError(f"features.{given[0]} is set by experiment.backbones and experiment.image_sizes in "
                                 "exp1; remove it")
        return self


# ----------------------------------------------------------------------------- messages
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 4, 2

_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)", "finite_number": "a finite number",
}


def _unwrap(annotation):
    """``X`` of ``Optional[X]`` and ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Union:
            annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
        elif origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _model_at(model: type, loc) -> type | None:
    """The section model that the location ``loc`` (a tuple of keys and list indexes) names, or None."""
    current = model
    for key in loc:
        if isinstance(key, int):  # an item of a list of sections
            args = typing.get_args(current) if typing.get_origin(current) in (list, List) else ()
            current = _unwrap(args[0]) if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and key in current.model_fields:
            current = _unwrap(current.model_fields[key].annotation)
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _where(loc) -> str:
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _describe_error(error: dict) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(SweepConfig, loc[:-1])
        valid = list(parent.model_fields) if parent is not None else []
        key = str(loc[-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (f"{_where(loc[:-1]) or 'top level'}: unknown key {key!r}{hint} "
                f"(valid keys: {', '.join(valid)})")
    where = _where(loc) or "config"
    if kind == "union":
        got = f"{type(value).__name__} {_REPR.repr(value)}" if value is not None else "null"
        return f"{where}: expected {' or '.join(dict.fromkeys(error['expected']))}, got {got}"
    if kind == "missing":
        return f"{where}: required key missing"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    got = f"{type(value).__name__} {_REPR.repr(value)}" if value is not None else "null"
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {got}"
    message = error["msg"]
    message = message[len("Input should be "):] if message.startswith("Input should be ") else message
    for long, short in (("greater than or equal to ", ">= "), ("less than or equal to ", "<= "),
                        ("greater than ", "> "), ("less than ", "< ")):
        message = message.replace(long, short)
    return f"{where}: expected {message}, got {got}"


def _is_union_tag(key) -> bool:
    # pydantic names the branches of a union in the location: "constrained-int", "literal['auto']"
    return isinstance(key, str) and ("-" in key or "[" in key or key in ("int", "str", "float", "bool"))


def _merge_union_errors(errors: list) -> list:
    """Errors of one value against each branch of a union become one error listing what was
    expected (``expected an integer >= 1 or 'auto'``)."""
    merged, groups = [], {}
    for error in errors:
        loc = tuple(error["loc"])
        cut = next((i for i, key in enumerate(loc) if _is_union_tag(key)), None)
        if cut is None:
            merged.append(error)
            continue
        key = loc[:cut]
        if key not in groups:
            groups[key] = {"loc": key, "type": "union", "input": error.get("input"), "expected": []}
            merged.append(groups[key])
        text = _describe_error({**error, "loc": key})
        if ": expected " in text:
            groups[key]["expected"].append(text.split(": expected ", 1)[1].rsplit(", got ", 1)[0])
    return merged


def config_error_message(path: str, exc: ValidationError, limit: int = 4) -> str:
    """One line describing every schema violation in ``exc`` (at most ``limit``, then a count)."""
    problems = list(dict.fromkeys(_describe_error(e) for e in _merge_union_errors(exc.errors(include_url=False))))
    text = "; ".join(problems[:limit])
    if len(problems) > limit:
        text += f"; and {len(problems) - limit} more"
    return f"{path}: {text}"


def _yaml_loader():
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML would silently
    keep the last value)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # unhashable keys are refused by PyYAML itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found the key {key!r} twice; keep one", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_config(path) -> SweepConfig:
    """Read and validate a sweep config file.

    Parameters
    ----------
    path : str or os.PathLike
        A YAML file with the sections of :mod:`pqkit.patchcore.sweep`.

    Returns
    -------
    SweepConfig

    Raises
    ------
    ValueError
        A missing, unreadable or oversized file, a YAML syntax error (with line and column), or a
        config that does not match the schema (naming the key, the expected and the found value,
        and for an unknown key the closest valid one). Always one line.
    """
    import yaml

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"config {path!r} is a folder; give a YAML file such as bench/patchcore/exp3.yaml")
    if not os.path.isfile(path):
        raise ValueError(f"config file not found: {path!r}")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"config {path!r} has {size} bytes, more than the {MAX_CONFIG_BYTES} a sweep config "
                         "can have; is it the right file?")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"config {path!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a safe loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        detail = exc.problem or "syntax error"
        if exc.context:
            detail += f" ({exc.context})"
        raise ValueError(f"{where}: invalid YAML: {' '.join(detail.split())}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ValueError(f"{path}: expected a YAML mapping with the sections data, features, coreset, scoring, "
                         f"experiment and output, found {found}")
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(config_error_message(path, exc)) from None
