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

// Candidates fetched ahead of the one computed when no next query's rows are
// (a single query, or the last query of a task): rows are scattered, so each
// costs a cache miss or several, and a few in flight overlap them.
constexpr size_t kRowsAhead = 4;

// The best k of candidates [j0, j1) of query i into `top` (cleared first).
// While a candidate is computed, the same candidate of the next query (when
// `next` is set: a batch) or the candidate kRowsAhead further on (otherwise)
// is prefetched.
template <class Fetch>
void rerank_range(const float* q, const int64_t* rows, const int64_t* ids, const int64_t* next, size_t j0,
                  size_t j1, bool ip, size_t d, const Kernels& K, Fetch& fetch, TopK& top) {
    top.clear();
    for (size_t j = j0; j < j1; ++j) {
        const int64_t ahead = next ? next[j] : (j + kRowsAhead < j1 ? rows[j + kRowsAhead] : -1);
        if (ahead >= 0) fetch.prefetch(static_cast<size_t>(ahead));
        const int64_t r = rows[j];
        if (r < 0) continue;
        const float* v = fetch(static_cast<size_t>(r));
        float value;
        if (ip) {
            K.dot_tile(q, 1, v, 1, d, &value, 1);
            value = -value;
        } else {
            K.l2sqr_ny(q, v, 1, d, &value);
        }
        top.push(value, ids[j]);
    }
}

// The shared loop: `make_fetch()` gives each task a fetcher: fetch(r) returns the
// d floats of row r (a pointer into the store, or a decoded scratch copy), and
// fetch.prefetch(r) starts loading row r.
//
// A batch gives each task whole queries. A single query whose candidates span at
// least min_split_bytes_per_thread() / 8 of row data per thread (784-d rows: 21
// candidates or more) has its candidates split over the threads instead: the
// fetches are cache misses, and each core keeps its own in flight. The parts'
// top-k merge into the one a single pass keeps (the best k by (key, id) of the
// union), so results do not depend on the split.
template <class MakeFetch>
void rerank_rows(const float* x, size_t nq, size_t d, const int64_t* rows, const int64_t* ids, size_t c, size_t k,
                 Metric metric, int n_threads, float* D, int64_t* I, const MakeFetch& make_fetch) {
    if (k == 0) throw std::invalid_argument("rerank needs k >= 1");
    const bool ip = metric == Metric::IP;
    const size_t threads = static_cast<size_t>(std::max(1, n_threads));
    const size_t split_bytes = std::max<size_t>(1, min_split_bytes_per_thread() / 8);
    const size_t row_bytes = d * sizeof(float);
    if (nq == 1 && threads > 1 && c * row_bytes >= split_bytes * 2) {
        const size_t n_parts = std::min(threads, c * row_bytes / split_bytes);
        std::vector<TopK> parts(n_parts, TopK(k));
        parallel_for(n_parts, n_threads, 1, [&](size_t begin, size_t end, int) {
            const Kernels& K = kernels();
            auto fetch = make_fetch();
            for (size_t part = begin; part < end; ++part)
                rerank_range(x, rows, ids, nullptr, part * c / n_parts, (part + 1) * c / n_parts, ip, d, K,
                             fetch, parts[part]);
        });
        for (size_t part = 1; part < n_parts; ++part) parts[0].merge(parts[part]);
        parts[0].write(D, I, ip);
        return;
    }
    // A chunk of queries per task: each query costs c distance evaluations.
    const size_t chunk = std::max<size_t>(1, 4096 / std::max<size_t>(1, c));
    parallel_for(nq, n_threads, chunk, [&](size_t begin, size_t end, int) {
        const Kernels& K = kernels();
        auto fetch = make_fetch();
        TopK top(k);
        for (size_t i = begin; i < end; ++i) {
            // The rows of the next query arrive while this one is computed.
            const int64_t* next = i + 1 < end ? rows + (i + 1) * c : nullptr;
            rerank_range(x + i * d, rows + i * c, ids + i * c, next, 0, c, ip, d, K, fetch, top);
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

// rerank_sq's row fetcher, one per task: the decoded vector of an 8-bit
// scalar-quantizer code (kernel decode_sq8: vmin + code * step per dimension).
struct SQRowDecoder {
    const Kernels* K;
    const uint8_t* codes;
    const float* vmin;
    const float* step;
    size_t d;
    std::vector<float> vec;
    void prefetch(size_t r) const {  // every cache line the code touches
        const uintptr_t first = reinterpret_cast<uintptr_t>(codes + r * d) / 64 * 64;
        const uintptr_t end = reinterpret_cast<uintptr_t>(codes + (r + 1) * d);
        for (uintptr_t line = first; line < end; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
    }
    const float* operator()(size_t r) {
        K->decode_sq8(codes + r * d, vmin, step, d, vec.data());
        return vec.data();
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

void rerank_sq(const float* x, size_t nq, const uint8_t* codes, size_t ny, size_t d, const float* vmin,
               const float* step, const int64_t* rows, const int64_t* ids, size_t c, size_t k, Metric metric,
               int n_threads, float* D, int64_t* I) {
    check_rows(rows, nq * c, ny);
    rerank_rows(x, nq, d, rows, ids, c, k, metric, n_threads, D, I,
                [&] { return SQRowDecoder{&kernels(), codes, vmin, step, d, std::vector<float>(d)}; });
}

namespace {

// rerank, rerank_sq or rerank_pq, as `store` holds its rows.
void rerank_store(const float* x, size_t nq, size_t d, const RefineStore& store, const int64_t* rows,
                  const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I) {
    switch (store.kind) {
    case RefineStore::Kind::Flat:
        rerank(x, nq, store.vectors, store.ny, d, rows, ids, c, k, metric, n_threads, D, I);
        return;
    case RefineStore::Kind::SQ8:
        rerank_sq(x, nq, store.codes, store.ny, d, store.vmin, store.step, rows, ids, c, k, metric, n_threads, D, I);
        return;
    case RefineStore::Kind::PQ:
        if (store.pq->shape().d != d) throw std::invalid_argument("the refine codebooks' d differs from the queries'");
        rerank_pq(x, nq, *store.pq, *store.lists, rows, ids, c, k, metric, n_threads, D, I);
        return;
    }
}

}  // namespace

void ivfpq_search_rerank(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                         const InvertedLists& lists, IVFSearchParams p, const RefineStore& store, size_t k,
                         float* D, int64_t* I) {
    p.estimates = true;
    const size_t c = p.k;
    std::vector<float> candidate_keys(nq * c);
    std::vector<int64_t> candidates(nq * c);
    ivfpq_search(x, nq, coarse, pq, lists, p, candidate_keys.data(), candidates.data());
    rerank_store(x, nq, coarse.dim(), store, candidates.data(), candidates.data(), c, k, p.metric, p.n_threads, D, I);
}

}  // namespace pqkit
