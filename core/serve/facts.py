"""What a model card says about the model, in the terms a patient or clinician needs: the data it was trained on,
how well it did on held-out test images, and its version."""

from __future__ import annotations

from dataclasses import dataclass

from core.artifacts.card import Card
from core.compress.kinds import KINDS
from core.compress.modes import MODES
from core.metrics import Evaluation


@dataclass(frozen=True)
class ModelFacts:
    """The model line of the site, the dashboard and printed reports."""

    name: str  # architecture and variant, e.g. "efficientnet_lite0 dense-static-percentile"
    version: str  # the variant's run id
    trained_on: str  # e.g. "HAM10000 (8,601 images)" or "synthetic demo images"
    synthetic: bool
    test_balanced_accuracy: float | None
    test_melanoma_recall: float | None

    @property
    def is_demo(self) -> bool:
        return self.synthetic

    @property
    def plain_name(self) -> str:
        """The model as a patient reads it, e.g. "EfficientNet-Lite0, pruned to 50% of its compute, 8-bit"."""
        architecture, _, variant = self.name.partition(" ")
        return ", ".join([_plain_architecture(architecture), *_plain_variant(variant)])

    @property
    def short_version(self) -> str:
        """"2026-11-30 (…c307)": the run's date and the tail of its id."""
        stamp = self.version[:8]
        date = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}" if stamp.isdigit() else ""
        return f"{date} (…{self.version.split('.')[0][-4:]})".strip()


def _plain_architecture(name: str) -> str:
    if name.startswith("efficientnet_lite"):
        return "EfficientNet-Lite" + name.removeprefix("efficientnet_lite")
    return {"test_efficientnet": "a tiny test network", "test_resnet": "a tiny test network"}.get(name, name)


def _plain_variant(variant: str) -> list[str]:
    parts = []
    head, _, rest = variant.partition("-")
    kind = next((k for k in KINDS.values() if k.variant_prefix == head), None)
    amount = rest.split("-")[0]
    if kind is not None and kind.amount == "macs" and kind.route == "prune":
        parts.append(f"pruned to {float(amount):.0%} of its compute" if amount.replace(".", "").isdigit()
                     else "pruned")
    elif kind is not None and kind.amount == "pixels":
        parts.append(f"at {amount} px")
    elif kind is not None:
        parts.append("pruned")
    mode = next((MODES[token] for token in variant.split("-") if token in MODES), None)
    if mode is not None and mode.bits < 32:
        parts.append(f"{mode.bits}-bit")
    return parts


def model_facts(card: Card) -> ModelFacts:
    data = card.origin.training_data
    test = card.metrics.get("test", {})  # a model scored on no test split (a fold model) has none
    trained_on = data.name if data.synthetic else f"{data.name} ({data.images:,} training images)"
    return ModelFacts(name=f"{card.architecture} {card.variant}", version=card.run_id, trained_on=trained_on,
                      synthetic=data.synthetic, test_balanced_accuracy=test.get("balanced_accuracy"),
                      test_melanoma_recall=test.get("recall_mel"))


def card_metrics(evaluations: dict[str, Evaluation]) -> dict[str, dict[str, float]]:
    """Per split, the scalar metrics a card carries, with melanoma recall (the miss that matters) beside them."""
    out = {}
    for split, ev in evaluations.items():
        figures = dict(ev.metrics)
        if "mel" in ev.per_class.index and ev.per_class.loc["mel", "support"] > 0:
            figures["recall_mel"] = float(ev.per_class.loc["mel", "recall"])
        out[split] = figures
    return out
