"""Image and embedding retrieval on pqkit: galleries, evaluation, a timing table and a web demo.

=============================  ===========================================================
:class:`Gallery`               vectors or an image folder in a pqkit index, with ids, labels
                               and paths; query by vector, image or id; save / load
:mod:`.images`                 image reading and the embedders (CNN, raw pixels)
:mod:`.indexing`               index choice by name (``"Flat"``, ``"IVF,Flat"``, ``"IVF,PQ"``)
                               or by a target recall
:mod:`.evaluate`               recall@k against exact search, mAP and precision@k by label,
                               per-query latency
:mod:`.timing`                 the timing table: NumPy brute force, pqkit and faiss indexes
:mod:`.web`                    the Flask demo (``pqkit retrieve serve <gallery>``)
=============================  ===========================================================

Images need the ``retrieval`` extra (torch, pillow, flask); vector galleries need only NumPy.
"""

from .gallery import Gallery, QueryResult
from .images import CNNEmbedder, PixelEmbedder

__all__ = ["CNNEmbedder", "Gallery", "PixelEmbedder", "QueryResult"]
