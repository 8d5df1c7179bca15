// The finiteness and magnitude check every float input goes through.
#pragma once

#include <cstddef>

namespace pqkit {

// Whether each of the n floats of x is finite with |x_i| <= max_abs (max_abs may
// be +inf: finite only). Throws std::invalid_argument when max_abs is negative or NaN.
bool all_finite(const float* x, size_t n, double max_abs);

}  // namespace pqkit
