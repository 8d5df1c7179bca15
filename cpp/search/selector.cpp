#include "search/selector.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "search/invlists.h"

namespace pqkit {

bool IdSet::contains(int64_t id) const {
    if (bitmap != nullptr) {
        if (id < start) return false;
        const uint64_t bit = static_cast<uint64_t>(id) - static_cast<uint64_t>(start);
        return bit < nbits && ((bitmap[bit >> 3] >> (bit & 7)) & 1);
    }
    return std::binary_search(ids, ids + n, id);
}

IDSelector::IDSelector(const uint8_t* bitmap, size_t nbytes, int64_t start, const int64_t* ids, size_t n_ids,
                       const int64_t* offsets, size_t n_sets, bool exclude)
    : is_bitmap_(bitmap != nullptr), per_query_(offsets != nullptr), exclude_(exclude), start_(start) {
    if ((bitmap != nullptr) == (ids != nullptr))
        throw std::invalid_argument("an id selector takes a bitmap or an id array, not both nor neither");
    if (is_bitmap_) {
        if (per_query_) throw std::invalid_argument("a bitmap selector is shared by every query (no offsets)");
        if (start < 0) throw std::invalid_argument("bitmap start must be >= 0, got " + std::to_string(start));
        if (nbytes > (static_cast<uint64_t>(INT64_MAX) - static_cast<uint64_t>(start)) / 8)
            throw std::invalid_argument("bitmap passes the largest id 2**63 - 1");
        bitmap_.assign(bitmap, bitmap + nbytes);
        return;
    }
    ids_.assign(ids, ids + n_ids);
    if (per_query_) {
        offsets_.assign(offsets, offsets + n_sets + 1);
    } else {
        offsets_ = {0, static_cast<int64_t>(n_ids)};
    }
    if (offsets_.front() != 0 || offsets_.back() != static_cast<int64_t>(n_ids))
        throw std::invalid_argument("selector offsets must start at 0 and end at the number of ids (" +
                                    std::to_string(n_ids) + ")");
    for (size_t s = 0; s + 1 < offsets_.size(); ++s) {
        if (offsets_[s] > offsets_[s + 1])
            throw std::invalid_argument("selector offsets must be non-decreasing, got " +
                                        std::to_string(offsets_[s]) + " before " + std::to_string(offsets_[s + 1]));
        for (int64_t i = offsets_[s] + 1; i < offsets_[s + 1]; ++i)
            if (ids_[i - 1] > ids_[i]) throw std::invalid_argument("selector ids must be sorted within each set");
    }
}

IdSet IDSelector::for_query(size_t q) const {
    IdSet set;
    set.exclude = exclude_;
    if (is_bitmap_) {
        set.bitmap = bitmap_.data();
        set.start = start_;
        set.nbits = static_cast<uint64_t>(bitmap_.size()) * 8;
        return set;
    }
    const size_t s = per_query_ ? q : 0;
    set.ids = ids_.data() + offsets_[s];
    set.n = static_cast<size_t>(offsets_[s + 1] - offsets_[s]);
    return set;
}

void IDSelector::check_queries(size_t nq) const {
    if (per_query_ && n_sets() != nq)
        throw std::invalid_argument("the selector holds one id set per query for " + std::to_string(n_sets()) +
                                    " queries, got " + std::to_string(nq) + " queries");
}

size_t allowed_masks(const IdSet& set, const int64_t* ids, size_t n, uint64_t* masks) {
    const size_t words = (n + 63) / 64;
    size_t count = 0;
    for (size_t w = 0; w < words; ++w) {
        const size_t end = std::min(n, (w + 1) * 64);
        uint64_t bits = 0;
        if (set.bitmap != nullptr) {
            // No branch per id: a bitmap test is a load and a shift.
            const uint64_t lo = static_cast<uint64_t>(set.start);
            for (size_t i = w * 64; i < end; ++i) {
                const uint64_t rel = static_cast<uint64_t>(ids[i]) - lo;  // wraps for ids below start
                const bool in = rel < set.nbits && ((set.bitmap[rel >> 3] >> (rel & 7)) & 1);
                bits |= static_cast<uint64_t>(in != set.exclude) << (i - w * 64);
            }
        } else {
            for (size_t i = w * 64; i < end; ++i)
                bits |= static_cast<uint64_t>(set.accepts(ids[i])) << (i - w * 64);
        }
        masks[w] = bits;
        count += static_cast<size_t>(__builtin_popcountll(bits));
    }
    return count;
}

size_t allowed_rows(const IdSet& set, size_t n_rows, uint64_t* masks) {
    const size_t words = (n_rows + 63) / 64;
    if (set.bitmap != nullptr) {
        // Rows are ids here: the bitmap's bits are the rows' bits, shifted by start.
        for (size_t w = 0; w < words; ++w) {
            uint64_t bits = 0;
            const size_t end = std::min(n_rows, (w + 1) * 64);
            for (size_t r = w * 64; r < end; ++r)
                bits |= static_cast<uint64_t>(set.contains(static_cast<int64_t>(r))) << (r - w * 64);
            masks[w] = bits;
        }
    } else {
        std::fill(masks, masks + words, uint64_t(0));
        for (size_t i = 0; i < set.n; ++i)
            if (set.ids[i] >= 0 && static_cast<uint64_t>(set.ids[i]) < n_rows)
                masks[set.ids[i] / 64] |= uint64_t(1) << (set.ids[i] % 64);
    }
    size_t count = 0;
    for (size_t w = 0; w < words; ++w) {
        if (set.exclude) {
            masks[w] = ~masks[w];
            if (w + 1 == words && n_rows % 64) masks[w] &= (uint64_t(1) << (n_rows % 64)) - 1;
        }
        count += static_cast<size_t>(__builtin_popcountll(masks[w]));
    }
    return count;
}

ListFilter::ListFilter(const IDSelector* selector, const InvertedLists& lists, bool reuse)
    : selector_(selector), lists_(lists) {
    if (selector_ != nullptr && selector_->n_sets() == 0 && reuse) {
        once_.reset(new std::once_flag[lists.nlist()]);
        shared_.resize(lists.nlist());
    }
}

size_t ListFilter::lists_list_size(size_t l) const { return lists_.list_size(l); }

const uint64_t* ListFilter::masks(size_t q, size_t l, size_t first, size_t n, std::vector<uint64_t>& scratch) const {
    if (selector_ == nullptr) return nullptr;
    if (once_) {
        std::call_once(once_[l], [&] {
            const size_t size = lists_.list_size(l);
            shared_[l].resize((size + 63) / 64 + 1);
            allowed_masks(selector_->for_query(0), lists_.list_ids(l), size, shared_[l].data());
        });
        return shared_[l].data() + first / 64;
    }
    scratch.resize((n + 63) / 64 + 1);
    allowed_masks(selector_->for_query(q), lists_.list_ids(l) + first, n, scratch.data());
    return scratch.data();
}

}  // namespace pqkit
