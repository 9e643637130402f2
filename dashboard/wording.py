"""Sentences the dashboard's pages share (numbers said in words a reader cannot misread)."""

from __future__ import annotations

import pandas as pd

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


def short_names(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> a short label, e.g. ``pruned-0.5-static (…c307)``, the tail of the training run it comes from (a
    trained run's own); the model is added where several are shown, the full run id where two labels would clash."""
    several = df["model"].nunique() > 1

    def label(r) -> str:
        source = r.parent_run_id if isinstance(r.parent_run_id, str) and r.parent_run_id else r.run_id
        return f"{r.model + ' ' if several else ''}{r.variant} (…{source.split('.')[0][-4:]})"

    names = {r.run_id: label(r) for r in df.itertuples()}
    clashes = pd.Series(names).duplicated(keep=False)
    return {run_id: f"{name} {run_id}" if clashes[run_id] else name for run_id, name in names.items()}
