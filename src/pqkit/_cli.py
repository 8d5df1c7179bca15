"""What every ``pqkit`` command shares: one-line errors, argument types and output-path checks.

A user error (a bad argument, a missing or unreadable file, an output that would be overwritten,
a request larger than the memory) is reported as one line ``pqkit <command>: error: <message>`` on
stderr, and the command exits with status 2, the status of argparse's usage errors, which are
reported the same way. Commands validate their arguments before long work: numbers are finite and
in range, devices exist, and output paths can be written (not under a file, not replacing earlier
results without ``--overwrite``).

A command module declares its parsers with :func:`add_command` and raises ValueError (or lets the
library raise ValueError, TypeError, OSError or MemoryError); :func:`run_command` turns those into
the one line.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

__all__ = [
    "ArgumentParser",
    "USER_ERRORS",
    "add_command",
    "check_creatable_dir",
    "check_output_file",
    "device",
    "error_message",
    "fail",
    "float_in",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "run_command",
]

#: Exit status of every user error (argparse's own for usage errors).
EXIT_USER_ERROR = 2

#: Exceptions that mean bad input or a bad environment, not a bug: reported in one line.
#: (ImportError: an optional dependency of the command is not installed.)
USER_ERRORS = (ValueError, TypeError, OSError, MemoryError, ImportError)


def one_line(text) -> str:
    """``text`` with every run of whitespace (newlines included) replaced by one space."""
    return " ".join(str(text).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (no usage block), like every other user error."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def add_command(subparsers, name: str, run, **kwargs) -> ArgumentParser:
    """Add the subcommand ``name`` that runs ``run(args)``; its errors name its full ``prog``."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(run=run, command_prog=parser.prog)
    return parser


def error_message(exc: BaseException) -> str:
    """The one-line message of a user error."""
    if isinstance(exc, MemoryError):
        detail = one_line(exc)
        return (f"not enough memory{': ' + detail if detail else ''}; ask for less (a smaller -k, size or "
                "batch) or run where more memory is available")
    if isinstance(exc, OSError) and exc.strerror:
        names = [repr(os.fsdecode(name)) for name in (exc.filename, exc.filename2) if name is not None]
        return f"{exc.strerror}: {' -> '.join(names)}" if names else one_line(exc.strerror)
    if isinstance(exc, ModuleNotFoundError):
        return (f"{one_line(exc)}: an optional dependency is missing; install the extra of this command "
                "(pip install 'pqkit[patchcore]' or 'pqkit[retrieval]')")
    return one_line(exc) or type(exc).__name__


def fail(prog: str, message: str) -> int:
    """Print ``<prog>: error: <message>`` (one line) to stderr and return the user-error status."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; a user error (:data:`USER_ERRORS`) becomes one line and status 2.

    Returns
    -------
    int
        The command's exit status (0 unless it returned another int).
    """
    prog = getattr(args, "command_prog", "pqkit")
    try:
        result = args.run(args)
    except USER_ERRORS as exc:
        return fail(prog, error_message(exc))
    return result if isinstance(result, int) else 0


# ----------------------------------------------------------------------------- argument types
def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def float_in(low: float, high: float, *, low_open: bool = True, high_open: bool = False):
    """argparse type: a finite number in the interval from ``low`` to ``high`` (open or closed ends)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    convert.__name__ = f"number in {interval}"
    return convert


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def device(text: str) -> str:
    """argparse type: ``cpu``, or ``cuda`` / ``cuda:N`` when torch sees at least N + 1 CUDA devices."""
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text == "cpu":
        return text
    if match is None:
        raise argparse.ArgumentTypeError(f"expected 'cpu', 'cuda' or 'cuda:N', got {text!r}")
    index = int(match.group(1) or 0)
    try:
        import torch
    except ImportError:
        raise argparse.ArgumentTypeError(f"{text!r} needs torch, which is not installed; use cpu") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        seen = "none" if count == 0 else "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise argparse.ArgumentTypeError(f"{text!r} is not available (CUDA devices torch sees: {seen}); use cpu")
    return text


# ----------------------------------------------------------------------------- output paths
def _nearest_existing(path: str) -> str:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def check_creatable_dir(path, what: str) -> str:
    """Raise ValueError unless folder ``path`` exists and is writable, or can be created.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        How the message names the path (an option or config key, e.g. ``"--out"``).

    Returns
    -------
    str
        ``path`` as a str.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what} is empty; give a folder path")
    absolute = os.path.abspath(path)
    probe = _nearest_existing(absolute)
    if not os.path.isdir(probe):
        if probe == absolute:
            raise ValueError(f"{what} {path!r} is a file, not a folder; choose a folder path")
        raise ValueError(f"{what} {path!r} cannot be created: {probe!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r} cannot be written: no write permission in {probe!r}")
    return path


def check_output_file(path, what: str, overwrite: bool) -> str:
    """Raise ValueError unless the file ``path`` can be written without replacing anything.

    A folder, a path under a file or an unwritable folder is refused; an existing file is refused
    unless ``overwrite``.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what} is empty; give a file path")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; give the path of a file to write")
    if os.path.lexists(path):
        if not overwrite:
            raise ValueError(f"{what} {path!r} exists; pass --overwrite to replace it, or choose another path")
        if not os.path.isfile(path):
            raise ValueError(f"{what} {path!r} exists and is not a regular file; choose another path")
    parent = os.path.dirname(os.path.abspath(path))
    probe = _nearest_existing(parent)
    if not os.path.isdir(probe):
        raise ValueError(f"{what} {path!r} cannot be created: {probe!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r} cannot be written: no write permission in {probe!r}")
    return path
