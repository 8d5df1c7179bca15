// Portable kernel bodies in the fixed summation order documented in kernels.h.
// Included by each kernels_<level>.cpp inside its own namespace, so the
// compiler may vectorise them with that file's flags; lane-wise loops keep
// every rounding step identical, whatever the vector width.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "common/codes.h"
#include "common/half.h"
#include "kernels/kernels.h"

namespace pqkit {
// Internal linkage on purpose: each level's file gets its own copy compiled
// with its own flags (a shared inline copy could leak AVX-512 code into the
// scalar level).
namespace {
namespace generic {

constexpr size_t kLanes = 16;

// The reduction tree shared by every level: (l + l+8), (l + l+4), (l + l+2), (l + l+1).
inline float reduce_lanes(const float* acc) {
    float s8[8], s4[4], s2[2];
    for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
    for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
    for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
    return s2[0] + s2[1];
}

inline float dot(const float* x, const float* y, size_t d) {
    float acc[kLanes] = {0};
    size_t j = 0;
    for (; j + kLanes <= d; j += kLanes) {
        for (size_t l = 0; l < kLanes; ++l) {
            float p = x[j + l] * y[j + l];
            acc[l] = acc[l] + p;
        }
    }
    for (size_t l = 0; j + l < d; ++l) {
        float p = x[j + l] * y[j + l];
        acc[l] = acc[l] + p;
    }
    return reduce_lanes(acc);
}

inline float l2sqr(const float* x, const float* y, size_t d) {
    float acc[kLanes] = {0};
    size_t j = 0;
    for (; j + kLanes <= d; j += kLanes) {
        for (size_t l = 0; l < kLanes; ++l) {
            float diff = x[j + l] - y[j + l];
            float p = diff * diff;
            acc[l] = acc[l] + p;
        }
    }
    for (size_t l = 0; j + l < d; ++l) {
        float diff = x[j + l] - y[j + l];
        float p = diff * diff;
        acc[l] = acc[l] + p;
    }
    return reduce_lanes(acc);
}

inline void dot_tile(const float* x, size_t nx, const float* y, size_t ny, size_t d, float* out,
                     size_t ldo) {
    for (size_t i = 0; i < nx; ++i)
        for (size_t j = 0; j < ny; ++j) out[i * ldo + j] = dot(x + i * d, y + j * d, d);
}

inline void sqnorms(const float* x, size_t n, size_t d, float* out) {
    for (size_t i = 0; i < n; ++i) out[i] = dot(x + i * d, x + i * d, d);
}

inline void l2sqr_ny(const float* x, const float* y, size_t ny, size_t d, float* out) {
    for (size_t j = 0; j < ny; ++j) out[j] = l2sqr(x, y + j * d, d);
}

// dot_ny_fast at a level without a faster order: the exact products and norms.
inline void dot_ny_sqnorms(const float* x, const float* y, size_t ny, size_t d, float* dots, float* norms) {
    dot_tile(x, 1, y, ny, d, dots, ny);
    sqnorms(y, ny, d, norms);
}

// dot_half at a level without a faster order: each row's halves widened (exactly), then
// dot's 16-lane sum, one row at a time.
inline void dot_half(const float* x, size_t nx, const uint16_t* y, size_t ny, size_t d, float* out, size_t ldo) {
    float row[256];
    for (size_t j = 0; j < ny; ++j)
        for (size_t i = 0; i < nx; ++i) {
            float s = 0.0f;
            for (size_t c0 = 0; c0 < d; c0 += 256) {
                const size_t n = std::min<size_t>(256, d - c0);
                for (size_t c = 0; c < n; ++c) row[c] = half_to_float(y[j * d + c0 + c]);
                s += dot(x + i * d + c0, row, n);
            }
            out[i * ldo + j] = s;
        }
}

template <bool L2>
inline void to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub, size_t ksub,
                           float* out, size_t ldo) {
    for (size_t i = 0; i < nq; ++i) {
        float* o = out + i * ldo;
        for (size_t c = 0; c < ksub; ++c) o[c] = 0.0f;
        for (size_t j = 0; j < dsub; ++j) {
            const float qj = q[i * ldq + j];
            const float* row = ct + j * ksub;
            for (size_t c = 0; c < ksub; ++c) {
                float diff = qj - row[c];
                float p = L2 ? diff * diff : qj * row[c];
                o[c] = o[c] + p;
            }
        }
    }
}

inline void l2_to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub,
                              size_t ksub, float* out, size_t ldo) {
    to_centroids_t<true>(q, nq, ldq, ct, dsub, ksub, out, ldo);
}

inline void ip_to_centroids_t(const float* q, size_t nq, size_t ldq, const float* ct, size_t dsub,
                              size_t ksub, float* out, size_t ldo) {
    to_centroids_t<false>(q, nq, ldq, ct, dsub, ksub, out, ldo);
}

inline size_t argmin(const float* v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i)
        if (v[i] < v[best]) best = i;
    return best;
}

inline void min_max(const float* t, size_t n, float* lo, float* hi) {
    float a = t[0], b = t[0];
    for (size_t i = 1; i < n; ++i) {
        a = t[i] < a ? t[i] : a;
        b = t[i] > b ? t[i] : b;
    }
    *lo = a;
    *hi = b;
}

inline void quantize_row(const float* t, size_t n, float offset, float scale, float qmax, uint8_t* out) {
    for (size_t i = 0; i < n; ++i) {
        float v = (t[i] - offset) * scale;
        v = v < qmax ? v : qmax;
        out[i] = static_cast<uint8_t>(static_cast<int>(v));
    }
}

inline void min_max_rows(const float* t, size_t rows, size_t n, float* lo, float* hi) {
    for (size_t r = 0; r < rows; ++r) min_max(t + r * n, n, lo + r, hi + r);
}

inline void quantize_rows(const float* t, size_t rows, size_t n, const float* offsets, float scale, float qmax,
                   uint8_t* out) {
    for (size_t r = 0; r < rows; ++r) quantize_row(t + r * n, n, offsets[r], scale, qmax, out + r * n);
}

// The filter of one block, given its 64 estimates (codes past `valid` never pass).
inline uint64_t filter_block(const uint16_t* est, size_t valid, const float* bias,
                             const ScanFilter& f) {
    uint64_t mask = 0;
    for (size_t i = 0; i < valid; ++i) {
        bool pass;
        if (bias == nullptr) {
            pass = est[i] <= f.max_est;
        } else {
            float v = static_cast<float>(est[i]) * f.inv_scale;
            pass = v + bias[i] <= f.limit;
        }
        if (pass) mask |= uint64_t(1) << i;
    }
    return mask;
}

inline void scan_lut8(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut,
                      const ScanFilter& f, uint64_t* masks) {
    for (size_t b = 0; b * kBlock < n; ++b) {
        const uint8_t* blk = blocks + b * kBlock * M;
        uint16_t est[kBlock] = {0};
        for (size_t m = 0; m < M; ++m) {
            const uint8_t* row = blk + m * kBlock;
            const uint8_t* t = lut + m * 256;
            for (size_t i = 0; i < kBlock; ++i) est[i] = static_cast<uint16_t>(est[i] + t[row[i]]);
        }
        const size_t valid = block_valid(n, b);
        if (f.est_out) __builtin_memcpy(f.est_out + b * kBlock, est, sizeof(est));
        masks[b] = filter_block(est, valid, f.bias ? f.bias + b * kBlock : nullptr, f);
    }
}

inline void scan_lut4(const uint8_t* blocks, size_t n, size_t M, const uint8_t* lut,
                      const ScanFilter& f, uint64_t* masks) {
    const size_t code_size = (M + 1) / 2;
    for (size_t b = 0; b * kBlock < n; ++b) {
        const uint8_t* blk = blocks + b * kBlock * code_size;
        uint16_t est[kBlock] = {0};
        for (size_t j = 0; j < code_size; ++j) {
            const uint8_t* row = blk + j * kBlock;
            const uint8_t* t_lo = lut + 2 * j * kLut4Row;
            const uint8_t* t_hi = t_lo + kLut4Row;
            for (size_t i = 0; i < kBlock; ++i)
                est[i] = static_cast<uint16_t>(est[i] + t_lo[row[i] & 15] + t_hi[row[i] >> 4]);
        }
        const size_t valid = block_valid(n, b);
        if (f.est_out) __builtin_memcpy(f.est_out + b * kBlock, est, sizeof(est));
        masks[b] = filter_block(est, valid, f.bias ? f.bias + b * kBlock : nullptr, f);
    }
}

// ---- exact search's selection (see kernels.h)

inline void keys_and_minima(float* keys, size_t n, float x_norm, const float* y_norms, float* mins) {
    for (size_t l = 0; l < kKeySets; ++l) mins[l] = std::numeric_limits<float>::infinity();
    for (size_t j0 = 0; j0 < n; j0 += kKeySets) {
        const size_t len = n - j0 < kKeySets ? n - j0 : kKeySets;
        float* v = keys + j0;
        if (y_norms != nullptr) {
            const float* yn = y_norms + j0;
            for (size_t l = 0; l < len; ++l) {
                const float key = x_norm + yn[l] - 2.0f * v[l];
                v[l] = key < 0.0f ? 0.0f : key;
            }
        } else {
            for (size_t l = 0; l < len; ++l) v[l] = -v[l];
        }
        for (size_t l = 0; l < len; ++l) mins[l] = v[l] < mins[l] ? v[l] : mins[l];
    }
}

// Up to kKeySets values, insertion into a sorted run of the k smallest so far
// (for a few values this beats a general selection); nth_element on a copy
// beyond.
inline float kth_smallest(const float* v, size_t n, size_t k) {
    if (n > kKeySets) {
        float copy[kSelectMax];
        std::copy(v, v + n, copy);
        std::nth_element(copy, copy + (k - 1), copy + n);
        return copy[k - 1];
    }
    float best[kKeySets];
    size_t have = 0;
    for (size_t i = 0; i < n; ++i) {
        const float x = v[i];
        if (have == k && !(x < best[k - 1])) continue;
        size_t p = have < k ? have++ : k - 1;
        for (; p > 0 && x < best[p - 1]; --p) best[p] = best[p - 1];
        best[p] = x;
    }
    return best[k - 1];
}

// An index sort by (value, index).
inline void sort_order(const float* v, size_t n, uint32_t* order) {
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
    std::sort(order, order + n, [v](uint32_t a, uint32_t b) { return v[a] < v[b] || (v[a] == v[b] && a < b); });
}

inline size_t indices_at_most(const float* keys, size_t n, float th, uint32_t* out) {
    size_t c = 0;
    for (size_t j = 0; j < n; ++j) {
        out[c] = static_cast<uint32_t>(j);
        c += keys[j] <= th ? 1 : 0;
    }
    return c;
}

inline void decode_sq8(const uint8_t* code, const float* vmin, const float* step, size_t d, float* out) {
    for (size_t t = 0; t < d; ++t) {
        float scaled = static_cast<float>(code[t]) * step[t];
        out[t] = vmin[t] + scaled;
    }
}

inline uint64_t read_bytes(const uint8_t* data, size_t n) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        __builtin_memcpy(&w, data + i, 8);
        acc += w;
    }
    for (; i < n; ++i) acc += data[i];
    return acc;
}

}  // namespace generic
}  // namespace
}  // namespace pqkit
