// Product quantization (Jegou, Douze, Schmid, "Product quantization for
// nearest neighbor search", TPAMI 2011).
//
// A d-dimensional vector is split into M subvectors of dsub = d / M floats;
// subvector m is replaced by the index of its nearest centroid in codebook m
// (ksub = 2^nbits centroids). Codebooks are stored as M x ksub x dsub floats.
// The packed code format (PQShape, pq_pack, pq_unpack) is common/pq_codes.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/metric.h"
#include "common/pq_codes.h"
#include "common/range.h"

namespace pqkit {

class IDSelector;
class InvertedLists;

// Trained codebooks (copied), prepared once for distance tables: per
// subquantizer transposed to dsub x ksub, so one query subvector meets ksub
// centroids in vector lanes, and their squared norms. Indexes keep one and
// rebuild it only when the codebooks change.
class PQCodebooks {
public:
    PQCodebooks(const PQShape& shape, const float* codebooks);
    const PQShape& shape() const { return shape_; }
    const float* data() const { return codebooks_.data(); }      // M x ksub x dsub
    const float* sqnorms() const { return sqnorms_.data(); }     // M x ksub
    // For nq queries (rows of d floats), writes nq tables of M x ksub:
    // ||q_m - c_mk||^2 (L2) or <q_m, c_mk> (IP). Batching queries reuses each
    // codebook row loaded; every entry is the same for any batch size.
    void compute(const float* q, size_t nq, Metric metric, float* tables) const;
    // The search tables, "smaller is better": the L2 table, or the negated IP table.
    void search_table(const float* q, size_t nq, Metric metric, float* tables) const;

private:
    PQShape shape_;
    std::vector<float> codebooks_, transposed_, sqnorms_;
};

void pq_train(const float* x, size_t n, const PQShape& shape, int niter, uint64_t seed,
              size_t max_points_per_centroid, int n_threads, float* codebooks);
void pq_encode(const float* x, size_t n, const PQCodebooks& pq, int n_threads, uint8_t* codes);
void pq_decode(const uint8_t* codes, size_t n, const PQCodebooks& pq, int n_threads, float* x);
void pq_distance_tables(const float* x, size_t nq, const PQCodebooks& pq, Metric metric, int n_threads,
                        float* tables);
// ADC search over every code of `lists` (IndexPQ keeps one list); I holds ids.
// Exact top-k of the float ADC keys (see scan.h), over the ids the selector allows (nullptr:
// all). Throws std::invalid_argument unless the lists hold blocked codes of pq's code_size.
void pq_search(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists, size_t k,
               Metric metric, int n_threads, float* D, int64_t* I, const IDSelector* selector = nullptr);

// Range search over the same keys: every allowed code whose key is below radius_key, per
// query sorted by (key, id). Throws ResultLimitExceeded past max_results results.
RangeResults pq_range_search(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists,
                             double radius_key, Metric metric, int n_threads, size_t max_results,
                             const IDSelector* selector = nullptr);

}  // namespace pqkit
