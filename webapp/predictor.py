"""The deployed model: one compressed variant, chosen at start-up and loaded once per process.

Which one: ``LESIONLITE_VARIANT`` (a variant folder), else the static-int8 variant with the best validation
balanced accuracy in the results store (``LESIONLITE_DB``). Its card carries the calibration (temperature) the
predictor applies and the "uncertain" threshold chosen on validation data. The store is read once, at start-up, never on
the request path: a sweep writing to it cannot break the site. Without a usable model, production refuses to
start; development and testing start and answer predictions with 503 and a clear message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app
from threadpoolctl import threadpool_limits

from core.artifacts.card import Card, read_variant_card
from core.artifacts.release import release_description
from core.errors import ConfigError, LesionLiteError, ModelError
from core.fusion import PatientMetadata
from core.serve.deployed import Classification, DeployedModel, resolve_uncertain_threshold
from core.serve.facts import model_facts
from core.serve.imaging import CheckedImage
from core.serve.ood import GATE_FILE, NOT_A_LESION
from core.serve.quality import PhotoQuality
from core.store.choosing import deployed_choice
from core.store.results import ResultsStore
from core.triage import Decision, Triage

log = logging.getLogger(__name__)
_lock = threading.Lock()


class ModelUnavailable(LesionLiteError):
    """No deployable model could be loaded; the site answers 503 for predictions."""


class NotALesion(LesionLiteError):
    """The deployed model's gate judged the image not to be a dermoscopic lesion photo: no class is given."""

    def __init__(self, reason: str):
        super().__init__(NOT_A_LESION)
        self.reason = reason


DEPLOYED_CHOICE_FILE = "deployed-variant.json"


def _read_choice(path: Path) -> dict[str, object] | None:
    try:
        choice = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return choice if isinstance(choice, dict) and "folder" in choice and "db" in choice else None


def _write_choice(path: Path, choice: dict[str, object]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(choice))
    os.replace(tmp, path)


def _variant_from_store(app: Flask) -> tuple[Path, str]:
    """The store's deployed variant, chosen once per server: gunicorn workers (re)started by the same master reuse
    the choice recorded in the instance folder without opening the store, so a worker replaced while a sweep holds
    the store's lock still boots, and every worker serves the same model. If the store cannot be read at all (a
    writer holds it), the last recorded choice is used, with a warning."""
    db = Path(app.config["LESIONLITE_DB"]).resolve()
    record = Path(app.instance_path) / DEPLOYED_CHOICE_FILE
    master = os.getppid()  # gunicorn's master for a worker; the shell for a single process
    choice = _read_choice(record)
    if choice and choice["db"] == str(db) and choice.get("master_pid") == master:
        return Path(str(choice["folder"])), str(choice.get("reason", ""))
    if not db.is_file():
        raise ModelError(f"no results store at {db} (set LESIONLITE_DB or LESIONLITE_VARIANT)")
    try:
        with ResultsStore(db, read_only=True) as store:
            chosen = deployed_choice(store)
    except ModelError as exc:
        raise ModelError(f"{db}: {exc}; or set LESIONLITE_VARIANT") from None
    except Exception as exc:  # duckdb raises its own IOException while a writer holds the lock
        if choice and choice["db"] == str(db):
            log.warning("cannot read the results store %s (%s); serving the variant chosen at the last start, %s",
                        db, type(exc).__name__, choice["folder"])
            return Path(str(choice["folder"])), str(choice.get("reason", ""))
        raise ModelError(f"cannot read the results store {db}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]}; set LESIONLITE_VARIANT to a variant folder") from None
    _write_choice(record, {"db": str(db), "folder": str(chosen.folder.resolve()), "master_pid": master,
                           "reason": chosen.reason})
    return chosen.folder, chosen.reason


def resolve_variant(app: Flask) -> tuple[Path, Card]:
    """The variant folder to deploy (configured, else chosen from the store) and its card, read once here: a
    missing or corrupt card fails at start-up, not on a patient's upload."""
    configured = app.config.get("LESIONLITE_VARIANT")
    folder, reason = (Path(configured), "named by the operator (LESIONLITE_VARIANT)") if configured else \
        _variant_from_store(app)
    description = release_description(folder)
    if description:
        reason = f"the release in this repository: {description}"
    app.config["DEPLOYED_REASON"] = reason
    return folder.resolve(), read_variant_card(folder)


def init_app(app: Flask) -> None:
    # One BLAS thread per worker process: gunicorn runs several workers on the same cores, and OpenBLAS threads
    # spinning against each other made every gated prediction ~3x slower (bench_webapp: 20 -> 55 predictions/s).
    threadpool_limits(limits=1, user_api="blas")

    @app.context_processor
    def deployed_model() -> dict[str, object]:  # the model line and banners of every page
        return {"model_facts": app.config.get("DEPLOYED_FACTS"), "model_problem": app.config.get("MODEL_PROBLEM"),
                "deployed_reason": app.config.get("DEPLOYED_REASON", ""), "fusion": app.config.get("DEPLOYED_FUSION"),
                "no_photo_check": app.config.get("NO_PHOTO_CHECK", False)}

    try:
        folder, card = resolve_variant(app)
        app.config["DEPLOYED_VARIANT"] = folder
        # Resolved once, here: an operator's LESIONLITE_UNCERTAIN_THRESHOLD, else the card's; the model uses it.
        app.config["DEPLOYED_UNCERTAIN_THRESHOLD"] = resolve_uncertain_threshold(
            card, app.config.get("UNCERTAIN_THRESHOLD"), folder=folder)
        app.config["DEPLOYED_FACTS"] = facts = model_facts(card)
        app.config["DEPLOYED_FUSION"] = fusion_facts(card)
        if facts.is_demo:
            log.warning("%s was trained on synthetic demo images: its results mean nothing for real skin", folder)
        app.config["NO_PHOTO_CHECK"] = not (folder / GATE_FILE).is_file()
        if app.config["NO_PHOTO_CHECK"]:
            _refuse_without_photo_check(app, folder)
        log.info("deployed model: %s (uncertain below confidence %.3f)", folder,
                 app.config["DEPLOYED_UNCERTAIN_THRESHOLD"])
    except ModelError as exc:
        if app.config["ENV_NAME"] == "production":
            raise ConfigError(f"no deployable model: {exc}") from None
        app.config["DEPLOYED_VARIANT"] = None
        app.config["DEPLOYED_FACTS"] = app.config["DEPLOYED_FUSION"] = None
        app.config["MODEL_PROBLEM"] = str(exc)
        log.warning("no deployable model (predictions will answer 503): %s", exc)


def fusion_facts(card: Card) -> dict[str, object] | None:
    """What the upload form says about asking age and sex, from the card's own fusion record (None: the model uses
    the photo alone, so the form does not ask)."""
    if card.fusion is None:
        return None
    figures = card.fusion.cross_fitted
    return {"images": card.fusion.fitted_on.get("images"), "fields": card.fusion.stack.fields,
            "image": figures["image"]["balanced_accuracy"][0], "fused": figures["fused"]["balanced_accuracy"][0]}


def _refuse_without_photo_check(app: Flask, folder: Path) -> None:
    """A production site never serves a model without its photo check, unless an operator says so (logged)."""
    fit = f"python -m scripts.fit_ood_gate --model {folder}"
    if app.config["ENV_NAME"] == "production" and not app.config.get("ALLOW_NO_PHOTO_CHECK"):
        raise ConfigError(f"{folder} has no photo check (out-of-distribution gate): any picture would get a lesion "
                          f"class. Fit one with {fit}, or set LESIONLITE_ALLOW_NO_PHOTO_CHECK=1 if you know why "
                          "this site must run without it")
    log.warning("%s has no photo check (out-of-distribution gate): any picture gets a lesion class, and every "
                "result will say so%s. Fit one with %s", folder,
                " (LESIONLITE_ALLOW_NO_PHOTO_CHECK=1: the operator's override)"
                if app.config.get("ALLOW_NO_PHOTO_CHECK") else "", fit)


def get_model() -> DeployedModel:
    """The deployed variant (gate, predictor, threshold), loaded on first use by each app in each process."""
    folder = current_app.config.get("DEPLOYED_VARIANT")
    if folder is None:
        raise ModelUnavailable(current_app.config.get("MODEL_PROBLEM", "no model configured"))
    with _lock:
        model = current_app.extensions.get("lesionlite_model")
        if model is None:
            try:
                model = DeployedModel.load(folder, threads=1,
                                           uncertain_threshold=current_app.config["DEPLOYED_UNCERTAIN_THRESHOLD"])
            except (ModelError, OSError, RuntimeError) as exc:  # files removed or damaged after start-up
                raise ModelUnavailable(f"{folder}: {exc}") from exc
            current_app.extensions["lesionlite_model"] = model
            log.info("loaded model %s", folder)
        return model


@dataclass(frozen=True)
class CheckResult:
    """The deployed model's answer for one accepted image, with the model's version and the operating points it
    was decided with: what a check stores and every page and the API show."""

    answer: Classification  # accepted: the gate let the image through
    model_version: str
    triage: Triage | None  # the operating points the decision was made with (None: the card has none)
    metadata: PatientMetadata | None = None  # what the patient gave that the answer fused (None: the photo alone)
    photo_checked: bool = True  # False: the model had no photo check; the result says so wherever it is shown

    @property
    def top_class(self) -> str:
        return self.answer.top

    @property
    def clinical_name(self) -> str:
        return self.answer.clinical_name

    @property
    def confidence(self) -> float:
        return self.answer.confidence

    @property
    def probs(self) -> dict[str, float]:
        return self.answer.probs

    @property
    def uncertain(self) -> bool:
        return self.answer.uncertain

    @property
    def decision(self) -> Decision:
        assert self.answer.decision is not None, "an accepted image always has a decision"
        return self.answer.decision

    @property
    def quality(self) -> PhotoQuality:
        assert self.answer.quality is not None, "an accepted image always has its photo-quality check"
        return self.answer.quality


def check_upload(checked: CheckedImage, metadata: PatientMetadata | None = None) -> CheckResult:
    """The deployed model's answer for one checked image, with what the patient said about themselves fused when
    the model carries a fusion (else the photo alone).

    Raises:
        NotALesion: the gate refused the image (no class is given).
        ModelUnavailable: no model can be loaded.
    """
    model = get_model()
    answer = model.classify(checked.image, metadata=metadata)
    if not answer.accepted:
        raise NotALesion(answer.refusal_reason)
    fusion = model.card.fusion if answer.metadata_used else None
    return CheckResult(answer, model.card.label, fusion.triage if fusion else model.triage,
                       photo_checked=model.gate is not None, metadata=metadata if fusion else None)


def probs_json(d: CheckResult) -> str:
    return json.dumps(d.probs)


def quality_json(d: CheckResult) -> str:
    return json.dumps(d.quality.as_dict())


def decision_json(d: CheckResult) -> str:
    """The decision as stored with the check: what was advised, and the operating points behind it."""
    return json.dumps({**d.decision.to_dict(), "triage": d.triage.to_dict() if d.triage else None,
                       "metadata_used": list(d.answer.metadata_used)})
