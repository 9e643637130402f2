"""The dashboard's sidebar filters and the points its chart draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.store.choosing import pareto_front


@dataclass(frozen=True)
class Filters:
    """The dashboard's shared sidebar filters; empty tuples mean "all"."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    quantizations: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()


def apply_filters(df: pd.DataFrame, f: Filters) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for col, wanted in (("dataset", f.datasets), ("model", f.models), ("pruning_ratio", f.ratios),
                        ("quantization", f.quantizations), ("runtime", f.runtimes)):
        if wanted:
            mask &= df[col].isin(wanted)
    return df[mask]


def chart_points(df: pd.DataFrame, *, x: str, y: str, limit: int, keep: pd.Series | None = None) -> pd.DataFrame:
    """At most about ``limit`` rows worth drawing: all of ``df`` when it fits; otherwise the Pareto front, the rows
    ``keep`` marks (baselines, the served variant) and the best ``y`` of each architecture, family, quantization
    mode and pruning level, so no kind of variant disappears from the chart. A browser draws 10,000 SVG markers
    in seconds, and no one reads them."""
    if len(df) <= limit:
        return df
    config = [c for c in ("model", "family", "quantization", "pruning_ratio") if c in df.columns]
    best = df.dropna(subset=[y]).sort_values(y, ascending=False).drop_duplicates(config).head(limit)
    extra = [pareto_front(df, x=x, y=y)] + ([df[keep]] if keep is not None else [])
    return pd.concat([best, *extra]).loc[lambda d: ~d.index.duplicated()]
