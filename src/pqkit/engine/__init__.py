"""Engine selection: the compiled C++ core (``"cpp"``), the portable Numba engine (``"numba"``) or
the torch engine (``"torch"``, on a CUDA GPU or the CPU; ``pip install 'pqkit[gpu]'``).

Both engines expose the same functions and classes (see :mod:`pqkit.engine.numba`), and give
the same codes, ids and distances for the same codebooks and centroids; only training draws
different random numbers. Every index, quantizer and :class:`pqkit.KMeans` takes
``backend=None``, meaning the global default :func:`get_backend`, and keeps the engine it was
built with (its prepared objects belong to that engine).

The torch engine also has a device: ``backend="torch", device="cuda"`` (or ``"cpu"``, or
``"cuda:1"``); ``device="cuda"`` alone implies ``backend="torch"``, and ``device=None`` with
``"torch"`` means the first CUDA device when there is one, else the CPU. :func:`core` takes the
device and returns the engine object of that device, whose prepared objects live there. Its
results equal the other engines' up to float rounding (see :mod:`pqkit.engine.torch`).
Importing pqkit never imports torch; the first use of ``"torch"`` does.

The default is ``"cpp"``. It becomes ``"numba"``, with a :class:`BackendWarning`, when
``pqkit.engine._core`` cannot be imported (not built for this platform or Python, or missing). The
environment variable ``PQKIT_BACKEND=cpp|numba`` sets the default at import time;
:func:`set_backend` changes it later. The C++ core itself needs no CPU feature beyond the
baseline instruction set (its AVX2 and AVX-512 kernels are chosen at run time only on CPUs that
have them), so an older CPU runs it at the ``"scalar"`` level rather than needing the fallback.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings

__all__ = [
    "BackendWarning",
    "available_backends",
    "available_simd_levels",
    "core",
    "get_backend",
    "resolve",
    "resolve_device",
    "resolve_engine",
    "set_backend",
    "set_simd_level",
    "simd_level",
]

BACKENDS = ("cpp", "numba", "torch")


class BackendWarning(RuntimeWarning):
    """The compiled engine is unavailable (or a requested one is), and pqkit falls back.

    Emitted once at import when ``pqkit.engine._core`` cannot be loaded and the Numba engine is used
    instead (results are the same, search is slower, training draws other random numbers).
    """


_lock = threading.Lock()
_modules: dict = {}
_errors: dict = {}


def _load(name: str):
    """The engine module for ``name``, or None if it cannot be imported (the error is kept)."""
    module = _modules.get(name)  # loaded: no lock (every search asks; entries are never removed)
    if module is not None:
        return module
    with _lock:
        if name in _modules:
            return _modules[name]
        if name in _errors:
            return None
        module_name = {"cpp": "pqkit.engine._core", "numba": "pqkit.engine.numba",
                       "torch": "pqkit.engine.torch"}[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            _errors[name] = exc
            return None
        _modules[name] = module
        return module


def _import_error(name: str) -> str:
    exc = _errors.get(name)
    return f"{type(exc).__name__}: {exc}" if exc is not None else "not loaded"


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"backend must be a str, one of {list(BACKENDS)}, got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    return name


def available_backends() -> list:
    """Engines that can be loaded here: a sublist of ``["cpp", "numba", "torch"]``."""
    return [name for name in BACKENDS if _load(name) is not None]


def _initial_default() -> str:
    wanted = os.environ.get("PQKIT_BACKEND", "").strip().lower()
    if wanted and wanted not in BACKENDS:
        warnings.warn(
            f"PQKIT_BACKEND={wanted!r} is not one of {list(BACKENDS)}; using the default",
            BackendWarning, stacklevel=3,
        )
        wanted = ""
    if wanted in ("numba", "torch"):
        return wanted
    if _load("cpp") is not None:
        return "cpp"
    if _load("numba") is None:
        raise ImportError(
            "pqkit has no usable engine: the compiled core failed to import "
            f"({_import_error('cpp')}) and the Numba fallback is not installed "
            f"({_import_error('numba')}); reinstall pqkit for this platform or "
            "pip install 'pqkit[numba]'"
        )
    warnings.warn(
        f"pqkit: the compiled core could not be imported ({_import_error('cpp')}); using the "
        "Numba engine (same results, slower search; trained centroids differ). Reinstall pqkit "
        "for this platform to get the compiled core, or set PQKIT_BACKEND=numba to choose the "
        "Numba engine without this warning",
        BackendWarning, stacklevel=3,
    )
    return "numba"


_default = None


def get_backend() -> str:
    """The default engine for new objects: ``"cpp"``, ``"numba"`` or ``"torch"``."""
    global _default
    if _default is None:
        _default = _initial_default()
    return _default


def set_backend(name) -> None:
    """Set the default engine for objects created afterwards.

    Parameters
    ----------
    name : {"cpp", "numba", "torch"} or None
        None restores the import-time default.

    Raises
    ------
    ValueError
        Unknown name, or an engine that cannot be loaded here (the message gives the reason).
    """
    global _default
    if name is None:
        _default = _initial_default()
        return
    core(_check_name(name))
    _default = name


def resolve(backend) -> str:
    """Validate a ``backend`` argument: None means :func:`get_backend`."""
    if backend is None:
        return get_backend()
    name = _check_name(backend)
    core(name)
    return name


def resolve_device(backend: str, device):
    """Validate a ``device`` argument for the engine ``backend`` (already resolved).

    Returns None for the CPU engines ("cpp", "numba"; which take only ``device=None`` or
    ``"cpu"``) and the canonical device name for "torch" (``"cpu"``, ``"cuda:0"``, ...).

    Raises
    ------
    ValueError
        A device the engine does not run on, or a CUDA device this machine lacks (the message
        says how to get one).
    """
    if backend != "torch":
        if device is None or (isinstance(device, str) and device == "cpu"):
            return None
        raise ValueError(f"device={device!r} needs the torch engine: use backend='torch' "
                         f"(pip install 'pqkit[gpu]'); the {backend!r} engine runs on the CPU "
                         "only")
    core("torch")  # ValueError naming the extra when torch is not installed
    return str(_load("torch").resolve_device(device))


def resolve_engine(backend, device):
    """``(backend, device)`` of an object: ``device`` set alone (not "cpu") means "torch"."""
    if backend is None and device is not None and not (isinstance(device, str)
                                                       and device == "cpu"):
        backend = "torch"
    name = resolve(backend)
    return name, resolve_device(name, device)


def core(name: str, device=None):
    """The engine for ``name``: the compiled ``_core``, :mod:`pqkit.engine.numba`, or the torch
    engine object of ``device`` (see :func:`resolve_device`)."""
    module = _load(name)
    if module is None:
        hint = {"numba": "pip install 'pqkit[numba]'", "torch": "pip install 'pqkit[gpu]'"}.get(
            name, "reinstall pqkit for this platform, or use backend='numba'")
        raise ValueError(
            f"backend {name!r} is not available here ({_import_error(name)}); {hint}"
        )
    if name == "torch":
        return module.engine_for(device)
    return module


# ------------------------------------------------------------------------------- SIMD levels
def _simd_engine():
    """The compiled core when it loads (its levels are process-wide), else the Numba engine."""
    return _load("cpp") or core("numba")


def simd_level() -> str:
    """The active kernel level of the compiled core: "scalar", "avx2" or "avx512".

    Without the compiled core (Numba engine only) this is "scalar".
    """
    return _simd_engine().simd_level()


def available_simd_levels() -> list:
    """The kernel levels this CPU supports, "scalar" first, best last."""
    return list(_simd_engine().available_simd_levels())


def set_simd_level(level) -> None:
    """Switch the compiled core's kernel level (ValueError if unknown or unsupported).

    Every level gives bit-identical results; the environment variable ``PQKIT_SIMD`` picks
    the level at import.
    """
    if not isinstance(level, str):
        raise TypeError(f"level must be a str, got {type(level).__name__}")
    _simd_engine().set_simd_level(level)


# Pick the default engine when pqkit is imported: the compiled core, or the Numba engine with a
# BackendWarning when the core cannot be imported on this machine.
get_backend()
