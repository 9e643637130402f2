"""Compression: structured and unstructured pruning, quantization modes (:mod:`core.compress.modes`), phone formats."""
