"""rec: explicit-rating matrix factorization with exact ALS, in PyTorch (see SPEC.md)."""

__version__ = "0.1.0"
