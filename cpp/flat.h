// Exact search and nearest-centroid assignment (the building block of k-means,
// PQ encoding and IVF coarse assignment).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pqkit {

enum class Metric { L2, IP };

// Search keys are "smaller is better": squared L2 through norms, as in a GEMM
// formulation, or the negated inner product (kernels().keys_and_minima).

// A set of reference vectors (centroids or a database block) prepared once for
// repeated blocked distance computations.
class VectorSet {
public:
    // norms: the rows' squared norms (kernels().sqnorms) if the caller keeps them,
    // else nullptr and they are computed here (L2 only).
    VectorSet(const float* data, size_t n, size_t d, Metric metric, const float* norms = nullptr);
    const float* data() const { return data_; }
    size_t size() const { return n_; }
    size_t dim() const { return d_; }
    Metric metric() const { return metric_; }
    const float* norms() const { return external_norms_ ? external_norms_ : own_norms_.data(); }

private:
    const float* data_;
    size_t n_, d_;
    Metric metric_;
    std::vector<float> own_norms_;              // squared norms for L2, when computed here
    const float* external_norms_ = nullptr;     // or the caller's (copies stay valid either way)
};

// Serial: top-k of the rows of `refs` for nq queries. D and I are nq x k,
// best first, padded with (+inf or -inf, -1). I holds row numbers.
void search_block(const VectorSet& refs, const float* x, size_t nq, size_t k, float* D, int64_t* I);

// Parallel exact search (I = row numbers of y).
// norms: y's squared norms as kernels().sqnorms computes them, or nullptr.
void flat_search(const float* x, size_t nq, const float* y, size_t ny, size_t d, size_t k,
                 Metric metric, int n_threads, float* D, int64_t* I, const float* norms = nullptr);

// Nearest centroid for each row of x: labels[i] and its distance (squared L2,
// or the inner product for IP). Serial and parallel versions. For d <= 32 the
// L2 distances are computed directly on transposed centroids, otherwise
// through norms and dot-product tiles.
class NearestCentroid {
public:
    NearestCentroid(const float* centroids, size_t nc, size_t d, Metric metric);
    void assign_serial(const float* x, size_t n, int64_t* labels, float* dist) const;
    void assign(const float* x, size_t n, int n_threads, int64_t* labels, float* dist) const;

private:
    VectorSet refs_;
    bool direct_;
    std::vector<float> transposed_;  // d x nc, for the direct path
};

}  // namespace pqkit
