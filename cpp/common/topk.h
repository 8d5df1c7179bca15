// Top-k selection with a total order on (key, id): smaller key first, then
// smaller id. Keys are "smaller is better": L2 distances as they are, inner
// products negated. The total order makes results independent of the order in
// which candidates arrive, hence of thread count and data partitioning.
//
// Up to TopK::kSortedMax entries are kept as a sorted array (best first): a
// push shifts the worse entries by one, a short predictable loop, where a
// binary heap's sift steps branch unpredictably. Larger k use a max-heap.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace pqkit {

class TopK {
public:
    static constexpr size_t kSortedMax = 64;

    explicit TopK(size_t k) : k_(k), sorted_(k <= kSortedMax) { entries_.reserve(std::min<size_t>(k, 4096)); }

    void clear() { entries_.clear(); }

    size_t size() const { return entries_.size(); }
    size_t k() const { return k_; }
    // Whether entries are kept as a sorted array (k <= kSortedMax), where pushes in
    // increasing key order land at the end; a heap takes them in any order.
    bool sorted() const { return sorted_; }

    // Worst kept key, or +inf while fewer than k are kept: a cheap pre-filter.
    float threshold() const {
        if (entries_.size() < k_) return std::numeric_limits<float>::infinity();
        return sorted_ ? entries_.back().key : entries_.front().key;
    }

    void push(float key, int64_t id) {
        const Entry e{key, id};
        if (sorted_) {
            size_t n = entries_.size();
            if (n < k_) {
                entries_.push_back(e);  // the slot the shift below fills
            } else if (e < entries_.back()) {
                --n;  // the worst entry is dropped
            } else {
                return;
            }
            while (n > 0 && e < entries_[n - 1]) {
                entries_[n] = entries_[n - 1];
                --n;
            }
            entries_[n] = e;
            return;
        }
        if (entries_.size() < k_) {
            entries_.push_back(e);
            std::push_heap(entries_.begin(), entries_.end(), WorseFirst());
        } else if (e < entries_.front()) {
            std::pop_heap(entries_.begin(), entries_.end(), WorseFirst());
            entries_.back() = e;
            std::push_heap(entries_.begin(), entries_.end(), WorseFirst());
        }
    }

    // Adds every entry kept by `other` (top-k of a union = top-k of the parts' top-k).
    void merge(const TopK& other) {
        for (const Entry& e : other.entries_) push(e.key, e.id);
    }

    // Writes the kept entries best first; pads with (pad_key, -1). When
    // negate is set the keys are negated back (inner-product similarities).
    void write(float* distances, int64_t* ids, bool negate) {
        if (!sorted_) std::sort(entries_.begin(), entries_.end());
        const float pad = negate ? -std::numeric_limits<float>::infinity()
                                 : std::numeric_limits<float>::infinity();
        for (size_t i = 0; i < k_; ++i) {
            if (i < entries_.size()) {
                distances[i] = negate ? -entries_[i].key : entries_[i].key;
                ids[i] = entries_[i].id;
            } else {
                distances[i] = pad;
                ids[i] = -1;
            }
        }
    }

private:
    struct Entry {
        float key;
        int64_t id;
        bool operator<(const Entry& o) const {
            return key < o.key || (key == o.key && id < o.id);
        }
    };
    // A function object (not a function pointer) so the heap operations inline it.
    struct WorseFirst {
        bool operator()(const Entry& a, const Entry& b) const { return a < b; }
    };

    size_t k_;
    bool sorted_;                  // k <= kSortedMax: entries_ is sorted, best first
    std::vector<Entry> entries_;  // the kept entries (a max-heap when not sorted_)
};

}  // namespace pqkit
