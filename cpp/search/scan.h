// Exact top-k over PQ codes, accelerated by a quantized distance table.
//
// A query's float table T (M x ksub, "smaller is better") gives each code the
// key  base + (bias + sum_m T[m, code_m])  summed left to right in float: that
// sequence of roundings is *the* result, whatever the SIMD level.
//
// To avoid most of those float sums, T is first quantized once per query to
// bytes: q[m, k] = floor((T[m, k] - o_m) * s), with o_m = min_k T[m, k] and one
// scale s for all m (so the integer sums est = sum_m q[m, code_m] are
// comparable). Since q <= (T - o) * s per term, est / s is a lower bound of the
// exact sum minus O = sum_m o_m. A code is given its exact float key only when
// that lower bound, plus bias and base, can still beat the current k-th best
// key (with margins for float rounding, see filter_for in scan.cpp). Every code
// that could enter the top-k is thus evaluated exactly, and the result is the
// exact top-k of the float keys: identical for every SIMD level and thread
// count, only faster. The integer scans are the kernels scan_lut8 (vpermi2b on
// AVX-512 VBMI) and scan_lut4 (vpermb on AVX-512 VBMI, vpshufb on AVX2) over
// the blocked layout of codes.h.
//
// An id selector (selector.h) gives a run a mask of its allowed codes: the mask is ANDed into
// the filter's pass masks, disallowed codes are never seeded or evaluated, and steps whose
// codes are all disallowed are not scanned at all. The result is the exact top-k (or range)
// of the allowed codes' keys.
//
// The scan pushes into a Sink: a TopK (the k best keys) or a RangeSink (every key at most a
// fixed threshold, common/range.h); both expose threshold() and push(key, id).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/pq_codes.h"
#include "common/range.h"
#include "common/select.h"
#include "common/topk.h"

namespace pqkit {

struct QuantizedTable {
    std::vector<uint8_t> lut;  // padded as scan_lut8 / scan_lut4 require
    double offset = 0.0;       // O = sum_m min_k T[m, k]
    double scale = 0.0;        // s, integer units per distance unit
    double abs_sum = 0.0;      // sum_m max_k |T[m, k]|, for rounding margins
    bool enabled = false;      // false: nbits not 4 or 8, or a flat table
    std::vector<float> offsets;  // o_m
    std::vector<float> highs;    // max_c T[m, c] (scratch)
};

// Fills q from the float table (only nbits 4 and 8 are quantized).
void quantize_table(const PQShape& shape, const float* table, QuantizedTable& q);

// One run of codes in the blocked layout with their ids and optional bias.
struct CodeRun {
    const uint8_t* blocks;
    size_t n;
    const int64_t* ids;
    const float* bias;   // nullptr: no bias
    float bias_absmax;   // >= max |bias|
    const uint8_t* next_blocks = nullptr;  // the codes scanned after this run (prefetch only)
    size_t next_bytes = 0;
    const float* next_bias = nullptr;  // and their bias (prefetch only)
    size_t next_n = 0;
    // Allowed codes (bit i % 64 of allowed[i / 64] for code i of the run), or nullptr: all.
    // A run starts at a multiple of 64 codes of its list, so its list's masks serve it.
    const uint64_t* allowed = nullptr;
};

struct ScanBuffers {
    std::vector<uint64_t> masks;
    std::vector<uint16_t> est;                      // seeding: integer estimates of a sample
    std::vector<std::pair<float, uint32_t>> order;  // seeding: (lower bound, index); a step's passing (key, index)
    std::vector<float> keys;                        // estimate scan: a step's keys
    std::vector<uint32_t> passing;                  // estimate scan: the step's candidate codes
    std::vector<float> values, keys_copy;           // estimate scan: their keys (and a copy to select in)
    std::vector<uint32_t> sorted;                   // estimate scan: their order by key
    KeyBound bound;                                 // estimate scan: a bound on a step's k-th key
    std::vector<uint8_t> code;
    std::vector<int32_t> idx;
};

// Pushes into `sink` every allowed code of `run` whose exact key can be in the top-k (TopK)
// or is at most the range threshold (RangeSink).
//
// With `estimates` (and a quantized table) the keys are the table's integer
// estimates instead, in distance units: base + (O + (est / s + bias)), a
// lower bound of the exact key up to rounding. No exact key is computed: this
// ranks candidates for an exact re-ranking (IndexRefine), as a fast-scan
// index does. The estimates are exact integers, so the result is the same at
// every SIMD level and thread count. Estimates are for TopK sinks only.
template <class Sink>
void scan_codes(const PQShape& shape, const float* table, const QuantizedTable& q, const CodeRun& run,
                float base, Sink& sink, ScanBuffers& buffers, bool estimates = false);

extern template void scan_codes<TopK>(const PQShape&, const float*, const QuantizedTable&, const CodeRun&, float,
                                      TopK&, ScanBuffers&, bool);
extern template void scan_codes<RangeSink>(const PQShape&, const float*, const QuantizedTable&, const CodeRun&,
                                           float, RangeSink&, ScanBuffers&, bool);

}  // namespace pqkit
