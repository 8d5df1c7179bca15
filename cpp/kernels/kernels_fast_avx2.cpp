// The exact search's fast passes on AVX2 with FMA (kernels.h, dot_tile_fast, and
// IVF-Flat's l2sqr_ny_fast and dot_ny_fast).
// Its own translation unit, the one file built with -mavx2 -mfma, so no
// bit-identical kernel can pick up a fused multiply-add; the AVX2 table calls
// it only on a CPU that has FMA (kernels_avx2.cpp). Its results are never
// returned: flat.cpp selects candidates from them under a rounding-error bound
// and recomputes each candidate with dot_tile.
//
// The packed outer-product GEMM of kernels_fast_avx512.cpp at 8 lanes: y in
// panels of kPanel rows, kDepth dimensions at a time, transposed so that the
// panel's rows' dimension l are contiguous (16 KiB, stays in L1); a micro-tile of
// kRowsX x kPanel outputs in 12 of the 16 ymm registers, fed per dimension by
// two panel loads and kRowsX broadcasts. Each lane's sum is an FMA chain per
// depth block, the blocks' sums added in order.
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace pqkit {
namespace avx2_fma {
namespace {

constexpr size_t kPanel = 16;   // y rows per packed panel: two ymm
constexpr size_t kRowsX = 6;    // x rows per micro-tile: 12 accumulators
constexpr size_t kDepth = 256;  // dimensions per packed block: 16 x 256 floats = 16 KiB

// dst[l * kPanel + r] = src[r * lds + l] for r, l < 8 (an 8 x 8 in-register transpose).
inline void transpose8(const float* src, size_t lds, float* dst) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + i * kPanel, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * kPanel, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

// Packs rows y[0 .. ny) (ny <= kPanel, row stride d), dimensions [0, kc), into
// panel[l * kPanel + r]; rows ny .. kPanel are zero.
void pack_panel(const float* y, size_t ny, size_t d, size_t kc, float* panel) {
    size_t r = 0;
    for (; r + 8 <= ny; r += 8) {
        size_t l = 0;
        for (; l + 8 <= kc; l += 8) transpose8(y + r * d + l, d, panel + l * kPanel + r);
        for (; l < kc; ++l)
            for (size_t i = 0; i < 8; ++i) panel[l * kPanel + r + i] = y[(r + i) * d + l];
    }
    if (r < kPanel) {
        for (size_t l = 0; l < kc; ++l) {
            float* dst = panel + l * kPanel;
            for (size_t i = r; i < ny; ++i) dst[i] = y[i * d + l];
            for (size_t i = ny; i < kPanel; ++i) dst[i] = 0.0f;
        }
    }
}

// o[c] (+)= lane c of (a0, a1), c < nc. The accumulators are passed by value:
// storing them through their array in the micro-tile made the compiler keep the
// whole array in memory, written back on every step of the loop.
inline void store_row(float* o, __m256 a0, __m256 a1, size_t nc, bool add) {
    if (nc == kPanel) {
        if (add) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(o));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(o + 8));
        }
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o + 8, a1);
        return;
    }
    alignas(32) float part[kPanel];
    _mm256_store_ps(part, a0);
    _mm256_store_ps(part + 8, a1);
    for (size_t c = 0; c < nc; ++c) o[c] = add ? o[c] + part[c] : part[c];
}

// out[i * ldo + c] (+)= sum_{l < kc} x[i * d + l] * panel[l * kPanel + c] for
// i < MX, c < nc; `add` adds to out.
template <size_t MX>
void micro_tile(const float* x, size_t d, const float* panel, size_t kc, float* out, size_t ldo, size_t nc,
                bool add) {
    __m256 acc[MX][2];
#pragma GCC unroll 8
    for (size_t i = 0; i < MX; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (size_t l = 0; l < kc; ++l) {
        const __m256 y0 = _mm256_load_ps(panel + l * kPanel);
        const __m256 y1 = _mm256_load_ps(panel + l * kPanel + 8);
#pragma GCC unroll 8
        for (size_t i = 0; i < MX; ++i) {
            const __m256 xv = _mm256_broadcast_ss(x + i * d + l);
            acc[i][0] = _mm256_fmadd_ps(xv, y0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, y1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (size_t i = 0; i < MX; ++i) store_row(out + i * ldo, acc[i][0], acc[i][1], nc, add);
}

using MicroTile = void (*)(const float*, size_t, const float*, size_t, float*, size_t, size_t, bool);
constexpr MicroTile kTiles[kRowsX + 1] = {nullptr,       micro_tile<1>, micro_tile<2>, micro_tile<3>,
                                          micro_tile<4>, micro_tile<5>, micro_tile<6>};

// The 8 lane sums of v[0..7] as one vector, row r in lane r: pairwise horizontal adds
// within each 128-bit half, then the two halves.
inline __m256 reduce8(const __m256* v) {
    const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

// p[c .. c + 8), the lanes at or beyond d (tail: their mask) zero.
inline __m256 load_d(const float* p, size_t c, size_t d, __m256i tail) {
    return c + 8 <= d ? _mm256_loadu_ps(p + c) : _mm256_maskload_ps(p + c, tail);
}

inline __m256i tail_mask(size_t d) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(d % 8)), lane);
}

// A few x rows (a single query, say): no packing, which would cost more than the
// products. Per block of 8 y rows (in L1 while each x row passes over it), one FMA
// chain per y row over d, the 8 chains reduced together.
constexpr size_t kGemvMaxRows = 3;

void dot_gemv(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    const __m256i tail = tail_mask(d);
    size_t j = 0;
    for (; j + 8 <= ny; j += 8) {
        const float* y0 = y + j * d;
        for (size_t i = 0; i < nx; ++i) {
            const float* xi = x + i * d;
            __m256 acc[8];
            // Row by row, each row's floats in order: one sequential stream for the
            // prefetcher (see the AVX-512 twin); the out-of-order core overlaps the chains.
#pragma GCC unroll 8
            for (int b = 0; b < 8; ++b) {
                const float* yb = y0 + b * d;
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();  // two chains: half the latency
                size_t c = 0;
                for (; c + 16 <= d; c += 16) {
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xi + c), _mm256_loadu_ps(yb + c), a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xi + c + 8), _mm256_loadu_ps(yb + c + 8), a1);
                }
                for (; c < d; c += 8) a0 = _mm256_fmadd_ps(load_d(xi, c, d, tail), load_d(yb, c, d, tail), a0);
                acc[b] = _mm256_add_ps(a0, a1);
            }
            _mm256_storeu_ps(out + i * ldo + j, reduce8(acc));
        }
    }
    for (; j < ny; ++j)
        for (size_t i = 0; i < nx; ++i) {
            float sum = 0.0f;
            for (size_t c = 0; c < d; ++c) sum += x[i * d + c] * y[j * d + c];
            out[i * ldo + j] = sum;
        }
}

// One row's ||x - y||^2 lanes: two FMA chains over the differences the exact
// kernel forms (fl(x_l - y_l)), the row read in order.
inline __m256 l2_row(const float* x, const float* y, size_t d, __m256i tail) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= d; c += 16) {
        const __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c));
        const __m256 e1 = _mm256_sub_ps(_mm256_loadu_ps(x + c + 8), _mm256_loadu_ps(y + c + 8));
        a0 = _mm256_fmadd_ps(e0, e0, a0);
        a1 = _mm256_fmadd_ps(e1, e1, a1);
    }
    for (; c < d; c += 8) {
        const __m256 e = _mm256_sub_ps(load_d(x, c, d, tail), load_d(y, c, d, tail));
        a0 = _mm256_fmadd_ps(e, e, a0);
    }
    return _mm256_add_ps(a0, a1);
}

// One row's <x, y> and ||y||^2 lanes from one read of the row.
inline void dot_norm_row(const float* x, const float* y, size_t d, __m256i tail, __m256& dot, __m256& norm) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), n0 = _mm256_setzero_ps(), n1 = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= d; c += 16) {
        const __m256 y0 = _mm256_loadu_ps(y + c), y1 = _mm256_loadu_ps(y + c + 8);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), y0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c + 8), y1, a1);
        n0 = _mm256_fmadd_ps(y0, y0, n0);
        n1 = _mm256_fmadd_ps(y1, y1, n1);
    }
    for (; c < d; c += 8) {
        const __m256 yv = load_d(y, c, d, tail);
        a0 = _mm256_fmadd_ps(load_d(x, c, d, tail), yv, a0);
        n0 = _mm256_fmadd_ps(yv, yv, n0);
    }
    dot = _mm256_add_ps(a0, a1);
    norm = _mm256_add_ps(n0, n1);
}

// The sum of v's 8 lanes.
inline float sum8(__m256 v) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

// 8 halves at p + c widened to floats; at the row's end (d - c < 8) the lanes past d are zero.
inline __m256 load_half(const uint16_t* p, size_t c, size_t d) {
    if (c + 8 <= d) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + c)));
    alignas(16) uint16_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t l = 0; c + l < d; ++l) tail[l] = p[c + l];
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(tail)));
}

// One row's <x, h> lanes over its halves: two FMA chains, the row read in order.
inline __m256 dot_half_row(const float* x, const uint16_t* y, size_t d, __m256i tail) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= d; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), load_half(y, c, d), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c + 8), load_half(y, c + 8, d), a1);
    }
    for (; c < d; c += 8) a0 = _mm256_fmadd_ps(load_d(x, c, d, tail), load_half(y, c, d), a0);
    return _mm256_add_ps(a0, a1);
}

}  // namespace

// IVF-Flat's list scan (kernels.h, l2sqr_ny_fast and dot_ny_fast): row after row, as
// dot_gemv, 8 rows' lane sums reduced together.
void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    const __m256i tail = tail_mask(d);
    size_t j = 0;
    for (; j + 8 <= ny; j += 8) {
        __m256 acc[8];
#pragma GCC unroll 8
        for (int b = 0; b < 8; ++b) acc[b] = l2_row(x, y + (j + b) * d, d, tail);
        _mm256_storeu_ps(out + j, reduce8(acc));
    }
    for (; j < ny; ++j) out[j] = sum8(l2_row(x, y + j * d, d, tail));
}

void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* dots, float* sqnorms) {
    const __m256i tail = tail_mask(d);
    size_t j = 0;
    for (; j + 8 <= ny; j += 8) {
        __m256 dot[8], norm[8];
#pragma GCC unroll 8
        for (int b = 0; b < 8; ++b) dot_norm_row(x, y + (j + b) * d, d, tail, dot[b], norm[b]);
        _mm256_storeu_ps(dots + j, reduce8(dot));
        _mm256_storeu_ps(sqnorms + j, reduce8(norm));
    }
    for (; j < ny; ++j) {
        __m256 dot, norm;
        dot_norm_row(x, y + j * d, d, tail, dot, norm);
        dots[j] = sum8(dot);
        sqnorms[j] = sum8(norm);
    }
}

// Rows in half precision (kernels.h, dot_half), as dot_gemv: per block of 8 rows, each
// x row against each row read in order, the 8 rows' lane sums reduced together.
void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo) {
    const __m256i tail = tail_mask(d);
    size_t j = 0;
    for (; j + 8 <= ny; j += 8)
        for (size_t i = 0; i < nx; ++i) {
            __m256 acc[8];
#pragma GCC unroll 8
            for (int b = 0; b < 8; ++b) acc[b] = dot_half_row(x + i * d, y + (j + b) * d, d, tail);
            _mm256_storeu_ps(out + i * ldo + j, reduce8(acc));
        }
    for (; j < ny; ++j)
        for (size_t i = 0; i < nx; ++i) out[i * ldo + j] = sum8(dot_half_row(x + i * d, y + j * d, d, tail));
}

void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    if (nx <= kGemvMaxRows) {
        dot_gemv(x, nx, y, ny, d, out, ldo);
        return;
    }
    alignas(32) float panel[kPanel * kDepth];
    for (size_t j0 = 0; j0 < ny; j0 += kPanel) {
        const size_t nc = std::min(kPanel, ny - j0);
        for (size_t k0 = 0; k0 < d; k0 += kDepth) {
            const size_t kc = std::min(kDepth, d - k0);
            pack_panel(y + j0 * d + k0, nc, d, kc, panel);
            for (size_t i0 = 0; i0 < nx; i0 += kRowsX) {
                const size_t mx = std::min(kRowsX, nx - i0);
                kTiles[mx](x + i0 * d + k0, d, panel, kc, out + i0 * ldo + j0, ldo, nc, k0 > 0);
            }
        }
    }
    if (d == 0)
        for (size_t i = 0; i < nx; ++i) std::fill(out + i * ldo, out + i * ldo + ny, 0.0f);
}

}  // namespace avx2_fma
}  // namespace pqkit
