#include "ivf.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "kernels.h"
#include "parallel.h"
#include "topk.h"

namespace pqkit {
namespace {
constexpr size_t kQueryChunk = 8;
}  // namespace

InvertedLists::InvertedLists(size_t nlist, size_t code_size)
    : code_size_(code_size), codes_(nlist), ids_(nlist) {
    if (nlist == 0) throw std::invalid_argument("nlist must be >= 1, got 0");
    if (code_size == 0) throw std::invalid_argument("code_size must be >= 1, got 0");
}

void InvertedLists::add(const int64_t* list_nos, const int64_t* ids, const uint8_t* codes, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (list_nos[i] < 0 || static_cast<size_t>(list_nos[i]) >= nlist()) {
            throw std::invalid_argument("list number out of range: expected 0 <= list_no < " +
                                        std::to_string(nlist()) + ", got " + std::to_string(list_nos[i]));
        }
    }
    for (size_t i = 0; i < n; ++i) {
        size_t l = static_cast<size_t>(list_nos[i]);
        ids_[l].push_back(ids[i]);
        codes_[l].insert(codes_[l].end(), codes + i * code_size_, codes + (i + 1) * code_size_);
    }
    ntotal_ += n;
}

size_t InvertedLists::remove_ids(const int64_t* ids, size_t n) {
    std::unordered_set<int64_t> doomed(ids, ids + n);
    size_t removed = 0;
    for (size_t l = 0; l < nlist(); ++l) {
        auto& lid = ids_[l];
        auto& lcode = codes_[l];
        size_t w = 0;
        for (size_t r = 0; r < lid.size(); ++r) {
            if (doomed.count(lid[r])) continue;
            if (w != r) {
                lid[w] = lid[r];
                std::memmove(&lcode[w * code_size_], &lcode[r * code_size_], code_size_);
            }
            ++w;
        }
        removed += lid.size() - w;
        lid.resize(w);
        lcode.resize(w * code_size_);
    }
    ntotal_ -= removed;
    return removed;
}

void InvertedLists::locate(const int64_t* ids, size_t n, int64_t* list_nos, int64_t* offsets) const {
    std::unordered_map<int64_t, size_t> wanted;
    wanted.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        list_nos[i] = -1;
        offsets[i] = -1;
        wanted.emplace(ids[i], i);
    }
    std::unordered_map<int64_t, std::pair<int64_t, int64_t>> found;
    for (size_t l = 0; l < nlist(); ++l)
        for (size_t r = 0; r < ids_[l].size(); ++r)
            if (wanted.count(ids_[l][r])) found.emplace(ids_[l][r], std::make_pair(int64_t(l), int64_t(r)));
    for (size_t i = 0; i < n; ++i) {
        auto it = found.find(ids[i]);
        if (it != found.end()) {
            list_nos[i] = it->second.first;
            offsets[i] = it->second.second;
        }
    }
}

void InvertedLists::reset() {
    for (auto& v : ids_) std::vector<int64_t>().swap(v);
    for (auto& v : codes_) std::vector<uint8_t>().swap(v);
    ntotal_ = 0;
}

size_t InvertedLists::memory_usage_bytes() const {
    size_t bytes = 0;
    for (size_t l = 0; l < nlist(); ++l)
        bytes += ids_[l].capacity() * sizeof(int64_t) + codes_[l].capacity();
    return bytes;
}

namespace {

// Per-worker buffers, created once per chunk of queries.
struct ScanScratch {
    std::vector<float> query_table, table, residual, dist;
    std::vector<int32_t> unpacked;
    size_t query = SIZE_MAX;  // the query whose query_table is current
};

// Runs the coarse search for a chunk of queries, then calls
// scan(scratch, query, list, coarse key, heap) for every probed list and
// writes the results.
template <class Scan>
void ivf_search_loop(const float* x, size_t nq, size_t d, const float* centroids, size_t nlist,
                     const IVFSearchParams& p, float* D, int64_t* I, Scan&& scan) {
    const size_t nprobe = std::min(p.nprobe, nlist);
    VectorSet coarse(centroids, nlist, d, p.metric);
    const bool l2 = p.metric == Metric::L2;
    parallel_for(nq, p.n_threads, kQueryChunk, [&](size_t begin, size_t end, int) {
        const size_t nb = end - begin;
        std::vector<float> coarse_keys(nb * nprobe);
        std::vector<int64_t> probes(nb * nprobe);
        search_block(coarse, x + begin * d, nb, nprobe, coarse_keys.data(), probes.data());
        TopK heap(p.k);
        ScanScratch scratch;
        for (size_t q = 0; q < nb; ++q) {
            heap.clear();
            for (size_t j = 0; j < nprobe; ++j) {
                int64_t list_no = probes[q * nprobe + j];
                if (list_no < 0) continue;
                scan(scratch, begin + q, static_cast<size_t>(list_no), coarse_keys[q * nprobe + j], heap);
            }
            heap.write(D + (begin + q) * p.k, I + (begin + q) * p.k, !l2);
        }
    });
}

inline void push_block(TopK& heap, const float* dist, size_t n, const int64_t* ids, bool negate) {
    float th = heap.threshold();
    for (size_t i = 0; i < n; ++i) {
        float key = negate ? -dist[i] : dist[i];
        if (key <= th) {
            heap.push(key, ids[i]);
            th = heap.threshold();
        }
    }
}

void check_lists(const InvertedLists& lists, size_t nlist, size_t code_size) {
    if (lists.nlist() != nlist || lists.code_size() != code_size) {
        throw std::invalid_argument("inverted lists do not match the index: expected nlist " + std::to_string(nlist) +
                                    " and code_size " + std::to_string(code_size) + ", got " +
                                    std::to_string(lists.nlist()) + " and " + std::to_string(lists.code_size()));
    }
}

}  // namespace

void ivfflat_search(const float* x, size_t nq, size_t d, const float* centroids, size_t nlist,
                    const InvertedLists& lists, const IVFSearchParams& p, float* D, int64_t* I) {
    check_lists(lists, nlist, d * sizeof(float));
    const bool l2 = p.metric == Metric::L2;
    ivf_search_loop(x, nq, d, centroids, nlist, p, D, I,
                    [&](ScanScratch& sc, size_t q, size_t l, float, TopK& heap) {
                        const size_t n = lists.list_size(l);
                        if (n == 0) return;
                        const float* vecs = reinterpret_cast<const float*>(lists.list_codes(l));
                        sc.dist.resize(n);
                        if (l2)
                            kernels().l2sqr_ny(x + q * d, vecs, n, d, sc.dist.data());
                        else
                            kernels().dot_tile(x + q * d, 1, vecs, n, d, sc.dist.data(), n);
                        push_block(heap, sc.dist.data(), n, lists.list_ids(l), !l2);
                    });
}

// IVF-PQ with residuals, L2. A database vector is y = y_l + r, with y_l its
// coarse centroid and r ~ sum_m c_m(code) its PQ-reconstructed residual. For
// a query q:
//
//   ||q - y_l - r||^2 = ||q - y_l||^2 + ||r||^2 - 2 <q - y_l, r>
//                     = ||q - y_l||^2 + (||r||^2 + 2 <y_l, r>) - 2 <q, r>
//                          term1            term2                  term3
//
// and since r is a concatenation of subquantizer centroids, term2 and term3
// split over subspaces m: term2 = sum_m (||c_mk||^2 + 2 <y_l^(m), c_mk>)
// depends only on (list, m, k) and is precomputed once for the index;
// term3 = sum_m -2 <q^(m), c_mk> depends only on the query and is computed
// once per query. term1 is the coarse distance, already known from probing.
// A list's table is then term2[l] + term3 (M * ksub additions), and each code
// costs M lookups.
void ivfpq_precompute_term2(const float* centroids, size_t nlist, const PQShape& s,
                            const float* codebooks, float* term2) {
    PQTables pt(s, codebooks);
    std::vector<float> norms(s.M * s.ksub), ips(s.M * s.ksub);
    for (size_t m = 0; m < s.M; ++m)
        kernels().sqnorms(codebooks + m * s.ksub * s.dsub, s.ksub, s.dsub, norms.data() + m * s.ksub);
    for (size_t l = 0; l < nlist; ++l) {
        pt.compute(centroids + l * s.d, Metric::IP, ips.data());
        float* out = term2 + l * s.M * s.ksub;
        for (size_t i = 0; i < s.M * s.ksub; ++i) out[i] = norms[i] + 2.0f * ips[i];
    }
}

void ivfpq_search(const float* x, size_t nq, const float* centroids, size_t nlist, const PQShape& s,
                  const float* codebooks, const InvertedLists& lists, const float* term2,
                  const IVFSearchParams& p, float* D, int64_t* I) {
    check_lists(lists, nlist, s.code_size);
    PQTables pt(s, codebooks);
    const bool l2 = p.metric == Metric::L2;
    const size_t tsize = s.M * s.ksub;
    ivf_search_loop(x, nq, s.d, centroids, nlist, p, D, I, [&](ScanScratch& sc, size_t q, size_t l,
                                                              float coarse_key, TopK& heap) {
        const size_t n = lists.list_size(l);
        if (n == 0) return;
        const float* xq = x + q * s.d;
        sc.table.resize(tsize);
        const float* table = sc.table.data();
        float base = 0.0f;
        if (l2 && term2 != nullptr) {
            if (sc.query != q) {  // term3 = -2 <q^(m), c_mk>, once per query
                sc.query_table.resize(tsize);
                pt.compute(xq, Metric::IP, sc.query_table.data());
                for (size_t i = 0; i < tsize; ++i) sc.query_table[i] = -2.0f * sc.query_table[i];
                sc.query = q;
            }
            const float* t2 = term2 + l * tsize;
            for (size_t i = 0; i < tsize; ++i) sc.table[i] = t2[i] + sc.query_table[i];
            base = coarse_key;  // ||q - y_l||^2
        } else if (l2) {
            sc.residual.resize(s.d);
            const float* yl = centroids + l * s.d;
            for (size_t j = 0; j < s.d; ++j) sc.residual[j] = xq[j] - yl[j];
            pt.compute(sc.residual.data(), Metric::L2, sc.table.data());
        } else {
            // <q, y_l + r> = <q, y_l> + sum_m <q^(m), c_mk>; the table is per query.
            if (sc.query != q) {
                sc.query_table.resize(tsize);
                pt.compute(xq, Metric::IP, sc.query_table.data());
                sc.query = q;
            }
            table = sc.query_table.data();
            base = coarse_key;  // search_block already returns <q, y_l> for IP
        }
        sc.dist.resize(n);
        adc_scan(s, lists.list_codes(l), n, table, sc.dist.data(), sc.unpacked);
        for (size_t i = 0; i < n; ++i) sc.dist[i] = base + sc.dist[i];
        push_block(heap, sc.dist.data(), n, lists.list_ids(l), !l2);
    });
}

}  // namespace pqkit
