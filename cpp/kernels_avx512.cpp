// AVX-512 level (F, BW, DQ, VL, VBMI). Same operations, same order as the
// scalar reference: 16 float lanes map one to one onto a zmm register.
#include <immintrin.h>

#include "kernels.h"
#include "kernels_generic.h"

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

inline __m512 load(const float* p, size_t j, size_t d) {
    return j + 16 <= d ? _mm512_loadu_ps(p + j) : _mm512_maskz_loadu_ps(tail_mask(d - j), p + j);
}

float dot(const float* x, const float* y, size_t d) {
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < d; j += 16) acc = _mm512_add_ps(acc, _mm512_mul_ps(load(x, j, d), load(y, j, d)));
    return reduce(acc);
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
            for (int a = 0; a < 4; ++a)
                for (int b = 0; b < 4; ++b) out[(i + a) * ldo + j + b] = reduce(acc[a][b]);
        }
        for (; j < ny; ++j)
            for (int a = 0; a < 4; ++a) out[(i + a) * ldo + j] = dot(x0 + a * d, y + j * d, d);
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
        __m512 acc = _mm512_setzero_ps();
        for (size_t j = 0; j < d; j += 16) {
            __m512 diff = _mm512_sub_ps(load(x, j, d), load(yr, j, d));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(diff, diff));
        }
        out[r] = reduce(acc);
    }
}

void l2_to_centroids_t(const float* q, const float* ct, size_t dsub, size_t ksub, float* out) {
    for (size_t c = 0; c < ksub; c += 16) {
        const __mmask16 m = c + 16 <= ksub ? static_cast<__mmask16>(0xFFFF) : tail_mask(ksub - c);
        __m512 acc = _mm512_setzero_ps();
        for (size_t j = 0; j < dsub; ++j) {
            __m512 diff = _mm512_sub_ps(_mm512_set1_ps(q[j]), _mm512_maskz_loadu_ps(m, ct + j * ksub + c));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(diff, diff));
        }
        _mm512_mask_storeu_ps(out + c, m, acc);
    }
}

void ip_to_centroids_t(const float* q, const float* ct, size_t dsub, size_t ksub, float* out) {
    for (size_t c = 0; c < ksub; c += 16) {
        const __mmask16 m = c + 16 <= ksub ? static_cast<__mmask16>(0xFFFF) : tail_mask(ksub - c);
        __m512 acc = _mm512_setzero_ps();
        for (size_t j = 0; j < dsub; ++j)
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(q[j]), _mm512_maskz_loadu_ps(m, ct + j * ksub + c)));
        _mm512_mask_storeu_ps(out + c, m, acc);
    }
}

// 16 codes at a time: a byte gather of code m of each row (4-byte loads at
// byte offsets, masked to the low byte), then a gather from the table.
void adc_scan_u8(const uint8_t* codes, size_t n, size_t M, const float* table, float* out) {
    const __m512i row_offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int>(M)));
    const __m512i low_byte = _mm512_set1_epi32(0xFF);
    size_t i = 0;
    // Each lane loads 4 bytes from its code byte: a vector block runs only
    // while those 3 extra bytes stay inside the buffer; the rest runs the
    // reference loop.
    if (M * 16 < (size_t(1) << 31)) {
        for (; (i + 16) * M + 3 <= n * M; i += 16) {
            const uint8_t* block = codes + i * M;
            __m512 acc = _mm512_setzero_ps();
            for (size_t m = 0; m < M; ++m) {
                __m512i words = _mm512_i32gather_epi32(row_offsets, block + m, 1);
                __m512i idx = _mm512_add_epi32(_mm512_and_si512(words, low_byte),
                                               _mm512_set1_epi32(static_cast<int>(m * 256)));
                acc = _mm512_add_ps(acc, _mm512_i32gather_ps(idx, table, 4));
            }
            _mm512_storeu_ps(out + i, acc);
        }
    }
    generic::adc_scan_u8(codes + i * M, n - i, M, table, out + i);
}

}  // namespace

const Kernels table = {
    dot_tile, sqnorms, l2sqr_ny, l2_to_centroids_t, ip_to_centroids_t, adc_scan_u8,
};

}  // namespace avx512
}  // namespace pqkit
