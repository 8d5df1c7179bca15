#include "search/scan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "common/codes.h"
#include "kernels/kernels.h"

namespace pqkit {
namespace {

// A TopK sink ranks (seeding, estimates); a RangeSink's threshold is fixed from the start.
template <class Sink>
constexpr bool kRanks = std::is_same_v<Sink, TopK>;

// Whether code i of the run is allowed (no mask: every code).
inline bool allowed(const CodeRun& run, size_t i) {
    return run.allowed == nullptr || ((run.allowed[i / kBlock] >> (i % kBlock)) & 1);
}

// The allowed mask of block b of the run (every bit without a mask).
inline uint64_t allowed_block(const CodeRun& run, size_t b) {
    return run.allowed == nullptr ? ~uint64_t(0) : run.allowed[b];
}

// The first code at or after `start` (a multiple of kBlock) in a block with an allowed code.
inline size_t skip_disallowed_blocks(const CodeRun& run, size_t start) {
    if (run.allowed != nullptr)
        while (start < run.n && run.allowed[start / kBlock] == 0) start += kBlock;
    return start;
}

// Blocks scanned between two refreshes of the filter (the heap tightens it).
constexpr size_t kBlocksPerStep = 4;
// The same for estimate scans, which push only what passes the kernel's
// filter: longer steps (a whole list of ~400 codes at once, typically) save
// more in calls and filter set-up than a staler filter costs (2-3 %, measured
// on GloVe IVF1024,PQ50x4 with refine, against 4 and 8 blocks).
constexpr size_t kEstimateBlocksPerStep = 16;

// The exact key of code i for nbits other than 4 and 8 (exact_keys below has
// those): base + (bias + sum_m T[m, code_m]), left to right.
float exact_key(const PQShape& s, const uint8_t* blocks, size_t i, const float* table, float bias, float base,
                ScanBuffers& buf) {
    float acc = bias;
    buf.code.resize(s.code_size);
    buf.idx.resize(s.M);
    blocked_get(blocks, i, s.code_size, buf.code.data());
    pq_unpack(s, buf.code.data(), 1, buf.idx.data());
    for (size_t m = 0; m < s.M; ++m) acc = acc + table[m * s.ksub + static_cast<size_t>(buf.idx[m])];
    return base + acc;
}

// The exact keys of G codes at once (nbits 4 or 8): the same left-to-right sum
// base + (bias + sum_m T[m, code_m]) for each, as G independent chains, so the
// float adds overlap instead of each waiting on the previous one.
template <size_t G>
void exact_keys(const PQShape& s, const CodeRun& run, const size_t* rows, const float* table, float base,
                float* keys) {
    float acc[G];
    const uint8_t* p[G];
    for (size_t g = 0; g < G; ++g) {
        acc[g] = run.bias ? run.bias[rows[g]] : 0.0f;
        p[g] = run.blocks + blocked_offset(rows[g], 0, s.code_size);
    }
    if (s.nbits == 8) {
        for (size_t m = 0; m < s.M; ++m) {
            const float* t = table + m * 256;
            for (size_t g = 0; g < G; ++g) acc[g] = acc[g] + t[p[g][m * kBlock]];
        }
    } else {
        size_t m = 0;
        for (; m + 2 <= s.M; m += 2) {
            const float* t = table + m * 16;
            for (size_t g = 0; g < G; ++g) {
                const uint8_t byte = p[g][(m / 2) * kBlock];
                acc[g] = acc[g] + t[byte & 15];
                acc[g] = acc[g] + t[16 + (byte >> 4)];
            }
        }
        if (m < s.M)
            for (size_t g = 0; g < G; ++g) acc[g] = acc[g] + table[m * 16 + (p[g][(m / 2) * kBlock] & 15)];
    }
    for (size_t g = 0; g < G; ++g) keys[g] = base + acc[g];
}

// Exact keys of the candidates rows[0..n) (nbits 4 or 8), pushed in row order.
template <class Sink>
void consider_rows(const PQShape& s, const CodeRun& run, const size_t* rows, size_t n, const float* table,
                   float base, Sink& heap) {
    float keys[4];
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        exact_keys<4>(s, run, rows + i, table, base, keys);
        for (size_t g = 0; g < 4; ++g)
            if (keys[g] <= heap.threshold()) heap.push(keys[g], run.ids[rows[i + g]]);
    }
    for (; i < n; ++i) {
        exact_keys<1>(s, run, rows + i, table, base, keys);
        if (keys[0] <= heap.threshold()) heap.push(keys[0], run.ids[rows[i]]);
    }
}

template <class Sink>
inline void consider(const PQShape& s, const CodeRun& run, size_t i, const float* table, float base, Sink& heap,
                     ScanBuffers& buf) {
    float key;
    if (s.nbits == 4 || s.nbits == 8)
        exact_keys<1>(s, run, &i, table, base, &key);
    else
        key = exact_key(s, run.blocks, i, table, run.bias ? run.bias[i] : 0.0f, base, buf);
    if (key <= heap.threshold()) heap.push(key, run.ids[i]);
}

// The filter that lets through every code whose exact key can be <= tau.
// Returns false when no code of the run can (then the rest is skipped).
//
// Bounds, with u = 2^-24 and A the real sum of the code's table entries:
//  * est <= s * (A - O) term by term (floor), up to the double-precision
//    rounding of (T - o) * s, covered by `units_slack`;
//  * the float key differs from base + bias + A by at most
//    (M + 1) u (|base| + |bias| + sum_m max|T|), and the kernel's own float
//    filter (bias runs) adds at most 4 u (sum of ranges + |bias|): `margin`
//    takes (M + 4) * 4u times all magnitudes, several times the need.
bool filter_for(const PQShape& s, const QuantizedTable& q, const CodeRun& run, float base, float tau,
                ScanFilter& f) {
    const double M = static_cast<double>(s.M);
    const double margin =
        (M + 4.0) * 0x1p-22 * (std::fabs(double(tau)) + std::fabs(double(base)) + double(run.bias_absmax) + q.abs_sum);
    const double units_slack = M * 1e-4 + 1e-3;
    const double room = double(tau) - double(base) - q.offset + margin;  // bound on bias + (A - O)
    f.bias = run.bias;
    if (run.bias == nullptr) {
        const double units = room * q.scale + units_slack;
        if (units < 0.0) return false;
        f.max_est = units >= 65535.0 ? uint16_t(65535) : static_cast<uint16_t>(std::floor(units));
        return true;
    }
    const double limit = room + units_slack / q.scale;
    if (limit + double(run.bias_absmax) * (1.0 + 1e-6) < 0.0) return false;
    f.limit = std::nextafter(static_cast<float>(limit), std::numeric_limits<float>::infinity());
    f.inv_scale = static_cast<float>(1.0 / q.scale);
    return true;
}

// Points the kernel's prefetch at the rest of the run from code `start` on, then
// at the run scanned next (ScanFilter).
void set_ahead(const PQShape& s, const CodeRun& run, size_t start, ScanFilter& f) {
    f.ahead_bytes = blocked_bytes(run.n, s.code_size) - blocked_offset(start, 0, s.code_size);
    f.next = run.next_blocks;
    f.next_bytes = run.next_bytes;
}

// Starts loading the bias of the step after the one at `start` (count codes):
// the kernel reads a block's bias only after its codes, and a bias line that
// is not in cache then stalls it. The step after a run's last is the first
// of the next run.
void prefetch_next_bias(const CodeRun& run, size_t start, size_t count) {
    const float* from = nullptr;
    size_t n = 0;
    if (start + count < run.n) {
        from = run.bias ? run.bias + start + count : nullptr;
        n = std::min(count, run.n - start - count);
    } else {
        from = run.next_bias;
        n = std::min(count, run.next_n);
    }
    if (from == nullptr) return;
    const char* first = reinterpret_cast<const char*>(from);
    const char* end = reinterpret_cast<const char*>(from + n);
    for (const char* line = first; line < end; line += 64) __builtin_prefetch(line, 0, 3);
}

// The scan kernel for the table's width (4 or 8 bits).
void scan_kernel(const PQShape& s, const uint8_t* blocks, size_t n, const QuantizedTable& q, const ScanFilter& f,
                 uint64_t* masks) {
    const Kernels& K = kernels();
    if (s.nbits == 8)
        K.scan_lut8(blocks, n, s.M, q.lut.data(), f, masks);
    else
        K.scan_lut4(blocks, n, s.M, q.lut.data(), f, masks);
}

// Codes sampled from the head of a run to seed an empty heap: a few per
// wanted result (the filter tightens further as the scan goes), at most 256.
// Their estimates come from the scan kernel, at the cost of scanning them.
size_t seed_sample_size(size_t n, size_t k) {
    return std::min(n, std::min<size_t>(256, std::max<size_t>(kBlock, 8 * k)));
}

// Fills a heap that still has room before the filtered scan starts, so that the
// filter works with a tight threshold from the first block on. The integer
// estimates of the first `sample` codes rank them (est / s + bias is a lower
// bound of the exact key up to a constant); the best `need` of them get their
// exact key and are pushed. Which codes are pushed changes only the speed: the
// pushed keys are exact, and every other code still goes through the filter.
// Bit i % 64 of seeded[i / 64] marks code i as already pushed. Only allowed codes are seeded.
void seed_heap(const PQShape& s, const QuantizedTable& q, const CodeRun& run, const float* table, float base,
               TopK& heap, ScanBuffers& buf, size_t sample, uint64_t* seeded) {
    if (heap.k() == heap.size()) return;
    // The kernel's integer estimates, every code passing (no bias, largest max_est).
    std::vector<uint16_t>& est = buf.est;
    est.resize((sample + kBlock - 1) / kBlock * kBlock);
    buf.masks.resize(std::max(buf.masks.size(), est.size() / kBlock));
    ScanFilter all{};
    all.max_est = 65535;
    all.est_out = est.data();
    set_ahead(s, run, 0, all);
    scan_kernel(s, run.blocks, sample, q, all, buf.masks.data());
    std::vector<std::pair<float, uint32_t>>& order = buf.order;
    order.clear();
    const float inv_scale = static_cast<float>(1.0 / q.scale);
    for (size_t i = 0; i < sample; ++i)
        if (allowed(run, i))
            order.emplace_back(static_cast<float>(est[i]) * inv_scale + (run.bias ? run.bias[i] : 0.0f),
                               static_cast<uint32_t>(i));
    const size_t need = std::min(heap.k() - heap.size(), order.size());
    if (need == 0) return;
    if (need == 1)  // k = 1 (PatchCore, k-means): the best estimate, no general selection
        std::iter_swap(order.begin(), std::min_element(order.begin(), order.end()));
    else if (need < order.size())
        std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(need), order.end());
    for (size_t j = 0; j < need; ++j) {
        const size_t i = order[j].second;
        consider(s, run, i, table, base, heap, buf);
        seeded[i / kBlock] |= uint64_t(1) << (i % kBlock);
    }
}

// Pushes the estimate keys of codes start..start+count (every one scanned,
// their keys in buf.keys[0..count), +inf for a disallowed code) into a heap
// that had room when the step began. Only the step's k smallest keys (and any
// equal to the k-th, whose ids decide) can be in the top-k of heap and step
// together, so only those are pushed: about k pushes instead of one per code,
// each of which may shift the heap's entries, and in increasing order, so that
// each lands at the end of the sorted top-k. The heap ends as if every code
// had been pushed.
//
// Candidates: the keys under a bound on the k-th smallest (select.h: the
// small-k bound, or a superset of about k + 32 keys); sorted by the kernel
// sort_order when they are few, else cut to the exact k-th and sorted here.
void fill_from_step(const CodeRun& run, size_t start, size_t count, TopK& heap, ScanBuffers& buf) {
    const float* keys = buf.keys.data();
    const size_t k = heap.k();
    const Kernels& K = kernels();
    constexpr float inf = std::numeric_limits<float>::infinity();
    std::vector<uint32_t>& passing = buf.passing;
    passing.resize(count + 16);  // indices_at_most's last store writes a whole vector
    size_t n_pass = KeyBound::small_k(k)
                        ? K.indices_at_most(keys, count, buf.bound.bound(keys, count, k, inf), passing.data())
                        : buf.bound.candidates(keys, count, k, passing.data());
    if (run.allowed != nullptr) {  // a disallowed code's +inf key passes an infinite bound
        size_t kept = 0;
        for (size_t t = 0; t < n_pass; ++t)
            if (keys[passing[t]] < inf || allowed(run, start + passing[t])) passing[kept++] = passing[t];
        n_pass = kept;
    }
    std::vector<float>& values = buf.values;
    values.resize(n_pass);
    for (size_t t = 0; t < n_pass; ++t) {
        values[t] = keys[passing[t]];
        __builtin_prefetch(run.ids + start + passing[t], 0, 3);  // their ids' loads start together
    }
    std::vector<uint32_t>& order = buf.sorted;
    order.resize(n_pass);
    if (n_pass <= kSortMax) {
        K.sort_order(values.data(), n_pass, order.data());
    } else {
        // Many candidates (a large k, or no cut found): those at most the exact k-th.
        const size_t n_keep = std::min(k, n_pass);
        std::vector<float>& copy = buf.keys_copy;
        copy.assign(values.begin(), values.end());
        std::nth_element(copy.begin(), copy.begin() + static_cast<std::ptrdiff_t>(n_keep - 1), copy.end());
        const float kth = copy[n_keep - 1];
        size_t kept = 0;
        for (size_t t = 0; t < n_pass; ++t)
            if (values[t] <= kth) order[kept++] = static_cast<uint32_t>(t);
        order.resize(kept);
        std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
            return values[a] < values[b] || (values[a] == values[b] && a < b);
        });
    }
    // The k smallest in order, then those equal to the k-th (ties go by id in the heap).
    for (size_t r = 0; r < order.size(); ++r) {
        const float key = values[order[r]];
        if (r >= k && key != values[order[k - 1]]) break;
        if (key <= heap.threshold()) heap.push(key, run.ids[start + passing[order[r]]]);
    }
}

// The estimate keys base + (offset + (est_j / s + bias_j)) of codes start..start+count
// into buf.keys[0..count) (est_j: buf.est[j]), +inf for a disallowed code. Without a mask
// the loop has no branch, so the compiler vectorises it; the operations are those of
// scan_estimates' key_of, in the same order (no contraction: -ffp-contract=off).
void estimate_keys(const CodeRun& run, size_t start, size_t count, float base, float offset, float inv_scale,
                   ScanBuffers& buf) {
    buf.keys.resize(count);
    float* keys = buf.keys.data();
    const uint16_t* est = buf.est.data();
    if (run.bias != nullptr) {
        const float* bias = run.bias + start;
        for (size_t j = 0; j < count; ++j) keys[j] = base + (offset + (static_cast<float>(est[j]) * inv_scale + bias[j]));
    } else {
        for (size_t j = 0; j < count; ++j) keys[j] = base + (offset + (static_cast<float>(est[j]) * inv_scale + 0.0f));
    }
    if (run.allowed != nullptr)
        for (size_t j = 0; j < count; ++j)
            if (!allowed(run, start + j)) keys[j] = std::numeric_limits<float>::infinity();
}

// scan_codes with estimate keys (see scan.h): every step scans with the
// filter of the heap's threshold and the kernel's estimates written out; the
// codes that pass are pushed with their estimate key. A step that starts with
// room in the heap lets every code pass (fill_from_step).
void scan_estimates(const PQShape& s, const QuantizedTable& q, const CodeRun& run, float base, TopK& heap,
                    ScanBuffers& buf) {
    buf.masks.resize(std::max<size_t>(buf.masks.size(), kEstimateBlocksPerStep));
    buf.est.resize(std::max<size_t>(buf.est.size(), kEstimateBlocksPerStep * kBlock));
    const float inv_scale = static_cast<float>(1.0 / q.scale);
    const float offset = static_cast<float>(q.offset);
    const auto key_of = [&](size_t i, size_t j) {
        const float bias = run.bias ? run.bias[i] : 0.0f;
        return base + (offset + (static_cast<float>(buf.est[j]) * inv_scale + bias));
    };
    size_t count = 0;
    for (size_t start = 0; start < run.n; start += count) {
        start = skip_disallowed_blocks(run, start);
        if (start >= run.n) break;
        count = std::min(kEstimateBlocksPerStep * kBlock, run.n - start);
        const float tau = heap.threshold();
        const uint8_t* blocks = run.blocks + blocked_offset(start, 0, s.code_size);
        ScanFilter f{};
        f.est_out = buf.est.data();
        set_ahead(s, run, start, f);
        prefetch_next_bias(run, start, count);
        if (!(tau < std::numeric_limits<float>::infinity())) {
            f.max_est = 65535;  // every code passes
            scan_kernel(s, blocks, count, q, f, buf.masks.data());
            estimate_keys(run, start, count, base, offset, inv_scale, buf);
            fill_from_step(run, start, count, heap, buf);
            continue;
        }
        if (!filter_for(s, q, run, base, tau, f)) return;  // tau only decreases
        if (f.bias != nullptr) f.bias += start;
        scan_kernel(s, blocks, count, q, f, buf.masks.data());
        // The step's candidates first, starting their ids' loads (scattered
        // in the run's ids: a cache miss each, which overlap this way), then
        // their keys and pushes.
        uint32_t rows[kEstimateBlocksPerStep * kBlock];
        size_t n_rows = 0;
        for (size_t b = 0; b * kBlock < count; ++b) {
            for (uint64_t bits = buf.masks[b] & allowed_block(run, start / kBlock + b); bits != 0; bits &= bits - 1) {
                const size_t j = b * kBlock + static_cast<size_t>(__builtin_ctzll(bits));
                __builtin_prefetch(run.ids + start + j, 0, 3);
                rows[n_rows++] = static_cast<uint32_t>(j);
            }
        }
        for (size_t r = 0; r < n_rows; ++r) {
            const size_t j = rows[r];
            const float key = key_of(start + j, j);
            if (key <= heap.threshold()) heap.push(key, run.ids[start + j]);
        }
    }
}

}  // namespace

void quantize_table(const PQShape& s, const float* table, QuantizedTable& q) {
    q.enabled = false;
    if (s.nbits != 8 && s.nbits != 4) return;
    const size_t ksub = s.ksub;
    const float qmax = static_cast<float>(std::min<size_t>(255, 65535 / s.M));
    q.offsets.resize(s.M);
    std::vector<float>& hi = q.highs;
    hi.resize(s.M);
    const Kernels& K = kernels();
    K.min_max_rows(table, s.M, ksub, q.offsets.data(), hi.data());
    // Locals, not q's members: the sums stay in registers (stores through
    // q.offsets could otherwise alias them).
    double range = 0.0, offset = 0.0, abs_sum = 0.0;
    for (size_t m = 0; m < s.M; ++m) {
        const float lo = q.offsets[m];
        offset += lo;
        abs_sum += std::max(std::fabs(double(lo)), std::fabs(double(hi[m])));
        range = std::max(range, double(hi[m]) - double(lo));
    }
    q.offset = offset;
    q.abs_sum = abs_sum;
    if (!(range > 0.0) || !std::isfinite(range) || !std::isfinite(q.abs_sum) || qmax < 1.0f) return;
    q.scale = double(qmax) / range;
    // Single precision here: each entry may come out up to ~2^-22 * 255 units
    // above (T - o) * s, which the filter's units_slack (1e-4 per term) covers.
    const float scale = static_cast<float>(q.scale);
    const size_t rows = s.nbits == 8 ? s.M : 2 * s.code_size;  // 4-bit: an odd M gets a zero table
    const size_t row_bytes = s.nbits == 8 ? ksub : kLut4Row;
    q.lut.resize(rows * row_bytes + 64);  // + padding for 4-byte gathers
    // (T - o) * s >= 0, so truncation is floor
    uint8_t* lut = q.lut.data();
    if (s.nbits == 8) {
        K.quantize_rows(table, s.M, ksub, q.offsets.data(), scale, qmax, lut);
    } else {
        // Each 16-entry row at the start of its kLut4Row bytes, then repeated.
        for (size_t m = 0; m < s.M; ++m) {
            uint8_t* row = lut + m * kLut4Row;
            K.quantize_rows(table + m * ksub, 1, ksub, q.offsets.data() + m, scale, qmax, row);
            for (size_t copy = 1; copy < kLut4Row / ksub; ++copy) std::copy_n(row, ksub, row + copy * ksub);
        }
    }
    std::fill(q.lut.begin() + static_cast<std::ptrdiff_t>(s.M * row_bytes), q.lut.end(), uint8_t(0));
    q.enabled = true;
}


template <class Sink>
void scan_codes(const PQShape& s, const float* table, const QuantizedTable& q, const CodeRun& run, float base,
                Sink& heap, ScanBuffers& buf, bool estimates) {
    if (run.allowed != nullptr) {  // nothing allowed: nothing to scan, not even a seeding sample
        uint64_t any = 0;
        for (size_t w = 0; w < (run.n + kBlock - 1) / kBlock; ++w) any |= run.allowed[w];
        if (any == 0) return;
    }
    if constexpr (kRanks<Sink>) {
        if (estimates && q.enabled) return scan_estimates(s, q, run, base, heap, buf);
    }
    buf.masks.resize(std::max<size_t>(buf.masks.size(), kBlocksPerStep));
    // Codes pushed by the seeding step (always among the first 256) are skipped later.
    uint64_t seeded[256 / kBlock] = {0, 0, 0, 0};
    size_t sampled = 0;
    if constexpr (kRanks<Sink>) {
        if (q.enabled && run.n > 0 && heap.size() < heap.k()) {
            sampled = seed_sample_size(run.n, heap.k());
            seed_heap(s, q, run, table, base, heap, buf, sampled, seeded);
        }
    }
    const auto seeded_bits = [&](size_t block) { return block < 256 / kBlock ? seeded[block] : uint64_t(0); };
    size_t count = 0;
    for (size_t start = 0; start < run.n; start += count) {
        start = skip_disallowed_blocks(run, start);
        if (start >= run.n) break;
        const float tau = heap.threshold();
        if (!q.enabled || !(tau < std::numeric_limits<float>::infinity())) {
            // The heap is not full yet: evaluate exactly, one block at a time so the
            // filter starts as soon as k codes are in.
            count = std::min(kBlock, run.n - start);
            const uint64_t skip = seeded_bits(start / kBlock);
            const uint64_t allow = allowed_block(run, start / kBlock);
            for (size_t i = start; i < start + count; ++i)
                if (!((skip >> (i % kBlock)) & 1) && ((allow >> (i % kBlock)) & 1))
                    consider(s, run, i, table, base, heap, buf);
            continue;
        }
        count = std::min(kBlocksPerStep * kBlock, run.n - start);
        ScanFilter f{};
        set_ahead(s, run, start, f);
        prefetch_next_bias(run, start, count);
        if (!filter_for(s, q, run, base, tau, f)) return;  // tau only decreases: nothing later passes either
        if (f.bias != nullptr) f.bias += start;
        const uint8_t* blocks = run.blocks + blocked_offset(start, 0, s.code_size);
        scan_kernel(s, blocks, count, q, f, buf.masks.data());
        // The step's candidates, then their exact keys several at a time.
        size_t rows[kBlocksPerStep * kBlock];
        size_t n_rows = 0;
        for (size_t b = 0; b * kBlock < count; ++b) {
            const size_t block = start / kBlock + b;
            const uint64_t pass = buf.masks[b] & allowed_block(run, block);
            const uint64_t bits0 = start < sampled ? pass & ~seeded_bits(block) : pass;
            for (uint64_t bits = bits0; bits != 0; bits &= bits - 1) {
                rows[n_rows] = start + b * kBlock + static_cast<size_t>(__builtin_ctzll(bits));
                __builtin_prefetch(run.ids + rows[n_rows++], 0, 3);  // as in scan_estimates
            }
        }
        consider_rows(s, run, rows, n_rows, table, base, heap);
    }
}

template void scan_codes<TopK>(const PQShape&, const float*, const QuantizedTable&, const CodeRun&, float, TopK&,
                               ScanBuffers&, bool);
template void scan_codes<RangeSink>(const PQShape&, const float*, const QuantizedTable&, const CodeRun&, float,
                                    RangeSink&, ScanBuffers&, bool);

}  // namespace pqkit
