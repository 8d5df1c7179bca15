// Bounds on the k-th smallest key of a block, so that a block's keys can be
// pushed into a TopK only when they can be among its k best: about k pushes
// instead of ~k ln(n / k) for keys in random order, each of which may shift or
// sift the kept entries. Keys above the bound have k better keys in the block
// alone, so the heap ends the same whichever bound is used: only speed depends
// on it. NaN keys never count (no comparison with them holds).
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <vector>

#include "kernels/kernels.h"

namespace pqkit {

class KeyBound {
public:
    // Sets for the small-k bound: set l holds keys l, l + kStrideSets, ...
    static constexpr size_t kStrideSets = kKeySets;

    // A bound b <= th such that every key of keys[0..n) that is <= th and
    // among the k smallest is <= b (th itself when nothing tighter is found).
    //  * Small k (2k <= kStrideSets), n >= 2 kStrideSets: the k-th smallest of
    //    the sets' minima.
    //    k distinct keys are at most it, so the k-th smallest is too. Lane-wise
    //    minima and a dispatched select of 32 values: few data-dependent
    //    branches; a few more than k keys are at most it.
    //  * Larger k, n > 4k: the exact k-th smallest of the keys <= th, selected
    //    among the keys below a cut taken from every 8th key (about
    //    8 (k / 8 + 4) keys pass it); among all keys <= th when fewer than k do.
    float bound(const float* keys, size_t n, size_t k, float th) {
        if (k == 0 || n <= k) return th;
        if (small_k(k)) {
            if (n < 2 * kStrideSets) return th;
            float mins[kStrideSets];
            set_minima(keys, n, mins);
            return bound_from_minima(mins, n, k, th);
        }
        if (n <= 4 * k) return th;
        const float cut = sampled_cut(keys, n, k, th);
        size_t kept = keep_at_most(keys, n, cut);
        if (kept < k && cut < th) kept = keep_at_most(keys, n, th);  // the cut was too tight
        if (kept < k) return th;
        return std::min(th, select(kept_.data(), kept, k));
    }

    // The indices j (increasing, into out, which has room for n + 16) of the keys at
    // most a cut that at least min(k, number of keys) keys are at most: a superset of
    // the k smallest keys with about k + 32 members (the cut: rank k / 8 + 4 of every
    // 8th key), or every key <= +inf (+inf keys too) when no cut is taken or the cut
    // was too tight. Returns how many.
    size_t candidates(const float* keys, size_t n, size_t k, uint32_t* out) {
        constexpr float inf = std::numeric_limits<float>::infinity();
        const Kernels& K = kernels();
        if (k > 0 && n > 4 * k) {
            const float cut = sampled_cut(keys, n, k, inf);
            if (cut < inf) {
                const size_t c = K.indices_at_most(keys, n, cut, out);
                if (c >= k) return c;
            }
        }
        return K.indices_at_most(keys, n, inf, out);
    }

    // Whether bound() takes the small-k bound for k (2k <= kStrideSets).
    static bool small_k(size_t k) { return 2 * k <= kStrideSets; }

    // bound()'s small-k bound from the sets' minima of n keys (mins[l]: the smallest key j with
    // j % kStrideSets == l, as set_minima or the kernel keys_and_minima computes them), for a
    // caller that has them already: no pass over the keys.
    static float bound_from_minima(const float* mins, size_t n, size_t k, float th) {
        if (k == 0 || n <= k || n < 2 * kStrideSets) return th;
        return std::min(th, kernels().kth_smallest(mins, kStrideSets, k));
    }

private:
    // A cut about k + 32 keys are at most: rank k / 8 + 4 among every 8th finite key <= th,
    // or th when there are too few keys for such a sample (fewer than 16 (rank + 1)) or too
    // few sampled. It may be below the k-th key: callers check and widen.
    float sampled_cut(const float* keys, size_t n, size_t k, float th) {
        const size_t rank = k / 8 + 4;
        if (16 * (rank + 1) > n) return th;
        sample_.clear();
        for (size_t j = 0; j < n; j += 8)
            if (keys[j] <= th && keys[j] < std::numeric_limits<float>::infinity()) sample_.push_back(keys[j]);
        return sample_.size() > rank ? select(sample_.data(), sample_.size(), rank + 1) : th;
    }

    // The k-th smallest of v[0..n) (no NaN; v may be reordered): the
    // dispatched select for up to kSelectMax values (on AVX-512 by ranks,
    // without data-dependent branches), nth_element beyond.
    static float select(float* v, size_t n, size_t k) {
        if (n <= kSelectMax) return kernels().kth_smallest(v, n, k);
        std::nth_element(v, v + (k - 1), v + n);
        return v[k - 1];
    }

    // The smallest key of each set (NaN keys never count; +inf for a set without
    // a number). Lane-wise, so it vectorises without reordering anything.
    static void set_minima(const float* keys, size_t n, float* mins) {
        for (size_t l = 0; l < kStrideSets; ++l) mins[l] = std::numeric_limits<float>::infinity();
        size_t j = 0;
        for (; j + kStrideSets <= n; j += kStrideSets)
            for (size_t l = 0; l < kStrideSets; ++l) mins[l] = keys[j + l] < mins[l] ? keys[j + l] : mins[l];
        for (size_t l = 0; j + l < n; ++l) mins[l] = keys[j + l] < mins[l] ? keys[j + l] : mins[l];
    }

    // Copies the keys <= limit to the front of kept_ without a branch per key;
    // returns how many.
    size_t keep_at_most(const float* keys, size_t n, float limit) {
        kept_.resize(n);
        size_t c = 0;
        for (size_t j = 0; j < n; ++j) {
            kept_[c] = keys[j];
            c += keys[j] <= limit ? 1 : 0;
        }
        return c;
    }

    std::vector<float> sample_, kept_;
};

}  // namespace pqkit
