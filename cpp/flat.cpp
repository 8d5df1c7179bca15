#include "flat.h"

#include <algorithm>
#include <limits>

#include "kernels.h"
#include "parallel.h"
#include "topk.h"

namespace pqkit {
namespace {
constexpr size_t kQueryBlock = 16;
constexpr size_t kRefBlock = 1024;
// Below this k, pushing the keys under the heap's threshold straight into the
// heap (about k ln(n / k) pushes of log k each) is cheaper than selecting the
// block's k-th key first.
constexpr size_t kSelectMinK = 32;
// Below this dimension nearest-centroid L2 is computed directly on transposed
// centroids: vertical sums, no horizontal reduction per (row, centroid) pair,
// which dominates dot products of a few 16-lane chunks (PQ sub-vectors).
constexpr size_t kDirectMaxDim = 33;
}  // namespace

VectorSet::VectorSet(const float* data, size_t n, size_t d, Metric metric, const float* norms)
    : data_(data), n_(n), d_(d), metric_(metric), external_norms_(metric == Metric::L2 ? norms : nullptr) {
    if (metric == Metric::L2 && external_norms_ == nullptr) {
        own_norms_.resize(n);
        kernels().sqnorms(data, n, d, own_norms_.data());
    }
}

void search_block(const VectorSet& refs, const float* x, size_t nq, size_t k, float* D, int64_t* I) {
    const Kernels& K = kernels();
    const size_t d = refs.dim();
    const bool l2 = refs.metric() == Metric::L2;
    std::vector<float> buf(kQueryBlock * kRefBlock);
    std::vector<float> xnorms(kQueryBlock);
    std::vector<TopK> heaps(k == 1 ? 0 : kQueryBlock, TopK(k));
    std::vector<float> kth;     // keys of one query and ref block, for the k-th smallest
    std::vector<float> sample;  // every 8th of those keys, for a cut below which the k-th lies
    float best_key[kQueryBlock];
    int64_t best_row[kQueryBlock];
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const size_t nb = std::min(kQueryBlock, nq - q0);
        const float* xb = x + q0 * d;
        if (l2) K.sqnorms(xb, nb, d, xnorms.data());
        for (size_t q = 0; q < heaps.size() && q < nb; ++q) heaps[q].clear();
        std::fill(best_key, best_key + kQueryBlock, std::numeric_limits<float>::infinity());
        std::fill(best_row, best_row + kQueryBlock, int64_t(-1));
        for (size_t r0 = 0; r0 < refs.size(); r0 += kRefBlock) {
            const size_t rb = std::min(kRefBlock, refs.size() - r0);
            K.dot_tile(xb, nb, refs.data() + r0 * d, rb, d, buf.data(), rb);
            if (k == 1) {
                // Nearest only (k-means and PQ assignment): a running minimum. The
                // first of equal keys wins, the smallest row, as in TopK's order.
                for (size_t q = 0; q < nb; ++q) {
                    const float* ips = buf.data() + q * rb;
                    float best = best_key[q];
                    int64_t arg = best_row[q];
                    for (size_t j = 0; j < rb; ++j) {
                        const float key = l2 ? l2_key(xnorms[q], refs.norms()[r0 + j], ips[j]) : -ips[j];
                        if (arg < 0 ? key <= best : key < best) {  // TopK's test: the first needs key <= +inf
                            best = key;
                            arg = static_cast<int64_t>(r0 + j);
                        }
                    }
                    best_key[q] = best;
                    best_row[q] = arg;
                }
                continue;
            }
            for (size_t q = 0; q < nb; ++q) {
                float* keys = buf.data() + q * rb;  // the products become keys in place
                TopK& heap = heaps[q];
                float th = heap.threshold();
                for (size_t j = 0; j < rb; ++j) keys[j] = l2 ? l2_key(xnorms[q], refs.norms()[r0 + j], keys[j]) : -keys[j];
                if (rb > 4 * k && k >= kSelectMinK) {
                    // Nothing above this block's k-th smallest key can be in the top-k (k keys of
                    // the block are at least as good), so only about k entries reach the heap
                    // instead of ~k ln(rb / k) in random order. NaN keys never enter, as in push.
                    // The k-th smallest is found among the keys below a cut taken from every 8th
                    // key (about 8 * (k / 8 + 4) keys pass it); when fewer than k pass, among
                    // all keys. Either way it is the exact k-th smallest, so only speed depends
                    // on the cut.
                    float cut = th;
                    if (rb >= 32 * k) {
                        const size_t rank = k / 8 + 4;
                        sample.clear();
                        for (size_t j = 0; j < rb; j += 8)
                            if (keys[j] <= th) sample.push_back(keys[j]);
                        if (sample.size() > rank) {
                            std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(rank),
                                             sample.end());
                            cut = sample[rank];
                        }
                    }
                    kth.clear();
                    for (size_t j = 0; j < rb; ++j)
                        if (keys[j] <= cut) kth.push_back(keys[j]);
                    if (kth.size() < k && cut < th) {  // the cut was too tight
                        kth.clear();
                        for (size_t j = 0; j < rb; ++j)
                            if (keys[j] <= th) kth.push_back(keys[j]);
                    }
                    if (kth.size() >= k) {
                        std::nth_element(kth.begin(), kth.begin() + static_cast<std::ptrdiff_t>(k - 1), kth.end());
                        th = std::min(th, kth[k - 1]);
                    }
                }
                for (size_t j = 0; j < rb; ++j) {
                    if (keys[j] <= th) {
                        heap.push(keys[j], static_cast<int64_t>(r0 + j));
                        th = std::min(th, heap.threshold());
                    }
                }
            }
        }
        if (k == 1) {
            for (size_t q = 0; q < nb; ++q) {  // as TopK::write: NaN-free keys, padding when nothing was found
                const bool found = best_row[q] >= 0;
                D[q0 + q] = !found ? (l2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity())
                                   : (l2 ? best_key[q] : -best_key[q]);
                I[q0 + q] = best_row[q];
            }
            continue;
        }
        for (size_t q = 0; q < nb; ++q) heaps[q].write(D + (q0 + q) * k, I + (q0 + q) * k, !l2);
    }
}

void flat_search(const float* x, size_t nq, const float* y, size_t ny, size_t d, size_t k,
                 Metric metric, int n_threads, float* D, int64_t* I, const float* norms) {
    VectorSet refs(y, ny, d, metric, norms);
    parallel_for(nq, n_threads, kQueryBlock, [&](size_t begin, size_t end, int) {
        search_block(refs, x + begin * d, end - begin, k, D + begin * k, I + begin * k);
    });
}

NearestCentroid::NearestCentroid(const float* centroids, size_t nc, size_t d, Metric metric)
    : refs_(centroids, nc, d, metric), direct_(metric == Metric::L2 && d < kDirectMaxDim) {
    if (direct_) {
        transposed_.resize(d * nc);
        for (size_t c = 0; c < nc; ++c)
            for (size_t j = 0; j < d; ++j) transposed_[j * nc + c] = centroids[c * d + j];
    }
}

void NearestCentroid::assign_serial(const float* x, size_t n, int64_t* labels, float* dist) const {
    const Kernels& K = kernels();
    const size_t d = refs_.dim(), nc = refs_.size();
    if (direct_) {
        constexpr size_t kBatch = 8;
        std::vector<float> buf(kBatch * nc);
        for (size_t i0 = 0; i0 < n; i0 += kBatch) {
            const size_t nb = std::min(kBatch, n - i0);
            K.l2_to_centroids_t(x + i0 * d, nb, d, transposed_.data(), d, nc, buf.data(), nc);
            for (size_t i = 0; i < nb; ++i) {
                const float* row = buf.data() + i * nc;
                const size_t best = K.argmin(row, nc);
                labels[i0 + i] = static_cast<int64_t>(best);
                dist[i0 + i] = row[best];
            }
        }
        return;
    }
    search_block(refs_, x, n, 1, dist, labels);
}

void NearestCentroid::assign(const float* x, size_t n, int n_threads, int64_t* labels,
                             float* dist) const {
    const size_t d = refs_.dim();
    parallel_for(n, n_threads, 256, [&](size_t begin, size_t end, int) {
        assign_serial(x + begin * d, end - begin, labels + begin, dist + begin);
    });
}

}  // namespace pqkit
