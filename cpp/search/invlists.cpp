#include "search/invlists.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/codes.h"

namespace pqkit {

namespace {

// Capacity for `needed` elements: exactly that when it is the first allocation, else at least
// 1.5x the current capacity (amortised O(1) appends).
template <class T>
void reserve_growing(std::vector<T>& v, size_t needed) {
    if (needed <= v.capacity()) return;
    v.reserve(v.capacity() == 0 ? needed : std::max(needed, v.capacity() + v.capacity() / 2));
}

}  // namespace

CodeLayout parse_code_layout(const std::string& name) {
    if (name == "rows") return CodeLayout::Rows;
    if (name == "blocked") return CodeLayout::Blocked;
    throw std::invalid_argument("layout must be 'rows' or 'blocked', got '" + name + "'");
}

InvertedLists::InvertedLists(size_t nlist, size_t code_size, CodeLayout layout, bool with_bias)
    : nlist_(nlist), code_size_(code_size), layout_(layout), with_bias_(with_bias), codes_(nlist), ids_(nlist),
      bias_(with_bias ? nlist : 0), bias_absmax_(with_bias ? nlist : 0, 0.0f) {
    if (nlist == 0) throw std::invalid_argument("nlist must be >= 1, got 0");
    if (code_size == 0) throw std::invalid_argument("code_size must be >= 1, got 0");
}

std::unique_ptr<InvertedLists> InvertedLists::external(size_t nlist, size_t code_size, CodeLayout layout,
                                                       const int64_t* sizes, const uint8_t* codes,
                                                       size_t codes_bytes, const int64_t* ids, size_t n_ids,
                                                       const float* bias) {
    auto lists = std::make_unique<InvertedLists>(1, code_size, layout, bias != nullptr);
    if (nlist == 0) throw std::invalid_argument("nlist must be >= 1, got 0");
    if (code_size > SIZE_MAX / kBlock) throw std::invalid_argument("code_size " + std::to_string(code_size) + " is too large");
    // Every count is checked against what remains before it is added, so no sum can wrap.
    const size_t unit = layout == CodeLayout::Blocked ? kBlock * code_size : code_size;
    const size_t units = codes_bytes / unit;
    if (units * unit != codes_bytes)
        throw std::invalid_argument("codes hold " + std::to_string(codes_bytes) + " bytes, not a whole number of " +
                                    (layout == CodeLayout::Blocked ? "blocks" : "codes"));
    std::vector<ListView> views(nlist);
    size_t at = 0, unit_at = 0;
    for (size_t l = 0; l < nlist; ++l) {
        if (sizes[l] < 0 || static_cast<uint64_t>(sizes[l]) > n_ids - at)
            throw std::invalid_argument("list " + std::to_string(l) + " has size " + std::to_string(sizes[l]) +
                                        ", outside [0, " + std::to_string(n_ids - at) + "] (the ids left)");
        const size_t n = static_cast<size_t>(sizes[l]);
        const size_t list_units = layout == CodeLayout::Blocked ? (n + kBlock - 1) / kBlock : n;
        if (list_units > units - unit_at)
            throw std::invalid_argument("the codes end before list " + std::to_string(l));
        views[l] = ListView{codes + unit_at * unit, ids + at, bias ? bias + at : nullptr, n};
        at += n;
        unit_at += list_units;
    }
    if (at != n_ids || unit_at != units)
        throw std::invalid_argument("list sizes add up to " + std::to_string(at) + " codes in " +
                                    std::to_string(unit_at * unit) + " bytes, but " + std::to_string(n_ids) +
                                    " ids and " + std::to_string(codes_bytes) + " bytes of codes are given");
    lists->nlist_ = nlist;
    lists->external_ = true;
    lists->ntotal_ = n_ids;
    lists->codes_.clear();
    lists->ids_.clear();
    lists->bias_.clear();
    lists->bias_absmax_.clear();
    lists->views_ = std::move(views);
    lists->external_bytes_ = codes_bytes + n_ids * sizeof(int64_t) + (bias ? n_ids * sizeof(float) : 0);
    if (bias != nullptr) {
        lists->lazy_absmax_.reset(new std::atomic<float>[nlist]);
        for (size_t l = 0; l < nlist; ++l) lists->lazy_absmax_[l].store(-1.0f, std::memory_order_relaxed);
    }
    return lists;
}

void InvertedLists::check_writable(const char* what) const {
    if (external_)
        throw std::invalid_argument(std::string("cannot ") + what +
                                    ": these inverted lists are a read-only view of external memory");
}

float InvertedLists::list_bias_absmax(size_t l) const {
    if (!with_bias_) return 0.0f;
    if (!external_) return bias_absmax_[l];
    float v = lazy_absmax_[l].load(std::memory_order_relaxed);
    if (v < 0.0f) {
        v = 0.0f;
        const ListView& view = views_[l];
        for (size_t i = 0; i < view.n; ++i) v = std::fmax(v, std::fabs(view.bias[i]));
        lazy_absmax_[l].store(v, std::memory_order_relaxed);
    }
    return v;
}

void InvertedLists::copy_codes(size_t l, uint8_t* rows) const {
    const size_t n = list_size(l);
    if (layout_ == CodeLayout::Rows) {
        if (n) std::memcpy(rows, list_codes(l), n * code_size_);
        return;
    }
    for (size_t i = 0; i < n; ++i) blocked_get(list_codes(l), i, code_size_, rows + i * code_size_);
}

void InvertedLists::copy_ids(size_t l, int64_t* ids) const {
    const size_t n = list_size(l);
    if (n) std::memcpy(ids, list_ids(l), n * sizeof(int64_t));
}

void InvertedLists::list_sizes(int64_t* sizes) const {
    for (size_t l = 0; l < nlist(); ++l) sizes[l] = static_cast<int64_t>(list_size(l));
}

void InvertedLists::export_all(int64_t* sizes, int64_t* ids, uint8_t* codes) const {
    size_t at = 0;
    for (size_t l = 0; l < nlist(); ++l) {
        const size_t n = list_size(l);
        sizes[l] = static_cast<int64_t>(n);
        if (n == 0) continue;
        copy_ids(l, ids + at);
        copy_codes(l, codes + at * code_size_);
        at += n;
    }
}

size_t InvertedLists::total_blocks() const {
    size_t blocks = 0;
    for (size_t l = 0; l < nlist(); ++l) blocks += (list_size(l) + kBlock - 1) / kBlock;
    return blocks;
}

void InvertedLists::export_blocked(int64_t* sizes, int64_t* ids, uint8_t* blocks, float* bias) const {
    if (layout_ != CodeLayout::Blocked) throw std::invalid_argument("export_blocked needs blocked lists");
    size_t at = 0;
    uint8_t* out = blocks;
    for (size_t l = 0; l < nlist(); ++l) {
        const size_t n = list_size(l);
        sizes[l] = static_cast<int64_t>(n);
        if (n == 0) continue;
        copy_ids(l, ids + at);
        if (bias != nullptr && with_bias_) std::memcpy(bias + at, list_bias(l), n * sizeof(float));
        const size_t bytes = blocked_bytes(n, code_size_);
        std::memcpy(out, list_codes(l), bytes);
        // Removals leave stale codes past the end of a list's last block: the padding is zeroed.
        const size_t valid = block_valid(n, (n - 1) / kBlock);
        uint8_t* last = out + bytes - kBlock * code_size_;
        for (size_t j = 0; j < code_size_ && valid < kBlock; ++j) std::memset(last + j * kBlock + valid, 0, kBlock - valid);
        out += bytes;
        at += n;
    }
}

size_t InvertedLists::checked_list_no(int64_t l) const {
    if (l < 0 || static_cast<uint64_t>(l) >= nlist())
        throw std::out_of_range("list number out of range: expected 0 <= list_no < " + std::to_string(nlist()) +
                                ", got " + std::to_string(l));
    return static_cast<size_t>(l);
}

void InvertedLists::add(const int64_t* list_nos, const int64_t* ids, const uint8_t* codes, const float* bias,
                        size_t n) {
    check_writable("add codes");
    if (with_bias_ && bias == nullptr && n > 0) throw std::invalid_argument("these lists keep a bias per code; none given");
    for (size_t i = 0; i < n; ++i) {
        if (list_nos[i] < 0 || static_cast<size_t>(list_nos[i]) >= nlist()) {
            throw std::invalid_argument("list number out of range: expected 0 <= list_no < " +
                                        std::to_string(nlist()) + ", got " + std::to_string(list_nos[i]));
        }
    }
    // Room for the whole batch first, so that memory_usage_bytes (capacity) stays close to what
    // is stored: exactly the batch after a first add, and 1.5x growth over many small adds
    // instead of the doubling of one push at a time.
    std::vector<size_t> incoming(nlist(), 0);
    for (size_t i = 0; i < n; ++i) ++incoming[static_cast<size_t>(list_nos[i])];
    for (size_t l = 0; l < nlist(); ++l) {
        if (incoming[l] == 0) continue;
        const size_t count = ids_[l].size() + incoming[l];
        const size_t bytes = layout_ == CodeLayout::Rows ? count * code_size_ : blocked_bytes(count, code_size_);
        reserve_growing(ids_[l], count);
        reserve_growing(codes_[l], bytes);
        if (with_bias_) reserve_growing(bias_[l], count);
    }
    for (size_t i = 0; i < n; ++i) {
        const size_t l = static_cast<size_t>(list_nos[i]);
        const size_t pos = ids_[l].size();
        ids_[l].push_back(ids[i]);
        const uint8_t* code = codes + i * code_size_;
        if (layout_ == CodeLayout::Rows) {
            codes_[l].insert(codes_[l].end(), code, code + code_size_);
        } else {
            if (codes_[l].size() < blocked_bytes(pos + 1, code_size_)) codes_[l].resize(blocked_bytes(pos + 1, code_size_), 0);
            blocked_put(codes_[l].data(), pos, code_size_, code);
        }
        if (with_bias_) {
            bias_[l].push_back(bias[i]);
            bias_absmax_[l] = std::fmax(bias_absmax_[l], std::fabs(bias[i]));
        }
    }
    ntotal_ += n;
}

void InvertedLists::set_bias(const float* bias) {
    if (!with_bias_) throw std::invalid_argument("these lists keep no bias");
    check_writable("set the bias");
    size_t at = 0;
    for (size_t l = 0; l < nlist(); ++l) {
        bias_absmax_[l] = 0.0f;
        for (size_t i = 0; i < bias_[l].size(); ++i, ++at) {
            bias_[l][i] = bias[at];
            bias_absmax_[l] = std::fmax(bias_absmax_[l], std::fabs(bias[at]));
        }
    }
}

size_t InvertedLists::remove_ids(const int64_t* ids, size_t n) {
    check_writable("remove ids");
    std::unordered_set<int64_t> doomed(ids, ids + n);
    std::vector<uint8_t> code(code_size_);
    size_t removed = 0;
    for (size_t l = 0; l < nlist(); ++l) {
        auto& lid = ids_[l];
        auto& lcode = codes_[l];
        size_t w = 0;
        for (size_t r = 0; r < lid.size(); ++r) {
            if (doomed.count(lid[r])) continue;
            if (w != r) {
                lid[w] = lid[r];
                if (with_bias_) bias_[l][w] = bias_[l][r];
                if (layout_ == CodeLayout::Rows) {
                    std::memmove(&lcode[w * code_size_], &lcode[r * code_size_], code_size_);
                } else {
                    blocked_get(lcode.data(), r, code_size_, code.data());
                    blocked_put(lcode.data(), w, code_size_, code.data());
                }
            }
            ++w;
        }
        removed += lid.size() - w;
        lid.resize(w);
        if (with_bias_) bias_[l].resize(w);
        lcode.resize(layout_ == CodeLayout::Rows ? w * code_size_ : blocked_bytes(w, code_size_));
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
    for (size_t l = 0; l < nlist(); ++l) {
        const int64_t* list = list_ids(l);
        for (size_t r = 0; r < list_size(l); ++r)
            if (wanted.count(list[r])) found.emplace(list[r], std::make_pair(int64_t(l), int64_t(r)));
    }
    for (size_t i = 0; i < n; ++i) {
        auto it = found.find(ids[i]);
        if (it != found.end()) {
            list_nos[i] = it->second.first;
            offsets[i] = it->second.second;
        }
    }
}

void InvertedLists::reset() {
    check_writable("reset");
    for (auto& v : ids_) std::vector<int64_t>().swap(v);
    for (auto& v : codes_) std::vector<uint8_t>().swap(v);
    for (auto& v : bias_) std::vector<float>().swap(v);
    for (auto& v : bias_absmax_) v = 0.0f;
    ntotal_ = 0;
}

size_t InvertedLists::memory_usage_bytes() const {
    if (external_) return external_bytes_;
    size_t bytes = 0;
    for (size_t l = 0; l < nlist(); ++l) {
        bytes += ids_[l].capacity() * sizeof(int64_t) + codes_[l].capacity();
        if (with_bias_) bytes += bias_[l].capacity() * sizeof(float);
    }
    return bytes;
}

}  // namespace pqkit
