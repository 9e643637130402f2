"""Compression: structured and unstructured pruning, quantization modes."""

# The deployable forms of a model (here, not in quantize.py: pages that only draw them must not load ONNX Runtime).
QUANT_MODES = ("torch_fp32", "fp32", "dynamic", "static", "fp16", "torch_dynamic", "qat")  # qat: core.compress.qat
