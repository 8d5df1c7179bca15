// The packed PQ code format, shared by the quantizer (search/pq.h) and the
// code scans (search/scan.h), so neither needs the other's header.
//
// A d-dimensional vector is split into M subvectors of dsub = d / M floats,
// each replaced by the index of one of ksub = 2^nbits centroids. Codes are
// packed little-endian: index m occupies bits [m*nbits, (m+1)*nbits) of a
// code_size = ceil(M*nbits/8) byte string (the layout FAISS uses).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pqkit {

struct PQShape {
    size_t d, M, nbits, ksub, dsub, code_size;
};

// Validates d % M == 0 and 1 <= nbits <= 16 (std::invalid_argument otherwise).
PQShape make_pq_shape(size_t d, size_t M, size_t nbits);

// n packed codes (rows of code_size bytes) <-> n x M centroid indices.
// pq_pack throws std::invalid_argument for an index outside 0..ksub-1.
void pq_unpack(const PQShape& shape, const uint8_t* codes, size_t n, int32_t* idx);
void pq_pack(const PQShape& shape, const int32_t* idx, size_t n, uint8_t* codes);

}  // namespace pqkit
