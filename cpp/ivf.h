// Inverted-file indexes: a coarse quantizer (nlist centroids) partitions the
// database; each list stores the codes and int64 ids of its vectors, and a
// search scans only the nprobe lists nearest to the query.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flat.h"
#include "pq.h"

namespace pqkit {

class InvertedLists {
public:
    InvertedLists(size_t nlist, size_t code_size);

    size_t nlist() const { return ids_.size(); }
    size_t code_size() const { return code_size_; }
    size_t ntotal() const { return ntotal_; }
    size_t list_size(size_t l) const { return ids_[l].size(); }
    const int64_t* list_ids(size_t l) const { return ids_[l].data(); }
    const uint8_t* list_codes(size_t l) const { return codes_[l].data(); }

    // Throws std::invalid_argument (before changing anything) if a list number is out of range.
    void add(const int64_t* list_nos, const int64_t* ids, const uint8_t* codes, size_t n);
    size_t remove_ids(const int64_t* ids, size_t n);
    // list_nos/offsets of each id, or -1/-1 when absent.
    void locate(const int64_t* ids, size_t n, int64_t* list_nos, int64_t* offsets) const;
    void reset();
    size_t memory_usage_bytes() const;

private:
    size_t code_size_;
    size_t ntotal_ = 0;
    std::vector<std::vector<uint8_t>> codes_;
    std::vector<std::vector<int64_t>> ids_;
};

struct IVFSearchParams {
    size_t nprobe = 1;
    size_t k = 1;
    Metric metric = Metric::L2;
    int n_threads = 1;
};

// Raw float vectors in the lists (code_size = 4 * d).
void ivfflat_search(const float* x, size_t nq, size_t d, const float* centroids, size_t nlist,
                    const InvertedLists& lists, const IVFSearchParams& p, float* D, int64_t* I);

// term2[l, m, k] = ||c_mk||^2 + 2 <y_l^(m), c_mk>, for the L2 decomposition (see ivf.cpp).
void ivfpq_precompute_term2(const float* centroids, size_t nlist, const PQShape& shape,
                            const float* codebooks, float* term2);

// PQ codes of residuals x - y_l. term2 may be null (then residual tables are
// built per (query, list)); it is only used for L2.
void ivfpq_search(const float* x, size_t nq, const float* centroids, size_t nlist, const PQShape& shape,
                  const float* codebooks, const InvertedLists& lists, const float* term2,
                  const IVFSearchParams& p, float* D, int64_t* I);

}  // namespace pqkit
