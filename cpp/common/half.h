// IEEE binary16 ("half") storage for a set searched many times (flat.h, VectorSet::keep_half):
// a float rounds to the nearest half (ties to even) and a half widens to the float it
// denotes exactly. Portable bit arithmetic, so every SIMD level stores the same bits; the
// SIMD kernels widen with the CPU's conversion instruction, which is exact as well.
#pragma once

#include <cstdint>
#include <cstring>

namespace pqkit {

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// The half nearest to f (ties to even); beyond the largest half (65504) infinity, NaN a quiet NaN.
inline uint16_t float_to_half(float f) {
    const uint32_t u = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return static_cast<uint16_t>(sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u));
    if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504
    if (a < 0x38800000u) {
        // Below the smallest normal half (2^-14): a multiple of 2^-24, rounded to nearest even.
        if (a < 0x33000000u) return sign;  // at most 2^-25: rounds to zero
        const uint32_t exp = a >> 23;
        const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126u - exp;  // value = mant * 2^(exp - 150) = (mant >> shift) * 2^-24
        uint32_t h = mant >> shift;
        const uint32_t rest = mant & ((1u << shift) - 1u), half_way = 1u << (shift - 1u);
        if (rest > half_way || (rest == half_way && (h & 1u))) ++h;
        return static_cast<uint16_t>(sign | h);
    }
    // Normal: rebias the exponent (127 -> 15), keep 10 mantissa bits, round the other 13.
    uint32_t h = ((a >> 13) - (112u << 10));
    const uint32_t rest = a & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves to the exponent
    return static_cast<uint16_t>(sign | h);
}

// The float a half denotes (exact).
inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1Fu) return bits_float(sign | 0x7F800000u | (mant << 13));
    if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
    // zero or subnormal: mant * 2^-24, exact in float
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
}

}  // namespace pqkit
