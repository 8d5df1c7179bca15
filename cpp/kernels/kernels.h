// Kernel table: the hot loops, one implementation per SIMD level.
//
// Kernels take raw pointers and counts, never Python types. Each level lives
// in its own translation unit compiled with its own flags (kernels_scalar.cpp,
// kernels_avx2.cpp, kernels_avx512.cpp). The scalar file is the reference; the
// portable bodies are kernels_generic.h.
//
// A new kernel: a member of Kernels below (with its contract), its reference
// body in kernels_generic.h, and one line `t.name = ...;` in each level's
// make_table(), with a SIMD body where one pays. Members are assigned by name;
// check_kernel_tables() (run when the module loads) fails for a member a level
// left unset.
//
// Fixed summation order (what makes the levels bit-identical):
//  * Long dot products and squared distances over d use 16 lanes: element j is
//    accumulated into lane j % 16 (multiply, round, add, round: no FMA), then
//    the lanes are reduced by the tree (l + l+8), (l + l+4), (l + l+2), (l + l+1).
//  * Per-centroid subspace distances and ADC sums run sequentially over the
//    dimension / subquantizer index, one accumulator per centroid / code.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/simd.h"

namespace pqkit {

// Which codes of a quantized-table scan are worth an exact look (see scan.h).
// With bias == nullptr a code passes when est <= max_est; otherwise when
// float(est) * inv_scale + bias[i] <= limit (multiply, round, add, round).
// When est_out is set, the scan also writes every code's estimate there
// (est_out[i] for code i, whole blocks: 64 * ceil(n / 64) values).
//
// The prefetch window (speed only; the defaults prefetch nothing): bytes
// [0, ahead_bytes) from the call's `blocks` are the rest of the run being
// scanned, and the caller scans `next` (next_bytes) after it.
struct ScanFilter {
    uint16_t max_est;
    const float* bias;  // one per code, indexed like the codes of the call
    float inv_scale;
    float limit;
    uint16_t* est_out = nullptr;
    size_t ahead_bytes = 0;
    const uint8_t* next = nullptr;
    size_t next_bytes = 0;
};

// How far ahead of the column it reads a SIMD scan prefetches. One prefetch
// per 64-byte column keeps the lines arriving at the rate they are used, and
// following the window into the next run (the next probed list) avoids a cold
// start at each list; prefetching a whole block or list at once, by contrast,
// stalled the scan's own loads. Measured in README.md (Speed) and
// bench/results/micro.md.
constexpr size_t kScanAhead = 4096;

// The SIMD scans' prefetch for the column at byte `offset` of the call.
inline void scan_prefetch(const uint8_t* blocks, size_t offset, const ScanFilter& f) {
    const size_t a = offset + kScanAhead;
    if (a < f.ahead_bytes)
        __builtin_prefetch(blocks + a, 0, 3);
    else if (a - f.ahead_bytes < f.next_bytes)
        __builtin_prefetch(f.next + (a - f.ahead_bytes), 0, 3);
}

// Bytes per table row of a 4-bit quantized table: its 16 entries, four times.
// The SIMD scans load a row as it is (a 64- or 32-byte vector holding the
// table in every 128-bit lane) instead of broadcasting 16 bytes at each use,
// which costs a shuffle per use on some CPUs.
constexpr size_t kLut4Row = 64;

// Sets of keys_and_minima: set l holds keys l, l + kKeySets, ...
constexpr size_t kKeySets = 32;
// The most values kth_smallest takes.
constexpr size_t kSelectMax = 128;
// The most values sort_order takes.
constexpr size_t kSortMax = 256;

struct Kernels {
    // out[i * ldo + j] = <x_i, y_j> for i < nx, j < ny; rows have d floats.
    void (*dot_tile)(const float* x, size_t nx, const float* y, size_t ny, size_t d,
                     float* out, size_t ldo);
    // The exact search's fast pass: out[i * ldo + j] approximates <x_i, y_j>
    // in any summation order, with FMA where the level has it, so it may differ
    // from dot_tile's value by rounding, but never by more than
    // gamma_d * sum_l |x_il y_jl| from the true inner product (gamma_d =
    // d u / (1 - d u), u = 2^-24), the bound of any float dot product of
    // length d. Only flat.cpp reads it, to select the rows whose exact key
    // (dot_tile) can reach the top k; nothing it computes is returned. The
    // scalar level's is dot_tile itself.
    void (*dot_tile_fast)(const float* x, size_t nx, const float* y, size_t ny, size_t d,
                          float* out, size_t ldo);
    // dot_tile_fast over rows kept in half precision (VectorSet::keep_half), for a few
    // queries (nx <= 3: an IVF index's single-query probing, where reading the centroids is
    // the cost): out[i * ldo + j] approximates <x_i, h_j>, h_j the floats row j's halves
    // denote exactly (half.h), under the same bound as dot_tile_fast. Only flat.cpp reads
    // it, under a bound that also covers the rows' rounding to halves.
    void (*dot_half)(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out,
                     size_t ldo);
    // out[i] = ||x_i||^2 (same 16-lane order as dot_tile).
    void (*sqnorms)(const float* x, size_t n, size_t d, float* out);
    // out[j] = ||x - y_j||^2 computed directly (16-lane order).
    void (*l2sqr_ny)(const float* x, const float* y, size_t ny, size_t d, float* out);
    // The IVF-Flat list scan's fast pass (one query against a run of list rows), in any
    // summation order, with FMA where the level has it, so within the rounding bound of
    // any float sum of d products: out[j] approximates ||x - y_j||^2 from the same
    // differences fl(x_l - y_jl) l2sqr_ny forms; dots[j] approximates <x, y_j> and
    // sqnorms[j] ||y_j||^2. Only ivf.cpp reads them, to skip the rows whose exact key
    // (l2sqr_ny, dot_tile) cannot enter the result. The scalar level's are exact.
    void (*l2sqr_ny_fast)(const float* x, const float* y, size_t ny, size_t d, float* out);
    void (*dot_ny_fast)(const float* x, const float* y, size_t ny, size_t d, float* dots, float* sqnorms);
    // Centroids stored transposed, ct[j * ksub + c] (j < dsub, c < ksub), for
    // nq queries q_i = q + i * ldq: out[i * ldo + c] = sum_j (q_ij - ct[j, c])^2,
    // sequential over j. Batching queries lets each codebook row loaded feed
    // several queries; every entry keeps the reference's order of operations.
    void (*l2_to_centroids_t)(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub,
                              size_t ksub, float* out, size_t ldo);
    // out[i * ldo + c] = sum_j q_ij * ct[j, c], sequential over j.
    void (*ip_to_centroids_t)(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub,
                              size_t ksub, float* out, size_t ldo);
    // The first index of the smallest of n >= 1 floats, as the scalar loop
    // "if (v[i] < v[best]) best = i" finds it (NaN included).
    size_t (*argmin)(const float* v, size_t n);
    // For each row r of t (rows x n, n >= 1): lo[r] = min_i t[r][i], hi[r] = max_i t[r][i].
    // One call per table: the rows are short (16 or 256 entries).
    void (*min_max_rows)(const float* t, size_t rows, size_t n, float* lo, float* hi);
    // out[r][i] = (uint8) trunc(min((t[r][i] - offsets[r]) * scale, qmax)), for
    // values >= 0 (t[r][i] >= offsets[r], scale > 0, qmax <= 255); rows x n.
    void (*quantize_rows)(const float* t, size_t rows, size_t n, const float* offsets, float scale, float qmax,
                          uint8_t* out);
    // Quantized-table scans over the blocked layout (codes.h): for each code
    // i < n, est_i = sum_m lut[m][code_m(i)] in exact 16-bit integer
    // arithmetic (the caller bounds the table so the sum fits), then bit i % 64
    // of masks[i / 64] is set when the code passes the filter. 8-bit codes:
    // lut is M x 256 bytes plus 64 bytes of padding. 4-bit codes: lut is
    // 2 * ceil(M / 2) rows of kLut4Row bytes, each row one sub-quantizer's 16
    // entries repeated four times (an odd M gets a zero table last).
    void (*scan_lut8)(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut,
                      const ScanFilter& filter, uint64_t* masks);
    void (*scan_lut4)(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut,
                      const ScanFilter& filter, uint64_t* masks);
    // Exact search's selection, one query's block of n inner products at a
    // time. Each becomes its key in place: for L2 (y_norms given)
    // ||x - y_j||^2 = (x_norm + y_norms[j]) - 2 ip, clamped at 0 because
    // rounding can make it slightly negative for near-equal vectors (NaN stays
    // NaN); else -ip. mins[l] is the smallest key j with j % kKeySets == l
    // (NaN never counts, +inf for none), for KeyBound's small-k bound.
    void (*keys_and_minima)(float* keys, size_t n, float x_norm, const float* y_norms, float* mins);
    // The k-th smallest of v[0..n), 1 <= k <= n <= kSelectMax, no NaN.
    float (*kth_smallest)(const float* v, size_t n, size_t k);
    // Writes the indices j < n with keys[j] <= th to out in increasing order
    // (out has room for n + 16); returns how many.
    size_t (*indices_at_most)(const float* keys, size_t n, float th, uint32_t* out);
    // order[r] = the index of the value of rank r among v[0..n) in the order (v[i], i):
    // 0 <= n <= kSortMax, no NaN (+inf allowed). One order exists, so every level agrees.
    void (*sort_order)(const float* v, size_t n, uint32_t* order);
    // Memory-read floor for the micro-benchmark: sums n bytes (any order).
    uint64_t (*read_bytes)(const uint8_t* data, size_t n);
    // 8-bit scalar-quantizer decode: out[t] = vmin[t] + (float)code[t] * step[t]
    // for t < d, a product then a sum (never fused): exact, so equal at every level.
    void (*decode_sq8)(const uint8_t* code, const float* vmin, const float* step, size_t d, float* out);
};

const Kernels& kernels();                  // the active level's table
const Kernels& kernels_for(SimdLevel level);

// Throws std::logic_error naming the level and the member's position in
// Kernels when a compiled level's table leaves a member unset (null).
void check_kernel_tables();

// Each level's table, built at compile time by its file's make_table(): reading
// one runs no code of that file, so every compiled level can be checked on any CPU.
namespace scalar { extern const Kernels table; }
#if PQKIT_HAVE_X86_SIMD
namespace avx2 { extern const Kernels table; }
namespace avx512 { extern const Kernels table; }
// The fast passes with FMA (dot_tile_fast, l2sqr_ny_fast, dot_ny_fast), each in its own translation unit
// with -mfma: kernels_fast_avx2.cpp, kernels_fast_avx512.cpp.
namespace avx2_fma {
void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo);  // needs F16C
void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo);
void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out);
void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* dots, float* sqnorms);
}
namespace avx512_fma {
void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo);
void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo);
void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out);
void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* dots, float* sqnorms);
}
#endif

}  // namespace pqkit
