"""Sentences the dashboard's pages share (numbers said in words a reader cannot misread)."""

from __future__ import annotations

from core.serve.predict import Prediction, agreement


def agreement_sentence(predictions: list[Prediction]) -> str:
    """Which top class each variant gives, in words: "50%" for two variants that disagree read as a score."""
    if len(predictions) == 1:
        return f"Agreement between variants: one variant chosen ({predictions[0].top_name})."
    if agreement(predictions) == 1.0:
        return f"Agreement between variants: all {len(predictions)} give **{predictions[0].top_name}**."
    by_class: dict[str, list[str]] = {}
    for p in predictions:
        by_class.setdefault(p.top_name, []).append(p.model.split(" · ")[0])
    return ("Agreement between variants: **they disagree** on the top class: "
            + "; ".join(f"{name} ({', '.join(variants)})" for name, variants in by_class.items()) + ".")
