// Kernel micro-benchmarks (bench/micro): the scan kernels on synthetic codes
// and the memory-read floor they are compared with. Not used by the indexes.
#pragma once

#include <cstddef>
#include <vector>

#include "common/simd.h"

namespace pqkit {

// Seconds per scan of n random codes (blocked layout, random table, a filter
// that passes nothing), one entry per repeat, with the given level's kernel.
std::vector<double> micro_scan(size_t M, size_t nbits, size_t n, size_t repeats, SimdLevel level);

// Seconds per read of an nbytes buffer with the best level's read loop.
std::vector<double> micro_memory_read(size_t nbytes, size_t repeats);

}  // namespace pqkit
