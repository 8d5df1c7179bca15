#include "search/pq.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/codes.h"
#include "common/parallel.h"
#include "common/topk.h"
#include "kernels/kernels.h"
#include "search/flat.h"
#include "search/invlists.h"
#include "search/kmeans.h"
#include "search/scan.h"
#include "search/selector.h"

namespace pqkit {
namespace {
constexpr size_t kEncodeBlock = 256;
// Queries whose distance tables are computed together.
constexpr size_t kQueryBatch = 8;

// Bytes of codes per chunk of a batched scan: they stay in a core's L2 cache
// (1 MiB and more on current x86 cores) beside the batch's tables while every
// query of the batch scans them. 32 KiB to 512 KiB measured alike.
constexpr size_t kScanChunkBytes = size_t(256) << 10;

// Codes per chunk: a multiple of kBlock.
size_t scan_chunk_codes(size_t code_size) {
    return std::max<size_t>(1, kScanChunkBytes / (code_size * kBlock)) * kBlock;
}
}  // namespace

PQCodebooks::PQCodebooks(const PQShape& s, const float* codebooks)
    : shape_(s), codebooks_(codebooks, codebooks + s.M * s.ksub * s.dsub), transposed_(s.M * s.dsub * s.ksub),
      sqnorms_(s.M * s.ksub) {
    for (size_t m = 0; m < s.M; ++m)
        for (size_t c = 0; c < s.ksub; ++c)
            for (size_t j = 0; j < s.dsub; ++j)
                transposed_[(m * s.dsub + j) * s.ksub + c] = codebooks[(m * s.ksub + c) * s.dsub + j];
    kernels().sqnorms(codebooks, s.M * s.ksub, s.dsub, sqnorms_.data());
}

void PQCodebooks::search_table(const float* q, size_t nq, Metric metric, float* tables) const {
    compute(q, nq, metric, tables);
    if (metric == Metric::IP)
        for (size_t i = 0; i < nq * shape_.M * shape_.ksub; ++i) tables[i] = -tables[i];
}

void PQCodebooks::compute(const float* q, size_t nq, Metric metric, float* tables) const {
    const Kernels& K = kernels();
    const PQShape& s = shape_;
    const size_t table_size = s.M * s.ksub;
    for (size_t m = 0; m < s.M; ++m) {
        const float* ct = transposed_.data() + m * s.dsub * s.ksub;
        if (metric == Metric::L2)
            K.l2_to_centroids_t(q + m * s.dsub, nq, s.d, ct, s.dsub, s.ksub, tables + m * s.ksub, table_size);
        else
            K.ip_to_centroids_t(q + m * s.dsub, nq, s.d, ct, s.dsub, s.ksub, tables + m * s.ksub, table_size);
    }
}

void pq_train(const float* x, size_t n, const PQShape& s, int niter, uint64_t seed,
              size_t max_points_per_centroid, int n_threads, float* codebooks) {
    if (n < s.ksub) {
        throw std::invalid_argument("PQ training needs at least ksub = 2^nbits = " + std::to_string(s.ksub) +
                                    " points, got " + std::to_string(n));
    }
    std::vector<float> sub(n * s.dsub);
    KMeansParams p;
    p.k = s.ksub;
    p.niter = niter;
    p.seed = seed;
    p.max_points_per_centroid = max_points_per_centroid;
    p.n_threads = n_threads;
    for (size_t m = 0; m < s.M; ++m) {
        for (size_t i = 0; i < n; ++i)
            std::memcpy(&sub[i * s.dsub], x + i * s.d + m * s.dsub, s.dsub * sizeof(float));
        kmeans_train(sub.data(), n, s.dsub, p, codebooks + m * s.ksub * s.dsub);
    }
}

void pq_encode(const float* x, size_t n, const PQCodebooks& pq, int n_threads, uint8_t* codes) {
    const PQShape& s = pq.shape();
    const float* codebooks = pq.data();
    std::vector<NearestCentroid> assigners;
    assigners.reserve(s.M);
    for (size_t m = 0; m < s.M; ++m)
        assigners.emplace_back(codebooks + m * s.ksub * s.dsub, s.ksub, s.dsub, Metric::L2);
    parallel_for(n, n_threads, kEncodeBlock, [&](size_t begin, size_t end, int) {
        const size_t nb = end - begin;
        std::vector<float> sub(nb * s.dsub), dist(nb);
        std::vector<int64_t> labels(nb);
        std::vector<int32_t> idx(nb * s.M);
        for (size_t m = 0; m < s.M; ++m) {
            for (size_t i = 0; i < nb; ++i)
                std::memcpy(&sub[i * s.dsub], x + (begin + i) * s.d + m * s.dsub, s.dsub * sizeof(float));
            assigners[m].assign_serial(sub.data(), nb, labels.data(), dist.data());
            for (size_t i = 0; i < nb; ++i) idx[i * s.M + m] = static_cast<int32_t>(labels[i]);
        }
        pq_pack(s, idx.data(), nb, codes + begin * s.code_size);
    });
}

void pq_decode(const uint8_t* codes, size_t n, const PQCodebooks& pq, int n_threads, float* x) {
    const PQShape& s = pq.shape();
    const float* codebooks = pq.data();
    parallel_for(n, n_threads, kEncodeBlock, [&](size_t begin, size_t end, int) {
        std::vector<int32_t> idx((end - begin) * s.M);
        pq_unpack(s, codes + begin * s.code_size, end - begin, idx.data());
        for (size_t i = begin; i < end; ++i)
            for (size_t m = 0; m < s.M; ++m)
                std::memcpy(x + i * s.d + m * s.dsub,
                            codebooks + (m * s.ksub + static_cast<size_t>(idx[(i - begin) * s.M + m])) * s.dsub,
                            s.dsub * sizeof(float));
    });
}

void pq_distance_tables(const float* x, size_t nq, const PQCodebooks& pq, Metric metric, int n_threads,
                        float* tables) {
    const PQShape& s = pq.shape();
    parallel_for(nq, n_threads, kQueryBatch, [&](size_t begin, size_t end, int) {
        pq.compute(x + begin * s.d, end - begin, metric, tables + begin * s.M * s.ksub);
    });
}

namespace {

// Scans every code of `lists` for each query into a sink from make_sink() (a TopK or a
// RangeSink), then calls finish(query, sink).
template <class MakeSink, class Finish>
void pq_scan_lists(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists, Metric metric,
                   int n_threads, const IDSelector* selector, MakeSink&& make_sink, Finish&& finish) {
    using Sink = decltype(make_sink());
    const PQShape& s = pq.shape();
    if (lists.code_size() != s.code_size || lists.layout() != CodeLayout::Blocked) {
        throw std::invalid_argument("code store does not match the quantizer: expected blocked codes of " +
                                    std::to_string(s.code_size) + " bytes");
    }
    if (selector != nullptr) selector->check_queries(nq);
    const ListFilter filter(selector, lists, nq > 1);
    const size_t threads = static_cast<size_t>(std::max(n_threads, 1));
    if (nq < threads && threads > 1 && lists.ntotal() >= 2 * threads * kBlock &&
        lists.ntotal() * s.code_size >= min_split_bytes_per_thread() * threads) {
        // Fewer queries than threads: each list's blocks are split into one
        // contiguous range per thread, each thread keeps its own sink and the
        // parts merge (the top-k of a union is the top-k of the parts' top-k; a
        // range result is their union).
        std::vector<Sink> parts(threads, make_sink());
        std::vector<float> table(s.M * s.ksub);
        QuantizedTable qt;
        for (size_t q = 0; q < nq; ++q) {
            pq.search_table(x + q * s.d, 1, metric, table.data());
            quantize_table(s, table.data(), qt);
            parallel_for(threads, n_threads, 1, [&](size_t begin, size_t end, int) {
                ScanBuffers buffers;
                std::vector<uint64_t> scratch;
                for (size_t part = begin; part < end; ++part) {
                    parts[part].clear();
                    for (size_t l = 0; l < lists.nlist(); ++l) {
                        const size_t blocks = (lists.list_size(l) + kBlock - 1) / kBlock;
                        const size_t first = blocks * part / threads * kBlock;
                        const size_t last = std::min(lists.list_size(l), blocks * (part + 1) / threads * kBlock);
                        if (first >= last) continue;
                        CodeRun run{lists.list_codes(l) + blocked_offset(first, 0, s.code_size), last - first,
                                    lists.list_ids(l) + first, nullptr, 0.0f};
                        run.allowed = filter.masks(q, l, first, last - first, scratch);
                        scan_codes(s, table.data(), qt, run, 0.0f, parts[part], buffers);
                    }
                }
            });
            Sink sink = make_sink();
            for (const Sink& part : parts) sink.merge(part);
            finish(q, sink);
        }
        return;
    }
    // Few queries: one per task, so every thread gets work; otherwise batches
    // whose tables are computed together and which scan the codes chunk by
    // chunk, every query of the batch in turn, so that a chunk is read from
    // memory once per batch and from cache by the batch's other queries.
    const size_t batch = nq >= kQueryBatch * static_cast<size_t>(std::max(n_threads, 1)) ? kQueryBatch : 1;
    const size_t chunk = scan_chunk_codes(s.code_size);
    parallel_for(nq, n_threads, batch, [&](size_t begin, size_t end, int) {
        const size_t table_size = s.M * s.ksub;
        const size_t nb = end - begin;
        std::vector<float> tables(nb * table_size);
        pq.search_table(x + begin * s.d, nb, metric, tables.data());
        std::vector<QuantizedTable> qts(nb);
        std::vector<Sink> sinks(nb, make_sink());
        for (size_t i = 0; i < nb; ++i) quantize_table(s, tables.data() + i * table_size, qts[i]);
        ScanBuffers buffers;
        std::vector<uint64_t> scratch;
        for (size_t l = 0; l < lists.nlist(); ++l) {
            const size_t n = lists.list_size(l);
            for (size_t first = 0; first < n; first += chunk) {
                const size_t last = std::min(n, first + chunk);
                CodeRun run{lists.list_codes(l) + blocked_offset(first, 0, s.code_size), last - first,
                            lists.list_ids(l) + first, nullptr, 0.0f};
                for (size_t i = 0; i < nb; ++i) {
                    run.allowed = filter.masks(begin + i, l, first, last - first, scratch);
                    scan_codes(s, tables.data() + i * table_size, qts[i], run, 0.0f, sinks[i], buffers);
                }
            }
        }
        for (size_t i = 0; i < nb; ++i) finish(begin + i, sinks[i]);
    });
}

}  // namespace

void pq_search(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists, size_t k,
               Metric metric, int n_threads, float* D, int64_t* I, const IDSelector* selector) {
    const bool negate = metric != Metric::L2;
    pq_scan_lists(x, nq, pq, lists, metric, n_threads, selector, [&] { return TopK(k); },
                  [&](size_t q, TopK& heap) { heap.write(D + q * k, I + q * k, negate); });
}

RangeResults pq_range_search(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists,
                             double radius_key, Metric metric, int n_threads, size_t max_results,
                             const IDSelector* selector) {
    RangeResults results(nq);
    ResultBudget budget(max_results);
    const float tau = range_threshold(radius_key);
    pq_scan_lists(x, nq, pq, lists, metric, n_threads, selector, [&] { return RangeSink(tau, &budget); },
                  [&](size_t q, RangeSink& sink) {
                      sink.finish();
                      results.set(q, sink);
                  });
    return results;
}

}  // namespace pqkit
