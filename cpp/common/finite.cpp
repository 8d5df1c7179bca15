#include "common/finite.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace pqkit {

// For non-negative floats the bit patterns order as the values do, and NaN and
// +-inf have larger magnitude bits than any finite float, so one integer
// compare per value tests all three. No early exit, so the loop vectorizes.
bool all_finite(const float* x, size_t n, double max_abs) {
    if (!(max_abs >= 0))
        throw std::invalid_argument("all_finite: max_abs must be >= 0, got " + std::to_string(max_abs));
    const float largest = std::numeric_limits<float>::max();
    const float bound = max_abs >= static_cast<double>(largest) ? largest : static_cast<float>(max_abs);
    uint32_t limit;
    std::memcpy(&limit, &bound, sizeof(limit));
    const uint32_t* bits = reinterpret_cast<const uint32_t*>(x);
    uint32_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((bits[i] & 0x7fffffffu) > limit);
    return bad == 0;
}

}  // namespace pqkit
