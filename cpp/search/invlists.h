// Inverted lists: per list, the codes and int64 ids of its vectors, and for
// IVF-PQ under L2 a float bias per code (see ivf.cpp). PQ codes are kept in
// the blocked layout of codes.h; IVF-Flat keeps raw rows. IndexPQ uses one list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pqkit {

enum class CodeLayout { Rows, Blocked };

// "rows" or "blocked"; anything else throws std::invalid_argument.
CodeLayout parse_code_layout(const std::string& name);

class InvertedLists {
public:
    InvertedLists(size_t nlist, size_t code_size, CodeLayout layout, bool with_bias);

    size_t nlist() const { return ids_.size(); }
    size_t code_size() const { return code_size_; }
    CodeLayout layout() const { return layout_; }
    bool with_bias() const { return with_bias_; }
    size_t ntotal() const { return ntotal_; }
    size_t list_size(size_t l) const { return ids_[l].size(); }
    const int64_t* list_ids(size_t l) const { return ids_[l].data(); }
    // Codes in the list's layout (blocked: zero-padded to whole blocks).
    const uint8_t* list_codes(size_t l) const { return codes_[l].data(); }
    const float* list_bias(size_t l) const { return with_bias_ ? bias_[l].data() : nullptr; }
    // An upper bound of |bias| over the list (never lowered by removals).
    float list_bias_absmax(size_t l) const { return with_bias_ ? bias_absmax_[l] : 0.0f; }
    // Codes of list l as rows (list_size x code_size).
    void copy_codes(size_t l, uint8_t* rows) const;
    // The ids of list l (list_size values).
    void copy_ids(size_t l, int64_t* ids) const;
    // sizes[l] = list_size(l) for every list (nlist values).
    void list_sizes(int64_t* sizes) const;
    // Every list in order, list 0 first: sizes (nlist), ids (ntotal) and codes
    // as rows (ntotal x code_size).
    void export_all(int64_t* sizes, int64_t* ids, uint8_t* codes) const;
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
    size_t memory_usage_bytes() const;

private:
    size_t code_size_;
    CodeLayout layout_;
    bool with_bias_;
    size_t ntotal_ = 0;
    std::vector<std::vector<uint8_t>> codes_;
    std::vector<std::vector<int64_t>> ids_;
    std::vector<std::vector<float>> bias_;
    std::vector<float> bias_absmax_;
};

}  // namespace pqkit
