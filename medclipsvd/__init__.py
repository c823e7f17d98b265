"""medclipsvd: σ-only SVD adaptation of CLIP-style models to biomedical imaging."""
__version__ = "0.1.0"
