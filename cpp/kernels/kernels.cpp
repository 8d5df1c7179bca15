// Run-time dispatch to the active level's table, and the check that every
// level's table is complete.
#include "kernels/kernels.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace pqkit {
namespace {

// Kernels holds only function pointers, so its bytes are a row of pointer slots.
using Slot = void (*)();
static_assert(std::is_trivially_copyable<Kernels>::value && std::is_standard_layout<Kernels>::value,
              "Kernels must stay a plain table of function pointers");
static_assert(sizeof(Kernels) % sizeof(Slot) == 0, "Kernels must hold only function pointers");
constexpr size_t kSlots = sizeof(Kernels) / sizeof(Slot);

// The position of the first unset member, or kSlots when every member is set.
size_t first_unset(const Kernels& table) {
    Slot slots[kSlots];
    std::memcpy(slots, &table, sizeof(Kernels));
    for (size_t i = 0; i < kSlots; ++i)
        if (slots[i] == nullptr) return i;
    return kSlots;
}

}  // namespace

const Kernels& kernels_for(SimdLevel level) {
    switch (level) {
#if PQKIT_HAVE_X86_SIMD
        case SimdLevel::AVX512: return avx512::table;
        case SimdLevel::AVX2: return avx2::table;
#endif
        default: return scalar::table;
    }
}

const Kernels& kernels() { return kernels_for(active_simd_level()); }

void check_kernel_tables() {
    const std::pair<const char*, const Kernels*> levels[] = {
        {"scalar", &scalar::table},
#if PQKIT_HAVE_X86_SIMD
        {"avx2", &avx2::table},
        {"avx512", &avx512::table},
#endif
    };
    for (const auto& [name, table] : levels) {
        const size_t unset = first_unset(*table);
        if (unset != kSlots)
            throw std::logic_error(std::string("kernel table '") + name + "' leaves member " + std::to_string(unset) +
                                   " (counting from 0, in the order of struct Kernels) unset: assign it in "
                                   "make_table() of kernels_" + name + ".cpp");
    }
}

}  // namespace pqkit
