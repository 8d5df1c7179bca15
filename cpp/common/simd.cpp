#include "common/simd.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace pqkit {
namespace {

bool cpu_has(SimdLevel level) {
    switch (level) {
        case SimdLevel::Scalar:
            return true;
#if PQKIT_HAVE_X86_SIMD
        case SimdLevel::AVX2:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx2");
        case SimdLevel::AVX512:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512vbmi");
#endif
        default:
            return false;
    }
}

SimdLevel best_supported() {
    auto levels = supported_simd_levels();
    return levels.back();
}

// PQKIT_SIMD wins when it names a level this CPU has; an unknown or
// unsupported value falls back to the best level (the Python layer warns).
SimdLevel initial_level() {
    const char* env = std::getenv("PQKIT_SIMD");
    if (env != nullptr && *env != '\0') {
        try {
            SimdLevel wanted = parse_simd_level(env);
            if (cpu_has(wanted)) return wanted;
        } catch (const std::invalid_argument&) {
        }
    }
    return best_supported();
}

std::atomic<int>& level_slot() {
    static std::atomic<int> slot{static_cast<int>(initial_level())};
    return slot;
}

}  // namespace

const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::Scalar: return "scalar";
        case SimdLevel::AVX2: return "avx2";
        case SimdLevel::AVX512: return "avx512";
    }
    return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
    if (name == "scalar" || name == "none" || name == "NONE") return SimdLevel::Scalar;
    if (name == "avx2" || name == "AVX2") return SimdLevel::AVX2;
    if (name == "avx512" || name == "AVX512") return SimdLevel::AVX512;
    throw std::invalid_argument("unknown SIMD level '" + name +
                                "': expected one of 'scalar', 'avx2', 'avx512'");
}

std::vector<SimdLevel> supported_simd_levels() {
    std::vector<SimdLevel> out;
    for (SimdLevel level : {SimdLevel::Scalar, SimdLevel::AVX2, SimdLevel::AVX512}) {
        if (cpu_has(level)) out.push_back(level);
    }
    return out;
}

SimdLevel active_simd_level() { return static_cast<SimdLevel>(level_slot().load()); }

void set_simd_level(SimdLevel level) {
    if (!cpu_has(level)) {
        throw std::invalid_argument(std::string("SIMD level '") + simd_level_name(level) +
                                    "' is not supported by this CPU; use one of "
                                    "pqkit.available_simd_levels()");
    }
    level_slot().store(static_cast<int>(level));
}

std::string active_simd_level_name() { return simd_level_name(active_simd_level()); }

std::vector<std::string> supported_simd_level_names() {
    std::vector<std::string> out;
    for (SimdLevel level : supported_simd_levels()) out.emplace_back(simd_level_name(level));
    return out;
}

void set_simd_level(const std::string& name) { set_simd_level(parse_simd_level(name)); }

}  // namespace pqkit
