"""One deployed model as every front end serves it: the photo gate, then the calibrated prediction, the "uncertain"
threshold, the screening decision and the photo-quality advice, in one call.

The site, its API and the dashboard's live panel all go through :class:`DeployedModel`, so a patient and a
researcher looking at the same image and variant read the same answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from core.artifacts.card import DEFAULT_MODELS_DIR, Card
from core.classes import CLASSES, clinical_name
from core.data.transforms import image_array
from core.errors import ModelError
from core.fusion import PatientMetadata
from core.serve.ood import GATE_FILE, OodGate
from core.serve.predict import Prediction, Predictor, load_predictor, predict_array, predict_batches
from core.serve.quality import PhotoQuality, photo_quality
from core.timing import StageTimer
from core.triage import Decision, Triage, advice_misses, decide, urgencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """What a deployed model says about one image. ``accepted`` False: the gate judged it not a lesion photo and
    every other field is empty (no class may be shown)."""

    accepted: bool
    refusal_reason: str = ""  # the gate's test that refused it: for logs, never shown to the sender
    prediction: Prediction | None = None
    decision: Decision | None = None  # carries "uncertain": the flag and the next step are decided together
    quality: PhotoQuality | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)  # preprocess, gate, model, quality: where time went
    metadata_used: tuple[str, ...] = ()  # the patient's fields the answer fused (empty: the photo alone)

    @property
    def uncertain(self) -> bool:
        return self.decision is not None and self.decision.uncertain

    @property
    def probs(self) -> dict[str, float]:
        assert self.prediction is not None, "a refused image has no probabilities"
        return {c: float(p) for c, p in zip(CLASSES, self.prediction.probs, strict=True)}

    @property
    def top(self) -> str:
        assert self.prediction is not None, "a refused image has no class"
        return self.prediction.top

    @property
    def clinical_name(self) -> str:
        return clinical_name(self.top)

    @property
    def confidence(self) -> float:
        assert self.prediction is not None, "a refused image has no confidence"
        return self.prediction.confidence


@dataclass(frozen=True)
class Scores:
    """A deployed model's answers on many images, in order."""

    probs: np.ndarray  # calibrated, (n, classes)
    labels: np.ndarray
    uncertain: np.ndarray  # bool: shown as "uncertain" (confidence below the deployed threshold)

    def deployment_metrics(self, triage: Triage | None) -> dict[str, float]:
        """What a user of the site meets: the share shown as "uncertain", the accuracy of the rest, and the shares
        of melanomas and of possibly-malignant lesions that the advice calls "usually harmless"."""
        confident = ~self.uncertain
        correct = self.probs.argmax(axis=1) == self.labels
        return {"uncertain_share": float(self.uncertain.mean()),
                "accuracy_confident": float(correct[confident].mean()) if confident.any() else float("nan"),
                **advice_misses(self.labels, urgencies(self.probs, triage, uncertain=self.uncertain))}


@dataclass
class DeployedModel:
    """A variant folder's predictor, its gate (None: the folder has none) and its "uncertain" threshold."""

    folder: Path
    predictor: Predictor
    gate: OodGate | None
    uncertain_threshold: float

    @property
    def card(self) -> Card:
        return self.predictor.card

    @property
    def triage(self) -> Triage | None:
        return self.card.triage

    @classmethod
    def load(cls, folder: str | Path, *, threads: int = 1, uncertain_threshold: float | None = None,
             models_dir: str | Path = DEFAULT_MODELS_DIR, tta: bool = False) -> DeployedModel:
        """Load the variant in ``folder`` (or a trained model: folder or run id under ``models_dir``);
        ``uncertain_threshold`` overrides the card's (an operator's setting) for answers from the photo alone; a
        fused answer keeps the fusion's own threshold, fitted on fused probabilities.

        Raises:
            ModelError: the folder's card, model or gate is missing or damaged.
        """
        predictor = load_predictor(str(folder), threads=threads, models_dir=models_dir, tta=tta)
        folder = Path(folder)
        gate = OodGate.load(folder) if (folder / GATE_FILE).is_file() else None
        return cls(folder, predictor, gate, resolve_uncertain_threshold(predictor.card, uncertain_threshold,
                                                                        folder=folder))

    def score(self, loader: DataLoader) -> Scores:
        """Many preprocessed lesion images (an evaluation; the gate judges photos, not tensors): calibrated
        probabilities, labels, and which predictions the site would show as "uncertain"."""
        probs, labels = predict_batches(self.predictor, loader)
        return Scores(probs, labels, probs.max(axis=1) < self.uncertain_threshold)

    @property
    def fuses_metadata(self) -> bool:
        """Whether the card carries metadata late fusion (age, sex, body site change the answer when given)."""
        return self.card.fusion is not None

    def classify(self, image: Image.Image, *, name: str = "deployed",
                 metadata: PatientMetadata | None = None) -> Classification:
        """Gate, then predict; the decision and the advice come from the card's operating points. The image is
        resized and normalised once when the gate's backbone takes the model's preprocessing (the default).

        With ``metadata`` and a card that carries a fusion, the answer is the fusion's, with its own "uncertain"
        threshold and operating points; without either it is exactly the image model's."""
        timer = StageTimer()
        with timer("preprocess"):
            x = image_array(image, self.predictor.preprocessing)
        if self.gate is not None:
            with timer("gate"):
                verdict = self.gate.check(image, array=x if self.gate.prep == self.predictor.preprocessing else None)
            if not verdict.accepted:
                return Classification(accepted=False, refusal_reason=verdict.reason, stage_ms=timer.ms)
        with timer("model"):
            prediction = predict_array(self.predictor, x, name=name)
        fusion = self.card.fusion
        used = metadata.given if metadata is not None and fusion is not None else ()
        threshold, triage = self.uncertain_threshold, self.triage
        if used:
            assert fusion is not None and metadata is not None
            with timer("fusion"):
                prediction = Prediction(name, fusion.probabilities(prediction.probs[None], metadata)[0],
                                        prediction.latency_ms)
            threshold, triage = fusion.uncertain_threshold, fusion.triage
        with timer("quality"):
            quality = photo_quality(image)
        uncertain = prediction.confidence < threshold
        return Classification(accepted=True, prediction=prediction, stage_ms=timer.ms, metadata_used=used,
                              decision=decide(prediction.probs, triage, uncertain=uncertain), quality=quality)


def resolve_uncertain_threshold(card: Card, configured: float | None, *, folder: Path | str = "") -> float:
    """The confidence below which a result says "uncertain": ``configured`` if set, else the card's (chosen on
    validation data when it was calibrated)."""
    if configured is not None:
        return float(configured)
    if card.uncertain_threshold is None:
        raise ModelError(f"{folder}: the card has no calibrated 'uncertain' threshold (the model was never "
                         "calibrated on validation): re-run the sweep for it, or set LESIONLITE_UNCERTAIN_THRESHOLD")
    return float(card.uncertain_threshold)
