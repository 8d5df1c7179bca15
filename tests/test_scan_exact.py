"""The quantized-table scan returns exactly the float ADC top-k: same keys, same ids, same ties.

IndexPQ's search filters codes with byte-quantized tables and gives the survivors their exact
float key. Here the float key is recomputed in NumPy (float32 adds, left to right over the
sub-quantizers, as the engine sums) for every code, and the (key, id) top-k must match
bit for bit at every SIMD level: a code wrongly filtered out would show up as a differing id.
"""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from tests.conftest import clustered_split

# Small training sets on purpose (only exactness matters here, not codebook quality).
pytestmark = pytest.mark.filterwarnings("ignore::pqkit.TrainingWarning")


def _float_adc_topk(tables: np.ndarray, idx: np.ndarray, ids: np.ndarray, k: int):
    """Exact top-k of sum_m tables[q, m, idx[:, m]] (float32, left to right), ties by id."""
    nq, M, _ = tables.shape
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    for q in range(nq):
        acc = np.zeros(idx.shape[0], dtype=np.float32)
        for m in range(M):
            acc = acc + tables[q, m, idx[:, m]]
        order = np.lexsort((ids, acc))[:k]
        D[q], I[q] = acc[order], ids[order]
    return D, I


def _tricky_base(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered vectors with exact duplicates (tied keys) and a size that is not a whole block."""
    base, _ = clustered_split(n, 1, d, seed=seed)
    base = np.array(base)
    rng = np.random.default_rng(seed)
    dup = rng.choice(n, size=n // 5, replace=False)
    base[dup] = base[rng.integers(0, 20, size=dup.size)]  # many copies of 20 vectors
    return base


@pytest.mark.parametrize("nbits", [4, 8, 6])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_indexpq_equals_float_adc(simd_level, nbits, metric):
    d, M = 32, 8 if nbits == 6 else 16
    base = _tricky_base(3001, d, seed=nbits)
    queries = np.vstack([clustered_split(10, 20, d, seed=99)[1], base[:5]])  # some on duplicates
    index = pqkit.IndexPQ(d, M, nbits, metric=metric, seed=5)
    index.train(base)
    ids = np.arange(3001, dtype=np.int64) * 3 + 7  # ids are not row numbers
    index.add_with_ids(base, ids)
    pq = index.pq
    idx = pq.unpack_codes(pq.encode(base)).astype(np.int64)
    tables = pq.distance_table(queries, metric)
    keys = tables if metric == "l2" else -tables
    for k in (1, 10, 100, 300):  # 300: more than the seeding sample (256 codes)
        D, I = index.search(queries, k)
        D_ref, I_ref = _float_adc_topk(keys, idx, ids, k)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_array_equal(D, D_ref if metric == "l2" else -D_ref)


def test_indexpq_equals_float_adc_after_removals(simd_level):
    d, M = 32, 16
    base = _tricky_base(2000, d, seed=11)
    index = pqkit.IndexPQ(d, M, 8, seed=5)
    index.train(base)
    index.add(base)
    removed = np.arange(0, 2000, 3)
    assert index.remove_ids(removed) == removed.size
    keep = np.setdiff1d(np.arange(2000), removed)
    queries = clustered_split(10, 30, d, seed=12)[1]
    idx = index.pq.unpack_codes(index.pq.encode(base[keep])).astype(np.int64)
    D_ref, I_ref = _float_adc_topk(index.pq.distance_table(queries), idx, keep.astype(np.int64), 20)
    D, I = index.search(queries, 20)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)


@pytest.mark.parametrize("nbits", [4, 8])
def test_indexpq_batch_scan_spans_chunks(simd_level, restore_threads, nbits):
    # A batch of queries scans the codes chunk by chunk (256 KiB each: 4096 codes of 64 bytes
    # at 8 bits), every query of the batch in turn; the 8-bit scan pairs blocks. 9001 codes
    # are several chunks and an odd number of blocks, and the result must not depend on how
    # the queries are batched: all at once, one at a time, or split over threads.
    d = M = 64
    base = _tricky_base(9001, d, seed=21)
    index = pqkit.IndexPQ(d, M, nbits, seed=5)
    index.train(base[:2000])
    ids = np.arange(9001, dtype=np.int64)[::-1].copy()
    index.add_with_ids(base, ids)
    queries = np.vstack([clustered_split(10, 17, d, seed=22)[1], base[:3]])  # 20: batches of 8
    idx = index.pq.unpack_codes(index.pq.encode(base)).astype(np.int64)
    for k in (10, 300):
        D_ref, I_ref = _float_adc_topk(index.pq.distance_table(queries), idx, ids, k)
        for n_threads in (1, 2):
            pqkit.set_num_threads(n_threads)
            D, I = index.search(queries, k)
            np.testing.assert_array_equal(I, I_ref)
            np.testing.assert_array_equal(D, D_ref)
        pqkit.set_num_threads(1)
        one = [index.search(queries[i:i + 1], k) for i in range(len(queries))]
        np.testing.assert_array_equal(np.vstack([o[1] for o in one]), I_ref)


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivfpq_matches_a_float_reference(nbits, metric):
    """IVF-PQ keys: coarse + (bias + table sums); a float64 NumPy reference agrees on ids."""
    d, nlist, M = 32, 16, 8
    base, queries = clustered_split(5000, 100, d, seed=3)
    index = pqkit.IndexIVFPQ(d, nlist, M, nbits, metric=metric, nprobe=4, seed=2)
    index.train(base)
    index.add(base)
    D, I = index.search(queries, 10)
    # Reference: decode every vector (centroid + residual) and rank by the exact float64 key
    # within the probed lists.
    recon = index.reconstruct_n(np.arange(5000)).astype(np.float64)
    lists = np.concatenate([np.full(s, l) for l, s in enumerate(index.list_sizes())])
    list_of = np.empty(5000, dtype=np.int64)
    list_of[np.concatenate([index._invlists.list_ids(l) for l in range(nlist)])] = lists
    cent = index.centroids.astype(np.float64)
    q64 = queries.astype(np.float64)
    agree = 0
    for q in range(queries.shape[0]):
        if metric == "l2":
            probes = np.argsort(((cent - q64[q]) ** 2).sum(1), kind="stable")[:4]
            keys = ((recon - q64[q]) ** 2).sum(1)
        else:
            probes = np.argsort(-(cent @ q64[q]), kind="stable")[:4]
            keys = -(recon @ q64[q])
        cand = np.flatnonzero(np.isin(list_of, probes))
        ref = cand[np.lexsort((cand, keys[cand]))][:10]
        agree += len(set(ref) & set(I[q]))
        np.testing.assert_allclose(np.abs(D[q]), np.abs(keys[I[q]]), rtol=1e-4, atol=1e-3)
    assert agree / (10 * queries.shape[0]) >= 0.999


def test_ivfpq_bias_follows_new_codebooks():
    """After pq.set_codebooks on a filled index the stored per-code bias is recomputed."""
    d = 32
    base, queries = clustered_split(4000, 50, d, seed=8)
    a = pqkit.IndexIVFPQ(d, 8, 8, 8, nprobe=8, seed=1)
    a.train(base)
    a.add(base)
    other = pqkit.ProductQuantizer(d, 8, 8, seed=77, niter=3).train(base - a.centroids[0])
    # b: the same vectors encoded with a's codebooks, then codebooks swapped (codes kept).
    b = pqkit.IndexIVFPQ(d, 8, 8, 8, nprobe=8, seed=1)
    b.set_centroids(a.centroids)
    b.pq.set_codebooks(a.pq.codebooks)
    b.add(base)
    b.pq.set_codebooks(other.codebooks)
    # c: built directly from the same codes under the new codebooks (through save/load).
    c = pqkit.IndexIVFPQ(d, 8, 8, 8, nprobe=8, seed=1)
    c.set_centroids(a.centroids)
    c.pq.set_codebooks(other.codebooks)
    c._store_codes(*_export_for(b))
    Db, Ib = b.search(queries, 10)
    Dc, Ic = c.search(queries, 10)
    np.testing.assert_array_equal(Ib, Ic)
    np.testing.assert_array_equal(Db, Dc)


def _export_for(index):
    sizes, ids, codes = index._invlists.export()
    list_nos = np.repeat(np.arange(index.nlist, dtype=np.int64), np.asarray(sizes))
    return list_nos, ids, codes, index._code_bias(codes, list_nos)
