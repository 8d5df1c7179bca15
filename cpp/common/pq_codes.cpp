#include "common/pq_codes.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace pqkit {

PQShape make_pq_shape(size_t d, size_t M, size_t nbits) {
    if (M == 0 || d == 0 || d % M != 0) {
        throw std::invalid_argument("d must be a positive multiple of M: got d = " + std::to_string(d) +
                                    ", M = " + std::to_string(M));
    }
    if (nbits < 1 || nbits > 16) {
        throw std::invalid_argument("nbits must be in 1..16, got " + std::to_string(nbits));
    }
    return PQShape{d, M, nbits, size_t(1) << nbits, d / M, (M * nbits + 7) / 8};
}

void pq_unpack(const PQShape& s, const uint8_t* codes, size_t n, int32_t* idx) {
    const uint32_t mask = static_cast<uint32_t>(s.ksub - 1);
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* code = codes + i * s.code_size;
        int32_t* out = idx + i * s.M;
        if (s.nbits == 8) {
            for (size_t m = 0; m < s.M; ++m) out[m] = code[m];
            continue;
        }
        for (size_t m = 0; m < s.M; ++m) {
            size_t bit = m * s.nbits;
            // Read up to 3 bytes (nbits <= 16 spans at most 3), staying inside the code.
            uint32_t word = 0;
            size_t first = bit / 8, last = (bit + s.nbits - 1) / 8;
            for (size_t b = first; b <= last; ++b) word |= static_cast<uint32_t>(code[b]) << (8 * (b - first));
            out[m] = static_cast<int32_t>((word >> (bit % 8)) & mask);
        }
    }
}

void pq_pack(const PQShape& s, const int32_t* idx, size_t n, uint8_t* codes) {
    for (size_t i = 0; i < n; ++i) {
        uint8_t* code = codes + i * s.code_size;
        const int32_t* in = idx + i * s.M;
        std::memset(code, 0, s.code_size);
        for (size_t m = 0; m < s.M; ++m) {
            if (in[m] < 0 || static_cast<size_t>(in[m]) >= s.ksub) {
                throw std::invalid_argument("code index out of range: expected 0 <= index < " +
                                            std::to_string(s.ksub) + ", got " + std::to_string(in[m]));
            }
            size_t bit = m * s.nbits;
            uint32_t word = static_cast<uint32_t>(in[m]) << (bit % 8);
            for (size_t b = bit / 8; b <= (bit + s.nbits - 1) / 8; ++b, word >>= 8)
                code[b] |= static_cast<uint8_t>(word & 0xFF);
        }
    }
}

}  // namespace pqkit
