#include "refine.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "parallel.h"
#include "topk.h"

namespace pqkit {

void rerank(const float* x, size_t nq, const float* y, size_t ny, size_t d, const int64_t* rows,
            const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I) {
    if (k == 0) throw std::invalid_argument("rerank needs k >= 1");
    for (size_t t = 0; t < nq * c; ++t)
        if (rows[t] < -1 || rows[t] >= static_cast<int64_t>(ny))
            throw std::invalid_argument("candidate row " + std::to_string(rows[t]) + " is outside -1.." +
                                        std::to_string(static_cast<int64_t>(ny) - 1));
    const bool ip = metric == Metric::IP;
    // A chunk of queries per task: each query costs c distance evaluations.
    const size_t chunk = std::max<size_t>(1, 4096 / std::max<size_t>(1, c));
    parallel_for(nq, n_threads, chunk, [&](size_t begin, size_t end, int) {
        const Kernels& K = kernels();
        TopK top(k);
        for (size_t i = begin; i < end; ++i) {
            const float* q = x + i * d;
            top.clear();
            for (size_t j = 0; j < c; ++j) {
                const int64_t r = rows[i * c + j];
                if (r < 0) continue;
                const float* v = y + static_cast<size_t>(r) * d;
                float value;
                if (ip) {
                    K.dot_tile(q, 1, v, 1, d, &value, 1);
                    value = -value;
                } else {
                    K.l2sqr_ny(q, v, 1, d, &value);
                }
                top.push(value, ids[i * c + j]);
            }
            top.write(D + i * k, I + i * k, ip);
        }
    });
}

}  // namespace pqkit
