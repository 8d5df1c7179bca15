// The exact search's fast passes on AVX-512 with FMA (kernels.h, dot_tile_fast,
// and IVF-Flat's l2sqr_ny_fast and dot_ny_fast).
// Its own translation unit: the one file of the AVX-512 level built with -mfma,
// so no bit-identical kernel can pick up a fused multiply-add. Its results are
// never returned: flat.cpp selects candidates from them under a rounding-error
// bound and recomputes each candidate with dot_tile.
//
// A packed outer-product GEMM, as BLAS libraries do it: y is packed in panels
// of kPanel rows, kDepth dimensions at a time, transposed so that the panel's
// rows' dimension l are kPanel contiguous floats (32 KiB, in L1 or at worst
// L2 while every x-row of the call passes over it). The micro-kernel keeps a
// kRowsX x kPanel tile of out in 24 zmm accumulators: per dimension it loads
// the panel's two vectors, broadcasts kRowsX x values and issues 2 kRowsX
// FMAs, with no horizontal reduction. Each lane's sum is a plain FMA chain over
// a depth block, the blocks' sums added in order: one summation order among
// those the bound allows.
#include <immintrin.h>

#include <algorithm>

#include "kernels/kernels.h"

namespace pqkit {
namespace avx512_fma {
namespace {

constexpr size_t kPanel = 32;   // y rows per packed panel: two zmm
constexpr size_t kRowsX = 12;   // x rows per micro-tile: 24 accumulators
constexpr size_t kDepth = 256;  // dimensions per packed block: 32 x 256 floats = 32 KiB

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

// out[i * ldo + c] (+)= sum_{l < kc} x[i * d + l] * panel[l * kPanel + c] for
// i < MX, c < ny (masks m0, m1 select the columns); `add` adds to out.
template <size_t MX>
void micro_tile(const float* x, size_t d, const float* panel, size_t kc, float* out, size_t ldo, __mmask16 m0,
                __mmask16 m1, bool add) {
    // Unrolled over i so that the accumulators live in registers.
    __m512 acc[MX][2];
#pragma GCC unroll 16
    for (size_t i = 0; i < MX; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (size_t l = 0; l < kc; ++l) {
        const __m512 y0 = _mm512_load_ps(panel + l * kPanel);
        const __m512 y1 = _mm512_load_ps(panel + l * kPanel + 16);
#pragma GCC unroll 16
        for (size_t i = 0; i < MX; ++i) {
            const __m512 xv = _mm512_set1_ps(x[i * d + l]);
            acc[i][0] = _mm512_fmadd_ps(xv, y0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, y1, acc[i][1]);
        }
    }
    for (size_t i = 0; i < MX; ++i) {
        float* o = out + i * ldo;
        if (add) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(m0, o));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, acc[i][0]);
        _mm512_mask_storeu_ps(o + 16, m1, acc[i][1]);
    }
}

using MicroTile = void (*)(const float*, size_t, const float*, size_t, float*, size_t, __mmask16, __mmask16, bool);
constexpr MicroTile kTiles[kRowsX + 1] = {nullptr,         micro_tile<1>,  micro_tile<2>, micro_tile<3>, micro_tile<4>,
                                          micro_tile<5>,   micro_tile<6>,  micro_tile<7>, micro_tile<8>, micro_tile<9>,
                                          micro_tile<10>, micro_tile<11>, micro_tile<12>};

inline __mmask16 lanes(size_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }

// The 16 lane sums of v[0..15] as one vector, row r in lane r: pairs of rows, then
// fours, within each 128-bit quarter, then the quarters (45 instructions for 16
// rows instead of a full horizontal reduction per row).
inline __m512 reduce16(const __m512* v) {
    __m512 a[8], b[4];
    for (int i = 0; i < 8; ++i)  // per quarter: v[2i] in lanes 0, 2; v[2i+1] in lanes 1, 3
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i)  // per quarter: v[4i .. 4i+3] in lanes 0..3
        b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 e0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(b[0], b[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 e1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(b[2], b[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(e0, e1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(e0, e1, _MM_SHUFFLE(3, 1, 3, 1)));
}

inline __m512 load_d(const float* p, size_t c, size_t d) {
    return c + 16 <= d ? _mm512_loadu_ps(p + c) : _mm512_maskz_loadu_ps(lanes(d - c), p + c);
}

// A few x rows (a single query, say): no packing, which would cost more than the
// products. Per block of 16 y rows (in L1 while each x row passes over it), one
// FMA chain per y row over d, the 16 chains' sums reduced together.
constexpr size_t kGemvMaxRows = 3;

void dot_gemv(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    size_t j = 0;
    for (; j + 16 <= ny; j += 16) {
        const float* y0 = y + j * d;
        for (size_t i = 0; i < nx; ++i) {
            const float* xi = x + i * d;
            __m512 acc[16];
            // Row by row, each row's floats in order: the rows are read as one sequential
            // stream (interleaving the 16 rows per 16 floats defeats the hardware prefetcher
            // once they come from memory); the out-of-order core overlaps the rows' chains.
#pragma GCC unroll 16
            for (int b = 0; b < 16; ++b) {
                const float* yb = y0 + b * d;
                __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();  // two chains: half the latency
                size_t c = 0;
                for (; c + 32 <= d; c += 32) {
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(xi + c), _mm512_loadu_ps(yb + c), a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(xi + c + 16), _mm512_loadu_ps(yb + c + 16), a1);
                }
                for (; c < d; c += 16) a0 = _mm512_fmadd_ps(load_d(xi, c, d), load_d(yb, c, d), a0);
                acc[b] = _mm512_add_ps(a0, a1);
            }
            _mm512_storeu_ps(out + i * ldo + j, reduce16(acc));
        }
    }
    for (; j < ny; ++j)
        for (size_t i = 0; i < nx; ++i) {
            __m512 acc = _mm512_setzero_ps();
            for (size_t c = 0; c < d; c += 16) acc = _mm512_fmadd_ps(load_d(x + i * d, c, d), load_d(y + j * d, c, d), acc);
            out[i * ldo + j] = _mm512_reduce_add_ps(acc);
        }
}

// 16 halves at p + c (fewer at the row's end, d - c < 16), widened to floats.
inline __m512 load_half(const uint16_t* p, size_t c, size_t d) {
    const __m256i h = c + 16 <= d ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c))
                                  : _mm256_maskz_loadu_epi16(lanes(d - c), p + c);
    return _mm512_cvtph_ps(h);
}

// One row's <x, h> lanes over its halves: two FMA chains, the row read in order.
inline __m512 dot_half_row(const float* x, const uint16_t* y, size_t d) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + 32 <= d; c += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), load_half(y, c, d), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c + 16), load_half(y, c + 16, d), a1);
    }
    for (; c < d; c += 16) a0 = _mm512_fmadd_ps(load_d(x, c, d), load_half(y, c, d), a0);
    return _mm512_add_ps(a0, a1);
}

// One row's ||x - y||^2 lanes: two FMA chains over the differences the exact
// kernel forms (fl(x_l - y_l)), the row read in order.
inline __m512 l2_row(const float* x, const float* y, size_t d) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + 32 <= d; c += 32) {
        const __m512 e0 = _mm512_sub_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c));
        const __m512 e1 = _mm512_sub_ps(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(y + c + 16));
        a0 = _mm512_fmadd_ps(e0, e0, a0);
        a1 = _mm512_fmadd_ps(e1, e1, a1);
    }
    for (; c < d; c += 16) {
        const __m512 e = _mm512_sub_ps(load_d(x, c, d), load_d(y, c, d));
        a0 = _mm512_fmadd_ps(e, e, a0);
    }
    return _mm512_add_ps(a0, a1);
}

// One row's <x, y> and ||y||^2 lanes from one read of the row.
inline void dot_norm_row(const float* x, const float* y, size_t d, __m512& dot, __m512& norm) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), n0 = _mm512_setzero_ps(), n1 = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + 32 <= d; c += 32) {
        const __m512 y0 = _mm512_loadu_ps(y + c), y1 = _mm512_loadu_ps(y + c + 16);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), y0, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c + 16), y1, a1);
        n0 = _mm512_fmadd_ps(y0, y0, n0);
        n1 = _mm512_fmadd_ps(y1, y1, n1);
    }
    for (; c < d; c += 16) {
        const __m512 yv = load_d(y, c, d);
        a0 = _mm512_fmadd_ps(load_d(x, c, d), yv, a0);
        n0 = _mm512_fmadd_ps(yv, yv, n0);
    }
    dot = _mm512_add_ps(a0, a1);
    norm = _mm512_add_ps(n0, n1);
}

}  // namespace

// IVF-Flat's list scan (kernels.h, l2sqr_ny_fast and dot_ny_fast): row after row, as
// dot_gemv, 16 rows' lane sums reduced together.
void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    size_t j = 0;
    for (; j + 16 <= ny; j += 16) {
        __m512 acc[16];
#pragma GCC unroll 16
        for (int b = 0; b < 16; ++b) acc[b] = l2_row(x, y + (j + b) * d, d);
        _mm512_storeu_ps(out + j, reduce16(acc));
    }
    for (; j < ny; ++j) out[j] = _mm512_reduce_add_ps(l2_row(x, y + j * d, d));
}

void dot_ny(const float* x, const float* y, size_t ny, size_t d, float* dots, float* sqnorms) {
    size_t j = 0;
    for (; j + 16 <= ny; j += 16) {
        __m512 dot[16], norm[16];
#pragma GCC unroll 16
        for (int b = 0; b < 16; ++b) dot_norm_row(x, y + (j + b) * d, d, dot[b], norm[b]);
        _mm512_storeu_ps(dots + j, reduce16(dot));
        _mm512_storeu_ps(sqnorms + j, reduce16(norm));
    }
    for (; j < ny; ++j) {
        __m512 dot, norm;
        dot_norm_row(x, y + j * d, d, dot, norm);
        dots[j] = _mm512_reduce_add_ps(dot);
        sqnorms[j] = _mm512_reduce_add_ps(norm);
    }
}

// Rows in half precision (kernels.h, dot_half). Per block of 16 rows and x row, 16
// accumulators, one per row: each 16 floats of x are loaded once and meet the 16 rows' halves
// at those dimensions, so a row costs one 32-byte load, a conversion and an FMA per 16
// dimensions (reloading x per row, as dot_gemv does, would make the loads the bound). The
// block's rows are read interleaved, so a block a few ahead is prefetched on the way.
constexpr size_t kHalfPrefetchBlocks = 4;

void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo) {
    const size_t block_bytes = 16 * d * sizeof(uint16_t);
    const size_t steps = (d + 15) / 16;
    const size_t lines_per_step = (block_bytes / 64 + steps - 1) / std::max<size_t>(steps, 1);
    size_t j = 0;
    for (; j + 16 <= ny; j += 16) {
        const uint16_t* y0 = y + j * d;
        const char* next = reinterpret_cast<const char*>(y0 + kHalfPrefetchBlocks * 16 * d);
        const bool prefetch = j + (kHalfPrefetchBlocks + 1) * 16 <= ny;
        for (size_t i = 0; i < nx; ++i) {
            const float* xi = x + i * d;
            __m512 acc[16];
#pragma GCC unroll 16
            for (int b = 0; b < 16; ++b) acc[b] = _mm512_setzero_ps();
            for (size_t c = 0, step = 0; c < d; c += 16, ++step) {
                if (prefetch && i == 0)
                    for (size_t l = 0; l < lines_per_step; ++l) {
                        const size_t off = (step * lines_per_step + l) * 64;
                        if (off < block_bytes) _mm_prefetch(next + off, _MM_HINT_T0);
                    }
                const __m512 xv = load_d(xi, c, d);
#pragma GCC unroll 16
                for (int b = 0; b < 16; ++b) acc[b] = _mm512_fmadd_ps(xv, load_half(y0 + b * d, c, d), acc[b]);
            }
            _mm512_storeu_ps(out + i * ldo + j, reduce16(acc));
        }
    }
    for (; j < ny; ++j)
        for (size_t i = 0; i < nx; ++i) out[i * ldo + j] = _mm512_reduce_add_ps(dot_half_row(x + i * d, y + j * d, d));
}

void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out, size_t ldo) {
    if (nx <= kGemvMaxRows) {
        dot_gemv(x, nx, y, ny, d, out, ldo);
        return;
    }
    alignas(64) float panel[kPanel * kDepth];
    for (size_t j0 = 0; j0 < ny; j0 += kPanel) {
        const size_t nc = std::min(kPanel, ny - j0);
        const __mmask16 m0 = lanes(nc), m1 = lanes(nc > 16 ? nc - 16 : 0);
        for (size_t k0 = 0; k0 < d; k0 += kDepth) {
            const size_t kc = std::min(kDepth, d - k0);
            pack_panel(y + j0 * d + k0, nc, d, kc, panel);
            for (size_t i0 = 0; i0 < nx; i0 += kRowsX) {
                const size_t mx = std::min(kRowsX, nx - i0);
                kTiles[mx](x + i0 * d + k0, d, panel, kc, out + i0 * ldo + j0, ldo, m0, m1, k0 > 0);
            }
        }
    }
    if (d == 0)
        for (size_t i = 0; i < nx; ++i) std::fill(out + i * ldo, out + i * ldo + ny, 0.0f);
}

}  // namespace avx512_fma
}  // namespace pqkit
