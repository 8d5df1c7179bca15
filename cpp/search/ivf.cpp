#include "search/ivf.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "common/codes.h"
#include "common/parallel.h"
#include "common/topk.h"
#include "kernels/kernels.h"
#include "search/scan.h"

namespace pqkit {
namespace {

constexpr size_t kQueryChunk = 8;
// The coarse search takes search_block's fast pass for chunks of at least this many queries
// (never, with chunks of kQueryChunk): its packing measured slower than the exact path for 8
// queries. A chunk of at most kCoarseFewQueries (a single query, say) takes it from one query,
// where it runs unpacked FMA dot products (search_block decides by the dimension).
constexpr size_t kCoarseFastQueries = 64;
constexpr size_t kCoarseFewQueries = 3;
// Coarse centroids of at least this many bytes keep a half-precision copy for single
// queries (VectorSet::keep_half): smaller ones stay in the core's caches between queries.
std::atomic<size_t> g_half_centroid_bytes{size_t(256) << 10};

// Whether a sink asks for more lists past nprobe (max_probe): a top-k with fewer than k results.
inline bool wants_more(const TopK& heap) { return heap.size() < heap.k(); }
inline bool wants_more(const RangeSink&) { return false; }

// Runs the coarse search for a chunk of queries, then for each query calls
// worker.begin(query) and worker.scan(list, coarse distance, sink, next list)
// for every probed list (nearest first), and finish(query, sink). The next list
// is the one the same worker scans after this one (-1: none), for prefetching.
// Worker is built once per chunk of queries, so its buffers are reused across
// queries and lists; make_sink() gives an empty sink (a TopK or a RangeSink).
// With p.max_probe, a top-k that holds fewer than k results after nprobe lists goes on
// with the next nearest lists, one at a time, until it holds k or max_probe lists were
// scanned: the lists scanned depend only on the query and the data.
template <class Worker, class MakeWorker, class MakeSink, class Finish>
void ivf_search_loop(const float* x, size_t nq, const CoarseQuantizer& coarse, const InvertedLists& lists,
                     const IVFSearchParams& p, MakeWorker&& make_worker, MakeSink&& make_sink, Finish&& finish) {
    using Sink = decltype(make_sink());
    const size_t nprobe = std::min(p.nprobe, coarse.nlist());
    // Lists ranked per query: nprobe, or up to max_probe when probing may widen.
    const size_t nrank = std::max(nprobe, std::min(p.max_probe, coarse.nlist()));
    const size_t d = coarse.dim();
    const size_t threads = static_cast<size_t>(std::max(p.n_threads, 1));
    if (nq < threads && nprobe >= 2 * threads) {
        // Fewer queries than threads (one query, say): the probes of each query
        // are dealt out to the threads in turn (nearest lists spread over all),
        // each keeps its own sink, and the parts merge. The top-k of a union is
        // the top-k of the parts' top-k (a range result is their union), so the
        // result is the serial one. Widening past nprobe then runs serially.
        std::vector<float> coarse_dist(nrank);
        std::vector<int64_t> probes(nrank);
        std::vector<Sink> parts(threads, make_sink());
        for (size_t q = 0; q < nq; ++q) {
            search_block(coarse.vectors(), x + q * d, 1, nrank, coarse_dist.data(), probes.data());
            // Splitting pays only when each thread gets enough bytes to scan to
            // outweigh waking the others and computing the query's tables again.
            size_t bytes = 0;
            for (size_t j = 0; j < nprobe; ++j)
                if (probes[j] >= 0) bytes += lists.list_size(static_cast<size_t>(probes[j])) * lists.code_size();
            const size_t n_parts = bytes >= min_split_bytes_per_thread() * threads ? threads : 1;
            for (size_t part = n_parts; part < threads; ++part) parts[part].clear();
            parallel_for(n_parts, p.n_threads, 1, [&](size_t begin, size_t end, int) {
                for (size_t part = begin; part < end; ++part) {
                    Worker worker = make_worker();
                    worker.prepare(q, 1);
                    worker.begin(q);
                    // A sink of the thread's own: the parts' sinks sit side by side in
                    // `parts`, and each push and threshold read would contend for their line.
                    Sink local = make_sink();
                    for (size_t j = part; j < nprobe; j += n_parts)
                        if (probes[j] >= 0)
                            worker.scan(static_cast<size_t>(probes[j]), coarse_dist[j], local,
                                        j + n_parts < nprobe ? probes[j + n_parts] : -1);
                    parts[part] = std::move(local);
                }
            });
            Sink sink = make_sink();
            for (const Sink& part : parts) sink.merge(part);
            if (nrank > nprobe && wants_more(sink)) {
                Worker worker = make_worker();
                worker.prepare(q, 1);
                worker.begin(q);
                for (size_t j = nprobe; j < nrank && wants_more(sink); ++j)
                    if (probes[j] >= 0) worker.scan(static_cast<size_t>(probes[j]), coarse_dist[j], sink, -1);
            }
            finish(q, sink);
        }
        return;
    }
    parallel_for(nq, p.n_threads, kQueryChunk, [&](size_t begin, size_t end, int) {
        const size_t nb = end - begin;
        std::vector<float> coarse_dist(nb * nrank);
        std::vector<int64_t> probes(nb * nrank);
        // a chunk of kQueryChunk queries does not repay the fast pass's packing; a few queries take it unpacked
        search_block(coarse.vectors(), x + begin * d, nb, nrank, coarse_dist.data(), probes.data(), nullptr,
                     nb <= kCoarseFewQueries ? 1 : kCoarseFastQueries);
        Sink sink = make_sink();
        Worker worker = make_worker();
        worker.prepare(begin, nb);
        for (size_t q = 0; q < nb; ++q) {
            sink.clear();
            worker.begin(begin + q);
            const int64_t* query_probes = probes.data() + q * nrank;
            const float* query_dist = coarse_dist.data() + q * nrank;
            for (size_t j = 0; j < nprobe; ++j) {
                // The list scanned after this one: the query's next probe, or the next query's first.
                const int64_t next = j + 1 < nprobe ? query_probes[j + 1] : (q + 1 < nb ? query_probes[nrank] : -1);
                if (query_probes[j] >= 0)
                    worker.scan(static_cast<size_t>(query_probes[j]), query_dist[j], sink, next);
            }
            for (size_t j = nprobe; j < nrank && wants_more(sink); ++j)
                if (query_probes[j] >= 0) worker.scan(static_cast<size_t>(query_probes[j]), query_dist[j], sink, -1);
            finish(begin + q, sink);
        }
    });
}

// The top-k search: a TopK per query, written best first into D and I.
template <class Worker, class MakeWorker>
void ivf_top_k(const float* x, size_t nq, const CoarseQuantizer& coarse, const InvertedLists& lists,
               const IVFSearchParams& p, float* D, int64_t* I, MakeWorker&& make_worker) {
    const bool negate = p.metric != Metric::L2;
    ivf_search_loop<Worker>(x, nq, coarse, lists, p, make_worker, [&] { return TopK(p.k); },
                            [&](size_t q, TopK& heap) { heap.write(D + q * p.k, I + q * p.k, negate); });
}

// The range search: a RangeSink per query, kept in the results.
template <class Worker, class MakeWorker>
RangeResults ivf_range(const float* x, size_t nq, const CoarseQuantizer& coarse, const InvertedLists& lists,
                       const IVFSearchParams& p, double radius_key, size_t max_results, MakeWorker&& make_worker) {
    IVFSearchParams range_params = p;
    range_params.max_probe = 0;
    RangeResults results(nq);
    ResultBudget budget(max_results);
    const float tau = range_threshold(radius_key);
    ivf_search_loop<Worker>(x, nq, coarse, lists, range_params, make_worker,
                            [&] { return RangeSink(tau, &budget); },
                            [&](size_t q, RangeSink& sink) {
                                sink.finish();
                                results.set(q, sink);
                            });
    return results;
}

void check_selector(const IVFSearchParams& p, size_t nq) {
    if (p.selector != nullptr) p.selector->check_queries(nq);
}

void check_lists(const InvertedLists& lists, size_t nlist, size_t code_size, CodeLayout layout, bool with_bias) {
    if (lists.nlist() != nlist || lists.code_size() != code_size || lists.layout() != layout ||
        lists.with_bias() != with_bias) {
        throw std::invalid_argument("inverted lists do not match the index: expected nlist " + std::to_string(nlist) +
                                    " and code_size " + std::to_string(code_size) + ", got " +
                                    std::to_string(lists.nlist()) + " and " + std::to_string(lists.code_size()));
    }
}

void check_same_d(const CoarseQuantizer& coarse, const PQCodebooks& pq) {
    if (pq.shape().d != coarse.dim()) throw std::invalid_argument("quantizer and coarse centroids differ in d");
}

// IVF-Flat: the exact keys of a list's allowed vectors (kernels l2sqr_ny and dot_tile, row by
// row in any grouping: each row's key is the same), over each run of consecutive allowed rows,
// so an excluded vector never gets a distance.
//
// The fast pass, at levels with FMA and rows of at least kFastScanMinDim floats: the exact
// kernels' fixed 16-lane order with separate multiply and add is slower than FMA chains in any
// order, so each run of rows first gets fast values (Kernels::l2sqr_ny_fast, dot_ny_fast, one
// read of each row), and only a row whose exact key could still enter the sink gets it
// computed and pushed. The sink sees the exact keys of every row the exact path would push,
// in the same order, so the result is the exact path's at every SIMD level and thread count.
//
// The bound (u = 2^-24, gamma = d u / (1 - d u), eta = 2^-150 for products that underflow;
// Higham, Accuracy and Stability of Numerical Algorithms, sec. 3.1): a float sum of d products
// in any order, with or without FMA, lies within gamma sum_l |p_l| + d eta of the true sum.
//  * L2: both passes sum the squares of the same differences z_l = fl(x_l - y_l), so with
//    S = sum z_l^2 the fast value f has S >= (f - d eta) / (1 + gamma), and the exact key
//    e >= (1 - gamma) S - d eta >= (f - d eta) (1 - gamma) / (1 + gamma) - d eta.
//  * IP, key = -ip: |ip_fast - ip_exact| <= 2 gamma ||x|| ||y|| + 2 d eta, with ||y||^2 <=
//    (n + d eta) / (1 - gamma) for the run's largest fast sum of squares n, and ||x|| from a
//    double sum.
// A row is skipped when that lower bound of its exact key is above the sink's threshold (a
// TopK takes keys <= its threshold, a RangeSink keys <= tau). The bound is evaluated in
// double with a relative margin of 2^-20; a non-finite value skips nothing. Validated data
// and queries (|v| <= sqrt(2^120 / d)) keep every sum finite.
constexpr size_t kFastScanMinDim = 64;

struct ScanBound {
    double gamma = 0, tiny = 0, margin = 1.0 + std::ldexp(1.0, -20);
    bool usable = false;

    explicit ScanBound(size_t d) {
        const double u = std::ldexp(1.0, -24), dd = static_cast<double>(d);
        if (d == 0 || dd * u >= 0.5) return;
        gamma = dd * u / (1.0 - dd * u);
        tiny = dd * std::ldexp(1.0, -150);
        usable = true;
    }
    // A lower bound of the exact L2 key of a row whose fast value is f (-inf for a
    // non-finite f: no bound).
    double l2_lower(float f) const {
        if (!(std::fabs(f) <= std::numeric_limits<float>::max())) return -std::numeric_limits<double>::infinity();
        return (static_cast<double>(f) - tiny) * ((1.0 - gamma) / (1.0 + gamma)) / margin - tiny;
    }
    // A lower bound of the exact IP key (-ip) of a row whose fast inner product is f, given
    // the run's error bound (-inf for a non-finite f: no bound).
    static double ip_lower(float f, double error) {
        if (!(std::fabs(f) <= std::numeric_limits<float>::max())) return -std::numeric_limits<double>::infinity();
        return -static_cast<double>(f) - error;
    }
    // The most |ip_fast - ip_exact| of rows whose fast sums of squares are <= n_max.
    double ip_error(double x_norm, float n_max) const {
        const double y_norm = std::sqrt((static_cast<double>(n_max) + tiny) / (1.0 - gamma));
        return margin * (2.0 * gamma * x_norm * y_norm + 2.0 * tiny);
    }
};

struct FlatWorker {
    const float* x;
    size_t d;
    bool l2;
    const InvertedLists& lists;
    const ListFilter& filter;
    const float* query = nullptr;
    size_t query_no = 0;
    std::vector<float> dist;
    std::vector<uint64_t> scratch;
    std::vector<float> sqnorms;  // the fast pass's ||y||^2 of a run (inner product)
    double x_norm = 0;           // ||query||, rounded up by ScanBound's margin (inner product)
    bool fast = false;
    ScanBound bound{0};

    void prepare(size_t, size_t) {
        const Kernels& K = kernels();
        bound = ScanBound(d);
        fast = d >= kFastScanMinDim && bound.usable && K.dot_tile_fast != K.dot_tile;
    }
    void begin(size_t q) {
        query = x + q * d;
        query_no = q;
        if (fast && !l2) {
            double sum = 0;
            for (size_t i = 0; i < d; ++i) sum += static_cast<double>(query[i]) * query[i];
            x_norm = std::sqrt(sum) * bound.margin;
        }
    }
    // The exact key of one row.
    float exact_key(const float* row) const {
        float v;
        if (l2) {
            kernels().l2sqr_ny(query, row, 1, d, &v);
            return v;
        }
        kernels().dot_tile(query, 1, row, 1, d, &v, 1);
        return -v;
    }
    template <class Sink>
    void scan_exact(const float* rows, const int64_t* ids, size_t count, Sink& heap) {
        if (l2)
            kernels().l2sqr_ny(query, rows, count, d, dist.data());
        else
            kernels().dot_tile(query, 1, rows, count, d, dist.data(), count);
        float th = heap.threshold();
        for (size_t i = 0; i < count; ++i) {
            const float key = l2 ? dist[i] : -dist[i];
            if (key <= th) {
                heap.push(key, ids[i]);
                th = heap.threshold();
            }
        }
    }
    template <class Sink>
    void scan_fast(const float* rows, const int64_t* ids, size_t count, Sink& heap) {
        const Kernels& K = kernels();
        double ip_error = 0;
        if (l2) {
            K.l2sqr_ny_fast(query, rows, count, d, dist.data());
        } else {
            sqnorms.resize(dist.size());
            K.dot_ny_fast(query, rows, count, d, dist.data(), sqnorms.data());
            float n_max = 0;
            bool finite = true;  // a NaN or inf norm: no bound for the run
            for (size_t i = 0; i < count; ++i) {
                finite = finite && sqnorms[i] <= std::numeric_limits<float>::max();
                n_max = std::max(n_max, sqnorms[i]);
            }
            ip_error = finite ? bound.ip_error(x_norm, n_max) : std::numeric_limits<double>::infinity();
        }
        float th = heap.threshold();
        for (size_t i = 0; i < count; ++i) {
            const double lower = l2 ? bound.l2_lower(dist[i]) : ScanBound::ip_lower(dist[i], ip_error);
            if (lower > static_cast<double>(th)) continue;  // a NaN compares false: computed
            const float key = exact_key(rows + i * d);
            if (key <= th) {
                heap.push(key, ids[i]);
                th = heap.threshold();
            }
        }
    }
    template <class Sink>
    void scan(size_t l, float, Sink& heap, int64_t) {
        const size_t n = lists.list_size(l);
        if (n == 0) return;
        const float* vecs = reinterpret_cast<const float*>(lists.list_codes(l));
        const int64_t* ids = lists.list_ids(l);
        dist.resize(n);
        // The keys of rows first .. first + count, pushed in row order.
        const auto scan_rows = [&](size_t first, size_t count) {
            if (fast)
                scan_fast(vecs + first * d, ids + first, count, heap);
            else
                scan_exact(vecs + first * d, ids + first, count, heap);
        };
        const uint64_t* allowed = filter.masks(query_no, l, scratch);
        if (allowed == nullptr) return scan_rows(0, n);
        const auto is_allowed = [&](size_t i) { return (allowed[i / 64] >> (i % 64)) & 1; };
        for (size_t first = 0; first < n;) {
            while (first < n && !is_allowed(first)) ++first;
            size_t last = first;
            while (last < n && is_allowed(last)) ++last;
            if (first < last) scan_rows(first, last - first);
            first = last;
        }
    }
};

// Per-thread buffers kept between calls (pool threads live on), so a search
// neither allocates nor zero-fills its tables. One worker at a time uses them
// on a thread: workers are created and finished one after another.
struct PQScratch {
    std::vector<float> scaled_queries;  // L2: the chunk's queries times -2
    std::vector<float> tables;
    QuantizedTable quantized;
    ScanBuffers buffers;
    std::vector<uint64_t> allowed;  // a per-query selector's masks of the list being scanned
};

PQScratch& pq_scratch() {
    thread_local PQScratch scratch;
    return scratch;
}

// IVF-PQ with residuals. A database vector is y = y_l + r, with y_l its
// coarse centroid and r ~ sum_m c_m(code) its PQ-reconstructed residual.
// L2, for a query q:
//
//   ||q - y_l - r||^2 = ||q - y_l||^2 + (||r||^2 + 2 <y_l, r>) - 2 <q, r>
//                          coarse            bias (per code)      table
//
// The coarse distance comes from probing; the bias depends only on the code
// and its list, so it is computed once when the code is added (4 bytes per
// code), as sum_m (||c_mk||^2 + 2 <y_l^(m), c_mk>); the last term splits over
// sub-quantizers into one table T[m, k] = -2 <q^(m), c_mk> per query. So there
// is no per-(query, list) table work at all, and the key of a code is
//   coarse + (bias + sum_m T[m, code_m]).
// Inner product: <q, y_l + r> = <q, y_l> + sum_m <q^(m), c_mk>, negated for
// "smaller is better": key = -<q, y_l> + (0 + sum_m -<q^(m), c_mk>).
struct PQWorker {
    const float* x;
    const PQCodebooks& pq;
    const InvertedLists& lists;
    const ListFilter& filter;
    Metric metric;
    bool estimates;
    PQScratch& scratch;  // this thread's tables (M x ksub per query of the chunk) and buffers
    size_t first = 0;
    size_t query_no = 0;
    const float* table = nullptr;

    // The tables of a chunk of queries at once (the codebooks are read once for all).
    void prepare(size_t first_query, size_t nq) {
        const PQShape& s = pq.shape();
        first = first_query;
        std::vector<float>& tables = scratch.tables;
        tables.resize(nq * s.M * s.ksub);
        if (metric == Metric::L2) {
            // -2 <q, c> as <-2 q, c>: scaling by a power of two is exact in every
            // product and sum (short of overflow or subnormal values), so this is
            // the same table with d multiplications per query instead of M x ksub.
            std::vector<float>& scaled = scratch.scaled_queries;
            scaled.resize(nq * s.d);
            const float* xq = x + first_query * s.d;
            for (size_t i = 0; i < nq * s.d; ++i) scaled[i] = -2.0f * xq[i];
            pq.compute(scaled.data(), nq, Metric::IP, tables.data());
        } else {
            pq.search_table(x + first_query * s.d, nq, Metric::IP, tables.data());
        }
    }
    void begin(size_t q) {
        const PQShape& s = pq.shape();
        query_no = q;
        table = scratch.tables.data() + (q - first) * s.M * s.ksub;
        quantize_table(s, table, scratch.quantized);
    }
    // The scan prefetches on into next_list, the list it scans next (or -1).
    template <class Sink>
    void scan(size_t l, float coarse_dist, Sink& heap, int64_t next_list) {
        CodeRun run{lists.list_codes(l), lists.list_size(l), lists.list_ids(l), lists.list_bias(l),
                    lists.list_bias_absmax(l)};
        if (next_list >= 0) {
            const size_t nl = static_cast<size_t>(next_list);
            run.next_blocks = lists.list_codes(nl);
            run.next_bytes = blocked_bytes(lists.list_size(nl), lists.code_size());
            run.next_bias = lists.list_bias(nl);
            run.next_n = lists.list_size(nl);
        }
        if (run.n == 0) return;
        run.allowed = filter.masks(query_no, l, scratch.allowed);
        const float base = metric == Metric::L2 ? coarse_dist : -coarse_dist;
        scan_codes(pq.shape(), table, scratch.quantized, run, base, heap, scratch.buffers, estimates);
    }
};

}  // namespace

CoarseQuantizer::CoarseQuantizer(const float* centroids, size_t nlist, size_t d, Metric metric)
    : data_(centroids, centroids + nlist * d), vectors_(data_.data(), nlist, d, metric) {
    vectors_.keep_transposed();  // probing sums inner products sequentially (flat.h)
    vectors_.keep_bound_norms();  // batched probing may take the fast pass (flat.h)
    // A single query reads every centroid: past the core's caches, half the bytes (flat.h)
    if (nlist * d * sizeof(float) >= g_half_centroid_bytes.load(std::memory_order_relaxed)) vectors_.keep_half();
}

size_t set_half_centroid_bytes(size_t bytes) { return g_half_centroid_bytes.exchange(bytes, std::memory_order_relaxed); }

void ivfflat_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const InvertedLists& lists,
                    const IVFSearchParams& p, float* D, int64_t* I) {
    const size_t d = coarse.dim();
    check_lists(lists, coarse.nlist(), d * sizeof(float), CodeLayout::Rows, false);
    check_selector(p, nq);
    const ListFilter filter(p.selector, lists, nq * p.nprobe > lists.nlist());
    ivf_top_k<FlatWorker>(x, nq, coarse, lists, p, D, I, [&] {
        return FlatWorker{x, d, p.metric == Metric::L2, lists, filter, nullptr, 0, {}, {}};
    });
}

RangeResults ivfflat_range_search(const float* x, size_t nq, const CoarseQuantizer& coarse,
                                  const InvertedLists& lists, const IVFSearchParams& p, double radius_key,
                                  size_t max_results) {
    const size_t d = coarse.dim();
    check_lists(lists, coarse.nlist(), d * sizeof(float), CodeLayout::Rows, false);
    check_selector(p, nq);
    const ListFilter filter(p.selector, lists, nq * p.nprobe > lists.nlist());
    return ivf_range<FlatWorker>(x, nq, coarse, lists, p, radius_key, max_results, [&] {
        return FlatWorker{x, d, p.metric == Metric::L2, lists, filter, nullptr, 0, {}, {}};
    });
}

void ivfpq_code_bias(const uint8_t* codes, size_t n, const int64_t* list_nos, const CoarseQuantizer& coarse,
                     const PQCodebooks& pq, int n_threads, float* bias) {
    check_same_d(coarse, pq);
    const PQShape& s = pq.shape();
    for (size_t i = 0; i < n; ++i) {
        if (list_nos[i] < 0 || static_cast<size_t>(list_nos[i]) >= coarse.nlist())
            throw std::invalid_argument("list number out of range: expected 0 <= list_no < " +
                                        std::to_string(coarse.nlist()) + ", got " + std::to_string(list_nos[i]));
    }
    parallel_for(n, n_threads, 256, [&](size_t begin, size_t end, int) {
        const Kernels& K = kernels();
        std::vector<int32_t> idx(s.M);
        for (size_t i = begin; i < end; ++i) {
            pq_unpack(s, codes + i * s.code_size, 1, idx.data());
            const float* yl = coarse.centroid(static_cast<size_t>(list_nos[i]));
            float acc = 0.0f;
            for (size_t m = 0; m < s.M; ++m) {
                const size_t c = m * s.ksub + static_cast<size_t>(idx[m]);
                float ip;
                K.dot_tile(yl + m * s.dsub, 1, pq.data() + c * s.dsub, 1, s.dsub, &ip, 1);
                acc = acc + (pq.sqnorms()[c] + 2.0f * ip);
            }
            bias[i] = acc;
        }
    });
}

void ivfpq_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                  const InvertedLists& lists, const IVFSearchParams& p, float* D, int64_t* I) {
    check_same_d(coarse, pq);
    check_lists(lists, coarse.nlist(), pq.shape().code_size, CodeLayout::Blocked, p.metric == Metric::L2);
    check_selector(p, nq);
    const ListFilter filter(p.selector, lists, nq * p.nprobe > lists.nlist());
    ivf_top_k<PQWorker>(x, nq, coarse, lists, p, D, I, [&] {
        return PQWorker{x, pq, lists, filter, p.metric, p.estimates, pq_scratch(), 0, 0, nullptr};
    });
}

RangeResults ivfpq_range_search(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                                const InvertedLists& lists, const IVFSearchParams& p, double radius_key,
                                size_t max_results) {
    check_same_d(coarse, pq);
    check_lists(lists, coarse.nlist(), pq.shape().code_size, CodeLayout::Blocked, p.metric == Metric::L2);
    check_selector(p, nq);
    const ListFilter filter(p.selector, lists, nq * p.nprobe > lists.nlist());
    return ivf_range<PQWorker>(x, nq, coarse, lists, p, radius_key, max_results, [&] {
        return PQWorker{x, pq, lists, filter, p.metric, false, pq_scratch(), 0, 0, nullptr};
    });
}

}  // namespace pqkit
