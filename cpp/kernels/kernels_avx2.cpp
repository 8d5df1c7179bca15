// AVX2 level. The reference's 16 lanes are held in two ymm registers (lanes
// 0-7 and 8-15); the first reduction step adds them, as the tree requires.
#include <immintrin.h>

#include "kernels/kernels.h"
#include "kernels/kernels_generic.h"

namespace pqkit {
namespace avx2 {
namespace {

struct Lanes16 {
    __m256 lo, hi;
};

inline __m256i tail_mask8(size_t r) {  // first r of 8 lanes set (r <= 8)
    alignas(32) static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ramp + 8 - r));
}

inline __m256 load8(const float* p, size_t avail) {
    if (avail >= 8) return _mm256_loadu_ps(p);
    if (avail == 0) return _mm256_setzero_ps();
    return _mm256_maskload_ps(p, tail_mask8(avail));
}

// dot_ny and l2sqr_ny read a group of 4 rows 16 floats of each at a time below this many
// dimensions (short chains), row after row from it (as the AVX-512 level).
constexpr size_t kInterleaveMaxDim = 64;

inline Lanes16 load16(const float* p, size_t j, size_t d) {
    size_t avail = d - j;
    return {load8(p + j, avail), load8(p + j + 8, avail > 8 ? avail - 8 : 0)};
}

inline float reduce(const Lanes16& v) {
    __m256 v8 = _mm256_add_ps(v.lo, v.hi);
    __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
    __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    __m128 v1 = _mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1));
    return _mm_cvtss_f32(v1);
}

inline void madd(Lanes16& acc, const Lanes16& a, const Lanes16& b) {
    acc.lo = _mm256_add_ps(acc.lo, _mm256_mul_ps(a.lo, b.lo));
    acc.hi = _mm256_add_ps(acc.hi, _mm256_mul_ps(a.hi, b.hi));
}

float dot(const float* x, const float* y, size_t d) {
    Lanes16 acc{_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (size_t j = 0; j < d; j += 16) madd(acc, load16(x, j, d), load16(y, j, d));
    return reduce(acc);
}

// One x-row against 4 y-rows per step: 4 independent chains instead of one.
void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    size_t j = 0;
    for (; j + 4 <= ny; j += 4) {
        const float* y0 = y + j * d;
        Lanes16 acc[4];
        for (int b = 0; b < 4; ++b) acc[b] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        if (d < kInterleaveMaxDim) {  // short rows: the 4 chains advance together
            for (size_t c = 0; c < d; c += 16) {
                const Lanes16 xv = load16(x, c, d);
                for (int b = 0; b < 4; ++b) madd(acc[b], xv, load16(y0 + b * d, c, d));
            }
        } else {
            // Row after row (the same sum per row as interleaving them): the rows are read as
            // one stream, which the prefetcher follows; the out-of-order core overlaps the chains.
            for (int b = 0; b < 4; ++b)
                for (size_t c = 0; c < d; c += 16) madd(acc[b], load16(x, c, d), load16(y0 + b * d, c, d));
        }
        for (int b = 0; b < 4; ++b) out[j + b] = reduce(acc[b]);
    }
    for (; j < ny; ++j) out[j] = dot(x, y + j * d, d);
}

// 2 x-rows by 4 y-rows per step (16 ymm accumulators would spill).
void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out,
              size_t ldo) {
    size_t i = 0;
    for (; i + 2 <= nx; i += 2) {
        const float* x0 = x + i * d;
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) {
            const float* y0 = y + j * d;
            Lanes16 acc[2][4];
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 4; ++b) acc[a][b] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (size_t c = 0; c < d; c += 16) {
                Lanes16 xv[2], yv[4];
                for (int a = 0; a < 2; ++a) xv[a] = load16(x0 + a * d, c, d);
                for (int b = 0; b < 4; ++b) yv[b] = load16(y0 + b * d, c, d);
                for (int a = 0; a < 2; ++a)
                    for (int b = 0; b < 4; ++b) madd(acc[a][b], xv[a], yv[b]);
            }
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 4; ++b) out[(i + a) * ldo + j + b] = reduce(acc[a][b]);
        }
        for (; j < ny; ++j)
            for (int a = 0; a < 2; ++a) out[(i + a) * ldo + j] = dot(x0 + a * d, y + j * d, d);
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
        Lanes16 acc[4];
        for (int b = 0; b < 4; ++b) acc[b] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        if (d < kInterleaveMaxDim) {  // as in dot_ny
            for (size_t j = 0; j < d; j += 16) {
                const Lanes16 a = load16(x, j, d);
                for (int b = 0; b < 4; ++b) {
                    const Lanes16 yb = load16(y0 + b * d, j, d);
                    Lanes16 diff{_mm256_sub_ps(a.lo, yb.lo), _mm256_sub_ps(a.hi, yb.hi)};
                    madd(acc[b], diff, diff);
                }
            }
        } else {
            for (int b = 0; b < 4; ++b)  // row after row, as in dot_ny
                for (size_t j = 0; j < d; j += 16) {
                    const Lanes16 a = load16(x, j, d), yb = load16(y0 + b * d, j, d);
                    Lanes16 diff{_mm256_sub_ps(a.lo, yb.lo), _mm256_sub_ps(a.hi, yb.hi)};
                    madd(acc[b], diff, diff);
                }
        }
        for (int b = 0; b < 4; ++b) out[r + b] = reduce(acc[b]);
    }
    for (; r < ny; ++r) {
        const float* yr = y + r * d;
        Lanes16 acc{_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (size_t j = 0; j < d; j += 16) {
            Lanes16 a = load16(x, j, d), b = load16(yr, j, d);
            Lanes16 diff{_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)};
            madd(acc, diff, diff);
        }
        out[r] = reduce(acc);
    }
}

// Per centroid, a sequential sum over j (as the reference). Four vectors of
// 8 centroids advance together so the add chains overlap.
template <bool L2>
inline __m256 term(__m256 qj, __m256 t) {
    if (L2) {
        __m256 diff = _mm256_sub_ps(qj, t);
        return _mm256_mul_ps(diff, diff);
    }
    return _mm256_mul_ps(qj, t);
}

// NQ queries by 16 centroids per step (see the AVX-512 file): each row of
// the codebook loaded feeds NQ queries; 2 * NQ independent accumulators.
template <bool L2, int NQ>
void centroids_t_group(const float* q, size_t ldq, const float* ct, size_t dsub, size_t ksub, float* out,
                       size_t ldo) {
    size_t c = 0;
    for (; c + 16 <= ksub; c += 16) {
        __m256 acc[NQ][2];
        for (int i = 0; i < NQ; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            const float* row = ct + j * ksub + c;
            const __m256 t0 = _mm256_loadu_ps(row), t1 = _mm256_loadu_ps(row + 8);
            for (int i = 0; i < NQ; ++i) {
                const __m256 qj = _mm256_set1_ps(q[i * ldq + j]);
                acc[i][0] = _mm256_add_ps(acc[i][0], term<L2>(qj, t0));
                acc[i][1] = _mm256_add_ps(acc[i][1], term<L2>(qj, t1));
            }
        }
        for (int i = 0; i < NQ; ++i) {
            _mm256_storeu_ps(out + i * ldo + c, acc[i][0]);
            _mm256_storeu_ps(out + i * ldo + c + 8, acc[i][1]);
        }
    }
    for (; c + 8 <= ksub; c += 8) {
        __m256 acc[NQ];
        for (int i = 0; i < NQ; ++i) acc[i] = _mm256_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            const __m256 t = _mm256_loadu_ps(ct + j * ksub + c);
            for (int i = 0; i < NQ; ++i) acc[i] = _mm256_add_ps(acc[i], term<L2>(_mm256_set1_ps(q[i * ldq + j]), t));
        }
        for (int i = 0; i < NQ; ++i) _mm256_storeu_ps(out + i * ldo + c, acc[i]);
    }
    for (; c < ksub; ++c) {  // fewer than 8 centroids left (nbits < 3)
        for (int i = 0; i < NQ; ++i) {
            const float* qi = q + i * ldq;
            float acc = 0.0f;
            for (size_t j = 0; j < dsub; ++j) {
                float diff = L2 ? qi[j] - ct[j * ksub + c] : 0.0f;
                float p = L2 ? diff * diff : qi[j] * ct[j * ksub + c];
                acc = acc + p;
            }
            out[i * ldo + c] = acc;
        }
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

// As the AVX-512 version: the minimum, then its first position; NaN -> scalar.
size_t argmin(const float* v, size_t n) {
    if (n < 16) return generic::argmin(v, n);
    __m256 lo = _mm256_loadu_ps(v);
    __m256 nan = _mm256_cmp_ps(lo, lo, _CMP_UNORD_Q);
    size_t i = 8;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(v + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        lo = _mm256_min_ps(x, lo);
    }
    bool any_nan = _mm256_movemask_ps(nan) != 0;
    for (size_t j = i; j < n; ++j) any_nan = any_nan || v[j] != v[j];
    if (any_nan) return generic::argmin(v, n);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, lo);
    float m = lanes[0];
    for (int l = 1; l < 8; ++l) m = lanes[l] < m ? lanes[l] : m;
    for (size_t j = i; j < n; ++j) m = v[j] < m ? v[j] : m;
    const __m256 target = _mm256_set1_ps(m);
    for (size_t j = 0; j + 8 <= n; j += 8) {
        const int eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + j), target, _CMP_EQ_OQ));
        if (eq) return j + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(eq)));
    }
    for (size_t j = n - n % 8; j < n; ++j)
        if (v[j] == m) return j;
    return generic::argmin(v, n);  // not reached
}

// min/max are exact, so any grouping gives the reference's result.
void min_max(const float* t, size_t n, float* lo, float* hi) {
    if (n < 8) return generic::min_max(t, n, lo, hi);
    __m256 a = _mm256_loadu_ps(t), b = a;
    size_t i = 8;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(t + i);
        a = _mm256_min_ps(v, a);
        b = _mm256_max_ps(v, b);
    }
    if (i < n) {  // overlapping last vector
        const __m256 v = _mm256_loadu_ps(t + n - 8);
        a = _mm256_min_ps(v, a);
        b = _mm256_max_ps(v, b);
    }
    alignas(32) float la[8], lb[8];
    _mm256_store_ps(la, a);
    _mm256_store_ps(lb, b);
    generic::min_max(la, 8, lo, hi);
    float unused;
    generic::min_max(lb, 8, &unused, hi);
}

// The reference's float operations lane by lane; vcvttps2dq truncates as its cast.
void quantize_row(const float* t, size_t n, float offset, float scale, float qmax, uint8_t* out) {
    const __m256 o = _mm256_set1_ps(offset), s = _mm256_set1_ps(scale), top = _mm256_set1_ps(qmax);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(t + i), o), s), top);
        const __m256i w = _mm256_cvttps_epi32(v);  // 0..255 in each 32-bit lane
        const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w16, w16));
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

// Pass bits of 8 codes from their estimates as 32-bit integers.
inline uint32_t filter8(__m256i est, const float* bias, const ScanFilter& f) {
    __m256 pass;
    if (bias == nullptr) {
        __m256i over = _mm256_cmpgt_epi32(est, _mm256_set1_epi32(f.max_est));
        return ~static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(over))) & 0xFFu;
    }
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(est), _mm256_set1_ps(f.inv_scale));
    pass = _mm256_cmp_ps(_mm256_add_ps(v, _mm256_loadu_ps(bias)), _mm256_set1_ps(f.limit), _CMP_LE_OQ);
    return static_cast<uint32_t>(_mm256_movemask_ps(pass));
}

// The bias of a partial last block, zero-padded to a whole block.
inline const float* block_bias(const float* bias, size_t valid, float* padded) {
    if (bias == nullptr || valid == kBlock) return bias;
    for (size_t i = 0; i < kBlock; ++i) padded[i] = i < valid ? bias[i] : 0.0f;
    return padded;
}

inline uint64_t valid_bits(uint64_t mask, size_t valid) {
    return valid < 64 ? mask & ((uint64_t(1) << valid) - 1) : mask;
}

// No byte permute in AVX2: eight 8-code gathers per sub-quantizer (4-byte
// loads at byte offsets of the table, which is padded for them).
void scan_lut8(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut, const ScanFilter& f,
               uint64_t* masks) {
    const __m256i low = _mm256_set1_epi32(0xFF);
    float padded[kBlock];
    for (size_t b = 0; b * kBlock < n; ++b) {
        const uint8_t* blk = blocks + b * kBlock * M;
        __m256i acc[8];
        for (int h = 0; h < 8; ++h) acc[h] = _mm256_setzero_si256();
        for (size_t m = 0; m < M; ++m) {
            scan_prefetch(blocks, (b * M + m) * kBlock, f);
            const int* t = reinterpret_cast<const int*>(lut + m * 256);
            for (int h = 0; h < 8; ++h) {
                __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + m * kBlock + 8 * h)));
                acc[h] = _mm256_add_epi32(acc[h], _mm256_and_si256(_mm256_i32gather_epi32(t, idx, 1), low));
            }
        }
        const size_t valid = block_valid(n, b);
        const float* bias = block_bias(f.bias ? f.bias + b * kBlock : nullptr, valid, padded);
        uint64_t mask = 0;
        for (int h = 0; h < 8; ++h) mask |= static_cast<uint64_t>(filter8(acc[h], bias ? bias + 8 * h : nullptr, f)) << (8 * h);
        if (f.est_out) {
            alignas(32) int32_t lanes[kBlock];
            for (int h = 0; h < 8; ++h) _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8 * h), acc[h]);
            for (size_t i = 0; i < kBlock; ++i) f.est_out[b * kBlock + i] = static_cast<uint16_t>(lanes[i]);
        }
        masks[b] = valid_bits(mask, valid);
    }
}

// vpshufb per nibble on 32 codes at a time, 16-bit accumulation (total and
// high bytes) as in the AVX-512 level.
void scan_lut4(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut, const ScanFilter& f,
               uint64_t* masks) {
    const size_t code_size = (M + 1) / 2;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    float padded[kBlock];
    for (size_t b = 0; b * kBlock < n; ++b) {
        const uint8_t* blk = blocks + b * kBlock * code_size;
        const size_t valid = block_valid(n, b);
        const float* bias = block_bias(f.bias ? f.bias + b * kBlock : nullptr, valid, padded);
        uint64_t mask = 0;
        for (int half = 0; half < 2; ++half) {
            // total: the lookups as 16-bit lanes (even + 256 * odd, modulo 2^16);
            // odd: their high bytes; even = total - 256 * odd, exact since an even
            // sum is at most M * qmax <= 65535.
            __m256i total = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
            for (size_t j = 0; j < code_size; ++j) {
                if (half == 0) scan_prefetch(blocks, (b * code_size + j) * kBlock, f);
                const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + j * kBlock + 32 * half));
                const __m256i t_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + 2 * j * kLut4Row));
                const __m256i t_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + (2 * j + 1) * kLut4Row));
                __m256i v0 = _mm256_shuffle_epi8(t_lo, _mm256_and_si256(c, nibble));
                __m256i v1 = _mm256_shuffle_epi8(t_hi, _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble));
                total = _mm256_add_epi16(total, _mm256_add_epi16(v0, v1));
                odd = _mm256_add_epi16(odd, _mm256_add_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8)));
            }
            const __m256i even = _mm256_sub_epi16(total, _mm256_slli_epi16(odd, 8));
            // unpack interleaves within 128-bit lanes: lo = codes 0-7 | 16-23, hi = 8-15 | 24-31.
            __m256i ul = _mm256_unpacklo_epi16(even, odd), uh = _mm256_unpackhi_epi16(even, odd);
            __m256i first = _mm256_permute2x128_si256(ul, uh, 0x20), second = _mm256_permute2x128_si256(ul, uh, 0x31);
            if (f.est_out) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(f.est_out + b * kBlock + 32 * half), first);
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(f.est_out + b * kBlock + 32 * half + 16), second);
            }
            const __m256i parts[4] = {
                _mm256_cvtepu16_epi32(_mm256_castsi256_si128(first)), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(first, 1)),
                _mm256_cvtepu16_epi32(_mm256_castsi256_si128(second)), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(second, 1))};
            for (int g = 0; g < 4; ++g) {
                const size_t start = 32 * half + 8 * g;
                mask |= static_cast<uint64_t>(filter8(parts[g], bias ? bias + start : nullptr, f)) << start;
            }
        }
        masks[b] = valid_bits(mask, valid);
    }
}

uint64_t read_bytes(const uint8_t* data, size_t n) {
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i)), _mm256_setzero_si256()));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + generic::read_bytes(data + i, n - i);
}

// FMA is a CPU feature apart from AVX2: the fast passes use it where the CPU
// has it, and this level's exact kernels (as good an approximation as any) elsewhere.
bool has_fma() {
    static const bool fma = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("fma") != 0;
    }();
    return fma;
}

// F16C (the half-to-float conversion) is a feature apart from AVX2 as well.
bool has_f16c() {
    static const bool f16c = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("f16c") != 0;
    }();
    return f16c;
}

void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo) {
    if (has_fma() && has_f16c())
        avx2_fma::dot_half(x, nx, y, ny, d, out, ldo);
    else
        generic::dot_half(x, nx, y, ny, d, out, ldo);
}

void dot_tile_fast(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    if (has_fma())
        avx2_fma::dot_tile(x, nx, y, ny, d, out, ldo);
    else
        dot_tile(x, nx, y, ny, d, out, ldo);
}

void l2sqr_ny_fast(const float* x, const float* y, size_t ny, size_t d, float* out) {
    if (has_fma())
        avx2_fma::l2sqr_ny(x, y, ny, d, out);
    else
        l2sqr_ny(x, y, ny, d, out);
}

void dot_ny_fast(const float* x, const float* y, size_t ny, size_t d, float* dots, float* norms) {
    if (has_fma()) {
        avx2_fma::dot_ny(x, y, ny, d, dots, norms);
    } else {
        dot_tile(x, 1, y, ny, d, dots, ny);
        sqnorms(y, ny, d, norms);
    }
}

// The table, filled by name. constexpr: it is built by the compiler, so no code
// of this file runs before the CPU check chooses the level.
constexpr Kernels make_table() {
    Kernels t{};
    // generic::*: the plain loops, vectorised with this file's flags.
    t.dot_tile = dot_tile;
    t.dot_tile_fast = dot_tile_fast;
    t.sqnorms = sqnorms;
    t.l2sqr_ny = l2sqr_ny;
    t.l2sqr_ny_fast = l2sqr_ny_fast;
    t.dot_ny_fast = dot_ny_fast;
    t.dot_half = dot_half;
    t.l2_to_centroids_t = l2_to_centroids_t;
    t.ip_to_centroids_t = ip_to_centroids_t;
    t.argmin = argmin;
    t.min_max_rows = min_max_rows;
    t.quantize_rows = quantize_rows;
    t.scan_lut8 = scan_lut8;
    t.scan_lut4 = scan_lut4;
    t.keys_and_minima = generic::keys_and_minima;
    t.kth_smallest = generic::kth_smallest;
    t.sort_order = generic::sort_order;
    t.indices_at_most = generic::indices_at_most;
    t.read_bytes = read_bytes;
    t.decode_sq8 = generic::decode_sq8;  // vectorised with this file's flags
    return t;
}
}  // namespace

constexpr Kernels table = make_table();

}  // namespace avx2
}  // namespace pqkit
