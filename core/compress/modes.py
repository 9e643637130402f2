"""The quantization and phone modes: one :class:`Mode` record each, in :data:`MODES`; every other module asks them.

Adding a mode is one entry here: the sweep makes its file by its ``route``, the store records its name and runtime,
the report and the dashboard list it (a shape of its own on the chart, from its place in :data:`MODES`).
Kept free of heavy imports: pages that only draw modes must not load ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import check_allowed

# The runtime that runs each mode's file: a dimension of every results view ("which file do I ship?").
RUNTIMES = {"pytorch": "PyTorch (eager)", "onnxruntime": "ONNX Runtime", "onnxruntime-mobile": "ONNX Runtime Mobile",
            "executorch-xnnpack": "ExecuTorch (XNNPACK)", "litert": "LiteRT (TFLite)"}

# How a mode's file is made from a (pruned) model:
ROUTES = {
    "torch": "the PyTorch module saved as it is, or after torch dynamic quantization (torch_quantize)",
    "onnx": "the fp32 ONNX export, quantized by ONNX Runtime as onnx_quantize (core.compress.quantize)",
    "qat": "quantization-aware fine-tuning, exported as int8 ONNX (core.compress.qat)",
    "ort": "the ONNX file of mode `source` converted to .ort (core.compress.mobile)",
    "torch_export": "torch.export of the model to .pte / .tflite, int8 with calibration (core.compress.mobile)",
}


@dataclass(frozen=True, kw_only=True)
class Mode:
    """One deployable form of a model."""

    name: str
    description: str
    suffix: str  # the file's suffix
    runtime: str  # a key of RUNTIMES
    route: str  # a key of ROUTES
    bits: int = 32  # of the weights (and, but for dynamic modes, the activations): 32, 16 or 8
    onnx_quantize: str = ""  # route "onnx": the ONNX Runtime mode quantize_onnx applies (fp32/dynamic/static/fp16)
    torch_quantize: bool = False  # route "torch": dynamic quantization of the Linear layers
    source: str = ""  # route "ort": the ONNX mode converted
    deployable: bool = False  # an ONNX file the budget table compares (the site can serve it)

    @property
    def int8(self) -> bool:
        return self.bits == 8

    def __post_init__(self) -> None:
        check_allowed(self.runtime, RUNTIMES, what=f"runtime (mode {self.name})")
        check_allowed(self.route, ROUTES, what=f"route (mode {self.name})")

    @property
    def calibrated(self) -> bool:
        """Needs training images to calibrate activations (static int8, phone int8)."""
        return self.int8 and self.route in ("onnx", "ort", "torch_export") and self.onnx_quantize != "dynamic"

    @property
    def phone(self) -> bool:
        """A phone format (.ort, .pte, .tflite): read back by its own runtime, batch 1."""
        return self.route in ("ort", "torch_export")

    @property
    def exported_to_onnx(self) -> bool:
        """Made from (or converted from) the group's fp32 ONNX export."""
        return self.route in ("onnx", "ort")


def _modes(*modes: Mode) -> dict[str, Mode]:
    return {m.name: m for m in modes}


MODES: dict[str, Mode] = _modes(
    Mode(name="torch_fp32", description="the PyTorch model itself (eager), the baseline every ratio is measured "
                                        "against", suffix=".pt", runtime="pytorch", route="torch"),
    Mode(name="fp32", description="the ONNX export, unchanged", suffix=".onnx", runtime="onnxruntime", route="onnx",
         onnx_quantize="fp32", deployable=True),
    Mode(name="dynamic", description="ONNX Runtime dynamic int8 (weights int8, activations quantized on the fly)",
         suffix=".onnx", runtime="onnxruntime", route="onnx", onnx_quantize="dynamic", bits=8, deployable=True),
    Mode(name="static", description="ONNX Runtime static int8, QDQ, per-channel weights, calibrated activations",
         suffix=".onnx", runtime="onnxruntime", route="onnx", onnx_quantize="static", bits=8, deployable=True),
    Mode(name="fp16", description="ONNX float16 weights and activations (inputs and outputs float32)",
         suffix=".onnx", runtime="onnxruntime", route="onnx", onnx_quantize="fp16", bits=16, deployable=True),
    Mode(name="torch_dynamic", description="PyTorch dynamic quantization of Linear layers (the original study's "
                                           "DQ): every convolution stays fp32", suffix=".pt", runtime="pytorch",
         route="torch", torch_quantize=True),  # bits 32: only the Linear layers are int8, the file stays fp32
    Mode(name="qat", description="quantization-aware fine-tuning, int8 ONNX", suffix=".onnx", runtime="onnxruntime",
         route="qat", bits=8, deployable=True),
    Mode(name="ort_fp32", description="the fp32 ONNX file as ONNX Runtime Mobile .ort", suffix=".ort",
         runtime="onnxruntime-mobile", route="ort", source="fp32"),
    Mode(name="ort_static", description="the static int8 ONNX file as ONNX Runtime Mobile .ort", suffix=".ort",
         runtime="onnxruntime-mobile", route="ort", source="static", bits=8),
    Mode(name="pte_fp32", description="ExecuTorch program lowered to XNNPACK", suffix=".pte",
         runtime="executorch-xnnpack", route="torch_export"),
    Mode(name="pte_int8", description="ExecuTorch (XNNPACK quantizer, symmetric per-channel int8)", suffix=".pte",
         runtime="executorch-xnnpack", route="torch_export", bits=8),
    Mode(name="tflite_fp32", description="LiteRT flatbuffer", suffix=".tflite", runtime="litert",
         route="torch_export"),
    Mode(name="tflite_int8", description="LiteRT flatbuffer (its PT2E quantizer, symmetric per-channel int8)",
         suffix=".tflite", runtime="litert", route="torch_export", bits=8),
)


def mode_of(name: str) -> Mode:
    """The mode named ``name`` (a variant's label may carry options after a dash: ``static-keepdw``)."""
    base = name.split("-", 1)[0]
    check_allowed(base, MODES, what="quantization mode")
    return MODES[base]


def runtime_of_mode(name: str) -> str:
    """The runtime key (of :data:`RUNTIMES`) that runs a mode's file."""
    return mode_of(name).runtime
