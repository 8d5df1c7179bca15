// Greedy k-center selection (Gonzalez 1985; the coreset step of PatchCore,
// Roth et al. 2022, Algorithm 1): starting from one row, repeatedly add the row
// farthest from everything selected so far,
//   c_{t+1} = argmax_i  w_i * min_{c in C_t} ||x_i - c||^2   (w_i = 1 without weights).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pqkit {

// Writes n_select distinct-or-repeated row numbers of x (n x d) to `selected`,
// in selection order, starting with `first`. One fused pass per step: the
// squared distance to the newest centre (kernel l2sqr_ny, 16-lane order), the
// running minimum and the arg-max (first row on ties) of w_i * min_i, split
// over threads by row ranges; the per-range winners are compared in range
// order, so the result is the same for any thread count and SIMD level.
// weights: n non-negative floats, or nullptr. Throws std::invalid_argument
// unless the arguments pass check_kcenter_args.
void greedy_kcenter(const float* x, size_t n, size_t d, int64_t n_select, int64_t first, const float* weights,
                    int n_threads, int64_t* selected);

// Throws std::invalid_argument unless n >= 1, d >= 1, 1 <= n_select <= n and
// 0 <= first < n (before a caller allocates n_select outputs); returns n_select.
size_t check_kcenter_args(size_t n, size_t d, int64_t n_select, int64_t first);

}  // namespace pqkit
