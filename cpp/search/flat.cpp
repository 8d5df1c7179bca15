#include "search/flat.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>

#include "common/half.h"
#include "common/parallel.h"
#include "common/select.h"
#include "common/topk.h"
#include "kernels/kernels.h"
#include "search/selector.h"

namespace pqkit {
namespace {
constexpr size_t kQueryBlock = 16;
constexpr size_t kRefBlock = 1024;
// Reference rows per block are also capped so a block stays in L2 (about this
// many bytes) while the block's query rows pass over it several times.
constexpr size_t kRefBlockBytes = size_t(1) << 19;
// From this k on a block's k-th key is selected exactly before its keys reach
// the heap; below it, and above KeyBound's small-k bound, pushing the keys under
// the heap's threshold straight into the heap is cheaper (select.h).
constexpr size_t kSelectMinK = 32;
// Below this dimension nearest-centroid L2 is computed directly on transposed
// centroids: vertical sums, no horizontal reduction per (row, centroid) pair,
// which dominates dot products of a few 16-lane chunks (PQ sub-vectors).
constexpr size_t kDirectMaxDim = 33;
// Up to this dimension nearest-centroid L2 goes through norms and inner
// products summed sequentially over the dimension on transposed centroids
// (chunks of about kChunkBytes, so each stays in L2 while a block of rows
// passes over it). Beyond it the dot-product tiles' lane reduction is a small
// part of each pair's cost.
constexpr size_t kIpDirectMaxDim = 256;
// keep_half's power-of-two scale stays within 2^-kHalfMaxShift .. 2^kHalfMaxShift, so the
// bound's absolute terms (ErrorBound::half_extra) stay far inside the float range.
constexpr int kHalfMaxShift = 100;
// The fast pass reads a set's half copy for at most this many queries (kernel dot_half).
constexpr size_t kHalfMaxQueries = 3;
constexpr size_t kChunkBytes = size_t(1) << 18;
constexpr size_t kIpDirectRows = 16;

// Rows are kept transposed in groups of this many (transpose_in_groups): a group's d
// rows of 64 floats are contiguous, so the sequential sums over j read one stream. A
// whole block transposed at once made rows of the block's length (1,024 floats = 4 KiB
// at d = 50), whose d lines per group all fall in the same L1 sets.
constexpr size_t kTransposedGroup = 64;

// Reference rows per block of search_block (and of VectorSet's transposed blocks).
// A multiple of 32, dot_tile_fast's panels of rows, and of kTransposedGroup where the
// rows are kept transposed (d <= kIpDirectMaxDim).
size_t ref_block_rows(size_t d) {
    const size_t unit = d <= kIpDirectMaxDim ? kTransposedGroup : 32;
    return std::max<size_t>(64, std::min(kRefBlock, kRefBlockBytes / (sizeof(float) * std::max<size_t>(d, 1))) / unit * unit);
}

// The n rows of d floats in groups of kTransposedGroup rows, each transposed: group k
// holds rows [k * G, k * G + len) as d rows of len, at offset k * G * d.
void transpose_in_groups(const float* rows, size_t n, size_t d, std::vector<float>& out) {
    out.resize(n * d);
    for (size_t r0 = 0; r0 < n; r0 += kTransposedGroup) {
        const size_t len = std::min(kTransposedGroup, n - r0);
        float* ct = out.data() + r0 * d;
        for (size_t r = 0; r < len; ++r)
            for (size_t j = 0; j < d; ++j) ct[j * len + r] = rows[(r0 + r) * d + j];
    }
}

using CentroidsT = void (*)(const float*, size_t, size_t, const float*, size_t, size_t, float*, size_t);

// fn (ip_ or l2_to_centroids_t) of nb queries (xb, nb x d) with rows [r0, r0 + n) of a
// set transposed in groups (r0 a multiple of kTransposedGroup): out[q * ldo + r - r0].
void to_transposed(CentroidsT fn, const float* xb, size_t nb, size_t d, const float* transposed, size_t r0,
                   size_t n, float* out, size_t ldo) {
    for (size_t g = 0; g < n; g += kTransposedGroup)
        fn(xb, nb, d, transposed + (r0 + g) * d, d, std::min(kTransposedGroup, n - g), out + g, ldo);
}

// Index of the first smallest non-NaN key, or n when all are NaN.
size_t first_min(const float* keys, size_t n) {
    size_t arg = n;
    for (size_t j = 0; j < n; ++j)
        if (keys[j] == keys[j] && (arg == n || keys[j] < keys[arg])) arg = j;
    return arg;
}

// Folds a block of keys (rows offset .. offset + n) into a running nearest:
// the first of equal keys wins, the smallest row, as in TopK's order; NaN keys
// never win (best_row stays -1 while only NaN keys were seen).
void update_nearest(const Kernels& K, const float* keys, size_t n, size_t offset, float& best_key,
                    int64_t& best_row) {
    size_t j = K.argmin(keys, n);
    if (keys[j] != keys[j]) j = first_min(keys, n);  // keys[0] is NaN
    if (j == n) return;                                // all NaN
    if (best_row < 0 ? keys[j] <= best_key : keys[j] < best_key) {
        best_key = keys[j];
        best_row = static_cast<int64_t>(offset + j);
    }
}

// A query whose allowed rows number fewer than 1 / kSparseRows of the rows computes the keys
// of those rows alone instead of blocks of every row.
constexpr size_t kSparseRows = 8;

inline bool row_allowed(const uint64_t* mask, size_t r) { return (mask[r / 64] >> (r % 64)) & 1; }

// Whether any row of [r0, r1) is allowed.
bool any_allowed(const uint64_t* mask, size_t r0, size_t r1) {
    for (size_t w = r0 / 64; w * 64 < r1; ++w) {
        uint64_t bits = mask[w];
        if (w * 64 < r0) bits &= ~uint64_t(0) << (r0 - w * 64);
        if ((w + 1) * 64 > r1) bits &= ~uint64_t(0) >> ((w + 1) * 64 - r1);
        if (bits) return true;
    }
    return false;
}

// Row r's key for the query xq (norm xnorm) exactly as search_block computes it: the inner
// product from dot_tile (the same 16-lane sum in any tile), then keys_and_minima's formula.
inline float row_key(const Kernels& K, const VectorSet& refs, const float* xq, float xnorm, size_t r) {
    float ip;
    K.dot_tile(xq, 1, refs.data() + r * refs.dim(), 1, refs.dim(), &ip, 1);
    if (refs.metric() != Metric::L2) return -ip;
    const float key = xnorm + refs.norms()[r] - 2.0f * ip;
    return key < 0.0f ? 0.0f : key;
}

// Pushes the keys of a query's allowed rows (a sparse mask) into a sink.
template <class Sink>
void push_allowed_rows(const VectorSet& refs, const float* xq, const uint64_t* mask, Sink& sink) {
    const Kernels& K = kernels();
    float xnorm = 0.0f;
    if (refs.metric() == Metric::L2) K.sqnorms(xq, 1, refs.dim(), &xnorm);
    for (size_t w = 0; w * 64 < refs.size(); ++w) {
        for (uint64_t bits = mask[w]; bits != 0; bits &= bits - 1) {
            const size_t r = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
            const float key = row_key(K, refs, xq, xnorm, r);
            if (key <= sink.threshold()) sink.push(key, static_cast<int64_t>(r));
        }
    }
}

// The row masks of a selector for one search call: shared by every query, or made per
// chunk of queries (selector.h's allowed_rows).
class RowMasks {
public:
    RowMasks(const IDSelector& selector, size_t n_rows)
        : selector_(selector), n_rows_(n_rows), words_((n_rows + 63) / 64) {
        if (selector.n_sets() == 0) {
            shared_.resize(words_ + 1);
            shared_count_ = allowed_rows(selector.for_query(0), n_rows, shared_.data());
        }
    }
    // Fills masks[i] and counts[i] for queries first .. first + n, using own as storage.
    void for_queries(size_t first, size_t n, std::vector<uint64_t>& own, const uint64_t** masks,
                     size_t* counts) const {
        if (selector_.n_sets() == 0) {
            for (size_t i = 0; i < n; ++i) {
                masks[i] = shared_.data();
                counts[i] = shared_count_;
            }
            return;
        }
        own.resize(n * (words_ + 1));
        for (size_t i = 0; i < n; ++i) {
            counts[i] = allowed_rows(selector_.for_query(first + i), n_rows_, own.data() + i * (words_ + 1));
            masks[i] = own.data() + i * (words_ + 1);
        }
    }
    bool sparse(size_t count) const { return count * kSparseRows < n_rows_; }

private:
    const IDSelector& selector_;
    size_t n_rows_, words_;
    std::vector<uint64_t> shared_;
    size_t shared_count_ = 0;
};

// Serial range search over the rows of refs: every allowed key <= tau into sinks[q].
void range_block_fast(const VectorSet& refs, const float* x, size_t nq, float tau, const uint64_t* const* masks,
                      RangeSink* sinks);
bool takes_fast_pass(const VectorSet& refs, size_t nq, size_t k);

void range_block(const VectorSet& refs, const float* x, size_t nq, float tau, const uint64_t* const* masks,
                 RangeSink* sinks) {
    if (takes_fast_pass(refs, nq, 1)) {
        range_block_fast(refs, x, nq, tau, masks, sinks);
        return;
    }
    const Kernels& K = kernels();
    const size_t d = refs.dim();
    const bool l2 = refs.metric() == Metric::L2;
    const size_t ref_block = ref_block_rows(d);
    const size_t q_rows = std::min(kQueryBlock, nq);
    std::unique_ptr<float[]> buf(new float[q_rows * std::min(ref_block, refs.size())]);
    std::unique_ptr<uint32_t[]> rows(new uint32_t[std::min(ref_block, refs.size()) + 16]);
    float xnorms[kQueryBlock];
    float mins[kKeySets];
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const size_t nb = std::min(kQueryBlock, nq - q0);
        const float* xb = x + q0 * d;
        if (l2) K.sqnorms(xb, nb, d, xnorms);
        for (size_t r0 = 0; r0 < refs.size(); r0 += ref_block) {
            check_interrupt();  // a block of many queries can run for seconds
            const size_t rb = std::min(ref_block, refs.size() - r0);
            if (masks != nullptr) {
                bool any = false;
                for (size_t q = 0; q < nb && !any; ++q) any = any_allowed(masks[q0 + q], r0, r0 + rb);
                if (!any) continue;
            }
            if (refs.transposed())
                to_transposed(K.ip_to_centroids_t, xb, nb, d, refs.transposed(), r0, rb, buf.get(), rb);
            else
                K.dot_tile(xb, nb, refs.data() + r0 * d, rb, d, buf.get(), rb);
            const float* ref_norms = l2 ? refs.norms() + r0 : nullptr;
            for (size_t q = 0; q < nb; ++q) {
                float* keys = buf.get() + q * rb;
                K.keys_and_minima(keys, rb, l2 ? xnorms[q] : 0.0f, ref_norms, mins);
                const size_t n_pass = K.indices_at_most(keys, rb, tau, rows.get());
                for (size_t i = 0; i < n_pass; ++i) {
                    const size_t j = rows[i];
                    if (keys[j] <= tau && (masks == nullptr || row_allowed(masks[q0 + q], r0 + j)))
                        sinks[q0 + q].push(keys[j], static_cast<int64_t>(r0 + j));
                }
            }
        }
    }
}


// ---- The fast pass and its bound
//
// Exact search ranks rows by keys from dot_tile's fixed 16-lane order with separate
// multiply and add, which runs at half the FMA peak. With a block of queries the
// rows are first ranked by dot_tile_fast (FMA, any order), and only the rows whose
// exact key can still enter the top k (or fall within the radius) get it computed,
// by the exact path's own formula (exact_key). The top k is built from exact keys
// alone, so results equal the exact path's at every SIMD level and thread count.
//
// The bound. u = 2^-24, gamma = d u / (1 - d u). Any float dot product of length d,
// in any summation order, with or without FMA, satisfies
//     |fl(x.y) - x.y| <= gamma sum_i |x_i y_i| + d eta <= gamma ||x|| ||y|| + d eta,
// where eta = 2^-150 bounds the absolute error of a product that underflows
// (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 3.1). The
// fast and the exact inner products both do, so
//     |ip_fast - ip_exact| <= 2 gamma ||x|| ||y|| + 2 d eta.
// The norms are those sqnorms computed (nx = fl(||x||^2), same lemma):
//     ||x||^2 <= (nx + d eta) / (1 - gamma) =: nx' / (1 - gamma),
// hence ||x|| ||y|| <= sqrt(nx' ny') / (1 - gamma) <= (nx' + ny') / (2 (1 - gamma)).
//  * IP, key = -ip (exact negation):
//     E_ip = 2 gamma / (1 - gamma) sqrt(nx' ny') + 2 d eta.
//  * L2, key = fl(A - 2 ip) with A = fl(nx + ny) common to both (2 ip is exact):
//     |key_fast - key_exact| <= 2 |ip_fast - ip_exact| + u (|A - 2 ip_fast| + |A - 2 ip_exact|),
//    and |A - 2 ip| <= (1 + u)(nx + ny) + 2 (1 + gamma) ||x|| ||y||
//                   <= (nx' + ny') (1 + u + (1 + gamma) / (1 - gamma)), so
//     E_l2 = (nx' + ny') (2 gamma / (1 - gamma) + 2 u (1 + u + (1 + gamma) / (1 - gamma))) + 4 d eta.
//    The clamp at 0 changes no difference by more than it was.
// Per block of rows the bound takes the block's largest row norm (ny' <= max). It
// is evaluated in double and rounded up, with a relative margin of 2^-20 for the
// double arithmetic. It needs d u < 1/2 and norms far from overflow (sum < 2^120);
// a block that fails either (or meets a non-finite norm) is computed exactly.
//
// Use: k rows of a block have fast keys <= b (b: an upper bound of the block's k-th
// smallest fast key, KeyBound), so k rows have exact keys <= b + E and the k-th best
// exact key is at most min(heap threshold, b + E). A row whose fast key exceeds that
// plus E has an exact key strictly above it and is skipped; every other row gets
// its exact key, which enters the heap under TopK's order, as on the exact path.
struct ErrorBound {
    double c_ip = 0, c_l2 = 0, tiny = 0, abs_ip = 0, gamma = 0;
    bool usable = false;

    explicit ErrorBound(size_t d) {
        const double u = std::ldexp(1.0, -24), eta = std::ldexp(1.0, -150), dd = static_cast<double>(d);
        if (d == 0 || dd * u >= 0.5) return;
        gamma = dd * u / (1.0 - dd * u);
        const double margin = 1.0 + std::ldexp(1.0, -20);
        c_ip = margin * 2.0 * gamma / (1.0 - gamma);
        c_l2 = margin * (2.0 * gamma / (1.0 - gamma) + 2.0 * u * (1.0 + u + (1.0 + gamma) / (1.0 - gamma)));
        tiny = dd * eta;
        abs_ip = margin * 2.0 * dd * eta;
        usable = true;
    }
    // Rows kept in half precision (VectorSet::keep_half) for the fast keys: with h_r the
    // floats a row's halves stand for (row r's half copy, unscaled by the power of two s) and
    // delta >= ||y_r - h_r|| for every row of the block, the fast inner product
    // fl(x.(s h_r)) / s is within gamma ||x|| ||h_r|| + d eta / s + 2^-150 of <x, h_r>, and
    // <x, h_r> within ||x|| delta of <x, y_r>. So the bound above, taken with the rows'
    // squared norms raised to (||y|| + delta)^2 (which covers ||h_r||), plus this term
    // bounds the keys' difference: ||x|| delta and the absolute terms, twice for L2 (its key
    // holds 2 ip), each with a quarter more for the rounding of the key's subtraction.
    double half_extra(bool l2, float xn, double delta, double unscale) const {
        const double nx = static_cast<double>(xn) + tiny;
        if (!usable || !(nx < std::ldexp(1.0, 120))) return std::numeric_limits<double>::infinity();
        const double x_norm = std::sqrt(nx / (1.0 - gamma));
        const double term = x_norm * delta + tiny * (1.0 + unscale) + std::ldexp(1.0, -148);
        return (l2 ? 2.5 : 1.25) * (1.0 + std::ldexp(1.0, -20)) * term;
    }
    // The bound for a query of squared norm xn against rows of squared norms <= yn_max;
    // +inf when it does not hold (see above).
    double operator()(bool l2, float xn, float yn_max) const {
        const double nx = static_cast<double>(xn) + tiny, ny = static_cast<double>(yn_max) + tiny;
        if (!usable || !(nx + ny < std::ldexp(1.0, 120))) return std::numeric_limits<double>::infinity();
        return l2 ? c_l2 * (nx + ny) + 2.0 * abs_ip : c_ip * std::sqrt(nx * ny) + abs_ip;
    }
};

// The smallest float >= v (v finite or +inf).
inline float round_up(double v) {
    float f = static_cast<float>(v);
    if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    return f;
}

// Queries per call from which the fast pass pays: from one when the rows are long enough
// (dot_tile_fast runs up to 3 queries as FMA dot products, reading the rows in order: the
// exact path's 4-row interleaved reads are what it saves), else from 4, where it packs.
constexpr size_t kFastMinQueries = 4;
constexpr size_t kFastFewQueriesMinDim = 64;
// Queries per call from which an inner-product search computes the rows' norms for the
// bound when the caller did not give them: a pass over the rows, which only a batch repays.
constexpr size_t kBoundNormsMinQueries = 4;
// Queries per block of the fast pass: dot_tile_fast packs each block of rows once
// per call, so a call's packing is shared by this many queries.
constexpr size_t kFastQueryBlock = 1024;

bool fast_pass_available(const Kernels& K) { return K.dot_tile_fast != K.dot_tile; }

bool takes_fast_pass(const VectorSet& refs, size_t nq, size_t k) {
    const size_t min_queries = refs.dim() >= kFastFewQueriesMinDim ? 1 : kFastMinQueries;
    return nq >= min_queries && k > 0 && refs.size() > 0 && refs.bound_norms() != nullptr &&
           fast_pass_available(kernels()) && ErrorBound(refs.dim()).usable;
}

// Row r's exact key for the query xq, as the exact path computes it: from dot_tile (the
// same 16-lane sum in any tile), or, for a set kept transposed, the sequential sum
// ip_to_centroids_t computes (product, round, add, round, over j in order); then
// keys_and_minima's formula.
inline float exact_key(const Kernels& K, const VectorSet& refs, const float* xq, float xnorm, size_t r) {
    const size_t d = refs.dim();
    const float* y = refs.data() + r * d;
    float ip;
    if (refs.transposed()) {
        ip = 0.0f;
        for (size_t j = 0; j < d; ++j) {
            const float p = xq[j] * y[j];
            ip = ip + p;
        }
    } else {
        K.dot_tile(xq, 1, y, 1, d, &ip, 1);
    }
    if (refs.metric() != Metric::L2) return -ip;
    const float key = xnorm + refs.norms()[r] - 2.0f * ip;
    return key < 0.0f ? 0.0f : key;
}

// The largest of v[0..n) (values >= 0; 0 for none) in `largest`; whether all are <= FLT_MAX
// (no +inf, no NaN). Eight running maxima, so the loop is not one chain of dependent steps.
bool largest_finite(const float* v, size_t n, float& largest) {
    float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    bool finite = true;
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (size_t l = 0; l < 8; ++l) {
            finite &= v[j + l] <= FLT_MAX;
            m[l] = v[j + l] > m[l] ? v[j + l] : m[l];
        }
    for (; j < n; ++j) {
        finite &= v[j] <= FLT_MAX;
        m[0] = v[j] > m[0] ? v[j] : m[0];
    }
    largest = std::max(std::max(std::max(m[0], m[1]), std::max(m[2], m[3])),
                       std::max(std::max(m[4], m[5]), std::max(m[6], m[7])));
    return finite;
}

// One block of rows (r0 .. r0 + rb) for nb queries: buf (nb x rb) gets the keys from
// the fast pass and err[q] the bound on |fast key - exact key| (0 when the block had
// to be computed exactly, see ErrorBound). xnorms: the queries' squared norms.
// minima: nullptr, or per query kKeySets floats that get the sets' minima of its keys
// (keys_and_minima's), for KeyBound's small-k bound.
void fast_block_keys(const Kernels& K, const VectorSet& refs, const ErrorBound& bound, const float* xb,
                     size_t nb, const float* xnorms, size_t r0, size_t rb, float* buf, double* err,
                     float* minima = nullptr) {
    const size_t d = refs.dim();
    const bool l2 = refs.metric() == Metric::L2;
    float yn_max = 0.0f;
    bool finite = largest_finite(refs.bound_norms() + r0, rb, yn_max);
    // A few queries read the half copy where the set keeps one (ErrorBound::half_extra).
    const bool half = refs.half() != nullptr && nb <= kHalfMaxQueries;
    double delta = 0.0;
    if (half && finite) {
        float delta_max = 0.0f;
        largest_finite(refs.half_err() + r0, rb, delta_max);  // finite: keep_half checked
        delta = static_cast<double>(delta_max);
        const double raised = std::sqrt(static_cast<double>(yn_max)) + delta;
        const double raised_sq = raised * raised * (1.0 + std::ldexp(1.0, -18));
        finite = raised_sq <= static_cast<double>(FLT_MAX);  // else the float conversion would overflow
        if (finite) yn_max = round_up(raised_sq);
    }
    bool exact = !finite;
    for (size_t q = 0; q < nb; ++q) {
        err[q] = bound(l2, xnorms[q], yn_max);
        if (half) err[q] += bound.half_extra(l2, xnorms[q], delta, refs.half_unscale());
        exact = exact || !(err[q] < std::numeric_limits<double>::infinity());
    }
    if (exact) {
        std::fill(err, err + nb, 0.0);
        if (refs.transposed())
            to_transposed(K.ip_to_centroids_t, xb, nb, d, refs.transposed(), r0, rb, buf, rb);
        else
            K.dot_tile(xb, nb, refs.data() + r0 * d, rb, d, buf, rb);
    } else if (half) {
        K.dot_half(xb, nb, refs.half() + r0 * d, rb, d, buf, rb);
        const float unscale = refs.half_unscale();
        if (unscale != 1.0f)
            for (size_t i = 0; i < nb * rb; ++i) buf[i] *= unscale;
    } else {
        K.dot_tile_fast(xb, nb, refs.data() + r0 * d, rb, d, buf, rb);
    }
    float mins[kKeySets];
    for (size_t q = 0; q < nb; ++q)
        K.keys_and_minima(buf + q * rb, rb, l2 ? xnorms[q] : 0.0f, l2 ? refs.norms() + r0 : nullptr,
                          minima != nullptr ? minima + q * kKeySets : mins);
}

// Reference rows per block of the fast pass for blocks of nb queries: as the exact
// path (a set kept transposed is laid out in those blocks), or fewer, so the block's
// nb x rows fast keys stay in L2 (about kRefBlockBytes) while the selection reads them.
size_t fast_ref_block_rows(const VectorSet& refs, size_t nb) {
    const size_t rows = ref_block_rows(refs.dim());
    if (refs.transposed()) return rows;
    return std::min(rows, std::max<size_t>(64, kRefBlockBytes / (sizeof(float) * std::max<size_t>(nb, 1)) / 32 * 32));
}

// search_block's fast pass (same contract).
void search_block_fast(const VectorSet& refs, const float* x, size_t nq, size_t k, float* D, int64_t* I,
                       const uint64_t* const* masks) {
    const Kernels& K = kernels();
    const size_t d = refs.dim();
    const bool l2 = refs.metric() == Metric::L2;
    const ErrorBound bound(d);
    const size_t ref_block = fast_ref_block_rows(refs, std::min(kFastQueryBlock, nq));
    const size_t q_rows = std::min(kFastQueryBlock, nq);
    std::unique_ptr<float[]> buf(new float[q_rows * std::min(ref_block, refs.size())]);
    std::unique_ptr<uint32_t[]> rows(new uint32_t[std::min(ref_block, refs.size()) + 16]);
    float xnorms[kFastQueryBlock];
    double err[kFastQueryBlock];
    std::vector<TopK> heaps(q_rows, TopK(k));
    std::vector<float> minima(q_rows * kKeySets);  // per query, its block's sets' minima
    KeyBound key_bound;
    const float inf = std::numeric_limits<float>::infinity();
    for (size_t q0 = 0; q0 < nq; q0 += kFastQueryBlock) {
        const size_t nb = std::min(kFastQueryBlock, nq - q0);
        const float* xb = x + q0 * d;
        K.sqnorms(xb, nb, d, xnorms);
        for (size_t q = 0; q < nb; ++q) heaps[q].clear();
        for (size_t r0 = 0; r0 < refs.size(); r0 += ref_block) {
            check_interrupt();  // a block of many queries can run for seconds
            const size_t rb = std::min(ref_block, refs.size() - r0);
            if (masks != nullptr) {
                bool any = false;
                for (size_t q = 0; q < nb && !any; ++q) any = any_allowed(masks[q0 + q], r0, r0 + rb);
                if (!any) continue;
            }
            fast_block_keys(K, refs, bound, xb, nb, xnorms, r0, rb, buf.get(), err, minima.data());
            for (size_t q = 0; q < nb; ++q) {
                float* keys = buf.get() + q * rb;
                const uint64_t* mask = masks != nullptr ? masks[q0 + q] : nullptr;
                if (mask != nullptr)  // disallowed rows never count in the bound nor pass
                    for (size_t j = 0; j < rb; ++j)
                        if (!row_allowed(mask, r0 + j)) keys[j] = inf;
                TopK& heap = heaps[q];
                const double e = err[q];
                // The block's own k-th key bounds the first blocks; once the heap holds k
                // keys its threshold is nearly always lower, and the bound's cost is saved.
                // Small k without a mask: KeyBound's small-k bound from the sets' minima
                // keys_and_minima already took (a mask changes the keys after them).
                float kth = inf;
                if (heap.threshold() == inf)
                    kth = mask == nullptr && KeyBound::small_k(k)
                              ? KeyBound::bound_from_minima(minima.data() + q * kKeySets, rb, k, inf)
                              : key_bound.bound(keys, rb, k, inf);
                float limit = round_up(std::min(static_cast<double>(heap.threshold()) + e,
                                                static_cast<double>(kth) + 2.0 * e));
                const size_t n_pass = K.indices_at_most(keys, rb, limit, rows.get());
                const float* xq = xb + q * d;
                for (size_t i = 0; i < n_pass; ++i) {
                    const size_t j = rows[i];
                    if (!(keys[j] <= limit) || (mask != nullptr && !row_allowed(mask, r0 + j))) continue;
                    const float key = e == 0.0 ? keys[j] : exact_key(K, refs, xq, xnorms[q], r0 + j);
                    if (key <= heap.threshold()) {
                        heap.push(key, static_cast<int64_t>(r0 + j));
                        limit = std::min(limit, round_up(static_cast<double>(heap.threshold()) + e));
                    }
                }
            }
        }
        for (size_t q = 0; q < nb; ++q) heaps[q].write(D + (q0 + q) * k, I + (q0 + q) * k, !l2);
    }
}

// range_block's fast pass: every allowed row whose exact key is <= tau.
void range_block_fast(const VectorSet& refs, const float* x, size_t nq, float tau, const uint64_t* const* masks,
                      RangeSink* sinks) {
    const Kernels& K = kernels();
    const size_t d = refs.dim();
    const ErrorBound bound(d);
    const size_t ref_block = fast_ref_block_rows(refs, std::min(kFastQueryBlock, nq));
    const size_t q_rows = std::min(kFastQueryBlock, nq);
    std::unique_ptr<float[]> buf(new float[q_rows * std::min(ref_block, refs.size())]);
    std::unique_ptr<uint32_t[]> rows(new uint32_t[std::min(ref_block, refs.size()) + 16]);
    float xnorms[kFastQueryBlock];
    double err[kFastQueryBlock];
    for (size_t q0 = 0; q0 < nq; q0 += kFastQueryBlock) {
        const size_t nb = std::min(kFastQueryBlock, nq - q0);
        const float* xb = x + q0 * d;
        K.sqnorms(xb, nb, d, xnorms);
        for (size_t r0 = 0; r0 < refs.size(); r0 += ref_block) {
            check_interrupt();  // a block of many queries can run for seconds
            const size_t rb = std::min(ref_block, refs.size() - r0);
            if (masks != nullptr) {
                bool any = false;
                for (size_t q = 0; q < nb && !any; ++q) any = any_allowed(masks[q0 + q], r0, r0 + rb);
                if (!any) continue;
            }
            fast_block_keys(K, refs, bound, xb, nb, xnorms, r0, rb, buf.get(), err);
            for (size_t q = 0; q < nb; ++q) {
                const float* keys = buf.get() + q * rb;
                const double e = err[q];
                const float limit = round_up(static_cast<double>(tau) + e);
                const size_t n_pass = K.indices_at_most(keys, rb, limit, rows.get());
                for (size_t i = 0; i < n_pass; ++i) {
                    const size_t j = rows[i];
                    if (!(keys[j] <= limit) || (masks != nullptr && !row_allowed(masks[q0 + q], r0 + j))) continue;
                    const float key = e == 0.0 ? keys[j] : exact_key(K, refs, xb + q * d, xnorms[q], r0 + j);
                    if (key <= tau) sinks[q0 + q].push(key, static_cast<int64_t>(r0 + j));
                }
            }
        }
    }
}


// Queries per parallel_for chunk of an unfiltered search: kQueryBlock, or for the
// fast pass up to kFastQueryBlock (its packing is shared by a chunk's queries),
// as long as every thread still gets a chunk.
size_t query_chunk(const VectorSet& refs, size_t nq, size_t k, int n_threads) {
    if (!takes_fast_pass(refs, nq, k)) return kQueryBlock;
    const size_t threads = static_cast<size_t>(std::max(n_threads, 1));
    const size_t per_thread = (nq + threads - 1) / threads;
    const size_t pieces = (per_thread + kFastQueryBlock - 1) / kFastQueryBlock;  // chunks per thread
    const size_t chunk = (per_thread + pieces - 1) / pieces;
    return std::max(kQueryBlock, std::min(kFastQueryBlock, (chunk + kQueryBlock - 1) / kQueryBlock * kQueryBlock));
}

// Fewer queries than threads (one query, say): memory-bound, so each query's rows are
// split into one contiguous part per thread, each part searched on its own (the exact
// path: the same keys row by row) and the parts' top-k merged under TopK's order. The
// top k of a union is the top k of the parts' top k, so the result is the serial one.
// Split only when every thread gets kFlatSplitFactor times the engine's split size
// (4 MiB of rows by default): a few milliseconds of scanning, far above the cost of
// waking a thread even on a busy machine. The rows go in up to kFlatSplitParts parts
// per thread, claimed one at a time, so a thread that starts late (or is
// descheduled) holds back at most one small part while the others take the rest.
constexpr size_t kFlatSplitFactor = 16;
constexpr size_t kFlatSplitParts = 4;

bool split_rows_pays(size_t ny, size_t d, size_t nq, int n_threads) {
    const size_t threads = static_cast<size_t>(std::max(n_threads, 1));
    return threads > 1 && nq < threads && ny >= 2 * threads * 64 &&
           ny * d * sizeof(float) >= kFlatSplitFactor * min_split_bytes_per_thread() * threads;
}

void search_split_rows(const VectorSet& refs, const float* x, size_t nq, size_t k, int n_threads, float* D,
                       int64_t* I) {
    const size_t d = refs.dim(), ny = refs.size();
    const bool l2 = refs.metric() == Metric::L2;
    const size_t threads = static_cast<size_t>(std::max(n_threads, 1));
    // Parts of at least the engine's split size (and 64 rows), up to kFlatSplitParts per thread.
    const size_t part_bytes = std::max<size_t>(min_split_bytes_per_thread(), 64 * d * sizeof(float));
    const size_t parts = std::max(threads, std::min(kFlatSplitParts * threads, ny * d * sizeof(float) / part_bytes));
    const size_t part_rows = (ny + parts - 1) / parts;
    std::vector<float> part_d(parts * k);
    std::vector<int64_t> part_i(parts * k);
    for (size_t q = 0; q < nq; ++q) {
        const float* xq = x + q * d;
        parallel_for(parts, n_threads, 1, [&](size_t begin, size_t end, int) {
            for (size_t part = begin; part < end; ++part) {
                const size_t r0 = std::min(ny, part * part_rows), len = std::min(part_rows, ny - r0);
                // L2: the rows' norms; IP: their bound norms where kept (the part's fast pass)
                const float* norms = l2 ? refs.norms() : refs.bound_norms();
                const VectorSet rows(refs.data() + r0 * d, len, d, refs.metric(),
                                     norms != nullptr ? norms + r0 : nullptr);
                search_block(rows, xq, 1, k, part_d.data() + part * k, part_i.data() + part * k);
                for (size_t i = 0; i < k; ++i)
                    if (part_i[part * k + i] >= 0) part_i[part * k + i] += static_cast<int64_t>(r0);
            }
        });
        TopK heap(k);
        for (size_t i = 0; i < parts * k; ++i)
            if (part_i[i] >= 0) heap.push(l2 ? part_d[i] : -part_d[i], part_i[i]);
        heap.write(D + q * k, I + q * k, !l2);
    }
}

}  // namespace

VectorSet::VectorSet(const float* data, size_t n, size_t d, Metric metric, const float* norms)
    : data_(data), n_(n), d_(d), metric_(metric), external_norms_(metric == Metric::L2 ? norms : nullptr),
      external_bound_norms_(metric == Metric::L2 ? nullptr : norms) {
    if (metric == Metric::L2 && external_norms_ == nullptr) {
        own_norms_.resize(n);
        kernels().sqnorms(data, n, d, own_norms_.data());
    }
}

void VectorSet::keep_bound_norms(int n_threads) {
    if (metric_ == Metric::L2 || external_bound_norms_ != nullptr || !ip_norms_.empty() || n_ == 0) return;
    ip_norms_.resize(n_);
    row_sqnorms(data_, n_, d_, n_threads, ip_norms_.data());
}

void VectorSet::keep_half() {
    if (n_ == 0 || d_ == 0 || !half_.empty()) return;
    float largest = 0.0f;
    for (size_t i = 0; i < n_ * d_; ++i) {
        const float a = std::fabs(data_[i]);
        if (!(a <= FLT_MAX)) return;
        largest = std::max(largest, a);
    }
    // The largest entry scaled into [2^14, 2^15): below the largest half (65504).
    int exponent = 0;
    std::frexp(largest > 0.0f ? largest : 1.0f, &exponent);  // largest < 2^exponent
    const int shift = 15 - exponent;
    if (shift < -kHalfMaxShift || shift > kHalfMaxShift) return;
    const double scale = std::ldexp(1.0, shift), unscale = std::ldexp(1.0, -shift);
    half_.resize(n_ * d_);
    half_err_.resize(n_);
    for (size_t r = 0; r < n_; ++r) {
        double sum = 0.0;
        for (size_t j = 0; j < d_; ++j) {
            const double v = static_cast<double>(data_[r * d_ + j]);
            const uint16_t h = float_to_half(static_cast<float>(v * scale));
            half_[r * d_ + j] = h;
            const double diff = static_cast<double>(half_to_float(h)) * unscale - v;  // exact in double
            sum += diff * diff;
        }
        half_err_[r] = round_up(std::sqrt(sum) * (1.0 + std::ldexp(1.0, -20)));  // the double sum's rounding
    }
    half_unscale_ = static_cast<float>(unscale);
}

void VectorSet::keep_transposed() {
    if (d_ <= kIpDirectMaxDim) transpose_in_groups(data_, n_, d_, transposed_);
}

void search_block(const VectorSet& refs, const float* x, size_t nq, size_t k, float* D, int64_t* I,
                  const uint64_t* const* masks, size_t min_fast_queries) {
    if (nq >= min_fast_queries && takes_fast_pass(refs, nq, k)) {
        search_block_fast(refs, x, nq, k, D, I, masks);
        return;
    }
    const Kernels& K = kernels();
    const size_t d = refs.dim();
    const bool l2 = refs.metric() == Metric::L2;
    const size_t q_rows = std::min(kQueryBlock, nq);
    // Written by dot_tile before any read: no zero fill (this runs once per small chunk of queries).
    const size_t ref_block = ref_block_rows(d);
    std::unique_ptr<float[]> buf(new float[q_rows * std::min(ref_block, refs.size())]);
    std::unique_ptr<uint32_t[]> rows(new uint32_t[std::min(ref_block, refs.size()) + 16]);
    float xnorms[kQueryBlock];
    float mins[kQueryBlock][kKeySets];
    // The nearest-only path of k = 1 keeps no heap; a masked search always does.
    const bool nearest_only = k == 1 && masks == nullptr;
    std::vector<TopK> heaps(nearest_only ? 0 : q_rows, TopK(k));
    KeyBound bound;
    float best_key[kQueryBlock];
    int64_t best_row[kQueryBlock];
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const size_t nb = std::min(kQueryBlock, nq - q0);
        const float* xb = x + q0 * d;
        if (l2) K.sqnorms(xb, nb, d, xnorms);
        for (size_t q = 0; q < heaps.size() && q < nb; ++q) heaps[q].clear();
        std::fill(best_key, best_key + kQueryBlock, std::numeric_limits<float>::infinity());
        std::fill(best_row, best_row + kQueryBlock, int64_t(-1));
        for (size_t r0 = 0; r0 < refs.size(); r0 += ref_block) {
            check_interrupt();  // a block of many queries can run for seconds
            const size_t rb = std::min(ref_block, refs.size() - r0);
            if (masks != nullptr) {  // a block no query of the chunk may return is skipped
                bool any = false;
                for (size_t q = 0; q < nb && !any; ++q) any = any_allowed(masks[q0 + q], r0, r0 + rb);
                if (!any) continue;
            }
            if (refs.transposed())
                to_transposed(K.ip_to_centroids_t, xb, nb, d, refs.transposed(), r0, rb, buf.get(), rb);
            else
                K.dot_tile(xb, nb, refs.data() + r0 * d, rb, d, buf.get(), rb);
            const float* ref_norms = l2 ? refs.norms() + r0 : nullptr;
            for (size_t q = 0; q < nb; ++q)
                K.keys_and_minima(buf.get() + q * rb, rb, l2 ? xnorms[q] : 0.0f, ref_norms, mins[q]);
            if (nearest_only) {
                // Nearest only (k-means and PQ assignment): a running minimum.
                for (size_t q = 0; q < nb; ++q)
                    update_nearest(K, buf.get() + q * rb, rb, r0, best_key[q], best_row[q]);
                continue;
            }
            for (size_t q = 0; q < nb; ++q) {
                float* keys = buf.get() + q * rb;
                TopK& heap = heaps[q];
                float th = heap.threshold();
                if (masks != nullptr) {
                    // Disallowed rows get key +inf: the bound (select.h, from the keys
                    // themselves) then counts allowed rows only, and none of them is pushed.
                    const uint64_t* mask = masks[q0 + q];
                    for (size_t j = 0; j < rb; ++j)
                        if (!row_allowed(mask, r0 + j)) keys[j] = std::numeric_limits<float>::infinity();
                    th = bound.bound(keys, rb, k, th);
                    const size_t n_pass = K.indices_at_most(keys, rb, th, rows.get());
                    for (size_t i = 0; i < n_pass; ++i) {
                        const size_t j = rows[i];
                        if (keys[j] <= th && row_allowed(mask, r0 + j)) {
                            heap.push(keys[j], static_cast<int64_t>(r0 + j));
                            th = std::min(th, heap.threshold());
                        }
                    }
                    continue;
                }
                // Only keys up to a bound on the block's k-th smallest reach the heap
                // (select.h): for small k the k-th smallest of the sets' minima.
                if (KeyBound::small_k(k)) {
                    th = KeyBound::bound_from_minima(mins[q], rb, k, th);
                } else if (k >= kSelectMinK) {
                    th = bound.bound(keys, rb, k, th);
                }
                // The few keys under the bound, found 16 at a time, then pushed in row order.
                const size_t n_pass = K.indices_at_most(keys, rb, th, rows.get());
                for (size_t i = 0; i < n_pass; ++i) {
                    const size_t j = rows[i];
                    if (keys[j] <= th) {
                        heap.push(keys[j], static_cast<int64_t>(r0 + j));
                        th = std::min(th, heap.threshold());
                    }
                }
            }
        }
        if (nearest_only) {
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
                 Metric metric, int n_threads, float* D, int64_t* I, const float* norms,
                 const IDSelector* selector) {
    VectorSet refs(y, ny, d, metric, norms);
    if (nq >= kBoundNormsMinQueries) refs.keep_bound_norms(n_threads);
    if (selector == nullptr) {
        if (split_rows_pays(ny, d, nq, n_threads)) {
            search_split_rows(refs, x, nq, k, n_threads, D, I);
            return;
        }
        parallel_for(nq, n_threads, query_chunk(refs, nq, k, n_threads), [&](size_t begin, size_t end, int) {
            search_block(refs, x + begin * d, end - begin, k, D + begin * k, I + begin * k);
        });
        return;
    }
    selector->check_queries(nq);
    const RowMasks row_masks(*selector, ny);
    // A selector shared by all queries has one mask: chunks as large as unfiltered
    // search's. Per-query sets make a mask per query of the chunk, so small chunks.
    const size_t chunk = selector->n_sets() == 0 ? query_chunk(refs, nq, k, n_threads) : kQueryBlock;
    parallel_for(nq, n_threads, chunk, [&](size_t begin, size_t end, int) {
        const size_t nb = end - begin;
        std::vector<uint64_t> own;
        std::vector<const uint64_t*> mask_rows(nb);
        std::vector<size_t> counts(nb);
        const uint64_t** masks = mask_rows.data();
        row_masks.for_queries(begin, nb, own, masks, counts.data());
        bool all_dense = true;
        for (size_t q = 0; q < nb; ++q) all_dense = all_dense && !row_masks.sparse(counts[q]);
        if (all_dense) {
            search_block(refs, x + begin * d, nb, k, D + begin * k, I + begin * k, masks);
            return;
        }
        for (size_t q = 0; q < nb; ++q) {
            const size_t query = begin + q;
            if (!row_masks.sparse(counts[q])) {
                search_block(refs, x + query * d, 1, k, D + query * k, I + query * k, masks + q);
                continue;
            }
            TopK heap(k);
            push_allowed_rows(refs, x + query * d, masks[q], heap);
            heap.write(D + query * k, I + query * k, metric != Metric::L2);
        }
    });
}

RangeResults flat_range_search(const float* x, size_t nq, const float* y, size_t ny, size_t d, double radius_key,
                               Metric metric, int n_threads, size_t max_results, const float* norms,
                               const IDSelector* selector) {
    VectorSet refs(y, ny, d, metric, norms);
    if (nq >= kBoundNormsMinQueries) refs.keep_bound_norms(n_threads);
    if (selector != nullptr) selector->check_queries(nq);
    const std::unique_ptr<RowMasks> row_masks(selector ? new RowMasks(*selector, ny) : nullptr);
    RangeResults results(nq);
    ResultBudget budget(max_results);
    const float tau = range_threshold(radius_key);
    const size_t chunk = row_masks == nullptr ? query_chunk(refs, nq, 1, n_threads) : kQueryBlock;
    parallel_for(nq, n_threads, chunk, [&](size_t begin, size_t end, int) {
        const size_t nb = end - begin;
        std::vector<RangeSink> sinks(nb, RangeSink(tau, &budget));
        if (row_masks == nullptr) {
            range_block(refs, x + begin * d, nb, tau, nullptr, sinks.data());
        } else {
            std::vector<uint64_t> own;
            const uint64_t* masks[kQueryBlock];
            size_t counts[kQueryBlock];
            row_masks->for_queries(begin, nb, own, masks, counts);
            for (size_t q = 0; q < nb; ++q) {
                if (row_masks->sparse(counts[q]))
                    push_allowed_rows(refs, x + (begin + q) * d, masks[q], sinks[q]);
                else
                    range_block(refs, x + (begin + q) * d, 1, tau, masks + q, sinks.data() + q);
            }
        }
        for (size_t q = 0; q < nb; ++q) {
            sinks[q].finish();
            results.set(begin + q, sinks[q]);
        }
    });
    return results;
}

void row_sqnorms(const float* x, size_t n, size_t d, int n_threads, float* out) {
    parallel_for(n, n_threads, 4096, [&](size_t begin, size_t end, int) {
        kernels().sqnorms(x + begin * d, end - begin, d, out + begin);
    });
}

NearestCentroid::NearestCentroid(const float* centroids, size_t nc, size_t d, Metric metric)
    : refs_(centroids, nc, d, metric),
      direct_(metric == Metric::L2 && d < kDirectMaxDim),
      ip_direct_(metric == Metric::L2 && d >= kDirectMaxDim && d <= kIpDirectMaxDim) {
    refs_.keep_bound_norms();
    if (direct_ || ip_direct_) {
        // Chunks of chunk_ centroids; the direct path has one chunk of all of them.
        chunk_ = direct_ ? std::max<size_t>(nc, 1) : std::max<size_t>(64, kChunkBytes / (sizeof(float) * d) / 64 * 64);
        transpose_in_groups(centroids, nc, d, transposed_);
    }
}

// Keys as search_block makes them (keys_and_minima on norms and an inner
// product), running minimum over the chunks: the first of equal keys wins, NaN
// never does, and a row with only NaN keys gets (+inf, -1), as search_block's
// k = 1 path. Each inner product is a sequential sum whatever the chunking.
void NearestCentroid::assign_ip_direct(const float* x, size_t n, int64_t* labels, float* dist) const {
    const Kernels& K = kernels();
    const size_t d = refs_.dim(), nc = refs_.size();
    std::unique_ptr<float[]> buf(new float[kIpDirectRows * std::min(chunk_, nc)]);
    float xnorms[kIpDirectRows], best_key[kIpDirectRows], mins[kKeySets];
    int64_t best_row[kIpDirectRows];
    for (size_t i0 = 0; i0 < n; i0 += kIpDirectRows) {
        const size_t nb = std::min(kIpDirectRows, n - i0);
        const float* xb = x + i0 * d;
        K.sqnorms(xb, nb, d, xnorms);
        std::fill(best_key, best_key + kIpDirectRows, std::numeric_limits<float>::infinity());
        std::fill(best_row, best_row + kIpDirectRows, int64_t(-1));
        for (size_t c0 = 0; c0 < nc; c0 += chunk_) {
            const size_t len = std::min(chunk_, nc - c0);
            to_transposed(K.ip_to_centroids_t, xb, nb, d, transposed_.data(), c0, len, buf.get(), len);
            for (size_t i = 0; i < nb; ++i) {
                float* keys = buf.get() + i * len;
                K.keys_and_minima(keys, len, xnorms[i], refs_.norms() + c0, mins);
                update_nearest(K, keys, len, c0, best_key[i], best_row[i]);
            }
        }
        for (size_t i = 0; i < nb; ++i) {
            labels[i0 + i] = best_row[i];
            dist[i0 + i] = best_key[i];  // still +inf when only NaN keys were seen
        }
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
            to_transposed(K.l2_to_centroids_t, x + i0 * d, nb, d, transposed_.data(), 0, nc, buf.data(), nc);
            for (size_t i = 0; i < nb; ++i) {
                const float* row = buf.data() + i * nc;
                const size_t best = K.argmin(row, nc);
                labels[i0 + i] = static_cast<int64_t>(best);
                dist[i0 + i] = row[best];
            }
        }
        return;
    }
    if (ip_direct_) {
        assign_ip_direct(x, n, labels, dist);
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

void coarse_assign(const float* x, size_t n, const float* centroids, size_t nc, size_t d, Metric metric,
                   int n_threads, int64_t* labels, float* dist) {
    NearestCentroid(centroids, nc, d, metric).assign(x, n, n_threads, labels, dist);
}

}  // namespace pqkit
