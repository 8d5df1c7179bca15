// The only file that includes pybind11. Each binding checks its buffers
// (dtype, C order, shape), allocates the outputs, releases the GIL and calls
// one engine function; loops and preconditions live in the library (C++
// exceptions: std::invalid_argument -> ValueError, std::out_of_range ->
// IndexError). Validation with user-facing hints lives in Python
// (pqkit._validation); the checks here are the cheap last line of defence.
// Module: pqkit.engine._core; its stub is src/pqkit/engine/_core.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "common/args.h"
#include "common/codes.h"
#include "common/finite.h"
#include "common/metric.h"
#include "common/parallel.h"
#include "common/simd.h"
#include "kernels/kernels.h"
#include "search/coreset.h"
#include "search/flat.h"
#include "search/invlists.h"
#include "search/ivf.h"
#include "search/kmeans.h"
#include "search/micro.h"
#include "search/pq.h"
#include "search/refine.h"
#include "search/selector.h"

namespace py = pybind11;
using namespace pqkit;

namespace {

template <class T>
const char* dtype_name();
template <> const char* dtype_name<float>() { return "float32"; }
template <> const char* dtype_name<int64_t>() { return "int64"; }
template <> const char* dtype_name<int32_t>() { return "int32"; }
template <> const char* dtype_name<uint8_t>() { return "uint8"; }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype, C-contiguity and shape (-1 = any) and returns the data pointer.
template <class T>
const T* checked(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape) {
    if (!py::isinstance<py::array_t<T>>(a) || a.dtype().kind() != py::dtype::of<T>().kind() ||
        a.itemsize() != static_cast<py::ssize_t>(sizeof(T))) {
        throw py::type_error(std::string(name) + " must be a " + dtype_name<T>() + " array, got dtype " +
                             std::string(py::str(a.dtype())) + "; convert with numpy.asarray(..., dtype=numpy." +
                             dtype_name<T>() + ")");
    }
    if (!(a.flags() & py::array::c_style)) {
        throw std::invalid_argument(std::string(name) + " must be C-contiguous; try numpy.ascontiguousarray");
    }
    if (a.ndim() != static_cast<py::ssize_t>(shape.size())) {
        throw std::invalid_argument(std::string(name) + " must have " + std::to_string(shape.size()) +
                                    " dimensions, got shape " + shape_str(a));
    }
    size_t i = 0;
    for (py::ssize_t want : shape) {
        if (want >= 0 && a.shape(i) != want) {
            throw std::invalid_argument(std::string(name) + " has shape " + shape_str(a) + ", expected size " +
                                        std::to_string(want) + " in dimension " + std::to_string(i));
        }
        ++i;
    }
    return static_cast<const T*>(a.data());
}

bool python_interrupted() {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
        PyErr_Clear();
        return true;
    }
    return false;
}

struct PQArgs {
    PQShape shape;
    const float* codebooks;
};

PQArgs pq_args(const py::array& codebooks, py::ssize_t d, py::ssize_t nbits) {
    if (codebooks.ndim() != 3) {
        throw std::invalid_argument("codebooks must have shape (M, ksub, dsub), got " + shape_str(codebooks));
    }
    py::ssize_t M = codebooks.shape(0);
    PQShape s = make_pq_shape(static_cast<size_t>(d), static_cast<size_t>(M), static_cast<size_t>(nbits));
    const float* cb = checked<float>(codebooks, "codebooks",
                                     {M, static_cast<py::ssize_t>(s.ksub), static_cast<py::ssize_t>(s.dsub)});
    return {s, cb};
}

using SearchResult = std::pair<py::array_t<float>, py::array_t<int64_t>>;

SearchResult alloc_result(size_t nq, size_t k) {
    return {py::array_t<float>({nq, k}), py::array_t<int64_t>({nq, k})};
}

// A selector argument: None or an IDSelector.
const IDSelector* selector_arg(const py::object& selector) {
    return selector.is_none() ? nullptr : selector.cast<const IDSelector*>();
}

std::unique_ptr<IDSelector> make_selector(const py::object& bitmap, int64_t start, const py::object& ids,
                                          const py::object& offsets, bool exclude) {
    const uint8_t* bp = nullptr;
    size_t nbytes = 0;
    if (!bitmap.is_none()) {
        py::array b = bitmap.cast<py::array>();
        bp = checked<uint8_t>(b, "bitmap", {-1});
        nbytes = static_cast<size_t>(b.shape(0));
    }
    const int64_t* ip = nullptr;
    size_t n_ids = 0;
    if (!ids.is_none()) {
        py::array a = ids.cast<py::array>();
        ip = checked<int64_t>(a, "ids", {-1});
        n_ids = static_cast<size_t>(a.shape(0));
    }
    const int64_t* op = nullptr;
    size_t n_sets = 0;
    if (!offsets.is_none()) {
        py::array o = offsets.cast<py::array>();
        op = checked<int64_t>(o, "offsets", {-1});
        if (o.shape(0) < 1) throw std::invalid_argument("offsets must hold at least one value (0)");
        n_sets = static_cast<size_t>(o.shape(0)) - 1;
    }
    py::gil_scoped_release release;
    return std::make_unique<IDSelector>(bp, nbytes, start, ip, n_ids, op, n_sets, exclude);
}

// (lims, D, I) in FAISS's layout from the results of a range search.
py::tuple range_result(const RangeResults& results, Metric metric) {
    const size_t total = results.total();
    py::array_t<int64_t> lims(static_cast<py::ssize_t>(results.nq() + 1));
    py::array_t<float> D(static_cast<py::ssize_t>(total));
    py::array_t<int64_t> I(static_cast<py::ssize_t>(total));
    results.write(metric != Metric::L2, lims.mutable_data(), D.mutable_data(), I.mutable_data());
    return py::make_tuple(lims, D, I);
}

// The key a range result must stay below: the radius itself (L2) or minus it (inner products).
double radius_key(double radius, Metric metric) { return metric == Metric::L2 ? radius : -radius; }

py::tuple kmeans_py(const py::array& x, py::ssize_t k, int niter, uint64_t seed,
                    py::ssize_t max_points_per_centroid, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    size_t n = x.shape(0), d = x.shape(1);
    KMeansParams p;
    p.k = positive(k, "k");
    p.niter = niter;
    p.seed = seed;
    p.max_points_per_centroid = cap_or_none(max_points_per_centroid);
    p.n_threads = n_threads;
    py::array_t<float> centroids({p.k, d});
    float* out = centroids.mutable_data();
    double objective;
    {
        py::gil_scoped_release release;
        objective = kmeans_train(xp, n, d, p, out);
    }
    return py::make_tuple(centroids, objective);
}

py::array_t<int64_t> greedy_kcenter_py(const py::array& x, py::ssize_t n_select, py::ssize_t first,
                                       const py::object& weights, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const size_t n = x.shape(0), d = x.shape(1);
    const size_t count = check_kcenter_args(n, d, n_select, first);
    const float* wp = weights.is_none() ? nullptr : checked<float>(weights.cast<py::array>(), "weights", {x.shape(0)});
    py::array_t<int64_t> out(count);
    int64_t* op = out.mutable_data();
    py::gil_scoped_release release;
    greedy_kcenter(xp, n, d, n_select, first, wp, n_threads, op);
    return out;
}

// Squared norms of the rows, as the exact search computes them (so a caller can keep them).
py::array_t<float> sqnorms_py(const py::array& x, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const size_t n = static_cast<size_t>(x.shape(0)), d = static_cast<size_t>(x.shape(1));
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    float* op = out.mutable_data();
    py::gil_scoped_release release;
    row_sqnorms(xp, n, d, n_threads, op);
    return out;
}

// Whether every value of a float32 array (any shape, C-contiguous) is finite with |value| <=
// max_abs (see common/finite.h).
bool all_finite_py(const py::array& x, double max_abs) {
    if (!py::isinstance<py::array_t<float>>(x) || x.dtype().kind() != 'f' || x.itemsize() != 4 ||
        !(x.flags() & py::array::c_style))
        throw py::type_error("all_finite takes a C-contiguous float32 array, got dtype " + std::string(py::str(x.dtype())));
    const float* xp = static_cast<const float*>(x.data());
    const size_t n = static_cast<size_t>(x.size());
    py::gil_scoped_release release;
    return all_finite(xp, n, max_abs);
}

SearchResult flat_search_py(const py::array& x, const py::array& y, py::ssize_t k, const std::string& metric,
                            int n_threads, const py::object& norms, const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const float* yp = checked<float>(y, "y", {-1, x.shape(1)});
    const float* np_ = norms.is_none() ? nullptr : checked<float>(norms.cast<py::array>(), "norms", {y.shape(0)});
    const IDSelector* sel = selector_arg(selector);
    Metric m = parse_metric(metric);
    size_t kk = positive(k, "k"), nq = x.shape(0), ny = y.shape(0), d = x.shape(1);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    flat_search(xp, nq, yp, ny, d, kk, m, n_threads, D, I, np_, sel);
    return r;
}

py::tuple flat_range_search_py(const py::array& x, const py::array& y, double radius, const std::string& metric,
                               int n_threads, size_t max_results, const py::object& norms,
                               const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const float* yp = checked<float>(y, "y", {-1, x.shape(1)});
    const float* np_ = norms.is_none() ? nullptr : checked<float>(norms.cast<py::array>(), "norms", {y.shape(0)});
    const IDSelector* sel = selector_arg(selector);
    Metric m = parse_metric(metric);
    size_t nq = x.shape(0), ny = y.shape(0), d = x.shape(1);
    RangeResults results(0);
    {
        py::gil_scoped_release release;
        results = flat_range_search(xp, nq, yp, ny, d, radius_key(radius, m), m, n_threads, max_results, np_, sel);
    }
    return range_result(results, m);
}

// Exact re-ranking of candidate rows of y (see refine.h); ids are the result ids.
SearchResult rerank_py(const py::array& x, const py::array& y, const py::array& rows, const py::array& ids,
                       py::ssize_t k, const std::string& metric, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const float* yp = checked<float>(y, "y", {-1, x.shape(1)});
    const int64_t* rp = checked<int64_t>(rows, "rows", {x.shape(0), -1});
    const int64_t* ip = checked<int64_t>(ids, "ids", {x.shape(0), rows.shape(1)});
    Metric m = parse_metric(metric);
    size_t kk = positive(k, "k"), nq = x.shape(0), ny = y.shape(0), d = x.shape(1), c = rows.shape(1);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    rerank(xp, nq, yp, ny, d, rp, ip, c, kk, m, n_threads, D, I);
    return r;
}

// Re-ranking of candidates stored as PQ codes: rows are offsets into list 0 of `lists` (see refine.h).
SearchResult rerank_pq_py(const py::array& x, const PQCodebooks& pq, const InvertedLists& lists, const py::array& rows,
                          const py::array& ids, py::ssize_t k, const std::string& metric, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(pq.shape().d)});
    const int64_t* rp = checked<int64_t>(rows, "rows", {x.shape(0), -1});
    const int64_t* ip = checked<int64_t>(ids, "ids", {x.shape(0), rows.shape(1)});
    Metric m = parse_metric(metric);
    size_t kk = positive(k, "k"), nq = x.shape(0), c = rows.shape(1);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    rerank_pq(xp, nq, pq, lists, rp, ip, c, kk, m, n_threads, D, I);
    return r;
}

// Re-ranking of candidates stored as 8-bit scalar-quantizer codes: rows of `codes` (see refine.h).
SearchResult rerank_sq_py(const py::array& x, const py::array& codes, const py::array& vmin, const py::array& step,
                          const py::array& rows, const py::array& ids, py::ssize_t k, const std::string& metric,
                          int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const uint8_t* cp = checked<uint8_t>(codes, "codes", {-1, x.shape(1)});
    const float* vp = checked<float>(vmin, "vmin", {x.shape(1)});
    const float* sp = checked<float>(step, "step", {x.shape(1)});
    const int64_t* rp = checked<int64_t>(rows, "rows", {x.shape(0), -1});
    const int64_t* ip = checked<int64_t>(ids, "ids", {x.shape(0), rows.shape(1)});
    Metric m = parse_metric(metric);
    size_t kk = positive(k, "k"), nq = x.shape(0), ny = codes.shape(0), d = x.shape(1), c = rows.shape(1);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    rerank_sq(xp, nq, cp, ny, d, vp, sp, rp, ip, c, kk, m, n_threads, D, I);
    return r;
}

py::tuple coarse_assign_py(const py::array& x, const py::array& centroids, const std::string& metric,
                           int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    const float* cp = checked<float>(centroids, "centroids", {-1, x.shape(1)});
    Metric m = parse_metric(metric);
    size_t n = x.shape(0), nc = positive(centroids.shape(0), "nlist"), d = x.shape(1);
    py::array_t<int64_t> labels(n);
    py::array_t<float> dist(n);
    int64_t* lp = labels.mutable_data();
    float* dp = dist.mutable_data();
    {
        py::gil_scoped_release release;
        coarse_assign(xp, n, cp, nc, d, m, n_threads, lp, dp);
    }
    return py::make_tuple(labels, dist);
}

py::array_t<float> pq_train_py(const py::array& x, py::ssize_t M, py::ssize_t nbits, int niter, uint64_t seed,
                               py::ssize_t max_points_per_centroid, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, -1});
    PQShape s = make_pq_shape(x.shape(1), positive(M, "M"), positive(nbits, "nbits"));
    py::array_t<float> codebooks({s.M, s.ksub, s.dsub});
    float* out = codebooks.mutable_data();
    size_t n = x.shape(0);
    py::gil_scoped_release release;
    pq_train(xp, n, s, niter, seed, cap_or_none(max_points_per_centroid), n_threads, out);
    return codebooks;
}

PQCodebooks make_pq_codebooks(const py::array& codebooks, py::ssize_t nbits) {
    if (codebooks.ndim() != 3) {
        throw std::invalid_argument("codebooks must have shape (M, ksub, dsub), got " + shape_str(codebooks));
    }
    PQArgs a = pq_args(codebooks, codebooks.shape(0) * codebooks.shape(2), nbits);
    py::gil_scoped_release release;
    return PQCodebooks(a.shape, a.codebooks);
}

py::array_t<uint8_t> pq_encode_py(const py::array& x, const PQCodebooks& pq, int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(pq.shape().d)});
    size_t n = x.shape(0);
    py::array_t<uint8_t> codes({n, pq.shape().code_size});
    uint8_t* out = codes.mutable_data();
    py::gil_scoped_release release;
    pq_encode(xp, n, pq, n_threads, out);
    return codes;
}

py::array_t<float> pq_decode_py(const py::array& codes, const PQCodebooks& pq, int n_threads) {
    const uint8_t* cp = checked<uint8_t>(codes, "codes", {-1, static_cast<py::ssize_t>(pq.shape().code_size)});
    size_t n = codes.shape(0);
    py::array_t<float> x({n, pq.shape().d});
    float* out = x.mutable_data();
    py::gil_scoped_release release;
    pq_decode(cp, n, pq, n_threads, out);
    return x;
}

py::array_t<float> pq_distance_tables_py(const py::array& x, const PQCodebooks& pq, const std::string& metric,
                                         int n_threads) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(pq.shape().d)});
    Metric m = parse_metric(metric);
    size_t nq = x.shape(0);
    py::array_t<float> tables({nq, pq.shape().M, pq.shape().ksub});
    float* out = tables.mutable_data();
    py::gil_scoped_release release;
    pq_distance_tables(xp, nq, pq, m, n_threads, out);
    return tables;
}

SearchResult pq_search_py(const py::array& x, const PQCodebooks& pq, const InvertedLists& lists, py::ssize_t k,
                          const std::string& metric, int n_threads, const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(pq.shape().d)});
    const IDSelector* sel = selector_arg(selector);
    Metric m = parse_metric(metric);
    size_t kk = positive(k, "k"), nq = x.shape(0);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    pq_search(xp, nq, pq, lists, kk, m, n_threads, D, I, sel);
    return r;
}

py::tuple pq_range_search_py(const py::array& x, const PQCodebooks& pq, const InvertedLists& lists, double radius,
                             const std::string& metric, int n_threads, size_t max_results,
                             const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(pq.shape().d)});
    const IDSelector* sel = selector_arg(selector);
    Metric m = parse_metric(metric);
    size_t nq = x.shape(0);
    RangeResults results(0);
    {
        py::gil_scoped_release release;
        results = pq_range_search(xp, nq, pq, lists, radius_key(radius, m), m, n_threads, max_results, sel);
    }
    return range_result(results, m);
}

py::array_t<int32_t> pq_unpack_py(const py::array& codes, py::ssize_t M, py::ssize_t nbits) {
    size_t Mv = positive(M, "M");
    PQShape s = make_pq_shape(Mv, Mv, positive(nbits, "nbits"));
    const uint8_t* cp = checked<uint8_t>(codes, "codes", {-1, static_cast<py::ssize_t>(s.code_size)});
    size_t n = codes.shape(0);
    py::array_t<int32_t> idx({n, s.M});
    int32_t* out = idx.mutable_data();
    py::gil_scoped_release release;
    pq_unpack(s, cp, n, out);
    return idx;
}

py::array_t<uint8_t> pq_pack_py(const py::array& idx, py::ssize_t nbits) {
    const int32_t* ip = checked<int32_t>(idx, "idx", {-1, -1});
    size_t M = positive(idx.shape(1), "M");
    PQShape s = make_pq_shape(M, M, positive(nbits, "nbits"));
    size_t n = idx.shape(0);
    py::array_t<uint8_t> codes({n, s.code_size});
    uint8_t* out = codes.mutable_data();
    py::gil_scoped_release release;
    pq_pack(s, ip, n, out);
    return codes;
}

IVFSearchParams ivf_params(py::ssize_t nprobe, py::ssize_t k, const std::string& metric, int n_threads) {
    IVFSearchParams p;
    p.nprobe = positive(nprobe, "nprobe");
    p.k = positive(k, "k");
    p.metric = parse_metric(metric);
    p.n_threads = n_threads;
    return p;
}

SearchResult ivfflat_search_py(const py::array& x, const CoarseQuantizer& coarse, const InvertedLists& lists,
                               py::ssize_t nprobe, py::ssize_t k, const std::string& metric, int n_threads,
                               size_t max_probe, const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(coarse.dim())});
    IVFSearchParams p = ivf_params(nprobe, k, metric, n_threads);
    p.max_probe = max_probe;
    p.selector = selector_arg(selector);
    size_t nq = x.shape(0);
    SearchResult r = alloc_result(nq, p.k);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    ivfflat_search(xp, nq, coarse, lists, p, D, I);
    return r;
}

SearchResult ivfpq_search_py(const py::array& x, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                             const InvertedLists& lists, py::ssize_t nprobe, py::ssize_t k, const std::string& metric,
                             int n_threads, bool estimates, size_t max_probe, const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(coarse.dim())});
    IVFSearchParams p = ivf_params(nprobe, k, metric, n_threads);
    p.estimates = estimates;
    p.max_probe = max_probe;
    p.selector = selector_arg(selector);
    size_t nq = x.shape(0);
    SearchResult r = alloc_result(nq, p.k);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    ivfpq_search(xp, nq, coarse, pq, lists, p, D, I);
    return r;
}

// The refine store of ivfpq_search_rerank: ("flat", vectors), ("sq8", codes, vmin, step) or
// ("pq", pq, lists), each addressed by row (see refine.h).
RefineStore refine_store_arg(const py::tuple& refine, py::ssize_t d) {
    const std::string kind = refine.size() ? refine[0].cast<std::string>() : std::string();
    RefineStore s;
    if (kind == "flat" && refine.size() == 2) {
        const py::array y = refine[1].cast<py::array>();
        s.kind = RefineStore::Kind::Flat;
        s.vectors = checked<float>(y, "refine vectors", {-1, d});
        s.ny = y.shape(0);
    } else if (kind == "sq8" && refine.size() == 4) {
        const py::array codes = refine[1].cast<py::array>();
        s.kind = RefineStore::Kind::SQ8;
        s.codes = checked<uint8_t>(codes, "refine codes", {-1, d});
        s.vmin = checked<float>(refine[2].cast<py::array>(), "vmin", {d});
        s.step = checked<float>(refine[3].cast<py::array>(), "step", {d});
        s.ny = codes.shape(0);
    } else if (kind == "pq" && refine.size() == 3) {
        s.kind = RefineStore::Kind::PQ;
        s.pq = refine[1].cast<const PQCodebooks*>();
        s.lists = refine[2].cast<const InvertedLists*>();
    } else {
        throw std::invalid_argument("refine must be ('flat', vectors), ('sq8', codes, vmin, step) or ('pq', pq, "
                                    "lists)");
    }
    return s;
}

SearchResult ivfpq_search_rerank_py(const py::array& x, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                                    const InvertedLists& lists, py::ssize_t nprobe, py::ssize_t n_candidates,
                                    py::ssize_t k, const std::string& metric, int n_threads, size_t max_probe,
                                    const py::object& selector, const py::tuple& refine) {
    const py::ssize_t d = static_cast<py::ssize_t>(coarse.dim());
    const float* xp = checked<float>(x, "x", {-1, d});
    IVFSearchParams p = ivf_params(nprobe, n_candidates, metric, n_threads);
    p.max_probe = max_probe;
    p.selector = selector_arg(selector);
    const RefineStore store = refine_store_arg(refine, d);
    size_t kk = positive(k, "k"), nq = x.shape(0);
    SearchResult r = alloc_result(nq, kk);
    float* D = r.first.mutable_data();
    int64_t* I = r.second.mutable_data();
    py::gil_scoped_release release;
    ivfpq_search_rerank(xp, nq, coarse, pq, lists, p, store, kk, D, I);
    return r;
}

py::tuple ivfflat_range_search_py(const py::array& x, const CoarseQuantizer& coarse, const InvertedLists& lists,
                                  py::ssize_t nprobe, double radius, const std::string& metric, int n_threads,
                                  size_t max_results, const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(coarse.dim())});
    IVFSearchParams p = ivf_params(nprobe, 1, metric, n_threads);
    p.selector = selector_arg(selector);
    size_t nq = x.shape(0);
    RangeResults results(0);
    {
        py::gil_scoped_release release;
        results = ivfflat_range_search(xp, nq, coarse, lists, p, radius_key(radius, p.metric), max_results);
    }
    return range_result(results, p.metric);
}

py::tuple ivfpq_range_search_py(const py::array& x, const CoarseQuantizer& coarse, const PQCodebooks& pq,
                                const InvertedLists& lists, py::ssize_t nprobe, double radius,
                                const std::string& metric, int n_threads, size_t max_results,
                                const py::object& selector) {
    const float* xp = checked<float>(x, "x", {-1, static_cast<py::ssize_t>(coarse.dim())});
    IVFSearchParams p = ivf_params(nprobe, 1, metric, n_threads);
    p.selector = selector_arg(selector);
    size_t nq = x.shape(0);
    RangeResults results(0);
    {
        py::gil_scoped_release release;
        results = ivfpq_range_search(xp, nq, coarse, pq, lists, p, radius_key(radius, p.metric), max_results);
    }
    return range_result(results, p.metric);
}

py::array_t<float> ivfpq_code_bias_py(const py::array& codes, const py::array& list_nos, const CoarseQuantizer& coarse,
                                      const PQCodebooks& pq, int n_threads) {
    const int64_t* lp = checked<int64_t>(list_nos, "list_nos", {-1});
    py::ssize_t n = list_nos.shape(0);
    const uint8_t* cp = checked<uint8_t>(codes, "codes", {n, static_cast<py::ssize_t>(pq.shape().code_size)});
    py::array_t<float> bias(n);
    float* out = bias.mutable_data();
    py::gil_scoped_release release;
    ivfpq_code_bias(cp, static_cast<size_t>(n), lp, coarse, pq, n_threads, out);
    return bias;
}

void lists_add(InvertedLists& lists, const py::array& list_nos, const py::array& ids, const py::array& codes,
               const py::object& bias) {
    const int64_t* lp = checked<int64_t>(list_nos, "list_nos", {-1});
    py::ssize_t n = list_nos.shape(0);
    const int64_t* ip = checked<int64_t>(ids, "ids", {n});
    const uint8_t* cp = checked<uint8_t>(codes, "codes", {n, static_cast<py::ssize_t>(lists.code_size())});
    const float* bp = nullptr;
    if (!bias.is_none()) bp = checked<float>(bias.cast<py::array>(), "bias", {n});
    py::gil_scoped_release release;
    lists.add(lp, ip, cp, bp, static_cast<size_t>(n));
}

py::tuple lists_export(const InvertedLists& lists) {
    py::array_t<int64_t> sizes(lists.nlist()), ids(lists.ntotal());
    py::array_t<uint8_t> codes({lists.ntotal(), lists.code_size()});
    int64_t* sp = sizes.mutable_data();
    int64_t* ip = ids.mutable_data();
    uint8_t* cp = codes.mutable_data();
    lists.export_all(sp, ip, cp);
    return py::make_tuple(sizes, ids, codes);
}

// Read-only lists over the caller's arrays (a mapped file): the arrays are not
// copied, and the returned object keeps them alive (keep_alive below).
std::unique_ptr<InvertedLists> external_lists_py(py::ssize_t nlist, py::ssize_t code_size, const std::string& layout,
                                                 const py::array& list_sizes, const py::array& ids,
                                                 const py::array& codes, const py::object& bias) {
    const size_t nl = positive(nlist, "nlist"), cs = positive(code_size, "code_size");
    const CodeLayout lay = parse_code_layout(layout);
    const int64_t* sp = checked<int64_t>(list_sizes, "list_sizes", {static_cast<py::ssize_t>(nl)});
    const int64_t* ip = checked<int64_t>(ids, "ids", {-1});
    const py::ssize_t n = ids.shape(0);
    if (!py::isinstance<py::array_t<uint8_t>>(codes) || codes.dtype().kind() != 'u' || codes.itemsize() != 1)
        throw py::type_error("codes must be a uint8 array, got dtype " + std::string(py::str(codes.dtype())));
    if (!(codes.flags() & py::array::c_style))
        throw std::invalid_argument("codes must be C-contiguous; try numpy.ascontiguousarray");
    const uint8_t* cp = static_cast<const uint8_t*>(codes.data());
    const float* bp = bias.is_none() ? nullptr : checked<float>(bias.cast<py::array>(), "bias", {n});
    return InvertedLists::external(nl, cs, lay, sp, cp, static_cast<size_t>(codes.nbytes()), ip,
                                   static_cast<size_t>(n), bp);
}

py::tuple lists_export_blocked(const InvertedLists& lists) {
    if (lists.layout() != CodeLayout::Blocked) throw std::invalid_argument("export_blocked needs blocked lists");
    const size_t n = lists.ntotal(), cs = lists.code_size();
    py::array_t<int64_t> sizes(lists.nlist()), ids(n);
    py::array_t<uint8_t> blocks({lists.total_blocks(), cs, kBlock});
    py::object bias = py::none();
    float* bp = nullptr;
    if (lists.with_bias()) {
        py::array_t<float> b(n);
        bp = b.mutable_data();
        bias = b;
    }
    int64_t* sp = sizes.mutable_data();
    int64_t* ip = ids.mutable_data();
    uint8_t* cp = blocks.mutable_data();
    {
        py::gil_scoped_release release;
        lists.export_blocked(sp, ip, cp, bp);
    }
    return py::make_tuple(sizes, ids, blocks, bias);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pqkit compiled engine (internal: use the pqkit package API)";

    check_kernel_tables();  // a level's table with an unset member fails the import

    set_interrupt_checker(&python_interrupted);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Interrupted&) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        } catch (const std::bad_alloc&) {
            PyErr_SetString(PyExc_MemoryError, "pqkit: out of memory");
        }
    });

    m.def("simd_level", &active_simd_level_name, "The active SIMD level: 'scalar', 'avx2' or 'avx512'.");
    m.def("available_simd_levels", &supported_simd_level_names,
          "SIMD levels this CPU supports, scalar first, best last.");
    m.def("set_simd_level", py::overload_cast<const std::string&>(&set_simd_level), py::arg("level"));
    m.def("hardware_concurrency", &hardware_concurrency);

    m.def("kmeans", &kmeans_py, py::arg("x"), py::arg("k"), py::arg("niter"), py::arg("seed"),
          py::arg("max_points_per_centroid"), py::arg("n_threads"));
    m.def("_set_min_split_bytes", &set_min_split_bytes_per_thread, py::arg("bytes"), "Test hook: the code bytes per thread above which one query's scan is split "
                        "over threads (returns the previous value).");
    m.def("_set_half_centroid_bytes", &set_half_centroid_bytes, py::arg("bytes"),
          "Test hook: the centroid bytes from which coarse quantizers built afterwards keep a half-precision "
          "copy for single queries (returns the previous value).");
    m.def("greedy_kcenter", &greedy_kcenter_py, py::arg("x"), py::arg("n_select"), py::arg("first"),
          py::arg("weights"), py::arg("n_threads"));
    m.def("all_finite", &all_finite_py, py::arg("x"), py::arg("max_abs") = std::numeric_limits<double>::infinity());
    m.def("sqnorms", &sqnorms_py, py::arg("x"), py::arg("n_threads"));
    m.def("flat_search", &flat_search_py, py::arg("x"), py::arg("y"), py::arg("k"), py::arg("metric"),
          py::arg("n_threads"), py::arg("norms") = py::none(), py::arg("selector") = py::none());
    m.def("flat_range_search", &flat_range_search_py, py::arg("x"), py::arg("y"), py::arg("radius"),
          py::arg("metric"), py::arg("n_threads"), py::arg("max_results"), py::arg("norms") = py::none(),
          py::arg("selector") = py::none());
    m.def("rerank", &rerank_py, py::arg("x"), py::arg("y"), py::arg("rows"), py::arg("ids"), py::arg("k"),
          py::arg("metric"), py::arg("n_threads"));
    m.def("rerank_pq", &rerank_pq_py, py::arg("x"), py::arg("pq"), py::arg("lists"), py::arg("rows"), py::arg("ids"),
          py::arg("k"), py::arg("metric"), py::arg("n_threads"));
    m.def("rerank_sq", &rerank_sq_py, py::arg("x"), py::arg("codes"), py::arg("vmin"), py::arg("step"),
          py::arg("rows"), py::arg("ids"), py::arg("k"), py::arg("metric"), py::arg("n_threads"));
    m.def("coarse_assign", &coarse_assign_py, py::arg("x"), py::arg("centroids"), py::arg("metric"),
          py::arg("n_threads"));
    m.def("pq_train", &pq_train_py, py::arg("x"), py::arg("M"), py::arg("nbits"), py::arg("niter"), py::arg("seed"),
          py::arg("max_points_per_centroid"), py::arg("n_threads"));
    py::class_<PQCodebooks>(m, "PQCodebooks")
        .def(py::init(&make_pq_codebooks), py::arg("codebooks"), py::arg("nbits"))
        .def_property_readonly("d", [](const PQCodebooks& pq) { return pq.shape().d; })
        .def_property_readonly("M", [](const PQCodebooks& pq) { return pq.shape().M; })
        .def_property_readonly("nbits", [](const PQCodebooks& pq) { return pq.shape().nbits; })
        .def_property_readonly("code_size", [](const PQCodebooks& pq) { return pq.shape().code_size; });
    py::class_<CoarseQuantizer>(m, "CoarseQuantizer")
        .def(py::init([](const py::array& centroids, const std::string& metric) {
                 const float* cp = checked<float>(centroids, "centroids", {-1, -1});
                 size_t nlist = positive(centroids.shape(0), "nlist"), d = positive(centroids.shape(1), "d");
                 Metric mt = parse_metric(metric);
                 py::gil_scoped_release release;
                 return std::make_unique<CoarseQuantizer>(cp, nlist, d, mt);
             }),
             py::arg("centroids"), py::arg("metric"))
        .def_property_readonly("nlist", &CoarseQuantizer::nlist)
        .def_property_readonly("d", &CoarseQuantizer::dim)
        .def_property_readonly("keeps_half",
                               [](const CoarseQuantizer& c) { return c.vectors().half() != nullptr; });
    m.def("pq_encode", &pq_encode_py, py::arg("x"), py::arg("pq"), py::arg("n_threads"));
    m.def("pq_decode", &pq_decode_py, py::arg("codes"), py::arg("pq"), py::arg("n_threads"));
    m.def("pq_distance_tables", &pq_distance_tables_py, py::arg("x"), py::arg("pq"), py::arg("metric"),
          py::arg("n_threads"));
    m.def("pq_search", &pq_search_py, py::arg("x"), py::arg("pq"), py::arg("invlists"), py::arg("k"),
          py::arg("metric"), py::arg("n_threads"), py::arg("selector") = py::none());
    m.def("pq_range_search", &pq_range_search_py, py::arg("x"), py::arg("pq"), py::arg("invlists"),
          py::arg("radius"), py::arg("metric"), py::arg("n_threads"), py::arg("max_results"),
          py::arg("selector") = py::none());
    m.def("pq_unpack_codes", &pq_unpack_py, py::arg("codes"), py::arg("M"), py::arg("nbits"));
    m.def("pq_pack_codes", &pq_pack_py, py::arg("idx"), py::arg("nbits"));
    m.def("ivfflat_search", &ivfflat_search_py, py::arg("x"), py::arg("coarse"), py::arg("invlists"),
          py::arg("nprobe"), py::arg("k"), py::arg("metric"), py::arg("n_threads"), py::arg("max_probe") = 0,
          py::arg("selector") = py::none());
    m.def("ivfpq_search", &ivfpq_search_py, py::arg("x"), py::arg("coarse"), py::arg("pq"), py::arg("invlists"),
          py::arg("nprobe"), py::arg("k"), py::arg("metric"), py::arg("n_threads"), py::arg("estimates") = false,
          py::arg("max_probe") = 0, py::arg("selector") = py::none());
    m.def("ivfpq_search_rerank", &ivfpq_search_rerank_py, py::arg("x"), py::arg("coarse"), py::arg("pq"),
          py::arg("invlists"), py::arg("nprobe"), py::arg("n_candidates"), py::arg("k"), py::arg("metric"),
          py::arg("n_threads"), py::arg("max_probe"), py::arg("selector"), py::arg("refine"));
    m.def("ivfflat_range_search", &ivfflat_range_search_py, py::arg("x"), py::arg("coarse"), py::arg("invlists"),
          py::arg("nprobe"), py::arg("radius"), py::arg("metric"), py::arg("n_threads"), py::arg("max_results"),
          py::arg("selector") = py::none());
    m.def("ivfpq_range_search", &ivfpq_range_search_py, py::arg("x"), py::arg("coarse"), py::arg("pq"),
          py::arg("invlists"), py::arg("nprobe"), py::arg("radius"), py::arg("metric"), py::arg("n_threads"),
          py::arg("max_results"), py::arg("selector") = py::none());
    m.def("ivfpq_code_bias", &ivfpq_code_bias_py, py::arg("codes"), py::arg("list_nos"), py::arg("coarse"),
          py::arg("pq"), py::arg("n_threads"));
    m.def("micro_scan", [](size_t M, size_t nbits, size_t n, size_t repeats, const std::string& level) {
        SimdLevel lv = parse_simd_level(level);
        py::gil_scoped_release release;
        return micro_scan(M, nbits, n, repeats, lv);
    }, py::arg("M"), py::arg("nbits"), py::arg("n"), py::arg("repeats"), py::arg("level"),
       "Seconds per scan of n synthetic codes with one level's kernel (bench/micro).");
    m.def("micro_memory_read", [](size_t nbytes, size_t repeats) {
        py::gil_scoped_release release;
        return micro_memory_read(nbytes, repeats);
    }, py::arg("nbytes"), py::arg("repeats"), "Seconds per read of an nbytes buffer (bench/micro).");

    py::class_<IDSelector>(m, "IDSelector")
        .def(py::init(&make_selector), py::arg("bitmap"), py::arg("start"), py::arg("ids"), py::arg("offsets"),
             py::arg("exclude"))
        .def_property_readonly("n_sets", &IDSelector::n_sets)
        .def_property_readonly("exclude", &IDSelector::exclude);

    py::class_<InvertedLists>(m, "InvertedLists")
        .def(py::init([](size_t nlist, size_t code_size, const std::string& layout, bool with_bias) {
                 return std::make_unique<InvertedLists>(nlist, code_size, parse_code_layout(layout), with_bias);
             }),
             py::arg("nlist"), py::arg("code_size"), py::arg("layout"), py::arg("with_bias") = false)
        .def_property_readonly("with_bias", &InvertedLists::with_bias)
        .def_property_readonly("read_only", &InvertedLists::read_only)
        .def_property_readonly("nlist", &InvertedLists::nlist)
        .def_property_readonly("code_size", &InvertedLists::code_size)
        .def_property_readonly("ntotal", &InvertedLists::ntotal)
        .def("add", &lists_add, py::arg("list_nos"), py::arg("ids"), py::arg("codes"), py::arg("bias") = py::none())
        .def("set_bias", [](InvertedLists& lists, const py::array& bias) {
            const float* bp = checked<float>(bias, "bias", {static_cast<py::ssize_t>(lists.ntotal())});
            lists.set_bias(bp);
        }, py::arg("bias"), "Replace every bias, in list order (as export() orders the codes).")
        .def("list_sizes", [](const InvertedLists& lists) {
            py::array_t<int64_t> out(lists.nlist());
            lists.list_sizes(out.mutable_data());
            return out;
        })
        .def("list_ids", [](const InvertedLists& lists, py::ssize_t l) {
            size_t li = lists.checked_list_no(l), n = lists.list_size(li);
            py::array_t<int64_t> out(n);
            lists.copy_ids(li, out.mutable_data());
            return out;
        }, py::arg("list_no"))
        .def("list_codes", [](const InvertedLists& lists, py::ssize_t l) {
            size_t li = lists.checked_list_no(l), n = lists.list_size(li);
            py::array_t<uint8_t> out({n, lists.code_size()});
            lists.copy_codes(li, out.mutable_data());
            return out;
        }, py::arg("list_no"))
        .def("remove_ids", [](InvertedLists& lists, const py::array& ids) {
            const int64_t* ip = checked<int64_t>(ids, "ids", {-1});
            size_t n = ids.shape(0);
            py::gil_scoped_release release;
            return lists.remove_ids(ip, n);
        }, py::arg("ids"))
        .def("locate", [](const InvertedLists& lists, const py::array& ids) {
            const int64_t* ip = checked<int64_t>(ids, "ids", {-1});
            size_t n = ids.shape(0);
            py::array_t<int64_t> list_nos(n), offsets(n);
            int64_t* lp = list_nos.mutable_data();
            int64_t* op = offsets.mutable_data();
            {
                py::gil_scoped_release release;
                lists.locate(ip, n, lp, op);
            }
            return py::make_tuple(list_nos, offsets);
        }, py::arg("ids"))
        .def("reset", &InvertedLists::reset)
        .def("memory_usage_bytes", &InvertedLists::memory_usage_bytes)
        .def("export", &lists_export)
        .def("export_blocked", &lists_export_blocked);
    m.def("external_lists", &external_lists_py, py::arg("nlist"), py::arg("code_size"), py::arg("layout"),
          py::arg("list_sizes"), py::arg("ids"), py::arg("codes"), py::arg("bias") = py::none(),
          py::keep_alive<0, 5>(), py::keep_alive<0, 6>(), py::keep_alive<0, 7>(),
          "Read-only inverted lists over the given arrays (not copied; kept alive by the result).");
}
