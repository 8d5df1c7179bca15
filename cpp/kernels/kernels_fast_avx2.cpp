// The exact search's fast pass on AVX2 with FMA (kernels.h, dot_tile_fast).
// Its own translation unit, the one file built with -mavx2 -mfma, so no
// bit-identical kernel can pick up a fused multiply-add; the AVX2 table calls
// it only on a CPU that has FMA (kernels_avx2.cpp). Its results are never
// returned: flat.cpp selects candidates from them under a rounding-error bound
// and recomputes each candidate with dot_tile.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace pqkit {
namespace avx2_fma {
namespace {

inline __m256 load(const float* p, size_t j, size_t d) {
    if (j + 8 <= d) return _mm256_loadu_ps(p + j);
    alignas(32) static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_maskload_ps(p + j, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ramp + 8 - (d - j))));
}

// Lane b of the result: the sum of v[b]'s 8 lanes.
inline __m128 reduce4(const __m256 (&v)[4]) {
    const __m256 h01 = _mm256_hadd_ps(v[0], v[1]);
    const __m256 h23 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 h = _mm256_hadd_ps(h01, h23);
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

inline float reduce1(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// NX x-rows by 4 y-rows: 4 NX accumulators (12 of the 16 ymm registers at NX = 3).
template <int NX>
void tile_x4(const float* x0, const float* y0, size_t d, float* out, size_t ldo) {
    __m256 acc[NX][4];
    for (int a = 0; a < NX; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] = _mm256_setzero_ps();
    for (size_t c = 0; c < d; c += 8) {
        __m256 xv[NX];
        for (int a = 0; a < NX; ++a) xv[a] = load(x0 + a * d, c, d);
        for (int b = 0; b < 4; ++b) {
            const __m256 yv = load(y0 + b * d, c, d);
            for (int a = 0; a < NX; ++a) acc[a][b] = _mm256_fmadd_ps(xv[a], yv, acc[a][b]);
        }
    }
    for (int a = 0; a < NX; ++a) _mm_storeu_ps(out + a * ldo, reduce4(acc[a]));
}

template <int NX>
void tile_x1(const float* x0, const float* y0, size_t d, float* out, size_t ldo) {
    __m256 acc[NX];
    for (int a = 0; a < NX; ++a) acc[a] = _mm256_setzero_ps();
    for (size_t c = 0; c < d; c += 8) {
        const __m256 yv = load(y0, c, d);
        for (int a = 0; a < NX; ++a) acc[a] = _mm256_fmadd_ps(load(x0 + a * d, c, d), yv, acc[a]);
    }
    for (int a = 0; a < NX; ++a) out[a * ldo] = reduce1(acc[a]);
}

}  // namespace

void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    size_t i = 0;
    for (; i + 3 <= nx; i += 3) {
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) tile_x4<3>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
        for (; j < ny; ++j) tile_x1<3>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
    }
    for (; i < nx; ++i) {
        size_t j = 0;
        for (; j + 4 <= ny; j += 4) tile_x4<1>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
        for (; j < ny; ++j) tile_x1<1>(x + i * d, y + j * d, d, out + i * ldo + j, ldo);
    }
}

}  // namespace avx2_fma
}  // namespace pqkit
