"""Compression: structured and unstructured pruning, quantization modes."""
