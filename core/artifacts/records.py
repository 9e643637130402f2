"""The typed records of a model card: where the model comes from, how its probabilities are calibrated, how it was
compressed, and how its file is deployed. Each reads back exactly what it wrote; an unknown or missing field is a
:class:`~core.errors.ModelError` naming it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from core.data.synthetic import is_synthetic_dataset
from core.errors import ModelError
from core.provenance import git_sha

DATA_LICENCE = "HAM10000: CC BY-NC 4.0, Tschandl et al. 2018, doi:10.7910/DVN/DBW86T (if trained on it)"

R = TypeVar("R")


def build_record(cls: type[R], data: dict[str, Any] | None, *, source: str, **nested: Any) -> R:
    """``cls`` from its dict, with ``nested`` records already built; unknown or missing fields name themselves."""
    data = dict(data or {})
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelError(f"{source}: unknown {cls.__name__.lower()} field(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(names))}")
    try:
        return cls(**{**data, **nested})
    except TypeError as exc:  # a required field is missing
        raise ModelError(f"{source}: incomplete {cls.__name__.lower()} record ({exc})") from None


class Record:
    """A card record: written as a plain dict, read back with every field checked."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str) -> Any:
        return build_record(cls, d, source=source)


@dataclass(frozen=True)
class TrainingData:
    """Which images the model learnt from."""

    name: str  # "HAM10000", "synthetic demo images", or the folder
    synthetic: bool
    images: int
    data_dir: str

    @classmethod
    def of(cls, data_dir: str, *, images: int) -> TrainingData:
        synthetic = is_synthetic_dataset(data_dir)
        name = "synthetic demo images" if synthetic else ("HAM10000" if "ham10000" in data_dir.lower() else data_dir)
        return cls(name=name, synthetic=synthetic, images=images, data_dir=data_dir)


@dataclass(frozen=True)
class Origin(Record):
    """The card's provenance: code, seed, split and data, starting weights, teacher, lineage."""

    git_sha: str
    seed: int
    split_hash: str
    dataset_fingerprint: str
    training_data: TrainingData
    data_licence: str = DATA_LICENCE
    pretrained_weights: dict[str, Any] | None = None  # where the ImageNet weights came from; None: trained from scratch
    distillation: dict[str, Any] | None = None  # teacher, alpha, temperature
    cv_id: str | None = None  # the cross-validation a fold model or a final model belongs to
    fold: int | None = None
    folds_hash: str | None = None
    parent_dir: str | None = None  # a variant's parent folder as the sweep found it (a fold is not under models/)
    promoted_from: dict[str, Any] | None = None  # a variant made into a parent (scripts.promote_variant)

    @classmethod
    def untrained(cls, *, seed: int = 0) -> Origin:
        """A model built here and not trained (benchmarks, tests of the serving code): no data, no split."""
        return cls(git_sha=git_sha(), seed=seed, split_hash="none", dataset_fingerprint="none",
                   training_data=TrainingData(name="not trained", synthetic=True, images=0, data_dir=""))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str) -> Origin:
        return build_record(cls, {k: v for k, v in d.items() if k != "training_data"}, source=source,
                            training_data=build_record(TrainingData, d.get("training_data"), source=source))


@dataclass(frozen=True)
class Calibration(Record):
    """How logits become the probabilities a user sees: temperature, the "uncertain" threshold, where fitted."""

    # No defaults: a card that lost its temperature must not be read as T = 1.
    temperature: float  # probabilities are softmax(logits / temperature)
    uncertain_threshold: float | None  # calibrated confidence below which a prediction is "uncertain"
    fitted_on: str | None  # "val", "held-out fold", ...; None: not calibrated (yet)
    target_accuracy: float | None = None  # the accuracy asked of confident predictions on ``fitted_on``
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. who fitted it when (the upgrade command), ECE before

    @classmethod
    def none(cls) -> Calibration:
        """Not calibrated yet: raw softmax, no "uncertain" threshold (a card between training and calibration)."""
        return cls(temperature=1.0, uncertain_threshold=None, fitted_on=None)


@dataclass(frozen=True)
class Compression(Record):
    """What was done to the parent: pruning (kind, amount reached), quantization, QAT, and the resulting size."""

    pruning: str  # the group's kind: structured, macs, unstructured, ptt, resolution, dense
    pruning_ratio: float  # per-layer channel ratio or MAC share removed (0 for dense)
    quantization: str  # the sweep mode, e.g. fp32, static, qat, pte_int8
    params: int
    macs: float
    sparsity: float
    qat: dict[str, Any] | None = None  # epochs, lr, flow, checkpoint selection on the converted graph


@dataclass(frozen=True)
class Runtime:
    """The runtime that loads a phone file."""

    name: str
    version: str
    operators: str | None = None  # the operator list beside the file (ONNX Runtime Mobile)
    timed_as: str = "x86 proxy (phones differ)"


@dataclass(frozen=True)
class Timing:
    """Batch-1 latency where it was measured."""

    b1_median: float
    b1_iqr: float
    threads: int
    host: str
    cpu: str
    cpu_flags: str
    retimed_on_driver: bool = False


@dataclass(frozen=True)
class ExportCheck:
    """How closely the file reproduces its source on the same images."""

    top1_agreement: float
    max_abs_logit_diff: float
    exporter: str | None = None
    source: str | None = None  # "torch" or the ONNX file a phone file was made from
    on: str | None = None  # the images it was checked on (a phone file: every validation image)


@dataclass(frozen=True)
class Deployment(Record):
    """The deployable file: size, the runtime that runs it, its latency and its export check."""

    size_bytes: int
    runtime: Runtime | None = None  # phone formats only
    latency: Timing | None = None
    export_check: ExportCheck | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str) -> Deployment:
        def sub(kind: type[R], key: str) -> R | None:
            return build_record(kind, d[key], source=source) if d.get(key) is not None else None

        return build_record(cls, {k: v for k, v in d.items() if k not in ("runtime", "latency", "export_check")},
                            source=source, runtime=sub(Runtime, "runtime"), latency=sub(Timing, "latency"),
                            export_check=sub(ExportCheck, "export_check"))
