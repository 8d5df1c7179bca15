// Inverted lists: per list, the codes and int64 ids of its vectors, and for
// IVF-PQ under L2 a float bias per code (see ivf.cpp). PQ codes are kept in
// the blocked layout of codes.h; IVF-Flat keeps raw rows. IndexPQ uses one list.
//
// The lists either own their storage (growable, one vector per list) or are
// read-only views of memory that the caller owns and keeps alive, such as a
// mapped index file (external()): list l then starts at the sum of the sizes
// of the lists before it (its ids and bias) and at the sum of their codes (in
// whole 64-code blocks for the blocked layout, so every list starts a block).
// The scans read both kinds through the same accessors.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pqkit {

enum class CodeLayout { Rows, Blocked };

// "rows" or "blocked"; anything else throws std::invalid_argument.
CodeLayout parse_code_layout(const std::string& name);

class InvertedLists {
public:
    InvertedLists(size_t nlist, size_t code_size, CodeLayout layout, bool with_bias);

    // Read-only lists over external memory (not copied; the caller keeps it
    // alive and unchanged while the lists exist): sizes (nlist values, copied),
    // n_ids ids in list order, codes_bytes bytes of codes in list order (rows:
    // n_ids x code_size; blocked: each list zero-padded to whole blocks) and,
    // when bias is not null, n_ids floats in list order. Throws
    // std::invalid_argument when a size is negative or the sizes do not add up
    // to n_ids and to codes_bytes.
    static std::unique_ptr<InvertedLists> external(size_t nlist, size_t code_size, CodeLayout layout,
                                                   const int64_t* sizes, const uint8_t* codes, size_t codes_bytes,
                                                   const int64_t* ids, size_t n_ids, const float* bias);

    size_t nlist() const { return nlist_; }
    size_t code_size() const { return code_size_; }
    CodeLayout layout() const { return layout_; }
    bool with_bias() const { return with_bias_; }
    // Whether the lists are a view of external memory (every change throws).
    bool read_only() const { return external_; }
    size_t ntotal() const { return ntotal_; }
    size_t list_size(size_t l) const { return external_ ? views_[l].n : ids_[l].size(); }
    const int64_t* list_ids(size_t l) const { return external_ ? views_[l].ids : ids_[l].data(); }
    // Codes in the list's layout (blocked: zero-padded to whole blocks).
    const uint8_t* list_codes(size_t l) const { return external_ ? views_[l].codes : codes_[l].data(); }
    const float* list_bias(size_t l) const {
        if (!with_bias_) return nullptr;
        return external_ ? views_[l].bias : bias_[l].data();
    }
    // An upper bound of |bias| over the list (never lowered by removals; for
    // external lists computed on first use, which any number of concurrent
    // readers may do: they store the same value).
    float list_bias_absmax(size_t l) const;
    // Codes of list l as rows (list_size x code_size).
    void copy_codes(size_t l, uint8_t* rows) const;
    // The ids of list l (list_size values).
    void copy_ids(size_t l, int64_t* ids) const;
    // sizes[l] = list_size(l) for every list (nlist values).
    void list_sizes(int64_t* sizes) const;
    // Every list in order, list 0 first: sizes (nlist), ids (ntotal) and codes
    // as rows (ntotal x code_size).
    void export_all(int64_t* sizes, int64_t* ids, uint8_t* codes) const;
    // Blocks of 64 codes over all lists (each list padded to whole blocks).
    size_t total_blocks() const;
    // Every list in order as external() takes it (blocked layout only, else
    // std::invalid_argument): sizes (nlist), ids (ntotal), the lists' blocks
    // (total_blocks() x code_size x 64 bytes, padding codes zero) and, with a
    // bias, the bias (ntotal).
    void export_blocked(int64_t* sizes, int64_t* ids, uint8_t* blocks, float* bias) const;
    // l as a list number; std::out_of_range unless 0 <= l < nlist.
    size_t checked_list_no(int64_t l) const;

    // Throws std::invalid_argument (before changing anything) if a list number
    // is out of range, or if bias is missing when the lists keep one.
    void add(const int64_t* list_nos, const int64_t* ids, const uint8_t* codes, const float* bias, size_t n);
    // Replaces every bias, given in list order (list 0 first), ntotal values.
    void set_bias(const float* bias);
    size_t remove_ids(const int64_t* ids, size_t n);
    // list_nos/offsets of each id, or -1/-1 when absent.
    void locate(const int64_t* ids, size_t n, int64_t* list_nos, int64_t* offsets) const;
    void reset();
    // Owned lists: the bytes reserved for codes, ids and biases. External
    // lists: the bytes of external memory they view.
    size_t memory_usage_bytes() const;

private:
    struct ListView {
        const uint8_t* codes;
        const int64_t* ids;
        const float* bias;
        size_t n;
    };

    void check_writable(const char* what) const;

    size_t nlist_;
    size_t code_size_;
    CodeLayout layout_;
    bool with_bias_;
    bool external_ = false;
    size_t ntotal_ = 0;
    std::vector<std::vector<uint8_t>> codes_;
    std::vector<std::vector<int64_t>> ids_;
    std::vector<std::vector<float>> bias_;
    std::vector<float> bias_absmax_;
    // External lists only.
    std::vector<ListView> views_;
    size_t external_bytes_ = 0;
    std::unique_ptr<std::atomic<float>[]> lazy_absmax_;  // < 0: not computed yet
};

}  // namespace pqkit
