#include "search/kmeans.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "search/flat.h"

namespace pqkit {
namespace {

// The first `count` entries of a seeded random permutation of [0, n).
std::vector<size_t> random_subset(size_t n, size_t count, uint64_t seed) {
    std::vector<size_t> perm(n);
    std::iota(perm.begin(), perm.end(), size_t(0));
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < count; ++i) {
        std::uniform_int_distribution<size_t> pick(i, n - 1);
        std::swap(perm[i], perm[pick(rng)]);
    }
    perm.resize(count);
    return perm;
}

// Empty-cluster repair: an empty cluster takes over half of a large cluster,
// chosen with probability proportional to (size - 1); both centroids are
// moved apart by a tiny symmetric perturbation so the next assignment splits
// the points between them.
void repair_empty_clusters(float* centroids, size_t k, size_t d, std::vector<size_t>& counts,
                           std::mt19937_64& rng) {
    constexpr float kEps = 1.0f / 1024.0f;
    for (size_t ci = 0; ci < k; ++ci) {
        if (counts[ci] != 0) continue;
        size_t total = 0;
        for (size_t c = 0; c < k; ++c) total += counts[c] > 1 ? counts[c] - 1 : 0;
        if (total == 0) return;  // every cluster has at most one point: nothing to split
        std::uniform_int_distribution<size_t> pick(0, total - 1);
        size_t r = pick(rng), cj = 0;
        for (;; ++cj) {
            size_t w = counts[cj] > 1 ? counts[cj] - 1 : 0;
            if (r < w) break;
            r -= w;
        }
        float* a = centroids + ci * d;
        float* b = centroids + cj * d;
        std::memcpy(a, b, d * sizeof(float));
        for (size_t j = 0; j < d; ++j) {
            if (j % 2 == 0) {
                a[j] *= 1.0f + kEps;
                b[j] *= 1.0f - kEps;
            } else {
                a[j] *= 1.0f - kEps;
                b[j] *= 1.0f + kEps;
            }
        }
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
    }
}

}  // namespace

double kmeans_train(const float* x, size_t n, size_t d, const KMeansParams& p, float* centroids) {
    const size_t k = p.k;
    if (k == 0) throw std::invalid_argument("k-means needs k >= 1");
    if (n < k) {
        throw std::invalid_argument("k-means needs at least as many training points as centroids: expected n >= " +
                                    std::to_string(k) + ", got n = " + std::to_string(n));
    }
    // Subsample (seeded) when there are more points than needed.
    std::vector<float> sample;
    const size_t cap = p.max_points_per_centroid == 0 ? n : std::min(n, k * p.max_points_per_centroid);
    if (cap < n) {
        std::vector<size_t> rows = random_subset(n, cap, p.seed);
        std::sort(rows.begin(), rows.end());
        sample.resize(cap * d);
        for (size_t i = 0; i < cap; ++i) std::memcpy(&sample[i * d], x + rows[i] * d, d * sizeof(float));
        x = sample.data();
        n = cap;
    }

    // Initialisation: k distinct training points.
    std::vector<size_t> init = random_subset(n, k, p.seed + 1);
    for (size_t c = 0; c < k; ++c) std::memcpy(centroids + c * d, x + init[c] * d, d * sizeof(float));

    std::mt19937_64 rng(p.seed + 2);
    std::vector<int64_t> labels(n);
    std::vector<float> dist(n);
    std::vector<double> sums(k * d);
    std::vector<size_t> counts(k);
    double objective = 0.0;
    const int niter = std::max(p.niter, 1);
    for (int it = 0; it < niter; ++it) {
        NearestCentroid nc(centroids, k, d, Metric::L2);
        nc.assign(x, n, p.n_threads, labels.data(), dist.data());
        objective = 0.0;
        for (size_t i = 0; i < n; ++i) objective += dist[i];

        // Sequential update in double: deterministic for any thread count.
        std::fill(sums.begin(), sums.end(), 0.0);
        std::fill(counts.begin(), counts.end(), size_t(0));
        for (size_t i = 0; i < n; ++i) {
            size_t c = static_cast<size_t>(labels[i]);
            counts[c]++;
            const float* xi = x + i * d;
            double* s = &sums[c * d];
            for (size_t j = 0; j < d; ++j) s[j] += xi[j];
        }
        for (size_t c = 0; c < k; ++c) {
            if (counts[c] == 0) continue;
            for (size_t j = 0; j < d; ++j)
                centroids[c * d + j] = static_cast<float>(sums[c * d + j] / static_cast<double>(counts[c]));
        }
        repair_empty_clusters(centroids, k, d, counts, rng);
    }
    return objective;
}

}  // namespace pqkit
