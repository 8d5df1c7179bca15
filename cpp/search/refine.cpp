#include "search/refine.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/codes.h"
#include "common/parallel.h"
#include "common/topk.h"
#include "kernels/kernels.h"
#include "search/invlists.h"
#include "search/pq.h"

namespace pqkit {

namespace {

void check_rows(const int64_t* rows, size_t n, size_t ny) {
    for (size_t t = 0; t < n; ++t)
        if (rows[t] < -1 || rows[t] >= static_cast<int64_t>(ny))
            throw std::invalid_argument("candidate row " + std::to_string(rows[t]) + " is outside -1.." +
                                        std::to_string(static_cast<int64_t>(ny) - 1));
}

// The shared loop: `make_fetch()` gives each task a fetcher: fetch(r) returns the
// d floats of row r (a pointer into the store, or a decoded scratch copy), and
// fetch.prefetch(r) starts loading row r.
template <class MakeFetch>
void rerank_rows(const float* x, size_t nq, size_t d, const int64_t* rows, const int64_t* ids, size_t c, size_t k,
                 Metric metric, int n_threads, float* D, int64_t* I, const MakeFetch& make_fetch) {
    if (k == 0) throw std::invalid_argument("rerank needs k >= 1");
    const bool ip = metric == Metric::IP;
    // A chunk of queries per task: each query costs c distance evaluations.
    const size_t chunk = std::max<size_t>(1, 4096 / std::max<size_t>(1, c));
    parallel_for(nq, n_threads, chunk, [&](size_t begin, size_t end, int) {
        const Kernels& K = kernels();
        auto fetch = make_fetch();
        TopK top(k);
        for (size_t i = begin; i < end; ++i) {
            const float* q = x + i * d;
            top.clear();
            for (size_t j = 0; j < c; ++j) {
                // The rows of the next query arrive while this one is computed (its
                // candidates are scattered: one cache miss each, or a few).
                if (i + 1 < end) {
                    const int64_t ahead = rows[(i + 1) * c + j];
                    if (ahead >= 0) fetch.prefetch(static_cast<size_t>(ahead));
                }
                const int64_t r = rows[i * c + j];
                if (r < 0) continue;
                const float* v = fetch(static_cast<size_t>(r));
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

// rerank's row fetcher: a pointer into the stored rows.
struct RowFetch {
    const float* y;
    size_t d;
    void prefetch(size_t r) const {  // every cache line the row touches
        const uintptr_t first = reinterpret_cast<uintptr_t>(y + r * d) / 64 * 64;
        const uintptr_t end = reinterpret_cast<uintptr_t>(y + (r + 1) * d);
        for (uintptr_t line = first; line < end; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
    }
    const float* operator()(size_t r) const { return y + r * d; }
};

// rerank_pq's row fetcher, one per task: the gathered code, its sub-quantizer
// indices and the decoded vector (pq_decode's floats).
struct PQRowDecoder {
    const PQShape* s;
    const uint8_t* codes;
    bool blocked;
    const float* codebooks;
    std::vector<uint8_t> code;
    std::vector<int32_t> idx;
    std::vector<float> vec;
    void prefetch(size_t r) const {
        // Rows: the code's line. Blocked: its first byte column only (a line per byte).
        __builtin_prefetch(blocked ? codes + blocked_offset(r, 0, s->code_size) : codes + r * s->code_size, 0, 3);
    }
    const float* operator()(size_t r) {
        // Rows: one contiguous code. Blocked: code_size bytes 64 apart (a cache line each).
        const uint8_t* one = codes + r * s->code_size;
        if (blocked) {
            blocked_get(codes, r, s->code_size, code.data());
            one = code.data();
        }
        if (s->nbits == 8) {
            for (size_t m = 0; m < s->M; ++m) idx[m] = one[m];
        } else {
            pq_unpack(*s, one, 1, idx.data());
        }
        // The centroid copies, with the short sub-vector lengths unrolled (a memcpy call
        // per sub-quantizer cost more than the distance).
        switch (s->dsub) {
            case 1: copy_centroids<1>(); break;
            case 2: copy_centroids<2>(); break;
            case 4: copy_centroids<4>(); break;
            case 8: copy_centroids<8>(); break;
            default: copy_centroids<0>(); break;
        }
        return vec.data();
    }
    template <size_t kDsub>  // 0: s->dsub at run time
    void copy_centroids() {
        const size_t dsub = kDsub ? kDsub : s->dsub, ksub = s->ksub;
        float* out = vec.data();
        for (size_t m = 0; m < s->M; ++m) {
            const float* centroid = codebooks + (m * ksub + static_cast<size_t>(idx[m])) * dsub;
            for (size_t t = 0; t < dsub; ++t) out[m * dsub + t] = centroid[t];
        }
    }
};

}  // namespace

void rerank(const float* x, size_t nq, const float* y, size_t ny, size_t d, const int64_t* rows,
            const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I) {
    check_rows(rows, nq * c, ny);
    rerank_rows(x, nq, d, rows, ids, c, k, metric, n_threads, D, I, [&] { return RowFetch{y, d}; });
}

void rerank_pq(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists, const int64_t* rows,
               const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I) {
    const PQShape& s = pq.shape();
    if (lists.nlist() != 1 || lists.code_size() != s.code_size)
        throw std::invalid_argument("rerank_pq needs one list of codes of " + std::to_string(s.code_size) + " bytes");
    const size_t ny = lists.list_size(0);
    check_rows(rows, nq * c, ny);
    const uint8_t* codes = lists.list_codes(0);
    const bool blocked = lists.layout() == CodeLayout::Blocked;
    const float* codebooks = pq.data();
    rerank_rows(x, nq, s.d, rows, ids, c, k, metric, n_threads, D, I, [&] {
        return PQRowDecoder{&s, codes, blocked, codebooks, std::vector<uint8_t>(s.code_size), std::vector<int32_t>(s.M),
                       std::vector<float>(s.d)};
    });
}

}  // namespace pqkit
