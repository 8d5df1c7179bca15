#include "common/args.h"

#include <stdexcept>
#include <string>

namespace pqkit {

size_t positive(int64_t value, const char* name) {
    if (value < 1) throw std::invalid_argument(std::string(name) + " must be >= 1, got " + std::to_string(value));
    return static_cast<size_t>(value);
}

size_t cap_or_none(int64_t value) { return value > 0 ? static_cast<size_t>(value) : 0; }

}  // namespace pqkit
