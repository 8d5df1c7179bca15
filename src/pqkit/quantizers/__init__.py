"""Quantizers: k-means (:class:`pqkit.KMeans`) and product quantization (:class:`pqkit.ProductQuantizer`)."""
