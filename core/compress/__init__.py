"""Compression: structured and unstructured pruning, quantization modes, phone formats."""

# The deployable forms of a model (here, not in quantize.py: pages that only draw them must not load ONNX Runtime).
# qat: core.compress.qat; ort_* / pte_* / tflite_*: the phone formats of core.compress.mobile.
QUANT_MODES = ("torch_fp32", "fp32", "dynamic", "static", "fp16", "torch_dynamic", "qat",
               "ort_fp32", "ort_static", "pte_fp32", "pte_int8", "tflite_fp32", "tflite_int8")

# The runtime that runs each mode's file: a dimension of every results view ("which file do I ship?").
RUNTIMES = {"pytorch": "PyTorch (eager)", "onnxruntime": "ONNX Runtime", "onnxruntime-mobile": "ONNX Runtime Mobile",
            "executorch-xnnpack": "ExecuTorch (XNNPACK)", "litert": "LiteRT (TFLite)"}


def runtime_of_mode(mode: str) -> str:
    """The runtime key (of :data:`RUNTIMES`) that runs a mode's file."""
    if mode.startswith("torch_"):
        return "pytorch"
    for prefix, runtime in (("ort_", "onnxruntime-mobile"), ("pte_", "executorch-xnnpack"), ("tflite_", "litert")):
        if mode.startswith(prefix):
            return runtime
    return "onnxruntime"
