// Product quantization (Jegou, Douze, Schmid, "Product quantization for
// nearest neighbor search", TPAMI 2011).
//
// A d-dimensional vector is split into M subvectors of dsub = d / M floats;
// subvector m is replaced by the index of its nearest centroid in codebook m
// (ksub = 2^nbits centroids). Codebooks are stored as M x ksub x dsub floats.
// Codes are packed little-endian: code m occupies bits [m*nbits, (m+1)*nbits)
// of a code_size = ceil(M*nbits/8) byte string (the layout FAISS uses).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flat.h"

namespace pqkit {

struct PQShape {
    size_t d, M, nbits, ksub, dsub, code_size;
};

// Validates d % M == 0 and 1 <= nbits <= 16 (std::invalid_argument otherwise).
PQShape make_pq_shape(size_t d, size_t M, size_t nbits);

// Codebooks prepared for distance tables: per subquantizer, transposed to
// dsub x ksub so one query subvector meets ksub centroids in vector lanes.
class PQTables {
public:
    PQTables(const PQShape& shape, const float* codebooks);
    // Writes M x ksub: ||q_m - c_mk||^2 (L2) or <q_m, c_mk> (IP).
    void compute(const float* q, Metric metric, float* table) const;
    const PQShape& shape() const { return shape_; }

private:
    PQShape shape_;
    std::vector<float> transposed_;
};

// out[i] = sum_m table[m * ksub + code_m(i)], sequential over m, for n packed codes.
// `scratch` is reused between calls (unpacked indices for nbits != 8).
void adc_scan(const PQShape& shape, const uint8_t* codes, size_t n, const float* table, float* out,
              std::vector<int32_t>& scratch);

void pq_unpack(const PQShape& shape, const uint8_t* codes, size_t n, int32_t* idx);
void pq_pack(const PQShape& shape, const int32_t* idx, size_t n, uint8_t* codes);

void pq_train(const float* x, size_t n, const PQShape& shape, int niter, uint64_t seed,
              size_t max_points_per_centroid, int n_threads, float* codebooks);
void pq_encode(const float* x, size_t n, const PQShape& shape, const float* codebooks, int n_threads,
               uint8_t* codes);
void pq_decode(const uint8_t* codes, size_t n, const PQShape& shape, const float* codebooks,
               int n_threads, float* x);
void pq_distance_tables(const float* x, size_t nq, const PQShape& shape, const float* codebooks,
                        Metric metric, int n_threads, float* tables);
// ADC search over n codes; I holds row numbers.
void pq_search(const float* x, size_t nq, const PQShape& shape, const float* codebooks,
               const uint8_t* codes, size_t n, size_t k, Metric metric, int n_threads, float* D,
               int64_t* I);

}  // namespace pqkit
