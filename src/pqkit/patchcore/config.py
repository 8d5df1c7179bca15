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
import reprlib
import typing
from typing import Annotated, List, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ..indexes.refine import MAX_K_FACTOR
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


class _Section(BaseModel):
    # strict: a YAML string "3" is not an integer, 2.5 is not an integer, true is not a number
    model_config = ConfigDict(extra="forbid", strict=True)


class DataConfig(_Section):
    kind: Literal["mvtec", "elpv"]
    root: Optional[str] = Field(None, min_length=1)
    cell_type: Literal["mono", "poly", "all"] = "mono"
    train_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    seed: NonNegativeInt = 0
    category: Optional[str] = Field(None, min_length=1)

    @model_validator(mode="after")
    def _keys_of_the_kind(self):
        if self.kind == "mvtec":
            if self.root is None:
                raise ValueError("data.root (an MVTec-layout category folder) is required for kind mvtec")
            extra = sorted(self.model_fields_set & {"cell_type", "train_fraction", "seed"})
            if extra:
                raise ValueError(f"data.{extra[0]} applies to kind elpv only; remove it or set kind: elpv")
        elif "root" in self.model_fields_set:
            raise ValueError("data.root applies to kind mvtec only; remove it or set kind: mvtec")
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
    n_clusters: PositiveInt = 100
    m: PositiveIntGrid = [8]
    k_factor: Annotated[float, Field(ge=1, le=MAX_K_FACTOR, allow_inf_nan=False)] = 4
    refine_m: NonNegativeIntGrid = [0]


_EXP3_ONLY = ("search_methods", "faiss_config")
_EXP2_ONLY = ("methods", "compression_ratios")


class ExperimentConfig(_Section):
    name: Literal["exp3", "exp2"] = "exp3"
    # exp3
    search_methods: Optional[Annotated[List[SearchMethod], Field(min_length=1)]] = None
    faiss_config: Optional[FaissGridConfig] = None
    threads: Optional[PositiveInt] = None
    timing_repeats: PositiveInt = 5
    timing_budget_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 3.0
    # exp2
    methods: Optional[Annotated[List[CoresetMethod], Field(min_length=1)]] = None
    compression_ratios: Optional[Annotated[List[Fraction], Field(min_length=1)]] = None

    @model_validator(mode="after")
    def _keys_of_the_experiment(self):
        other = _EXP2_ONLY if self.name == "exp3" else _EXP3_ONLY
        extra = [key for key in other if key in self.model_fields_set]
        if extra:
            owner = "exp2" if self.name == "exp3" else "exp3"
            raise ValueError(f"experiment.{extra[0]} applies to experiment {owner} only; this config runs "
                             f"{self.name} (experiment.name)")
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


# ----------------------------------------------------------------------------- messages
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 4, 2

_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)", "finite_number": "a finite number",
}


def _model_at(model: type, loc) -> type | None:
    """The section model that the location ``loc`` (a tuple of keys) names, or None."""
    for key in loc:
        if not isinstance(key, str) or key not in model.model_fields:
            return None
        annotation = model.model_fields[key].annotation
        if typing.get_origin(annotation) is typing.Union:
            annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


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


def config_error_message(path: str, exc: ValidationError, limit: int = 4) -> str:
    """One line describing every schema violation in ``exc`` (at most ``limit``, then a count)."""
    problems = list(dict.fromkeys(_describe_error(e) for e in exc.errors(include_url=False)))
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
