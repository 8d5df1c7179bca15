#include "search/micro.h"

#include <chrono>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>

#include "common/codes.h"
#include "kernels/kernels.h"

namespace pqkit {
namespace {

volatile uint64_t g_sink;  // keeps the timed work observable

template <class F>
std::vector<double> time_repeats(size_t repeats, F&& body) {
    std::vector<double> out;
    body();  // warm-up (page faults, caches)
    for (size_t r = 0; r < repeats; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        body();
        out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return out;
}

}  // namespace

std::vector<double> micro_scan(size_t M, size_t nbits, size_t n, size_t repeats, SimdLevel level) {
    if (nbits != 8 && nbits != 4) throw std::invalid_argument("nbits must be 4 or 8, got " + std::to_string(nbits));
    if (M == 0 || n == 0 || M > 257) throw std::invalid_argument("need 1 <= M <= 257 and n >= 1");
    bool supported = false;
    for (SimdLevel l : supported_simd_levels()) supported = supported || l == level;
    if (!supported)
        throw std::invalid_argument(std::string("SIMD level '") + simd_level_name(level) + "' is not supported by this CPU");
    const Kernels& K = kernels_for(level);
    const size_t code_size = nbits == 8 ? M : (M + 1) / 2;
    std::mt19937_64 rng(42);
    std::vector<uint8_t> blocks(blocked_bytes(n, code_size));
    for (auto& b : blocks) b = static_cast<uint8_t>(rng());
    const size_t rows = nbits == 8 ? M : 2 * code_size;
    const size_t row_bytes = nbits == 8 ? 256 : kLut4Row;  // the layout quantize_table writes
    std::vector<uint8_t> lut(rows * row_bytes + 64);
    for (auto& v : lut) v = static_cast<uint8_t>(1 + rng() % 200);  // no zero entry: est > 0
    if (nbits == 4)  // each 4-bit row: one 16-entry table, repeated
        for (size_t r = 0; r < rows; ++r)
            for (size_t i = 16; i < kLut4Row; ++i) lut[r * kLut4Row + i] = lut[r * kLut4Row + i % 16];
    std::vector<uint64_t> masks((n + kBlock - 1) / kBlock);
    ScanFilter filter{0, nullptr, 0.0f, 0.0f};
    filter.ahead_bytes = blocks.size();  // prefetch as a search over one run of codes does
    return time_repeats(repeats, [&] {
        if (nbits == 8)
            K.scan_lut8(blocks.data(), n, M, lut.data(), filter, masks.data());
        else
            K.scan_lut4(blocks.data(), n, M, lut.data(), filter, masks.data());
        g_sink = g_sink + masks[0];
    });
}

std::vector<double> micro_memory_read(size_t nbytes, size_t repeats) {
    if (nbytes == 0) throw std::invalid_argument("nbytes must be >= 1");
    std::vector<uint8_t> buf(nbytes);
    for (size_t i = 0; i < nbytes; ++i) buf[i] = static_cast<uint8_t>(i * 131);
    const Kernels& K = kernels();
    return time_repeats(repeats, [&] { g_sink = g_sink + K.read_bytes(buf.data(), nbytes); });
}

}  // namespace pqkit
