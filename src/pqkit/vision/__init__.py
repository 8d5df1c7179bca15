"""Image backbones and feature extraction shared by the applications (PatchCore, retrieval)."""
