"""Thin command-line entry points (``python -m pipelines.<name>``) composing the libraries."""
