// Top-k selection with a total order on (key, id): smaller key first, then
// smaller id. Keys are "smaller is better": L2 distances as they are, inner
// products negated. The total order makes results independent of the order in
// which candidates arrive, hence of thread count and data partitioning.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace pqkit {

//
// Up to kSortedMax entries are kept as a sorted array (best first): a push
// shifts the worse entries by one, a short predictable loop, where a binary
// heap's sift steps branch unpredictably. Larger k use a max-heap.
class TopK {
public:
    static constexpr size_t kSortedMax = 64;

    explicit TopK(size_t k) : k_(k), sorted_(k <= kSortedMax) { heap_.reserve(std::min<size_t>(k, 4096)); }

    void clear() { heap_.clear(); }

    size_t size() const { return heap_.size(); }
    size_t k() const { return k_; }

    // Worst kept key, or +inf while fewer than k are kept: a cheap pre-filter.
    float threshold() const {
        if (heap_.size() < k_) return std::numeric_limits<float>::infinity();
        return sorted_ ? heap_.back().key : heap_.front().key;
    }

    void push(float key, int64_t id) {
        const Entry e{key, id};
        if (sorted_) {
            size_t n = heap_.size();
            if (n < k_) {
                heap_.push_back(e);  // the slot the shift below fills
            } else if (e < heap_.back()) {
                --n;  // the worst entry is dropped
            } else {
                return;
            }
            while (n > 0 && e < heap_[n - 1]) {
                heap_[n] = heap_[n - 1];
                --n;
            }
            heap_[n] = e;
            return;
        }
        if (heap_.size() < k_) {
            heap_.push_back(e);
            std::push_heap(heap_.begin(), heap_.end(), WorseFirst());
        } else if (e < heap_.front()) {
            std::pop_heap(heap_.begin(), heap_.end(), WorseFirst());
            heap_.back() = e;
            std::push_heap(heap_.begin(), heap_.end(), WorseFirst());
        }
    }

    // Adds every entry kept by `other` (top-k of a union = top-k of the parts' top-k).
    void merge(const TopK& other) {
        for (const Entry& e : other.heap_) push(e.key, e.id);
    }

    // Writes the kept entries best first; pads with (pad_key, -1). When
    // negate is set the keys are negated back (inner-product similarities).
    void write(float* distances, int64_t* ids, bool negate) {
        if (!sorted_) std::sort(heap_.begin(), heap_.end());
        const float pad = negate ? -std::numeric_limits<float>::infinity()
                                 : std::numeric_limits<float>::infinity();
        for (size_t i = 0; i < k_; ++i) {
            if (i < heap_.size()) {
                distances[i] = negate ? -heap_[i].key : heap_[i].key;
                ids[i] = heap_[i].id;
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
    bool sorted_;              // k <= kSortedMax: heap_ is sorted, best first
    std::vector<Entry> heap_;  // the kept entries
};

}  // namespace pqkit
