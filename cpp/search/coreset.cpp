#include "search/coreset.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/parallel.h"
#include "kernels/kernels.h"

namespace pqkit {
namespace {
// Rows per task: large enough that a step's dispatch cost stays small, small
// enough that both cores share a step of a 10k-row bank.
constexpr size_t kRowsPerTask = 4096;
}  // namespace

size_t check_kcenter_args(size_t n, size_t d, int64_t n_select, int64_t first) {
    if (n == 0) throw std::invalid_argument("n must be >= 1, got 0");
    if (d == 0) throw std::invalid_argument("d must be >= 1, got 0");
    if (n_select < 1 || static_cast<uint64_t>(n_select) > n)
        throw std::invalid_argument("n_select must be in 1.." + std::to_string(n) + ", got " + std::to_string(n_select));
    if (first < 0 || static_cast<uint64_t>(first) >= n)
        throw std::invalid_argument("first must be a row number in 0.." + std::to_string(n - 1) + ", got " +
                                    std::to_string(first));
    return static_cast<size_t>(n_select);
}

void greedy_kcenter(const float* x, size_t n, size_t d, int64_t n_select_arg, int64_t first_arg,
                    const float* weights, int n_threads, int64_t* selected) {
    const size_t n_select = check_kcenter_args(n, d, n_select_arg, first_arg);
    const size_t first = static_cast<size_t>(first_arg);
    const size_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
    std::vector<float> min_dist(n, std::numeric_limits<float>::infinity());
    std::vector<float> best_score(tasks);
    std::vector<size_t> best_row(tasks);
    size_t centre = first;
    for (size_t t = 0; t < n_select; ++t) {
        selected[t] = static_cast<int64_t>(centre);
        const float* c = x + centre * d;
        parallel_for(n, n_threads, kRowsPerTask, [&](size_t begin, size_t end, int) {
            const Kernels& K = kernels();
            float dist[256];
            float top = -1.0f;
            size_t arg = begin;
            for (size_t r0 = begin; r0 < end; r0 += 256) {
                const size_t rb = std::min<size_t>(256, end - r0);
                K.l2sqr_ny(c, x + r0 * d, rb, d, dist);
                for (size_t j = 0; j < rb; ++j) {
                    const size_t i = r0 + j;
                    float m = min_dist[i];
                    m = dist[j] < m ? dist[j] : m;
                    if (i == centre) m = 0.0f;
                    min_dist[i] = m;
                    const float score = weights ? weights[i] * m : m;
                    if (score > top) {
                        top = score;
                        arg = i;
                    }
                }
            }
            best_score[begin / kRowsPerTask] = top;
            best_row[begin / kRowsPerTask] = arg;
        });
        size_t winner = 0;
        for (size_t task = 1; task < tasks; ++task)
            if (best_score[task] > best_score[winner]) winner = task;
        centre = best_row[winner];
    }
}

}  // namespace pqkit
