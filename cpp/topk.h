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

class TopK {
public:
    explicit TopK(size_t k) : k_(k) { heap_.reserve(std::min<size_t>(k, 4096)); }

    void clear() { heap_.clear(); }

    size_t size() const { return heap_.size(); }
    size_t k() const { return k_; }

    // Worst kept key, or +inf while fewer than k are kept: a cheap pre-filter.
    float threshold() const {
        return heap_.size() < k_ ? std::numeric_limits<float>::infinity() : heap_.front().key;
    }

    void push(float key, int64_t id) {
        if (heap_.size() < k_) {
            heap_.push_back({key, id});
            std::push_heap(heap_.begin(), heap_.end(), WorseFirst());
        } else if (Entry{key, id} < heap_.front()) {
            std::pop_heap(heap_.begin(), heap_.end(), WorseFirst());
            heap_.back() = {key, id};
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
        std::sort(heap_.begin(), heap_.end());
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
    std::vector<Entry> heap_;
};

}  // namespace pqkit
