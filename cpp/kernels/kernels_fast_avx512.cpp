// The exact search's fast pass on AVX-512 with FMA (kernels.h, dot_tile_fast).
// Its own translation unit: the one file of the AVX-512 level built with -mfma,
// so no bit-identical kernel can pick up a fused multiply-add. Its results are
// never returned: flat.cpp selects candidates from them under a rounding-error
// bound and recomputes each candidate with dot_tile.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace pqkit {
namespace avx512_fma {
namespace {

inline __m512 load(const float* p, size_t j, size_t d) {
    return j + 16 <= d ? _mm512_loadu_ps(p + j)
                       : _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (d - j)) - 1u), p + j);
}

// 4 x-rows by 4 y-rows: 16 accumulators fed by 8 loads and 16 FMAs per 16
// dimensions, so the FMA units, not the loads, set the pace. Any summation
// order is allowed here; each lane's sum is a plain FMA chain.
template <int NX, int NY>
inline void tile(const float* x0, const float* y0, size_t d, float* out, size_t ldo) {
    __m512 acc[NX][NY];
    for (int a = 0; a < NX; ++a)
        for (int b = 0; b < NY; ++b) acc[a][b] = _mm512_setzero_ps();
    for (size_t c = 0; c < d; c += 16) {
        __m512 xv[NX];
        for (int a = 0; a < NX; ++a) xv[a] = load(x0 + a * d, c, d);
        for (int b = 0; b < NY; ++b) {
            const __m512 yv = load(y0 + b * d, c, d);
            for (int a = 0; a < NX; ++a) acc[a][b] = _mm512_fmadd_ps(xv[a], yv, acc[a][b]);
        }
    }
    for (int a = 0; a < NX; ++a)
        for (int b = 0; b < NY; ++b) out[a * ldo + b] = _mm512_reduce_add_ps(acc[a][b]);
}

// Reduces 4 accumulators to one vector's lanes 0-3 (lane b: acc[b]'s sum), in
// fewer instructions than 4 separate reductions.
inline __m128 reduce4(const __m512 (&v)[4]) {
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(3, 2, 3, 2)));
    // s01: lanes 0-7 v0's halves summed, 8-15 v1's; s23 likewise for v2, v3.
    const __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
    // s: quarter q holds v[q]'s four partial sums of 4 lanes each.
    const __m512 t = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
    // u: every lane of quarter q holds v[q]'s total; gather lane 0 of each quarter.
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, u));
}

void tile4x4(const float* x0, const float* y0, size_t d, float* out, size_t ldo) {
    __m512 acc[4][4];
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] = _mm512_setzero_ps();
    for (size_t c = 0; c < d; c += 16) {
        __m512 xv[4];
        for (int a = 0; a < 4; ++a) xv[a] = load(x0 + a * d, c, d);
        for (int b = 0; b < 4; ++b) {
            const __m512 yv = load(y0 + b * d, c, d);
            for (int a = 0; a < 4; ++a) acc[a][b] = _mm512_fmadd_ps(xv[a], yv, acc[a][b]);
        }
    }
    for (int a = 0; a < 4; ++a) _mm_storeu_ps(out + a * ldo, reduce4(acc[a]));
}

}  // namespace

void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    size_t i = 0;
    for (; i + 4 <= nx; i += 4) {
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) tile4x4(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
        for (; j < ny; ++j) tile<4, 1>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
    }
    for (; i < nx; ++i) {
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) tile<1, 4>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
        for (; j < ny; ++j) tile<1, 1>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
    }
}

}  // namespace avx512_fma
}  // namespace pqkit
