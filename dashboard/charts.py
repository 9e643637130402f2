"""Chart helpers shared by the pages."""

from __future__ import annotations

import math


def log_ticks(values, unit: str) -> tuple[list[float], list[str]]:
    """Tick positions on a 1-2-5 sequence covering ``values`` and labels that carry their value and unit
    ("0.2 MB", "2 MB", "10 ms"): plotly's own log ticks print "2" for both 0.2 and 2."""
    finite = [float(v) for v in values if v is not None and v == v and float(v) > 0]
    if not finite:
        return [], []
    low, high = min(finite), max(finite)
    ticks = []
    for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            tick = mantissa * 10.0 ** exponent
            if low / 1.5 <= tick <= high * 1.5:
                ticks.append(tick)
    if len(ticks) < 2:  # a narrow range: its ends
        ticks = sorted({low, high})
    return ticks, [f"{t:.3g} {unit}" for t in ticks]
