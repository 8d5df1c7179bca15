// AVX-512 level (F, BW, DQ, VL, VBMI). Same operations, same order as the
// scalar reference: 16 float lanes map one to one onto a zmm register.
#include <immintrin.h>

#include "kernels/kernels.h"
#include "kernels/kernels_generic.h"

namespace pqkit {
namespace avx512 {
namespace {
inline __mmask16 tail_mask(size_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

// The reference tree: (l + l+8), (l + l+4), (l + l+2), (l + l+1).
inline float reduce(__m512 v) {
    __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    __m128 v1 = _mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1));
    return _mm_cvtss_f32(v1);
}

// The reference tree for 16 vectors at once: lane 4a + b of the result is
// reduce(acc[a][b]). Each level adds the same lane pairs as reduce() (l + l+8,
// l + l+4, l + l+2, l + l+1), after shuffles that bring the pairs of several
// accumulators into one vector: 45 instructions instead of 16 x 8.
inline __m512 reduce_4x4(const __m512 (&acc)[4][4]) {
    __m512 v[16];  // v[4b + a] = acc[a][b]: the levels below transpose the order
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) v[4 * b + a] = acc[a][b];
    __m512 l1[8], l2[4], l3[2];
    for (int i = 0; i < 8; ++i)  // lanes 0-7: v[2i]'s l + l+8 sums, lanes 8-15: v[2i+1]'s
        l1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 4; ++i)  // quarter q: v[4i + q]'s l + l+4 sums
        l2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int i = 0; i < 2; ++i)  // quarter q: v[8i + q]'s two l + l+2 sums, then v[8i + 4 + q]'s
        l3[i] = _mm512_add_ps(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // quarter q, lane t: v[4t + q]'s total
    return _mm512_add_ps(_mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

inline __m128 extract_quarter(__m512 v, int q) {
    switch (q) {
        case 0: return _mm512_castps512_ps128(v);
        case 1: return _mm512_extractf32x4_ps(v, 1);
        case 2: return _mm512_extractf32x4_ps(v, 2);
        default: return _mm512_extractf32x4_ps(v, 3);
    }
}

// dot_ny and l2sqr_ny read a group of 4 rows 16 floats of each at a time below this many
// dimensions (short chains, in L1 or one stream either way), row after row from it.
constexpr size_t kInterleaveMaxDim = 64;

inline __m512 load(const float* p, size_t j, size_t d) {
    return j + 16 <= d ? _mm512_loadu_ps(p + j) : _mm512_maskz_loadu_ps(tail_mask(d - j), p + j);
}

float dot(const float* x, const float* y, size_t d) {
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < d; j += 16) acc = _mm512_add_ps(acc, _mm512_mul_ps(load(x, j, d), load(y, j, d)));
    return reduce(acc);
}

// One x-row against 4 y-rows per step: 4 independent add chains instead of one
// (a single chain waits on the add latency at every step).
void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    size_t j = 0;
    for (; j + 4 <= ny; j += 4) {
        const float* y0 = y + j * d;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        if (d < kInterleaveMaxDim) {  // short rows: the 4 chains advance together
            for (size_t c = 0; c < d; c += 16) {
                const __m512 xv = load(x, c, d);
                for (int b = 0; b < 4; ++b) acc[b] = _mm512_add_ps(acc[b], _mm512_mul_ps(xv, load(y0 + b * d, c, d)));
            }
        } else {
            // Row after row (the same sum per row as interleaving them): the rows are read as
            // one stream, which the prefetcher follows; the out-of-order core overlaps the chains.
            for (int b = 0; b < 4; ++b)
                for (size_t c = 0; c < d; c += 16) acc[b] = _mm512_add_ps(acc[b], _mm512_mul_ps(load(x, c, d), load(y0 + b * d, c, d)));
        }
        for (int b = 0; b < 4; ++b) out[j + b] = reduce(acc[b]);
    }
    for (; j < ny; ++j) out[j] = dot(x, y + j * d, d);
}

// 4 x-rows by 4 y-rows per step: 16 independent accumulators, each one the
// same lane-wise sum the reference computes for its (x, y) pair.
void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out,
              size_t ldo) {
    size_t i = 0;
    for (; i + 4 <= nx; i += 4) {
        const float* x0 = x + i * d;
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) {
            const float* y0 = y + j * d;
            __m512 acc[4][4];
            for (int a = 0; a < 4; ++a)
                for (int b = 0; b < 4; ++b) acc[a][b] = _mm512_setzero_ps();
            for (size_t c = 0; c < d; c += 16) {
                __m512 xv[4], yv[4];
                for (int a = 0; a < 4; ++a) xv[a] = load(x0 + a * d, c, d);
                for (int b = 0; b < 4; ++b) yv[b] = load(y0 + b * d, c, d);
                for (int a = 0; a < 4; ++a)
                    for (int b = 0; b < 4; ++b)
                        acc[a][b] = _mm512_add_ps(acc[a][b], _mm512_mul_ps(xv[a], yv[b]));
            }
            const __m512 sums = reduce_4x4(acc);
            for (int a = 0; a < 4; ++a) _mm_storeu_ps(out + (i + a) * ldo + j, extract_quarter(sums, a));
        }
        for (; j < ny; ++j)
            for (int a = 0; a < 4; ++a) out[(i + a) * ldo + j] = dot(x0 + a * d, y + j * d, d);
    }
    for (; i < nx; ++i) dot_ny(x + i * d, y, ny, d, out + i * ldo);
}

void sqnorms(const float* x, size_t n, size_t d, float* out) {
    for (size_t i = 0; i < n; ++i) out[i] = dot(x + i * d, x + i * d, d);
}

void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    size_t r = 0;
    for (; r + 4 <= ny; r += 4) {  // 4 independent chains, as in dot_ny
        const float* y0 = y + r * d;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        if (d < kInterleaveMaxDim) {  // as in dot_ny
            for (size_t j = 0; j < d; j += 16) {
                const __m512 xv = load(x, j, d);
                for (int b = 0; b < 4; ++b) {
                    const __m512 diff = _mm512_sub_ps(xv, load(y0 + b * d, j, d));
                    acc[b] = _mm512_add_ps(acc[b], _mm512_mul_ps(diff, diff));
                }
            }
        } else {
            for (int b = 0; b < 4; ++b)  // row after row, as in dot_ny
                for (size_t j = 0; j < d; j += 16) {
                    const __m512 diff = _mm512_sub_ps(load(x, j, d), load(y0 + b * d, j, d));
                    acc[b] = _mm512_add_ps(acc[b], _mm512_mul_ps(diff, diff));
                }
        }
        for (int b = 0; b < 4; ++b) out[r + b] = reduce(acc[b]);
    }
    for (; r < ny; ++r) {
        const float* yr = y + r * d;
        __m512 acc = _mm512_setzero_ps();
        for (size_t j = 0; j < d; j += 16) {
            __m512 diff = _mm512_sub_ps(load(x, j, d), load(yr, j, d));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(diff, diff));
        }
        out[r] = reduce(acc);
    }
}

// Per centroid, a sequential sum over j (as the reference). NQ queries by 64
// centroids advance together: each codebook row loaded from memory feeds NQ
// queries, and the 4 * NQ accumulators are independent chains, so the adds
// overlap instead of waiting on each other's latency.
template <bool L2>
inline __m512 term(__m512 qj, __m512 t) {
    if (L2) {
        __m512 diff = _mm512_sub_ps(qj, t);
        return _mm512_mul_ps(diff, diff);
    }
    return _mm512_mul_ps(qj, t);
}

template <bool L2, int NQ>
void centroids_t_group(const float* q, size_t ldq, const float* ct, size_t dsub, size_t ksub, float* out,
                       size_t ldo) {
    size_t c = 0;
    for (; c + 64 <= ksub; c += 64) {
        __m512 acc[NQ][4];
        for (int i = 0; i < NQ; ++i)
            for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            const float* row = ct + j * ksub + c;
            __m512 t[4];
            for (int v = 0; v < 4; ++v) t[v] = _mm512_loadu_ps(row + 16 * v);
            for (int i = 0; i < NQ; ++i) {
                const __m512 qj = _mm512_set1_ps(q[i * ldq + j]);
                for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_add_ps(acc[i][v], term<L2>(qj, t[v]));
            }
        }
        for (int i = 0; i < NQ; ++i)
            for (int v = 0; v < 4; ++v) _mm512_storeu_ps(out + i * ldo + c + 16 * v, acc[i][v]);
    }
    for (; c < ksub; c += 16) {
        const __mmask16 m = c + 16 <= ksub ? static_cast<__mmask16>(0xFFFF) : tail_mask(ksub - c);
        __m512 acc[NQ];
        for (int i = 0; i < NQ; ++i) acc[i] = _mm512_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            const __m512 t = _mm512_maskz_loadu_ps(m, ct + j * ksub + c);
            for (int i = 0; i < NQ; ++i) acc[i] = _mm512_add_ps(acc[i], term<L2>(_mm512_set1_ps(q[i * ldq + j]), t));
        }
        for (int i = 0; i < NQ; ++i) _mm512_mask_storeu_ps(out + i * ldo + c, m, acc[i]);
    }
}

template <bool L2>
void to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub, size_t ksub, float* out,
                    size_t ldo) {
    size_t i = 0;
    for (; i + 4 <= nq; i += 4) centroids_t_group<L2, 4>(q + i * ldq, ldq, ct, dsub, ksub, out + i * ldo, ldo);
    for (; i < nq; ++i) centroids_t_group<L2, 1>(q + i * ldq, ldq, ct, dsub, ksub, out + i * ldo, ldo);
}

void l2_to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub, size_t ksub,
                       float* out, size_t ldo) {
    to_centroids_t<true>(q, nq, ldq, ct, dsub, ksub, out, ldo);
}

void ip_to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub, size_t ksub,
                       float* out, size_t ldo) {
    to_centroids_t<false>(q, nq, ldq, ct, dsub, ksub, out, ldo);
}

// Without NaN the scalar loop finds the first position of the minimum value:
// the minimum (exact in any order), then the first lane equal to it. With a
// NaN anywhere the scalar loop itself runs, since its result then depends on
// where the NaN sits.
size_t argmin(const float* v, size_t n) {
    if (n < 32) return generic::argmin(v, n);
    __m512 lo = _mm512_loadu_ps(v);
    __mmask16 nan = _mm512_cmp_ps_mask(lo, lo, _CMP_UNORD_Q);
    size_t i = 16;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(v + i);
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        lo = _mm512_min_ps(x, lo);
    }
    for (size_t j = i; j < n; ++j) {
        if (v[j] != v[j]) nan = 1;
    }
    if (nan) return generic::argmin(v, n);
    float m = _mm512_reduce_min_ps(lo);
    for (size_t j = i; j < n; ++j) m = v[j] < m ? v[j] : m;
    const __m512 target = _mm512_set1_ps(m);
    for (size_t j = 0; j + 16 <= n; j += 16) {
        const __mmask16 eq = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + j), target, _CMP_EQ_OQ);
        if (eq) return j + static_cast<size_t>(__builtin_ctz(eq));
    }
    for (size_t j = n - n % 16; j < n; ++j)
        if (v[j] == m) return j;
    return generic::argmin(v, n);  // not reached
}

// min/max are exact, so any grouping gives the reference's result.
void min_max(const float* t, size_t n, float* lo, float* hi) {
    if (n < 16) return generic::min_max(t, n, lo, hi);
    __m512 a = _mm512_loadu_ps(t), b = a;
    size_t i = 16;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(t + i);
        a = _mm512_min_ps(v, a);
        b = _mm512_max_ps(v, b);
    }
    if (i < n) {  // overlapping last vector
        const __m512 v = _mm512_loadu_ps(t + n - 16);
        a = _mm512_min_ps(v, a);
        b = _mm512_max_ps(v, b);
    }
    *lo = _mm512_reduce_min_ps(a);
    *hi = _mm512_reduce_max_ps(b);
}

// The same float operations as the reference, lane by lane; truncation to int
// (vcvttps2dq) is the reference's cast.
void quantize_row(const float* t, size_t n, float offset, float scale, float qmax, uint8_t* out) {
    const __m512 o = _mm512_set1_ps(offset), s = _mm512_set1_ps(scale), top = _mm512_set1_ps(qmax);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_min_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(t + i), o), s), top);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
    generic::quantize_row(t + i, n - i, offset, scale, qmax, out + i);
}

void min_max_rows(const float* t, size_t rows, size_t n, float* lo, float* hi) {
    for (size_t r = 0; r < rows; ++r) min_max(t + r * n, n, lo + r, hi + r);
}

void quantize_rows(const float* t, size_t rows, size_t n, const float* offsets, float scale, float qmax,
                   uint8_t* out) {
    for (size_t r = 0; r < rows; ++r) quantize_row(t + r * n, n, offsets[r], scale, qmax, out + r * n);
}

// ---- quantized-table scans (see kernels.h and scan.h)
//
// 16-bit accumulation without widening: a 64-byte vector of looked-up values
// v holds 32 "even" bytes (the low byte of each 16-bit lane, codes 0, 2, 4,
// ...) and 32 "odd" bytes (the high byte, codes 1, 3, 5, ...). Per 16-bit lane
// `total` sums v as it is (even + 256 * odd, modulo 2^16) and `odd` sums v >> 8;
// then even = total - 256 * odd modulo 2^16, exact because an even sum is at
// most M * qmax <= 65535. The sums are exact integers, so the order of
// additions does not matter.

// The even sums from the running total and the odd sums (see above).
inline __m512i even_sums(__m512i total, __m512i odd) {
    return _mm512_sub_epi16(total, _mm512_slli_epi16(odd, 8));
}

// Natural order from the even/odd accumulators: codes 0..31 and 32..63.
inline void interleave(__m512i even, __m512i odd, __m512i& first, __m512i& second) {
    alignas(64) static const uint16_t lo_idx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static const uint16_t hi_idx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                    24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    first = _mm512_permutex2var_epi16(even, _mm512_load_si512(lo_idx), odd);
    second = _mm512_permutex2var_epi16(even, _mm512_load_si512(hi_idx), odd);
}

inline uint64_t filter_block(__m512i even, __m512i odd, size_t valid, const float* bias,
                             const ScanFilter& f, uint16_t* est_out) {
    __m512i e[2];
    interleave(even, odd, e[0], e[1]);
    if (est_out) {
        _mm512_storeu_si512(est_out, e[0]);
        _mm512_storeu_si512(est_out + 32, e[1]);
    }
    uint64_t mask = 0;
    if (bias == nullptr) {
        const __m512i thr = _mm512_set1_epi16(static_cast<short>(f.max_est));
        mask = static_cast<uint64_t>(_mm512_cmple_epu16_mask(e[0], thr)) |
               (static_cast<uint64_t>(_mm512_cmple_epu16_mask(e[1], thr)) << 32);
    } else {
        const __m512 inv = _mm512_set1_ps(f.inv_scale), lim = _mm512_set1_ps(f.limit);
        for (size_t g = 0; g < 4 && g * 16 < valid; ++g) {
            __m256i part = (g & 1) ? _mm512_extracti64x4_epi64(e[g / 2], 1) : _mm512_castsi512_si256(e[g / 2]);
            const __mmask16 lm = valid - g * 16 >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(valid - g * 16);
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(part)), inv);
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lm, bias + g * 16));
            mask |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(lm, v, lim, _CMP_LE_OQ)) << (g * 16);
        }
    }
    return valid < 64 ? mask & ((uint64_t(1) << valid) - 1) : mask;
}

// 256-entry lookups with vpermi2b: two 128-entry halves, the code's top bit picks one.
// G blocks share each load of a sub-quantizer's table (256 bytes, four loads):
// a core that loads one 64-byte vector per cycle would otherwise spend more
// cycles on table loads than on the lookups. The prefetch walks the group's
// G * M columns in address order, as the one-block scan does: prefetching
// each block's column in step with its read interleaves G streams, which
// measured slower from DRAM than one block at a time.
template <size_t G>
inline void scan_lut8_group(const uint8_t* blocks, size_t n, size_t b, size_t M, const uint8_t* lut,
                            const ScanFilter& f, uint64_t* masks) {
    __m512i total[G], odd[G];
    for (size_t i = 0; i < G; ++i) total[i] = odd[i] = _mm512_setzero_si512();
    for (size_t m = 0; m < M; ++m) {
        const uint8_t* t = lut + m * 256;
        const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64);
        const __m512i t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
        for (size_t i = 0; i < G; ++i) {
            scan_prefetch(blocks, (b * M + m * G + i) * kBlock, f);
            const __m512i c = _mm512_loadu_si512(blocks + ((b + i) * M + m) * kBlock);
            const __m512i lo = _mm512_permutex2var_epi8(t0, c, t1);
            const __m512i hi = _mm512_permutex2var_epi8(t2, c, t3);
            const __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi);
            total[i] = _mm512_add_epi16(total[i], v);
            odd[i] = _mm512_add_epi16(odd[i], _mm512_srli_epi16(v, 8));
        }
    }
    for (size_t i = 0; i < G; ++i) {
        const size_t blk = b + i;
        masks[blk] = filter_block(even_sums(total[i], odd[i]), odd[i], block_valid(n, blk),
                                  f.bias ? f.bias + blk * kBlock : nullptr, f,
                                  f.est_out ? f.est_out + blk * kBlock : nullptr);
    }
}

void scan_lut8(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut, const ScanFilter& f,
               uint64_t* masks) {
    const size_t nb = (n + kBlock - 1) / kBlock;
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) scan_lut8_group<2>(blocks, n, b, M, lut, f, masks);
    if (b < nb) scan_lut8_group<1>(blocks, n, b, M, lut, f, masks);
}

// 16-entry lookups with vpermb, one per nibble. Each 16-entry table is
// repeated in the four 128-bit lanes (kLut4Row), so vpermb (index bits 0-5)
// reads entry (index & 15) whatever bits 4-5 hold: neither nibble needs masking.
void scan_lut4(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut, const ScanFilter& f,
               uint64_t* masks) {
    const size_t code_size = (M + 1) / 2;
    for (size_t b = 0; b * kBlock < n; ++b) {
        const uint8_t* blk = blocks + b * kBlock * code_size;
        __m512i total = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
        for (size_t j = 0; j < code_size; ++j) {
            scan_prefetch(blocks, (b * code_size + j) * kBlock, f);
            const __m512i c = _mm512_loadu_si512(blk + j * kBlock);
            const __m512i t_lo = _mm512_loadu_si512(lut + 2 * j * kLut4Row);
            const __m512i t_hi = _mm512_loadu_si512(lut + (2 * j + 1) * kLut4Row);
            __m512i v0 = _mm512_permutexvar_epi8(c, t_lo);
            __m512i v1 = _mm512_permutexvar_epi8(_mm512_srli_epi16(c, 4), t_hi);
            total = _mm512_add_epi16(total, _mm512_add_epi16(v0, v1));
            odd = _mm512_add_epi16(odd, _mm512_add_epi16(_mm512_srli_epi16(v0, 8), _mm512_srli_epi16(v1, 8)));
        }
        const size_t valid = block_valid(n, b);
        masks[b] = filter_block(even_sums(total, odd), odd, valid, f.bias ? f.bias + b * kBlock : nullptr, f,
                                f.est_out ? f.est_out + b * kBlock : nullptr);
    }
}

uint64_t read_bytes(const uint8_t* data, size_t n) {
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_loadu_si512(data + i), _mm512_setzero_si512()));
    uint64_t sum = static_cast<uint64_t>(_mm512_reduce_add_epi64(acc));
    return sum + generic::read_bytes(data + i, n - i);
}

// v[0..n) into vectors of 16, the lanes past n set to +inf (for the rank counts
// below); returns how many vectors.
inline size_t load_padded(const float* v, size_t n, __m512* vs) {
    const size_t nv = (n + 15) / 16;
    for (size_t t = 0; t < nv; ++t) {
        const size_t left = n - 16 * t;
        const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
        vs[t] = _mm512_mask_loadu_ps(_mm512_set1_ps(std::numeric_limits<float>::infinity()), m, v + 16 * t);
    }
    return nv;
}

// By ranks, without branches on the data: v[i] is the k-th smallest when fewer
// than k values are below it and at least k are at most it. Lanes past n hold
// +inf, which changes no such count for a value that can be the answer.
float kth_smallest(const float* v, size_t n, size_t k) {
    constexpr size_t kVectors = kSelectMax / 16;
    __m512 vs[kVectors];
    const size_t nv = load_padded(v, n, vs);
    for (size_t i = 0; i < n; ++i) {
        const __m512 x = _mm512_set1_ps(v[i]);
        size_t below = 0, at_most = 0;
        for (size_t t = 0; t < nv; ++t) {
            below += static_cast<size_t>(__builtin_popcount(_mm512_cmp_ps_mask(vs[t], x, _CMP_LT_OQ)));
            at_most += static_cast<size_t>(__builtin_popcount(_mm512_cmp_ps_mask(vs[t], x, _CMP_LE_OQ)));
        }
        if (below < k && k <= at_most) return v[i];
    }
    return generic::kth_smallest(v, n, k);  // not reached
}

// By ranks: value i goes to position #{j : v[j] < v[i]} + #{j < i : v[j] == v[i]},
// counted 16 values per compare, without branches on the data. Lanes past n
// hold +inf; they are never below a value, and an equal one stands after
// every real index, so they change no rank.
void sort_order(const float* v, size_t n, uint32_t* order) {
    constexpr size_t kVectors = kSortMax / 16;
    __m512 vs[kVectors];
    const size_t nv = load_padded(v, n, vs);
    for (size_t i = 0; i < n; ++i) {
        const __m512 x = _mm512_set1_ps(v[i]);
        const size_t ti = i / 16;
        size_t rank = 0;
        for (size_t t = 0; t < nv; ++t) {
            // Equal values count before i only from lower indices: all lanes of an
            // earlier vector, lanes below i's of its own, none of a later one.
            const __mmask16 earlier = t < ti ? __mmask16(0xFFFF)
                                             : (t == ti ? static_cast<__mmask16>((1u << (i % 16)) - 1) : __mmask16(0));
            rank += static_cast<size_t>(__builtin_popcount(_mm512_cmp_ps_mask(vs[t], x, _CMP_LT_OQ)));
            rank += static_cast<size_t>(__builtin_popcount(_mm512_mask_cmp_ps_mask(earlier, vs[t], x, _CMP_EQ_OQ)));
        }
        order[rank] = static_cast<uint32_t>(i);
    }
}

// 16 keys per compare; the passing lanes' indices are compressed to the front.
size_t indices_at_most(const float* keys, size_t n, float th, uint32_t* out) {
    const __m512 t = _mm512_set1_ps(th);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t c = 0, j = 0;
    for (; j + 16 <= n; j += 16) {
        const __mmask16 pass = _mm512_cmp_ps_mask(_mm512_loadu_ps(keys + j), t, _CMP_LE_OQ);
        _mm512_storeu_si512(out + c, _mm512_maskz_compress_epi32(pass, idx));
        c += static_cast<size_t>(__builtin_popcount(pass));
        idx = _mm512_add_epi32(idx, step);
    }
    for (; j < n; ++j) {
        out[c] = static_cast<uint32_t>(j);
        c += keys[j] <= th ? 1 : 0;
    }
    return c;
}

// The table, filled by name. constexpr: it is built by the compiler, so no code
// of this file runs before the CPU check chooses the level.
constexpr Kernels make_table() {
    Kernels t{};
    // generic::*: the plain loops, vectorised with this file's flags.
    t.dot_tile = dot_tile;
    t.dot_tile_fast = avx512_fma::dot_tile;  // every AVX-512 CPU has FMA
    t.sqnorms = sqnorms;
    t.l2sqr_ny = l2sqr_ny;
    t.l2sqr_ny_fast = avx512_fma::l2sqr_ny;
    t.dot_ny_fast = avx512_fma::dot_ny;
    t.dot_half = avx512_fma::dot_half;
    t.l2_to_centroids_t = l2_to_centroids_t;
    t.ip_to_centroids_t = ip_to_centroids_t;
    t.argmin = argmin;
    t.min_max_rows = min_max_rows;
    t.quantize_rows = quantize_rows;
    t.scan_lut8 = scan_lut8;
    t.scan_lut4 = scan_lut4;
    t.keys_and_minima = generic::keys_and_minima;
    t.kth_smallest = kth_smallest;
    t.sort_order = sort_order;
    t.indices_at_most = indices_at_most;
    t.read_bytes = read_bytes;
    t.decode_sq8 = generic::decode_sq8;  // vectorised with this file's flags
    return t;
}
}  // namespace

constexpr Kernels table = make_table();

}  // namespace avx512
}  // namespace pqkit
