"""PatchCore anomaly detection with pqkit nearest-neighbour search (the ``pqkit[patchcore]`` extra).

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.

Pipeline (each step is its own module, importable without torch unless it extracts features):

- :mod:`.data`: samples of an MVTec-AD-layout folder or of the ELPV solar-cell set;
- :mod:`.embedding`: locally aware patch features from a torch backbone (3x3 neighbourhood
  average, upsample and concatenate layers, reduce to a target dimension);
- :mod:`.coreset`: greedy k-center coreset ("v1", the paper's) and a variance-weighted variant
  ("v2");
- :mod:`.neighbors`: nearest-neighbour backends behind one interface (pqkit IndexFlat / IndexPQ /
  IndexIVFPQ, scikit-learn, faiss);
- :mod:`.scoring`: patch, image and pixel scores, anomaly maps, AUROC;
- :mod:`.model`: :class:`PatchCore` (fit, predict, save, load);
- :mod:`.visualize`: anomaly-map overlays and a contact sheet of the highest-scored images;
- :mod:`.sweep`: experiments 2 (coreset v1 vs v2) and 3 (exact vs IVF-PQ search sweep);
  :mod:`.experiments`: experiment 1 (backbones) and the full-bank comparison.

:func:`sample_root` is a tiny MVTec-layout category shipped with the package, to try everything on.
"""

from .coreset import coreset_indices, patch_variance_weights
from .data import Sample, elpv_samples, limit_samples, load_mask, mvtec_samples, sample_root
from .neighbors import BACKENDS, make_backend
from .scoring import anomaly_maps, image_auroc, image_scores, pixel_auroc

__all__ = [
    "BACKENDS",
    "PatchCore",
    "Sample",
    "anomaly_maps",
    "coreset_indices",
    "elpv_samples",
    "image_auroc",
    "image_scores",
    "limit_samples",
    "load_mask",
    "make_backend",
    "mvtec_samples",
    "patch_variance_weights",
    "pixel_auroc",
    "sample_root",
]


def __getattr__(name):
    # PatchCore needs torch; import it lazily so the rest of the package works without torch
    if name == "PatchCore":
        from .model import PatchCore

        return PatchCore
    raise AttributeError(f"module 'pqkit.patchcore' has no attribute {name!r}")
