#!/usr/bin/env bash
# Build the C++ core with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch directory
# (never the package's own build) and run the core tests against that build.
#
#   scripts/sanitize.sh [pytest args...]      default: the core test files listed below
#
# Needs cmake, g++ with libasan/libubsan, and a PYTHON (default python3) with the test extras
# and pybind11 (a build-only requirement: `pip install pybind11 cmake` in CI).
# Environment: PQKIT_SANITIZE_BUILD (default /tmp/pqkit-asan), JOBS (default nproc),
# PQKIT_FUZZ_CASES (default 2000 here), PQKIT_CRAFTED_CASES (default 10000),
# PQKIT_SANITIZE_REUSE=1 (reuse an existing build).
# The CMakeLists' -O3 comes after CMAKE_CXX_FLAGS, so the sanitized code is optimized as in
# the release build (plus -g and frame pointers).
# Any sanitizer report aborts the process (halt_on_error / -fno-sanitize-recover), so a
# clean exit status means zero findings. Leak checking is off: CPython itself "leaks" by
# design at exit; leaks are covered by the RSS test (tests/test_thread_stress.py), which is
# skipped here (ASan's quarantine grows RSS on purpose).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${PQKIT_SANITIZE_BUILD:-/tmp/pqkit-asan}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

start=$(date +%s)
if [ -z "${PQKIT_SANITIZE_REUSE:-}" ] || ! ls "$BUILD"/cmake/_core.*.so > /dev/null 2>&1; then
  cmake -S "$ROOT" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Debug \
    -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
    -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" \
    -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_MODULE_LINKER_FLAGS="$SAN" \
    -DCMAKE_SHARED_LINKER_FLAGS="$SAN" > "$BUILD.cmake.log"
  cmake --build "$BUILD/cmake" -j "$JOBS" > "$BUILD.build.log"
fi
build_seconds=$(( $(date +%s) - start ))

# A shadow package: the Python sources (symlinked) with the sanitized core as
# pqkit/engine/_core*.so, first on PYTHONPATH. engine/ is a real folder of symlinks plus the
# .so, so nothing is written into the source tree (and a _core*.so built there is left out).
# Its sitecustomize.py removes an editable install's import hook (which would otherwise win
# over PYTHONPATH), in this process and in every child the tests start.
SHADOW="$BUILD/pkg"
PKG="$SHADOW/pqkit"
rm -rf "$SHADOW"
mkdir -p "$PKG/engine"
for f in "$ROOT"/src/pqkit/*; do
  [ "$(basename "$f")" = engine ] || ln -s "$f" "$PKG/"
done
for f in "$ROOT"/src/pqkit/engine/*; do
  if [ -e "$f" ]; then ln -s "$f" "$PKG/engine/"; fi
done
rm -f "$PKG"/_core.*.so "$PKG"/engine/_core.*.so
cp "$BUILD"/cmake/_core.*.so "$PKG/engine/"
cat > "$SHADOW/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
PY

if [ "$#" -eq 0 ]; then
  set -- tests/test_search_reference.py tests/test_scan_exact.py tests/test_pq.py \
    tests/test_kmeans.py tests/test_inputs.py tests/test_io.py tests/test_io_hostile.py \
    tests/test_api.py tests/test_factory.py tests/test_simd_threads.py \
    tests/test_interrupt_and_gil.py tests/test_bad_inputs_table.py tests/test_fuzz_load.py \
    tests/test_crafted_files.py tests/test_limits.py tests/test_thread_stress.py \
    tests/test_mmap.py tests/test_merge.py \
    tests/test_filters.py tests/test_range_search.py tests/test_search_params.py \
    tests/test_flat_fast_pass.py
  existing=()
  for t in "$@"; do [ -e "$ROOT/$t" ] && existing+=("$t"); done
  set -- "${existing[@]}" -q -p no:cacheprovider
fi

# Python is not built with ASan, so the runtimes are preloaded (children inherit them).
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$SHADOW${PYTHONPATH:+:$PYTHONPATH}"
export PQKIT_SANITIZED=1             # tests skip what sanitizers distort (RSS, address-space caps)
export PQKIT_FUZZ_CASES="${PQKIT_FUZZ_CASES:-2000}"  # about 3x slower under the sanitizers
export PQKIT_CRAFTED_CASES="${PQKIT_CRAFTED_CASES:-10000}"  # the whole campaign: it is quick
cd "$ROOT"
"$PYTHON" -c "import sys, pqkit.engine._core as core; f = core.__file__; print('sanitized core:', f); sys.exit(not f.startswith('$SHADOW'))"
test_start=$(date +%s)
status=0
"$PYTHON" -m pytest "$@" || status=$?
test_seconds=$(( $(date +%s) - test_start ))
echo "sanitize: build ${build_seconds} s, tests ${test_seconds} s, exit status ${status}"
exit "$status"
