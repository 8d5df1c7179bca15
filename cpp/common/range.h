// Range search results: every (key, id) whose key is at most a fixed threshold, per query.
//
// Keys are "smaller is better" (as in topk.h). A range search for "D < radius" (L2) or
// "D > radius" (inner products, D = -key) keeps the keys < radius_key, i.e. <= tau, the
// largest float below radius_key (range_threshold); the scans then use tau exactly where a
// top-k search uses its heap's threshold. Each query's results are sorted by (key, id) at the
// end, so they do not depend on the order the scans found them in (threads, SIMD levels).
//
// Memory stays bounded: the sinks of one search share a ResultBudget, and the search throws
// ResultLimitExceeded as soon as more than its cap of results were found.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace pqkit {

// Thrown when a range search finds more results than its cap (a ValueError in Python).
struct ResultLimitExceeded : std::invalid_argument {
    explicit ResultLimitExceeded(size_t cap)
        : std::invalid_argument("range search found more than max_results = " + std::to_string(cap) +
                                " results; lower the radius, search fewer queries at a time, or allow "
                                "more with max_results") {}
};

// The largest key a range result may have: the largest float strictly below radius_key
// (a double, compared exactly: key <= tau if and only if key < radius_key). +inf keeps every
// finite key, -inf none.
inline float range_threshold(double radius_key) {
    float tau = static_cast<float>(radius_key);
    if (static_cast<double>(tau) >= radius_key) tau = std::nextafter(tau, -std::numeric_limits<float>::infinity());
    return tau;
}

class ResultBudget {
public:
    explicit ResultBudget(size_t cap) : cap_(cap) {}
    // Counts n more results; throws once the total passes the cap.
    void take(size_t n) {
        if (used_.fetch_add(n, std::memory_order_relaxed) + n > cap_) throw ResultLimitExceeded(cap_);
    }
    size_t cap() const { return cap_; }

private:
    size_t cap_;
    std::atomic<size_t> used_{0};
};

struct RangeEntry {
    float key;
    int64_t id;
    bool operator<(const RangeEntry& o) const { return key < o.key || (key == o.key && id < o.id); }
};

// One query's results (or a part of them, for a query split over threads).
class RangeSink {
public:
    RangeSink(float tau, ResultBudget* budget) : tau_(tau), budget_(budget) {}

    float threshold() const { return tau_; }
    // The scans push only keys <= threshold().
    void push(float key, int64_t id) {
        entries_.push_back({key, id});
        if (++pending_ == kBudgetStep) flush();
    }
    // Takes the entries of another part of the same query; the part's results not yet counted
    // against the budget are counted with this sink's.
    void merge(const RangeSink& other) {
        entries_.insert(entries_.end(), other.entries_.begin(), other.entries_.end());
        pending_ += other.pending_;
    }
    void clear() {
        entries_.clear();
        pending_ = 0;
    }
    // Counts what is still pending against the budget and sorts by (key, id).
    void finish() {
        flush();
        std::sort(entries_.begin(), entries_.end());
    }
    std::vector<RangeEntry>& entries() { return entries_; }

private:
    // Results are counted in steps: one atomic add per step, a bounded overshoot per thread.
    static constexpr size_t kBudgetStep = 1024;
    void flush() {
        if (pending_ && budget_ != nullptr) budget_->take(pending_);
        pending_ = 0;
    }

    float tau_;
    ResultBudget* budget_;
    size_t pending_ = 0;
    std::vector<RangeEntry> entries_;
};

// The results of a range search over nq queries, in FAISS's layout once written.
class RangeResults {
public:
    explicit RangeResults(size_t nq) : per_query_(nq) {}
    size_t nq() const { return per_query_.size(); }
    // Takes query q's finished sink.
    void set(size_t q, RangeSink& sink) { per_query_[q].swap(sink.entries()); }
    size_t total() const {
        size_t n = 0;
        for (const auto& v : per_query_) n += v.size();
        return n;
    }
    // lims (nq + 1), D and I (total()): query q's results at lims[q] .. lims[q + 1], best first;
    // negate turns keys back into inner products.
    void write(bool negate, int64_t* lims, float* D, int64_t* I) const {
        size_t at = 0;
        for (size_t q = 0; q < per_query_.size(); ++q) {
            lims[q] = static_cast<int64_t>(at);
            for (const RangeEntry& e : per_query_[q]) {
                D[at] = negate ? -e.key : e.key;
                I[at] = e.id;
                ++at;
            }
        }
        lims[per_query_.size()] = static_cast<int64_t>(at);
    }

private:
    std::vector<std::vector<RangeEntry>> per_query_;
};

}  // namespace pqkit
