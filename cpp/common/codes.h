// The blocked code layout used by every PQ code store.
//
// Codes are kept in blocks of kBlock = 64 codes. Inside a block, byte j of
// all 64 codes is contiguous: block[j * 64 + i] is byte j of the block's code
// i. For 8-bit codes byte j is sub-quantizer j, so one 64-byte load feeds one
// table lookup for 64 codes; for 4-bit codes byte j holds sub-quantizers 2j
// (low nibble) and 2j+1 (high nibble). The last block is zero-padded; padded
// codes are scanned but never reported.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pqkit {

constexpr size_t kBlock = 64;

inline size_t blocked_bytes(size_t n, size_t code_size) {
    return (n + kBlock - 1) / kBlock * kBlock * code_size;
}

// Codes of block b that exist (the last block of n codes may be partial).
inline size_t block_valid(size_t n, size_t b) {
    return n - b * kBlock < kBlock ? n - b * kBlock : kBlock;
}

// Byte j of code i sits at this offset.
inline size_t blocked_offset(size_t i, size_t j, size_t code_size) {
    return (i / kBlock) * kBlock * code_size + j * kBlock + i % kBlock;
}

inline void blocked_get(const uint8_t* blocks, size_t i, size_t code_size, uint8_t* code) {
    const uint8_t* p = blocks + (i / kBlock) * kBlock * code_size + i % kBlock;
    for (size_t j = 0; j < code_size; ++j) code[j] = p[j * kBlock];
}

inline void blocked_put(uint8_t* blocks, size_t i, size_t code_size, const uint8_t* code) {
    uint8_t* p = blocks + (i / kBlock) * kBlock * code_size + i % kBlock;
    for (size_t j = 0; j < code_size; ++j) p[j * kBlock] = code[j];
}

}  // namespace pqkit
