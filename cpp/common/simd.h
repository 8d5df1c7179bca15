// Run-time SIMD dispatch. The level is chosen once (CPUID, or the PQKIT_SIMD
// environment variable) and can be changed by tests through set_simd_level.
// Every level computes exactly the same floating-point operations in the same
// order as the scalar reference, so results are bit-identical across levels.
#pragma once

#include <string>
#include <vector>

namespace pqkit {

enum class SimdLevel { Scalar = 0, AVX2 = 1, AVX512 = 2 };

const char* simd_level_name(SimdLevel level);
SimdLevel parse_simd_level(const std::string& name);  // throws std::invalid_argument
std::vector<SimdLevel> supported_simd_levels();        // scalar first, best last
SimdLevel active_simd_level();
void set_simd_level(SimdLevel level);                  // throws if the CPU lacks it

// The same by name ("scalar", "avx2", "avx512"), for callers that speak strings.
std::string active_simd_level_name();
std::vector<std::string> supported_simd_level_names();  // scalar first, best last
void set_simd_level(const std::string& name);          // throws std::invalid_argument

}  // namespace pqkit
