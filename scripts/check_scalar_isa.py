#!/usr/bin/env python3
"""Check that the compiled core runs on a CPU without AVX: SIMD code only where it is dispatched.

    python scripts/check_scalar_isa.py [BUILD_DIR]     (default: every build/*/ of the repo)

Reads the object files of a CMake build of ``_core`` (nothing is compiled) with ``objdump`` and
``nm`` (binutils) and fails when

1. an object file compiled without ``-mavx*`` (every file but ``kernels_avx2.cpp``,
   ``kernels_avx512.cpp`` and the fast passes ``kernels_fast_avx2.cpp``, ``kernels_fast_avx512.cpp``) contains a VEX/EVEX instruction (a ``v...`` SIMD mnemonic, a ymm/zmm
   register or an AVX-512 mask register), or
2. one of the SIMD object files defines a weak (COMDAT) function containing such
   instructions: the linker keeps one copy of a weak function for the whole module, and if it
   kept the AVX one, scalar code would call it (an illegal instruction on older CPUs).

The SIMD kernels themselves are reached only through the dispatch table after a CPUID check
(cpp/kernels/kernels.cpp). QEMU's user mode decodes AVX2 whatever CPU model it emulates, so an emulator run
(tests/test_numba_backend.py) cannot show this; this static check does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SIMD_SOURCES = ("kernels_avx2.cpp.o", "kernels_avx512.cpp.o", "kernels_fast_avx2.cpp.o",
                "kernels_fast_avx512.cpp.o")
# VEX/EVEX mnemonics start with "v"; the few non-SIMD "v" instructions are excluded.
NON_SIMD_V = re.compile(r"^v(err|erw|mcall|mlaunch|mresume|mxoff|mxon|mptrld|mptrst|mread|"
                        r"mwrite|mclear|mfunc)")
INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s*(.*)$")


def avx_lines(disassembly: str) -> list:
    found = []
    for line in disassembly.splitlines():
        m = INSN.match(line)
        if not m:
            continue
        mnemonic, operands = m.groups()
        if ((mnemonic.startswith("v") and not NON_SIMD_V.match(mnemonic))
                or re.search(r"%[yz]mm\d", operands) or re.search(r"%k[0-7]\b", operands)):
            found.append(line.strip())
    return found


def objdump(obj: Path, *extra: str) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", *extra, str(obj)],
                          capture_output=True, text=True, check=True).stdout


def weak_functions(obj: Path) -> list:
    out = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[-1] for line in out.splitlines()
            if len(line.split()) == 3 and line.split()[1] in ("W", "V", "u")]


def check(build: Path) -> list:
    objects = sorted(o for d in build.glob("**/CMakeFiles/_core.dir/cpp") for o in d.rglob("*.o"))
    if not objects:
        return [f"{build}: no object files of _core (build the package first)"]
    problems = []
    plain = [o for o in objects if o.name not in SIMD_SOURCES]
    simd = [o for o in objects if o.name in SIMD_SOURCES]
    for obj in plain:
        lines = avx_lines(objdump(obj))
        if lines:
            problems.append(f"{obj.name}: {len(lines)} AVX instructions, e.g. {lines[0]}")
    n_weak = 0
    for obj in simd:
        for symbol in weak_functions(obj):
            n_weak += 1
            lines = avx_lines(objdump(obj, f"--disassemble={symbol}"))
            if lines:
                problems.append(f"{obj.name}: weak function {symbol} holds AVX code ({lines[0]}); "
                                "the linker may use it from scalar code")
    print(f"{build}: {len(plain)} object files without -mavx*: 0 AVX instructions expected; "
          f"{len(simd)} SIMD object files with {n_weak} weak functions checked; "
          f"{len(problems)} problem(s)")
    return problems


def main(argv) -> int:
    root = Path(__file__).resolve().parent.parent
    builds = [Path(a) for a in argv] or sorted(p for p in (root / "build").glob("*") if p.is_dir())
    if not builds:
        print("no build directory found; pass one (a CMake build of _core)", file=sys.stderr)
        return 2
    problems = [p for b in builds for p in check(b)]
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
