// Inverted-file indexes: a coarse quantizer (nlist centroids) partitions the
// database; each list stores the codes and int64 ids of its vectors
// (invlists.h), and a search scans only the nprobe lists nearest to the query.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/range.h"
#include "search/flat.h"
#include "search/invlists.h"
#include "search/pq.h"
#include "search/selector.h"

namespace pqkit {

// Coarse centroids (copied) with their norms, prepared once per index; for
// d <= 256 also transposed, so probing sums each inner product sequentially
// over the dimension (VectorSet::keep_transposed).
class CoarseQuantizer {
public:
    CoarseQuantizer(const float* centroids, size_t nlist, size_t d, Metric metric);
    CoarseQuantizer(const CoarseQuantizer&) = delete;
    CoarseQuantizer& operator=(const CoarseQuantizer&) = delete;
    const VectorSet& vectors() const { return vectors_; }
    size_t nlist() const { return vectors_.size(); }
    size_t dim() const { return vectors_.dim(); }
    const float* centroid(size_t l) const { return data_.data() + l * dim(); }

private:
    std::vector<float> data_;
    VectorSet vectors_;  // views data_
};

// Test hook: the centroid bytes (nlist * d * 4) from which a CoarseQuantizer built afterwards
// keeps a half-precision copy for single queries (VectorSet::keep_half); returns the previous value.
size_t set_half_centroid_bytes(size_t bytes);

struct IVFSearchParams {
    size_t nprobe = 1;
    size_t k = 1;
    Metric metric = Metric::L2;
    int n_threads = 1;
    bool estimates = false;  // IVF-PQ: rank by the quantized table's estimates (see scan_codes)
    // Top-k only: while a query has fewer than k results after its nprobe lists, the next
    // nearest lists are scanned too, one at a time, up to max_probe lists in all (0: none).
    size_t max_probe = 0;
    // Only ids the selector allows are scanned (nullptr: all).
    const IDSelector* selector = nullptr;
};

// Raw float vectors in the lists (Rows layout, code_size = 4 * d).
void ivfflat_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const InvertedLists& lists,
                    const IVFSearchParams& p, float* D, int64_t* I);

// Range search: every allowed vector of the nprobe probed lists whose key (as in the top-k
// search) is below radius_key; p.k and p.max_probe are not used. Throws ResultLimitExceeded
// past max_results results.
RangeResults ivfflat_range_search(const float* x, size_t nq, const CoarseQuantizer& coarse,
                                  const InvertedLists& lists, const IVFSearchParams& p, double radius_key,
                                  size_t max_results);

// bias[i] = ||r_i||^2 + 2 <y_l, r_i> for codes (rows) of residuals r_i in list
// list_nos[i], summed over sub-quantizers (see ivf.cpp). L2 only. Throws
// std::invalid_argument when pq and coarse differ in d or a list number is out of range.
void ivfpq_code_bias(const uint8_t* codes, size_t n, const int64_t* list_nos, const CoarseQuantizer& coarse,
                     const PQCodebooks& pq, int n_threads, float* bias);

// PQ codes of residuals x - y_l (Blocked layout; with bias for L2). Exact
// top-k of the float keys (see ivf.cpp for the key and scan.h for the scan).
// Throws std::invalid_argument when pq and coarse differ in d or the lists do
// not match them.
void ivfpq_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                  const InvertedLists& lists, const IVFSearchParams& p, float* D, int64_t* I);

// Range search over the same keys (see ivfflat_range_search); exact keys only.
RangeResults ivfpq_range_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                                const InvertedLists& lists, const IVFSearchParams& p, double radius_key,
                                size_t max_results);

}  // namespace pqkit
