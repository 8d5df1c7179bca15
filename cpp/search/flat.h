// Exact search and nearest-centroid assignment (the building block of k-means,
// PQ encoding and IVF coarse assignment).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/metric.h"
#include "common/range.h"

namespace pqkit {

class IDSelector;

// Search keys are "smaller is better": squared L2 through norms, as in a GEMM
// formulation, or the negated inner product (kernels().keys_and_minima).

// A set of reference vectors (centroids or a database block) prepared once for
// repeated blocked distance computations.
class VectorSet {
public:
    // norms: the rows' squared norms (kernels().sqnorms) if the caller keeps them,
    // else nullptr and they are computed here (L2 only). For IP they serve only the
    // fast pass's error bound (bound_norms), sparing keep_bound_norms' pass per call.
    VectorSet(const float* data, size_t n, size_t d, Metric metric, const float* norms = nullptr);
    const float* data() const { return data_; }
    size_t size() const { return n_; }
    size_t dim() const { return d_; }
    Metric metric() const { return metric_; }
    const float* norms() const { return external_norms_ ? external_norms_ : own_norms_.data(); }
    // The rows' squared norms for the fast pass's error bound (flat.cpp): norms() for L2;
    // for IP the caller's or those keep_bound_norms() computed, else nullptr (no fast pass then).
    const float* bound_norms() const {
        if (metric_ == Metric::L2) return norms();
        if (external_bound_norms_ != nullptr) return external_bound_norms_;
        return ip_norms_.empty() ? nullptr : ip_norms_.data();
    }
    // For IP: computes the rows' squared norms (kernels().sqnorms) so that search_block may
    // take the fast pass. A no-op for L2, which keeps them anyway.
    void keep_bound_norms(int n_threads = 1);

    // For a set searched many times (a coarse quantizer) with d <= 256: keeps
    // a transposed copy of the rows, in groups of 64 rows, so that
    // search_block sums each inner product sequentially over the dimension
    // (kernel ip_to_centroids_t, as NearestCentroid does) instead of in
    // dot-product tiles, whose per-pair lane reduction costs about as much as
    // the products at such d. It changes how inner products round, the same
    // way at every SIMD level.
    void keep_transposed();
    // The groups (rows r0 .. r0 + len, r0 a multiple of 64, as d rows of len, at
    // offset r0 * d), or nullptr.
    const float* transposed() const { return transposed_.empty() ? nullptr : transposed_.data(); }

    // For a set searched one query at a time whose rows outgrow the caches (an IVF index's
    // centroids, probed for a single query): keeps the rows in half precision (half.h),
    // scaled by a power of two so that the largest entry fits, with each row's distance to
    // its half copy. search_block's fast pass for 1 to 3 queries then reads those halves
    // (kernel dot_half: half the bytes) under a bound widened by that distance; results stay
    // the exact path's. A no-op for an empty set, a non-finite entry, or a scale so extreme
    // that the bound's terms would leave the float range.
    void keep_half();
    // The half rows (n x d), or nullptr; entry * half_unscale() (a power of two) is the
    // float the half copy stands for.
    const uint16_t* half() const { return half_.empty() ? nullptr : half_.data(); }
    float half_unscale() const { return half_unscale_; }
    // Per row, an upper bound of the L2 distance between the row and its half copy.
    const float* half_err() const { return half_err_.data(); }

private:
    const float* data_;
    size_t n_, d_;
    Metric metric_;
    std::vector<float> own_norms_;              // squared norms for L2, when computed here
    const float* external_norms_ = nullptr;     // or the caller's (copies stay valid either way)
    std::vector<float> transposed_;             // keep_transposed()'s groups
    const float* external_bound_norms_ = nullptr;  // the caller's, IP only
    std::vector<float> ip_norms_;               // keep_bound_norms()'s, IP only
    std::vector<uint16_t> half_;                // keep_half()'s rows
    std::vector<float> half_err_;               // and their distances
    float half_unscale_ = 1.0f;
};

// Serial: top-k of the rows of `refs` for nq queries. With 4 queries or more, at a
// SIMD level whose dot_tile_fast differs from its dot_tile, and bound_norms() set, a
// fast pass (FMA) ranks the rows and only those whose exact key can still reach the
// top k are recomputed exactly (flat.cpp, "The fast pass and its bound"): the result
// is the exact path's, bit for bit. D and I are nq x k,
// best first, padded with (+inf or -inf, -1). I holds row numbers.
// masks: nullptr, or for each query a row mask (bit r % 64 of masks[q][r / 64]: row r
// allowed); a disallowed row never enters the query's top-k.
// min_fast_queries: the fewest queries for which the fast pass runs (from 4 queries it packs
// the rows once per call, which a small batch of queries cannot repay when the exact path's
// tiles already run well, e.g. the IVF coarse search's chunks of 8 queries over transposed
// centroids; up to 3, on rows of 64 dimensions or more, it runs FMA dot products without packing).
void search_block(const VectorSet& refs, const float* x, size_t nq, size_t k, float* D, int64_t* I,
                  const uint64_t* const* masks = nullptr, size_t min_fast_queries = 1);

// Parallel exact search (I = row numbers of y).
// norms: y's squared norms as kernels().sqnorms computes them, or nullptr.
// selector: nullptr, or the rows each query may return (a selector over row numbers; see
// selector.h). A query with few allowed rows computes only their keys, one by one, with the
// same kernels (dot_tile and the keys_and_minima formula), so its keys equal the blocked ones.
void flat_search(const float* x, size_t nq, const float* y, size_t ny, size_t d, size_t k,
                 Metric metric, int n_threads, float* D, int64_t* I, const float* norms = nullptr,
                 const IDSelector* selector = nullptr);

// Parallel exact range search: every allowed row whose key (as flat_search computes it) is
// below radius_key, per query sorted by (key, row); ids are row numbers. Throws
// ResultLimitExceeded past max_results results.
RangeResults flat_range_search(const float* x, size_t nq, const float* y, size_t ny, size_t d, double radius_key,
                               Metric metric, int n_threads, size_t max_results, const float* norms = nullptr,
                               const IDSelector* selector = nullptr);

// out[i] = ||x_i||^2 for the n rows of x (n x d), in parallel, exactly as the
// exact search computes them (kernel sqnorms), so a caller can keep them as
// flat_search's norms.
void row_sqnorms(const float* x, size_t n, size_t d, int n_threads, float* out);

// Nearest centroid for each row of x: labels[i] and its distance (squared L2,
// or the inner product for IP). Serial and parallel versions. L2 runs on
// transposed centroids: for d <= 32 the distances are computed directly
// (kernel l2_to_centroids_t); for 33 <= d <= 256 through norms and inner
// products summed sequentially over the dimension (ip_to_centroids_t), so no
// per-pair lane reduction is paid. Larger d, and IP, go through norms and
// dot-product tiles (search_block).
class NearestCentroid {
public:
    NearestCentroid(const float* centroids, size_t nc, size_t d, Metric metric);
    void assign_serial(const float* x, size_t n, int64_t* labels, float* dist) const;
    void assign(const float* x, size_t n, int n_threads, int64_t* labels, float* dist) const;

private:
    void assign_ip_direct(const float* x, size_t n, int64_t* labels, float* dist) const;

    VectorSet refs_;
    bool direct_;     // d <= 32: direct squared L2
    bool ip_direct_;  // 33 <= d <= 256: norms and sequential inner products
    size_t chunk_ = 0;               // centroids per transposed chunk (all of them for direct_)
    std::vector<float> transposed_;  // the centroids in transposed groups of 64
};

// NearestCentroid over nc centroids (nc x d), prepared and run once: labels[i]
// and dist[i] for each of the n rows of x (n x d).
void coarse_assign(const float* x, size_t n, const float* centroids, size_t nc, size_t d, Metric metric,
                   int n_threads, int64_t* labels, float* dist);

}  // namespace pqkit
