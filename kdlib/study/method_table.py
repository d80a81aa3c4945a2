"""One row per method: what it gains, how well calibrated the student is after it, and what that student costs,
each over seeds (per seed the mean over scenarios, then the mean and 95% t-interval across seeds)."""

from __future__ import annotations

import pandas as pd

from kdlib.study.methods import method_label
from kdlib.study.stats import mean_interval

COLUMNS: dict[str, tuple[str, float, int]] = {
    "gain": ("gain (points)", 100.0, 2),
    "ece_after": ("ECE after (points, 15 bins)", 100.0, 2),
    "nll_after": ("NLL after (nats)", 1.0, 3),
    "agreement_after": ("agrees with teacher (%)", 100.0, 1),
    "params": ("parameters", 1.0, 0),
    "size_bytes": ("size (KiB, safetensors)", 1 / 1024, 1),
    "latency_b1_ms": ("CPU ms / image, batch 1", 1.0, 3),
    "latency_b64_ms": ("CPU ms / image, batch 64", 1.0, 4),
}
"""Record metric -> (column title, scale, decimals)."""


def method_table(frame: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """``frame`` (``Study.frame()``) as one row per method of ``"mean ± half-width"`` cells over seeds, for each
    of ``COLUMNS`` the records hold; the ``seeds`` column gives n. Latency is per image (batch time / batch)."""
    chosen = methods or list(dict.fromkeys(frame["method"]))
    present = [c for c in COLUMNS if c in frame]
    rows = []
    for method in chosen:
        part = frame[frame["method"] == method]
        if part.empty:
            continue
        per_seed = part.groupby("seed")[present].mean()
        row = {"method": method_label(method)}
        for column in present:
            title, scale, digits = COLUMNS[column]
            interval = mean_interval(per_seed[column] * scale)
            same = interval.has_interval and interval.half_width == 0  # a size: the same for every seed
            row[title] = f"{interval.mean:.{digits}f}" if same else interval.text(digits, signed=column == "gain")
        row["seeds"] = len(per_seed)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
