// Integer arguments as callers pass them (signed, e.g. Python ints) turned into
// the engine's sizes, with the preconditions stated once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pqkit {

// value as a size; std::invalid_argument "<name> must be >= 1, got <value>" below 1.
size_t positive(int64_t value, const char* name);

// A cap where 0 means "no cap" (max_points_per_centroid): negative values count as 0.
size_t cap_or_none(int64_t value);

}  // namespace pqkit
