"""A searchable gallery: vectors (or images) in a pqkit index, plus ids, labels and file paths.

A gallery is a folder (see :mod:`pqkit._atomic`)::

    <gallery>/pqkit-manifest.json               kind "pqkit-gallery", the current data folder, and
                                                each member's size and SHA-256
    <gallery>/pqkit-data-<16 hex>/index.pqkit   the pqkit index (versioned, checksummed format)
    <gallery>/pqkit-data-<16 hex>/gallery.json  metadata: format version, metric, index
                                                description, nprobe, the embedder spec, the image
                                                root, what was measured when the index was built
                                                (``build``: recall, memory), and one entry per
                                                vector (id, label, path)

A save is all-or-nothing: after a crash the folder holds the old or the new gallery, never the new
index with the old entries; it never deletes anything it did not write, and it replaces an existing
gallery only with ``overwrite=True``. Galleries written before manifests existed (the two files
directly in the folder) still load.

Loading reads JSON only (no pickle, nothing executed), checks every field's type and that the ids
agree with the index, and raises :class:`ValueError` on any mismatch.

Image root. Image paths are stored relative to the folder the gallery was built from (``root``,
stored both absolute and relative to the gallery folder, so that a gallery and its image folder
can move together); a gallery saved with paths but without a root has its own folder as image
root. This root is what :meth:`Gallery.path_of` joins paths to, and so what the web demo serves
``/image/<id>`` from. Loading confines every entry to it: each path is resolved (symlinks
followed) and an absolute path, a ``..`` component, or a path or symlink that leads out of the
image root raises :class:`ValueError` naming the entry. The root itself is named by the gallery's
metadata: load only galleries whose image folder you are willing to serve.

Scores follow the metric: cosine similarity (``"cosine"``, the default: rows are L2-normalised, so
the score is an inner product of unit vectors, and ``||a - b||^2 = 2 - 2 cos``), inner product
(``"ip"``), both larger-is-better, or squared L2 distance (``"l2"``), smaller-is-better.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _atomic
from .._validation import as_float_matrix, check_ids, check_k, check_metric
from .images import CNNEmbedder, PixelEmbedder, embedder_from_spec, list_images, read_image
from .indexing import RECALL_QUERIES, build_gallery_index, choose_index

__all__ = ["Gallery", "QueryResult"]

FORMAT = "pqkit-gallery"
FORMAT_VERSION = 1
INDEX_FILE = "index.pqkit"
META_FILE = "gallery.json"
#: gallery.json larger than this is refused before parsing (about 2,000 bytes per entry of slack
#: for ten million entries would be far more than any gallery this tool builds).
MAX_META_BYTES = 1 << 30
#: images decoded and embedded at a time by :meth:`Gallery.from_folder`
_CHUNK = 256


@dataclass
class QueryResult:
    """The neighbours of one query, best first.

    Attributes
    ----------
    ids : ndarray of int64, shape (m,)
        Gallery ids (m <= k; ``-1`` padding removed).
    scores : ndarray of float32, shape (m,)
        Similarity (cosine/ip, larger is closer) or squared L2 distance (l2, smaller is closer).
    paths : list of str or None
        Absolute image paths of the neighbours (None entries for a gallery without paths).
    labels : list
        Labels of the neighbours (None entries for a gallery without labels).
    search_ms : float
        Time of the index search alone.
    embed_ms : float
        Time spent embedding the query image (0 for vector and id queries).
    query_id : int or None
        The gallery id queried by :meth:`Gallery.query_id` (left out of ``ids``).
    """

    ids: np.ndarray
    scores: np.ndarray
    paths: list
    labels: list
    search_ms: float
    embed_ms: float = 0.0
    query_id: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (lists of Python numbers)."""
        return {
            "ids": [int(i) for i in self.ids],
            "scores": [float(s) for s in self.scores],
            "paths": self.paths,
            "labels": self.labels,
            "search_ms": self.search_ms,
            "embed_ms": self.embed_ms,
            "query_id": self.query_id,
        }


def _labels_array(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must be 1-D with one label per vector: expected length {n}, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    raise TypeError(f"labels must be integers or strings, got dtype {arr.dtype}")


class Gallery:
    """Vectors in a pqkit index with their ids, labels and image paths.

    Build one with :meth:`from_vectors` or :meth:`from_folder`, query it with
    :meth:`query_vector`, :meth:`query_image` or :meth:`query_id` (or :meth:`search` for a batch),
    store it with :meth:`save` and :meth:`load`.

    Attributes
    ----------
    index : pqkit.Index
    ids : ndarray of int64, shape (n,)
    labels : ndarray of int64 or str, shape (n,), or None
    paths : list of str (relative to ``root``), or None
    root : str or None
        Folder the paths are relative to.
    metric : {"cosine", "ip", "l2"}
    description : str
        Factory string of the index (``"Flat"``, ``"IVF245,Flat"``, ``"IVF245,PQ16x8"``, ...).
    embedder_spec : dict or None
        How images are embedded (see :func:`pqkit.retrieval.images.embedder_from_spec`); None for a
        vector-only gallery, which cannot be queried by image.
    choice : dict or None
        What :func:`pqkit.retrieval.indexing.choose_index` measured, when a target recall was given.
    build : dict or None
        What was measured when the index was built: ``recall`` (k-recall@k on a sample of the
        gallery, see :func:`pqkit.retrieval.indexing.measure_recall`), ``k``, ``n_queries``,
        ``memory_bytes``, ``nprobe``, ``k_factor``, ``refine``; None for a gallery built before
        these were kept (or assembled from an index directly).

    Examples
    --------
    >>> import numpy as np
    >>> from pqkit.retrieval import Gallery
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> g = Gallery.from_vectors(x, labels=np.arange(500) % 3)
    >>> r = g.query_id(7, k=3)
    >>> r.ids.shape, bool((r.ids != 7).all())
    ((3,), True)
    """

    def __init__(self, index, ids, *, labels=None, paths=None, root=None, metric="cosine",
                 description="Flat", embedder_spec=None, choice=None, build=None):
        self.index = index
        self.ids = check_ids(ids, n=index.ntotal)
        self.labels = _labels_array(labels, self.ids.shape[0])
        if paths is not None:
            paths = [os.fspath(p) for p in paths]
            if len(paths) != self.ids.shape[0]:
                raise ValueError(f"paths must have one entry per vector: expected {self.ids.shape[0]}, got {len(paths)}")
        self.paths = paths
        self.root = None if root is None else os.fspath(root)
        self.metric = check_metric(metric)
        self.description = description
        self.embedder_spec = embedder_spec
        self.choice = choice
        self.build = build
        self._embedder = None
        order = np.argsort(self.ids, kind="stable")
        self._sorted_ids, self._sorted_rows = self.ids[order], order

    # ------------------------------------------------------------------------ building
    @classmethod
    def from_vectors(cls, vectors, ids=None, *, labels=None, paths=None, root=None, index="Flat",
                     metric="cosine", target_recall=None, k=10, nprobe=None, embedder_spec=None,
                     seed=1234, refine="auto", memory_budget_mb=None):
        """Build a gallery from vectors.

        Parameters
        ----------
        vectors : array_like of float, shape (n, d)
            Converted to float32. With ``metric="cosine"`` every row is L2-normalised (zero rows
            raise ValueError).
        ids : array_like of int, shape (n,), optional
            Unique ids >= 0; default ``0..n-1``.
        labels : array_like of int or str, shape (n,), optional
            Class labels (used by the evaluation: mAP, precision@k).
        paths : sequence of str, shape (n,), optional
            Image file of each vector, relative to ``root`` (a gallery holding absolute paths, or
            paths with ``..``, cannot be saved: see the module docstring on the image root).
        root : str, optional
        index : str, default "Flat"
            ``"Flat"``, ``"IVF,Flat"``, ``"IVF,PQ"`` or a full factory string (see
            :mod:`pqkit.retrieval.indexing`); ignored when ``target_recall`` is given. ``"IVF,PQ"``
            re-ranks its candidates (exact vectors or 8-bit PQ codes).
        metric : {"cosine", "ip", "l2"}, default "cosine"
        target_recall : float in (0, 1], optional
            Choose the fastest index reaching this k-recall@k instead
            (:func:`pqkit.retrieval.indexing.choose_index`).
        k : int, default 10
            The k of ``target_recall`` and of the recall measured at build time (:attr:`build`).
        nprobe : int, optional
            Lists probed by an IVF index named in ``index``; default: the smallest of
            nlist // 16, 2x, 4x, ... reaching a 10-recall@10 of 0.95 on a sample of the gallery.
        embedder_spec : dict, optional
            How query images are embedded (set by :meth:`from_folder`).
        seed : int
            Seed of the index training and of the recall sample.
        refine : {"auto", "flat", "pq", "none"}, default "auto"
            Re-ranking of an ``"IVF,PQ"`` index (:func:`pqkit.retrieval.indexing.choose_refine`):
            ``"auto"`` picks exact vectors or 8-bit PQ codes by gallery size and memory budget.
        memory_budget_mb : float, optional
            Largest index memory in MiB; decides the re-ranking of ``"IVF,PQ"`` and leaves out
            the ``target_recall`` candidates it cannot hold.

        Returns
        -------
        Gallery

        Raises
        ------
        TypeError, ValueError
            Bad vectors, ids or labels (messages say expected vs got), an unknown ``refine``, or a
            memory budget too small for the index.
        """
        metric = check_metric(metric)
        x = as_float_matrix(vectors, name="vectors")
        n = x.shape[0]
        if n == 0:
            raise ValueError("vectors is empty (0 rows); a gallery needs at least one vector")
        ids = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n=n)
        if np.unique(ids).shape[0] != n:
            raise ValueError("ids must be unique; found duplicates")
        if metric == "cosine":
            from .._validation import normalize_rows

            x = normalize_rows(x, "vectors")
        if target_recall is not None:
            built, choice = choose_index(x, ids, target_recall, k=check_k(k), metric=metric, seed=seed,
                                         refine=refine, memory_budget_mb=memory_budget_mb)
            description = choice["description"]
            build = {key: choice[key] for key in ("description", "nprobe", "k_factor", "refine", "recall", "k",
                                                  "memory_bytes")}
            build["n_queries"] = min(RECALL_QUERIES, n)
        else:
            built, build = build_gallery_index(x, ids, index, metric=metric, nprobe=nprobe, seed=seed, refine=refine,
                                               memory_budget_mb=memory_budget_mb, k=check_k(k))
            description, choice = build["description"], None
        return cls(built, ids, labels=labels, paths=paths, root=root, metric=metric,
                   description=description, embedder_spec=embedder_spec, choice=choice, build=build)

    @classmethod
    def from_folder(cls, folder, *, embedder=None, labels_from_subfolders=True, index="Flat",
                    metric="cosine", target_recall=None, k=10, nprobe=None, skip_unreadable=False,
                    progress=False, seed=1234, refine="auto", memory_budget_mb=None):
        """Embed every image under ``folder`` and build a gallery of them.

        Parameters
        ----------
        folder : str or os.PathLike
            Searched recursively for image files (:data:`pqkit.retrieval.images.IMAGE_EXTENSIONS`).
        embedder : CNNEmbedder or PixelEmbedder, optional
            Default :class:`CNNEmbedder` (EfficientNet-Lite0, 224 px).
        labels_from_subfolders : bool, default True
            Label each image with the name of its first-level subfolder (the ImageFolder layout
            ``folder/<class>/<image>``); images directly in ``folder`` get no labels.
        index, metric, target_recall, k, nprobe, seed, refine, memory_budget_mb
            As in :meth:`from_vectors`.
        skip_unreadable : bool, default False
            Leave out files that cannot be decoded instead of raising.
        progress : bool, default False
            Show a tqdm progress bar over the images.

        Returns
        -------
        Gallery
            Ids ``0..n-1`` in sorted path order; ``embedder_spec`` set, so :meth:`query_image` works;
            ``seconds_per_image`` holds the embedding time per image (decoding excluded).

        Raises
        ------
        ValueError
            Missing or empty folder, or an unreadable image (the message names the file).
        """
        from tqdm.auto import tqdm

        root = Path(folder).resolve() if Path(folder).exists() else Path(folder)
        files = list_images(root)
        if embedder is None:
            embedder = CNNEmbedder()
        kept, chunks, seconds = [], [], 0.0
        # chunks bound the memory of decoded images; every file is decoded (and checked) here
        with tqdm(total=len(files), desc="embedding images", unit="img", disable=not progress) as bar:
            for start in range(0, len(files), _CHUNK):
                images = []
                for path in files[start:start + _CHUNK]:
                    try:
                        images.append(read_image(path))
                    except ValueError:
                        if not skip_unreadable:
                            raise
                        continue
                    kept.append(path)
                if images:
                    tick = time.perf_counter()
                    chunks.append(embedder(images))
                    seconds += time.perf_counter() - tick
                bar.update(min(_CHUNK, len(files) - start))
        if not kept:
            raise ValueError(f"none of the {len(files)} image files under {str(root)!r} could be read")
        vectors = np.concatenate(chunks)
        rel = [p.relative_to(root).as_posix() for p in kept]
        labels = None
        if labels_from_subfolders and all("/" in r for r in rel):
            labels = np.array([r.split("/", 1)[0] for r in rel])
        gallery = cls.from_vectors(vectors, labels=labels, paths=rel, root=str(root), index=index, metric=metric,
                                   target_recall=target_recall, k=k, nprobe=nprobe,
                                   embedder_spec=embedder.spec(), seed=seed, refine=refine,
                                   memory_budget_mb=memory_budget_mb)
        gallery._embedder = embedder
        gallery.seconds_per_image = seconds / len(kept)
        return gallery

    # ------------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def d(self) -> int:
        """Dimension of the vectors."""
        return self.index.d

    @property
    def higher_is_better(self) -> bool:
        """True for similarity scores (cosine, ip), False for L2 distances."""
        return self.metric != "l2"

    def __repr__(self) -> str:
        return (f"Gallery(n={len(self)}, d={self.d}, metric={self.metric!r}, index={self.description!r}, "
                f"labels={self.labels is not None}, paths={self.paths is not None}, "
                f"embedder={self.embedder_spec})")

    def info(self) -> dict:
        """What the gallery holds and what its index costs and finds.

        Returns
        -------
        dict
            ``n``, ``d``, ``metric``, ``description``, ``nprobe``, ``k_factor``, ``refine``,
            ``memory_bytes`` (``index.memory_usage_bytes()`` of the index as loaded), ``recall``
            and ``recall_k`` (measured when the index was built; None when it was not measured),
            ``recall_queries``, ``labels`` (number of distinct labels, or None), ``embedder``.
        """
        build = self.build or {}
        return {
            "n": len(self), "d": self.d, "metric": self.metric, "description": self.description,
            "nprobe": getattr(self.index, "nprobe", None), "k_factor": getattr(self.index, "k_factor", None),
            "refine": build.get("refine"), "memory_bytes": int(self.index.memory_usage_bytes()),
            "recall": build.get("recall"), "recall_k": build.get("k"), "recall_queries": build.get("n_queries"),
            "labels": None if self.labels is None else int(np.unique(self.labels).shape[0]),
            "embedder": self.embedder_spec,
        }

    def rows_of(self, ids) -> np.ndarray:
        """Row positions (into ``labels``/``paths``) of gallery ids; unknown ids raise ValueError."""
        ids = np.atleast_1d(np.asarray(ids))
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self) - 1)
        found = self._sorted_ids[pos] == ids
        if not found.all():
            missing = ids[~found][:5].tolist()
            raise ValueError(
                f"unknown gallery id(s) {missing}; the gallery holds {len(self)} ids from "
                f"{int(self._sorted_ids[0])} to {int(self._sorted_ids[-1])}"
            )
        return self._sorted_rows[pos]

    def path_of(self, gallery_id) -> str | None:
        """Absolute image path of one id (None if the gallery has no paths)."""
        if self.paths is None:
            return None
        rel = self.paths[int(self.rows_of(gallery_id)[0])]
        return rel if self.root is None else str(Path(self.root) / rel)

    def label_of(self, gallery_id):
        """Label of one id as a Python int or str (None if the gallery has no labels)."""
        if self.labels is None:
            return None
        return self.labels[int(self.rows_of(gallery_id)[0])].item()

    @property
    def embedder(self):
        """The embedder of query images (rebuilt from ``embedder_spec`` on first use)."""
        if self._embedder is None:
            if self.embedder_spec is None:
                raise ValueError(
                    "this gallery was built from vectors without an embedder, so it cannot be queried "
                    "by image; query by vector or id, or build it with Gallery.from_folder"
                )
            self._embedder = embedder_from_spec(self.embedder_spec)
        return self._embedder

    @embedder.setter
    def embedder(self, value) -> None:
        if not isinstance(value, (CNNEmbedder, PixelEmbedder)):
            raise TypeError(f"embedder must be a CNNEmbedder or PixelEmbedder, got {type(value).__name__}")
        self._embedder = value
        self.embedder_spec = value.spec()

    # ------------------------------------------------------------------------ querying
    def search(self, vectors, k: int = 10):
        """Batch search.

        Parameters
        ----------
        vectors : array_like of float, shape (nq, d) or (d,)
        k : int

        Returns
        -------
        scores : ndarray of float32, shape (nq, k)
        ids : ndarray of int64, shape (nq, k)
            ``-1`` (score ``-inf``/``+inf``) where fewer than k were found.

        Raises
        ------
        ValueError
            Wrong dimension (the message names the gallery's d and embedder).
        """
        x = as_float_matrix(vectors, name="query vectors")
        if x.shape[1] != self.d:
            source = f" (embedder {self.embedder_spec})" if self.embedder_spec else ""
            raise ValueError(
                f"query vectors have dimension {x.shape[1]}, this gallery has d={self.d}{source}; "
                "embed queries the way the gallery was built"
            )
        return self.index.search(x, check_k(k))

    def _result(self, scores, ids, search_ms, embed_ms=0.0, exclude=None, k=None) -> QueryResult:
        keep = ids >= 0
        if exclude is not None:
            keep &= ids != exclude
        ids, scores = ids[keep][:k], scores[keep][:k]
        rows = self.rows_of(ids) if ids.size else np.empty(0, dtype=np.int64)
        paths = [None] * ids.size
        if self.paths is not None:
            paths = [self.path_of(int(i)) for i in ids]
        labels = [None] * ids.size if self.labels is None else [self.labels[r].item() for r in rows]
        return QueryResult(ids, scores, paths, labels, search_ms, embed_ms, query_id=exclude)

    def query_vector(self, vector, k: int = 10) -> QueryResult:
        """The k nearest gallery entries of one vector.

        Parameters
        ----------
        vector : array_like of float, shape (d,) or (1, d)
        k : int

        Returns
        -------
        QueryResult
        """
        x = as_float_matrix(vector, name="query vector")
        if x.shape[0] != 1:
            raise ValueError(f"query_vector takes one vector, got {x.shape[0]} rows; use search() for a batch")
        k = check_k(k)
        start = time.perf_counter()
        scores, ids = self.search(x, k)
        search_ms = 1e3 * (time.perf_counter() - start)
        return self._result(scores[0], ids[0], search_ms, k=k)

    def query_image(self, image, k: int = 10) -> QueryResult:
        """The k nearest gallery entries of an image (a path or a uint8 (H, W[, 3]) array).

        The image is embedded with the gallery's embedder (see :attr:`embedder`).

        Raises
        ------
        ValueError
            Unreadable image, or a gallery without embedder.
        """
        embedder = self.embedder
        start = time.perf_counter()
        vector = embedder([image])
        embed_ms = 1e3 * (time.perf_counter() - start)
        result = self.query_vector(vector[:1], k)
        result.embed_ms = embed_ms
        return result

    def query_id(self, gallery_id, k: int = 10, include_self: bool = False) -> QueryResult:
        """The k nearest gallery entries of a gallery entry.

        The query vector is the stored one (exact for Flat and IVF-Flat, the PQ reconstruction for
        PQ indexes). The entry itself is left out unless ``include_self``.

        Raises
        ------
        ValueError
            Unknown id.
        """
        self.rows_of(gallery_id)  # the clear "unknown id" error
        k = check_k(k)
        vector = self.index.reconstruct(int(gallery_id))
        start = time.perf_counter()
        scores, ids = self.search(vector, k + (0 if include_self else 1))
        search_ms = 1e3 * (time.perf_counter() - start)
        exclude = None if include_self else int(gallery_id)
        result = self._result(scores[0], ids[0], search_ms, exclude=exclude, k=k)
        result.query_id = int(gallery_id)
        return result

    # ------------------------------------------------------------------------ persistence
    def save(self, path, overwrite: bool = False) -> None:
        """Write the gallery to the folder ``path`` (see the module docstring for the layout).

        A save is all-or-nothing: after a crash the folder holds the old or the new gallery; it
        never deletes anything it did not write. Index and metadata are written and synced into a
        new data folder, and one ``os.replace`` of the manifest switches to it (:mod:`pqkit._atomic`).

        Parameters
        ----------
        path : str or os.PathLike
            A new folder (missing parents are created), an empty folder, or a saved gallery
            (replaced only with ``overwrite=True``).
        overwrite : bool, default False
            Replace a gallery saved in ``path``.

        Raises
        ------
        ValueError
            An image path that is absolute, contains ``..`` or leads out of the image root through
            a symlink (the message names the entry): such a gallery could not be loaded again.
        pqkit._atomic.ArtifactExistsError
            ``path`` is a file, a folder that is neither empty nor a gallery, or a gallery while
            ``overwrite`` is False (a FileExistsError and a ValueError); nothing was changed.
        """
        if self.paths is not None:
            for row, rel in enumerate(self.paths):
                if not rel or "\x00" in rel or _leaves_root(rel):
                    raise ValueError(
                        f"entry {row} (id {int(self.ids[row])}): image path {rel!r} is empty, absolute or "
                        f"leaves the image root with '..'; store paths relative to root={self.root!r}")
        folder = Path(os.path.abspath(os.fspath(path)))
        entries = {"id": [int(i) for i in self.ids]}
        if self.paths is not None:  # what would not load again is not saved
            _confine_paths(self.paths, entries["id"], self.root if self.root is not None else str(folder),
                           f"cannot save the gallery to {str(folder)!r}")
        if self.labels is not None:
            entries["label"] = [v.item() for v in self.labels]
        if self.paths is not None:
            entries["path"] = list(self.paths)
        nprobe = getattr(self.index, "nprobe", None)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "description": self.description,
            "nprobe": nprobe,
            "d": self.d,
            "n": len(self),
            "root": self.root,
            # lets a gallery folder move together with its image folder
            "root_from_gallery": None if self.root is None else os.path.relpath(self.root, folder.resolve()),
            "embedder": self.embedder_spec,
            "choice": None if self.choice is None else json.loads(json.dumps(dict(self.choice))),
            "build": None if self.build is None else json.loads(json.dumps(dict(self.build))),
            "entries": entries,
        }
        text = json.dumps(meta).encode("utf-8")

        def write_members(member_folder):
            self.index.save(os.path.join(member_folder, INDEX_FILE))
            _atomic.write_bytes(os.path.join(member_folder, META_FILE), text)

        _atomic.save_folder(folder, write_members, kind=FORMAT, overwrite=overwrite, what="gallery",
                            legacy_members=_legacy_members)

    @staticmethod
    def check_save_target(path, overwrite: bool = False) -> None:
        """Raise as :meth:`save` would for ``path``, before a gallery is built (writes nothing)."""
        _atomic.check_folder_target(path, kind=FORMAT, overwrite=overwrite, what="gallery",
                                    legacy_members=_legacy_members)

    @classmethod
    def load(cls, path) -> "Gallery":
        """Read a gallery written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The gallery folder.

        Returns
        -------
        Gallery

        Raises
        ------
        ValueError
            Missing files, a member that differs from the manifest (size or SHA-256), metadata
            that is not this format (not JSON, wrong types, wrong version), ids that disagree with
            the index, a corrupted index file, or an image path that leads out of the image root
            (absolute, ``..``, or through a symlink; the message names the entry).
        """
        folder = Path(os.fspath(path))
        return _atomic.load_folder(folder, lambda members: cls._load_members(folder, Path(members)),
                                   kind=FORMAT, what="gallery")

    @classmethod
    def _load_members(cls, folder: Path, members: Path) -> "Gallery":
        import pqkit

        meta_path, index_path = members / META_FILE, members / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise ValueError(
                f"{str(folder)!r} is not a gallery: expected the files {META_FILE} and {INDEX_FILE} in it "
                "(write one with `pqkit retrieve index <folder> --out <gallery>` or Gallery.save)"
            )
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise ValueError(f"{meta_path} is larger than {MAX_META_BYTES} bytes; not a gallery file")
        try:
            meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_path} is not valid JSON gallery metadata ({exc})") from None
        meta = _check_meta(meta, meta_path)
        index = pqkit.load(index_path)
        if index.d != meta["d"] or index.ntotal != meta["n"] or index.metric != meta["metric"]:
            raise ValueError(
                f"{index_path} does not match {meta_path}: index has d={index.d}, n={index.ntotal}, "
                f"metric={index.metric!r}; metadata says d={meta['d']}, n={meta['n']}, metric={meta['metric']!r}"
            )
        entries = meta["entries"]
        ids = np.asarray(entries["id"], dtype=np.int64)
        # n unique ids, all present in an index of n vectors: the same set
        if np.unique(ids).shape[0] != ids.shape[0] or (ids.size and not index._contains(ids).all()):
            raise ValueError(f"the ids in {meta_path} are not the ids stored in {index_path}")
        if meta["nprobe"] is not None and hasattr(index, "nprobe"):
            index.nprobe = meta["nprobe"]
        labels = entries.get("label")
        paths = entries.get("path")
        root = meta["root"]
        if root is not None and not Path(root).is_dir() and meta.get("root_from_gallery") is not None:
            moved = (folder / meta["root_from_gallery"]).resolve()
            root = str(moved) if moved.is_dir() else root
        if paths is not None:
            if root is None:
                root = str(folder.resolve())  # paths saved without a root are relative to the gallery
            _confine_paths(paths, entries["id"], root, meta_path)
        return cls(index, ids, labels=None if labels is None else np.asarray(labels), paths=paths,
                   root=root, metric=meta["metric"], description=meta["description"],
                   embedder_spec=meta["embedder"], choice=meta["choice"], build=meta.get("build"))


def _leaves_root(rel: str) -> bool:
    """Whether a stored image path is absolute or has a ``..`` component (either separator)."""
    return (os.path.isabs(rel) or rel.startswith(("/", "\\")) or bool(os.path.splitdrive(rel)[0])
            or ".." in re.split(r"[\\/]", rel))


def _confine_paths(paths: list, ids: list, root: str, where) -> None:
    """Resolve every image path under ``root``; ValueError naming the first entry that leaves it.

    The paths were checked by :func:`_check_meta` (relative, no ``..``). Each distinct parent
    folder is resolved and listed for symlinks once; a file is resolved on its own only when it
    is a symlink, so the cost is one ``realpath`` per folder and per linked file, not per entry.
    """
    root_real = os.path.realpath(root)
    inside = root_real.rstrip(os.sep) + os.sep

    def escapes(full: str) -> bool:
        return full != root_real and not full.startswith(inside)

    folders = {}
    for row, rel in enumerate(paths):
        head, name = os.path.split(rel)
        known = folders.get(head)
        if known is None:
            real = os.path.realpath(os.path.join(root_real, head)) if head else root_real
            try:
                with os.scandir(real) as listing:
                    links = {entry.name for entry in listing if entry.is_symlink()}
            except OSError:  # a missing folder has no links (a gallery moved without its images)
                links = set()
            known = folders[head] = (real, links, escapes(real))
        real, links, folder_escapes = known
        if folder_escapes or (name in links and escapes(os.path.realpath(os.path.join(real, name)))):
            full = os.path.realpath(os.path.join(real, name))
            raise ValueError(f"{where}: entry {row} (id {ids[row]}): image path {rel!r} resolves to {full!r}, "
                             f"outside the image root {root!r} (through a symlink); gallery images must lie "
                             "inside the folder the gallery was built from")


def _legacy_members(folder) -> list | None:
    """The files of a gallery saved directly into ``folder`` (before manifests), or None if none."""
    meta_path, index_path = os.path.join(folder, META_FILE), os.path.join(folder, INDEX_FILE)
    prefix = b'{"format": "' + FORMAT.encode() + b'"'
    if os.path.islink(meta_path) or os.path.islink(index_path) or not os.path.isfile(index_path):
        return None
    if not _atomic.file_starts_with(meta_path, prefix) or not _is_pqkit_index(index_path):
        return None
    members = [META_FILE, INDEX_FILE]
    stale = os.path.join(folder, f".{META_FILE}.tmp")  # what earlier versions wrote before renaming
    if os.path.isfile(stale) and not os.path.islink(stale) and (
            os.path.getsize(stale) == 0 or _atomic.file_starts_with(stale, prefix[:10])):
        members.append(f".{META_FILE}.tmp")
    return members


def _is_pqkit_index(path) -> bool:
    from ..io import MAGIC

    return _atomic.file_starts_with(path, MAGIC)


def _check_meta(meta, where) -> dict:
    """Check the structure and types of gallery.json; raise ValueError naming the bad field."""

    def bad(msg):
        return ValueError(f"{where}: invalid gallery metadata: {msg}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise bad(f"'format' must be {FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise bad(f"unsupported format_version {meta.get('format_version')!r}; this pqkit reads {FORMAT_VERSION}")
    if meta.get("metric") not in ("cosine", "ip", "l2"):
        raise bad(f"'metric' must be 'cosine', 'ip' or 'l2', got {meta.get('metric')!r}")
    for key in ("d", "n"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{key!r} must be an int >= 0, got {value!r}")
    if not isinstance(meta.get("description"), str):
        raise bad(f"'description' must be a str, got {meta.get('description')!r}")
    nprobe = meta.get("nprobe")
    if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1):
        raise bad(f"'nprobe' must be null or an int >= 1, got {nprobe!r}")
    for key in ("root", "root_from_gallery"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(f"{key!r} must be null or a str")
    if meta.get("embedder") is not None:
        try:
            embedder_from_spec(meta["embedder"])
        except (TypeError, ValueError) as exc:
            raise bad(f"'embedder': {exc}") from None
    if meta.get("choice") is not None and not isinstance(meta["choice"], dict):
        raise bad("'choice' must be null or an object")
    _check_build(meta.get("build"), bad)
    entries = meta.get("entries")
    if not isinstance(entries, dict) or not isinstance(entries.get("id"), list):
        raise bad("'entries' must be an object with an 'id' list")
    n = meta["n"]
    unknown = set(entries) - {"id", "label", "path"}
    if unknown:
        raise bad(f"unknown entry fields {sorted(unknown)}")
    for key, values in entries.items():
        if not isinstance(values, list) or len(values) != n:
            raise bad(f"entries.{key} must be a list of length n={n}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**63 for i in entries["id"]):
        raise bad("entries.id must hold ints in [0, 2**63)")
    if "label" in entries:
        labels = entries["label"]
        if not (all(isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63 for v in labels)
                or all(isinstance(v, str) for v in labels)):
            raise bad("entries.label must hold only ints (int64) or only strs")
    if "path" in entries:
        for row, p in enumerate(entries["path"]):
            if not isinstance(p, str) or not p or "\x00" in p:
                raise bad(f"entries.path must hold non-empty strs (entry {row}, id {entries['id'][row]})")
            if _leaves_root(p):
                raise bad(f"entry {row} (id {entries['id'][row]}): image path {p!r} is absolute or leaves the "
                          "gallery's image root with '..'; image paths must lie inside the image root")
    return meta


def _check_build(build, bad) -> None:
    """The optional ``build`` block (absent in galleries saved before it existed)."""
    if build is None:
        return
    if not isinstance(build, dict):
        raise bad("'build' must be null or an object")
    recall = build.get("recall")
    if recall is not None and (isinstance(recall, bool) or not isinstance(recall, (int, float))
                               or not 0 <= recall <= 1):
        raise bad(f"build.recall must be null or a number in [0, 1], got {recall!r}")
    for key in ("k", "n_queries", "memory_bytes", "nprobe"):
        value = build.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(f"build.{key} must be null or an int >= 0, got {value!r}")
    k_factor = build.get("k_factor")
    if k_factor is not None and (isinstance(k_factor, bool) or not isinstance(k_factor, (int, float))):
        raise bad(f"build.k_factor must be null or a number, got {k_factor!r}")
    for key in ("refine", "description"):
        if build.get(key) is not None and not isinstance(build[key], str):
            raise bad(f"build.{key} must be null or a str")
