// AVX2 level. The reference's 16 lanes are held in two ymm registers (lanes
// 0-7 and 8-15); the first reduction step adds them, as the tree requires.
#include <immintrin.h>

#include "kernels.h"
#include "kernels_generic.h"

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
    for (; i < nx; ++i)
        for (size_t j = 0; j < ny; ++j) out[i * ldo + j] = dot(x + i * d, y + j * d, d);
}

void sqnorms(const float* x, size_t n, size_t d, float* out) {
    for (size_t i = 0; i < n; ++i) out[i] = dot(x + i * d, x + i * d, d);
}

void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    for (size_t r = 0; r < ny; ++r) {
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

void l2_to_centroids_t(const float* q, const float* ct, size_t dsub, size_t ksub, float* out) {
    size_t c = 0;
    for (; c + 8 <= ksub; c += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            __m256 diff = _mm256_sub_ps(_mm256_set1_ps(q[j]), _mm256_loadu_ps(ct + j * ksub + c));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(diff, diff));
        }
        _mm256_storeu_ps(out + c, acc);
    }
    for (; c < ksub; ++c) {  // fewer than 8 centroids left (nbits < 3)
        float acc = 0.0f;
        for (size_t j = 0; j < dsub; ++j) {
            float diff = q[j] - ct[j * ksub + c];
            float p = diff * diff;
            acc = acc + p;
        }
        out[c] = acc;
    }
}

void ip_to_centroids_t(const float* q, const float* ct, size_t dsub, size_t ksub, float* out) {
    size_t c = 0;
    for (; c + 8 <= ksub; c += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (size_t j = 0; j < dsub; ++j)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j]), _mm256_loadu_ps(ct + j * ksub + c)));
        _mm256_storeu_ps(out + c, acc);
    }
    for (; c < ksub; ++c) {
        float acc = 0.0f;
        for (size_t j = 0; j < dsub; ++j) {
            float p = q[j] * ct[j * ksub + c];
            acc = acc + p;
        }
        out[c] = acc;
    }
}

void adc_scan_u8(const uint8_t* codes, size_t n, size_t M, const float* table, float* out) {
    const __m256i row_offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                   _mm256_set1_epi32(static_cast<int>(M)));
    const __m256i low_byte = _mm256_set1_epi32(0xFF);
    size_t i = 0;
    // 4-byte loads at byte offsets: stop while the 3 extra bytes stay in bounds.
    if (M * 8 < (size_t(1) << 31)) {
        for (; (i + 8) * M + 3 <= n * M; i += 8) {
            const uint8_t* block = codes + i * M;
            __m256 acc = _mm256_setzero_ps();
            for (size_t m = 0; m < M; ++m) {
                __m256i words = _mm256_i32gather_epi32(reinterpret_cast<const int*>(block + m), row_offsets, 1);
                __m256i idx = _mm256_add_epi32(_mm256_and_si256(words, low_byte),
                                               _mm256_set1_epi32(static_cast<int>(m * 256)));
                acc = _mm256_add_ps(acc, _mm256_i32gather_ps(table, idx, 4));
            }
            _mm256_storeu_ps(out + i, acc);
        }
    }
    generic::adc_scan_u8(codes + i * M, n - i, M, table, out + i);
}

}  // namespace

const Kernels table = {
    dot_tile, sqnorms, l2sqr_ny, l2_to_centroids_t, ip_to_centroids_t, adc_scan_u8,
};

}  // namespace avx2
}  // namespace pqkit
