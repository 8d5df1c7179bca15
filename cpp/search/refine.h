// Exact re-ranking of a shortlist (IndexRefine): the candidates an approximate
// index returned get their exact distance to the query from the stored float
// vectors, and the best k of them are kept.
#pragma once

#include <cstddef>
#include <cstdint>

#include "search/flat.h"
#include "search/ivf.h"

namespace pqkit {

class InvertedLists;
class PQCodebooks;

// For query i (< nq, rows of x are d floats) and candidate j (< c):
// rows[i * c + j] is a row of y (ny x d), or -1 for no candidate; its result id
// is ids[i * c + j]. The key is ||x_i - y_r||^2 computed directly (kernel
// l2sqr_ny, 16-lane order) or -<x_i, y_r> (kernel dot_tile). D and I (nq x k)
// get the k best by (key, id), best first, padded with (+-inf, -1); inner
// products are written back un-negated. Every query is handled by one thread,
// so results do not depend on n_threads. Throws std::invalid_argument for a
// row outside -1..ny-1 (checked before any work starts).
void rerank(const float* x, size_t nq, const float* y, size_t ny, size_t d, const int64_t* rows,
            const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I);

// As rerank, with the candidates stored as PQ codes (IndexRefine over a PQ
// refine store): rows are offsets into list 0 of `lists` (codes of pq's
// code_size, as rows, or blocked as IndexPQ keeps them for its scans; a row
// reads one cache line where a blocked code reads code_size). Each candidate
// is decoded to its reconstruction (pq_decode's floats) and gets the same
// direct distance as rerank computes from stored floats, so the keys equal
// rerank's over the decoded vectors, bit for bit.
void rerank_pq(const float* x, size_t nq, const PQCodebooks& pq, const InvertedLists& lists, const int64_t* rows,
               const int64_t* ids, size_t c, size_t k, Metric metric, int n_threads, float* D, int64_t* I);

// As rerank, with the candidates stored as 8-bit scalar-quantizer codes (an
// IndexScalarQuantizer refine store): codes is ny x d bytes, and dimension t of
// row r decodes to vmin[t] + codes[r * d + t] * step[t] (a product, then a sum:
// no FMA), the reconstruction the Python side computes. A candidate reads d
// bytes instead of 4 d; the keys equal rerank's over the decoded vectors, bit
// for bit.
void rerank_sq(const float* x, size_t nq, const uint8_t* codes, size_t ny, size_t d, const float* vmin,
               const float* step, const int64_t* rows, const int64_t* ids, size_t c, size_t k, Metric metric,
               int n_threads, float* D, int64_t* I);

// Where an IndexRefine's refined distances come from, addressed by row: stored
// floats (IndexFlat), 8-bit scalar-quantizer codes (IndexScalarQuantizer) or PQ
// codes (IndexPQ, one list). Pointers are borrowed for the duration of a call.
struct RefineStore {
    enum class Kind { Flat, SQ8, PQ };
    Kind kind = Kind::Flat;
    size_t ny = 0;                     // Flat and SQ8: rows stored
    const float* vectors = nullptr;    // Flat: ny x d floats
    const uint8_t* codes = nullptr;    // SQ8: ny x d bytes
    const float* vmin = nullptr;       // SQ8: d floats
    const float* step = nullptr;       // SQ8: d floats
    const PQCodebooks* pq = nullptr;   // PQ
    const InvertedLists* lists = nullptr;  // PQ: its one list of codes
};

// An IndexRefine over an IndexIVFPQ in one call, for a refine store whose ids
// are its row numbers: ivfpq_search with p.estimates set finds p.k candidates
// per query, whose ids are then re-ranked as rows of `store` (rerank, rerank_sq or rerank_pq) to
// the best k. The results equal the two calls made one after the other, bit
// for bit. Throws std::invalid_argument as either does (a candidate id outside
// the store's rows included, after the first stage).
void ivfpq_search_rerank(const float* x, size_t nq, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                         const InvertedLists& lists, IVFSearchParams p, const RefineStore& store, size_t k,
                         float* D, int64_t* I);

}  // namespace pqkit
