// Id selectors: which stored ids a search may return (FAISS's IDSelector), applied inside
// the scans, so that a code whose id is not allowed never gets an exact distance and never
// enters a top-k or a range result.
//
// A selector holds one set of ids shared by every query, or one set per query (CSR:
// offsets[q] .. offsets[q + 1] of the ids array). A set is either a bitmap over
// [start, start + 8 * bytes) (bit i % 8 of byte i / 8 is id start + i, least significant bit
// first, as numpy.packbits(..., bitorder="little") writes it) or a sorted id array; with
// `exclude` the selector allows the ids outside the set instead.
//
// The scans test ids by list: allowed_masks writes, for a run of ids, bit i % 64 of
// masks[i / 64] for each allowed id i, and those masks are ANDed into the 64-code pass masks
// of the quantized-table filter (scan.cpp). A selector shared by every query gives each list
// the same masks, so ListFilter computes them once per list and search call when the call
// scans each list several times.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace pqkit {

class InvertedLists;

// One query's set, as views into its selector.
struct IdSet {
    const uint8_t* bitmap = nullptr;  // nullptr: a sorted id array
    int64_t start = 0;
    uint64_t nbits = 0;
    const int64_t* ids = nullptr;
    size_t n = 0;
    bool exclude = false;

    bool contains(int64_t id) const;
    bool accepts(int64_t id) const { return contains(id) != exclude; }
};

class IDSelector {
public:
    // Copies its arguments. bitmap (nbytes bytes) or ids (n_ids values, sorted ascending
    // within each set) must be given, not both. offsets: n_sets + 1 values from 0 to n_ids,
    // non-decreasing, for one set per query (sorted ids only), or nullptr for one set.
    // Throws std::invalid_argument for anything else.
    IDSelector(const uint8_t* bitmap, size_t nbytes, int64_t start, const int64_t* ids, size_t n_ids,
               const int64_t* offsets, size_t n_sets, bool exclude);

    // 0: one set shared by every query; else the number of queries it is made for.
    size_t n_sets() const { return per_query_ ? offsets_.size() - 1 : 0; }
    bool exclude() const { return exclude_; }
    bool is_bitmap() const { return is_bitmap_; }
    // The set of query q (any q for a shared set).
    IdSet for_query(size_t q) const;
    // Throws std::invalid_argument unless the selector fits a search of nq queries.
    void check_queries(size_t nq) const;

private:
    bool is_bitmap_;
    bool per_query_;
    bool exclude_;
    int64_t start_;
    std::vector<uint8_t> bitmap_;
    std::vector<int64_t> ids_;
    std::vector<int64_t> offsets_;
};

// Bit i % 64 of masks[i / 64] is set when set.accepts(ids[i]), for i < n (the bits of the
// last word past n are clear). Returns the number of allowed ids.
size_t allowed_masks(const IdSet& set, const int64_t* ids, size_t n, uint64_t* masks);

// Bit r % 64 of masks[r / 64] for every row r < n_rows that the set allows, where the set
// holds row numbers (IndexFlat's selectors, translated to rows by the Python layer).
// Returns the number of allowed rows.
size_t allowed_rows(const IdSet& set, size_t n_rows, uint64_t* masks);

// The allowed masks of inverted lists for one search call. With a selector shared by every
// query and lists scanned several times in the call (`reuse`: more scans than lists), each
// list's masks are computed once, on first use, and shared by the threads; otherwise (one set
// per query, or a few queries) they are computed for every scan into the caller's scratch.
class ListFilter {
public:
    ListFilter(const IDSelector* selector, const InvertedLists& lists, bool reuse);
    bool active() const { return selector_ != nullptr; }
    // The masks of codes first .. first + n of list l for query q (first a multiple of 64), or
    // nullptr when inactive.
    const uint64_t* masks(size_t q, size_t l, size_t first, size_t n, std::vector<uint64_t>& scratch) const;
    // The masks of the whole list.
    const uint64_t* masks(size_t q, size_t l, std::vector<uint64_t>& scratch) const {
        return masks(q, l, 0, lists_list_size(l), scratch);
    }

private:
    size_t lists_list_size(size_t l) const;

    const IDSelector* selector_;
    const InvertedLists& lists_;
    std::unique_ptr<std::once_flag[]> once_;
    mutable std::vector<std::vector<uint64_t>> shared_;
};

}  // namespace pqkit
