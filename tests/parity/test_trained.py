"""Recall parity with faiss when both libraries train independently on the same real data.

pqkit.IndexIVFPQ and faiss.IndexIVFPQ get the same nlist, M, nbits, k-means iterations (25) and
training vectors; 10-recall@10 against the exact result must agree within 0.01 at nprobe 1, 4, 16
and 64. Two independent k-means runs of the *same* library already differ by a few thousandths
(seed to seed), so each library is trained with two seeds and the mean recall is compared; with
2000 queries the query-sampling error of a difference is well below that.

Run with ``pytest -s tests/parity`` to see the table (``bench/parity_table.py`` prints the full one).
"""

from __future__ import annotations

import numpy as np
import pytest

import pqkit
from tests.conftest import fashion_split, glove_split
from tests.reference import recall_at_k

pytestmark = pytest.mark.parity

K = 10
NPROBES = (1, 4, 16, 64)
SEEDS = (1234, 1)
TOLERANCE = 0.01
N_BASE, N_TRAIN, N_QUERIES = 30_000, 15_000, 2_000

# (loader, nlist, M, nbits): M divides d (784 = 16 * 49, 50 = 10 * 5)
CONFIGS = {
    "fashion-mnist-784": (fashion_split, 100, 16, 8),
    "glove-50-angular": (glove_split, 100, 10, 8),
}


def _recalls(index, queries, truth, set_nprobe) -> dict:
    out = {}
    for nprobe in NPROBES:
        set_nprobe(index, nprobe)
        _, ids = index.search(queries, K)
        out[nprobe] = recall_at_k(np.asarray(ids), truth)
    return out


def _pqkit_recalls(base, train, queries, truth, nlist, M, nbits, seed):
    index = pqkit.IndexIVFPQ(base.shape[1], nlist, M, nbits, seed=seed)
    index.train(train)
    index.add(base)
    return _recalls(index, queries, truth, lambda i, p: setattr(i, "nprobe", p))


def _faiss_recalls(faiss, base, train, queries, truth, nlist, M, nbits, seed):
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(base.shape[1]), base.shape[1], nlist, M, nbits)
    index.cp.niter = 25  # as pqkit (faiss's IVF default is 10)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    index.train(train)
    index.add(base)
    return _recalls(index, queries, truth, lambda i, p: setattr(i, "nprobe", p))


@pytest.mark.parametrize("dataset", list(CONFIGS))
def test_recall_within_001_of_faiss(faiss, dataset):
    loader, nlist, M, nbits = CONFIGS[dataset]
    base, queries = loader(N_BASE, N_QUERIES)
    train = base[:N_TRAIN]  # the split is in random order: a prefix is a random sample
    flat = pqkit.IndexFlat(base.shape[1])
    flat.add(base)
    _, truth = flat.search(queries, K)

    ours = [_pqkit_recalls(base, train, queries, truth, nlist, M, nbits, seed) for seed in SEEDS]
    theirs = [_faiss_recalls(faiss, base, train, queries, truth, nlist, M, nbits, seed) for seed in SEEDS]

    rows = []
    print(f"\n{dataset}: nlist={nlist} M={M} nbits={nbits}, {N_BASE} base / {N_TRAIN} train / {N_QUERIES} "
          f"queries, mean over seeds {SEEDS}")
    print(f"{'nprobe':>6}  {'pqkit':>7}  {'faiss':>7}  {'diff':>7}")
    for nprobe in NPROBES:
        a = float(np.mean([r[nprobe] for r in ours]))
        b = float(np.mean([r[nprobe] for r in theirs]))
        rows.append((nprobe, a, b))
        print(f"{nprobe:>6}  {a:7.4f}  {b:7.4f}  {a - b:+7.4f}")
    for nprobe, a, b in rows:
        assert abs(a - b) <= TOLERANCE, (
            f"{dataset} nprobe={nprobe}: pqkit 10-recall@10 {a:.4f}, faiss {b:.4f}, |diff| {abs(a - b):.4f} > "
            f"{TOLERANCE}; per seed pqkit {[r[nprobe] for r in ours]}, faiss {[r[nprobe] for r in theirs]}"
        )
    # Sanity: the recall grows with nprobe and the index is far better than chance.
    means = [a for _, a, _ in rows]
    assert all(later >= earlier - 1e-9 for earlier, later in zip(means, means[1:]))
    assert means[-1] > 0.3
