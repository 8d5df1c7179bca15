// Lloyd's k-means (L2), seeded and deterministic for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pqkit {

struct KMeansParams {
    size_t k = 0;
    int niter = 25;
    uint64_t seed = 1234;
    // Train on at most this many points per centroid (random subsample), as FAISS does.
    size_t max_points_per_centroid = 256;
    int n_threads = 1;
};

// Writes k x d centroids; returns the objective (sum of squared distances of
// the training points to their centroid) from the last assignment.
// Throws std::invalid_argument when n < k.
double kmeans_train(const float* x, size_t n, size_t d, const KMeansParams& params, float* centroids);

}  // namespace pqkit
