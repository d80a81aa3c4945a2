"""Our numbers against the paper's claims (Alballa et al., arXiv 2402.14922)."""

from __future__ import annotations

import pandas as pd

PAPER_TUNING_GAIN_IID = 16.0
"""Tuned KD's gain over the best untuned method under IID data, in % (the paper's abstract)."""
PAPER_TUNING_GAIN_NON_IID = 139.0
"""The same, averaged over non-IID scenarios, in % (the paper's abstract)."""
PAPER_FL_ROUND_REDUCTION = 60.6
"""Fewer communication rounds for FedAvg started from a KD-consolidated model, in % (the paper's abstract)."""
UNTUNED_METHODS = ("standard", "dml", "dp")


def tuning_improvement(gains: pd.DataFrame) -> pd.DataFrame:
    """Per scenario: tuned gain, best untuned gain (and which), and the relative improvement in %.

    ``gains`` is a scenario x method table of gains (any unit). The relative improvement is
    ``(tuned - best_untuned) / |best_untuned|``; it is undefined (nan) where the best untuned gain is 0.
    """
    untuned = [m for m in UNTUNED_METHODS if m in gains.columns]
    if "tuned" not in gains.columns or not untuned:
        raise ValueError(f"The gain table needs a 'tuned' column and one of {UNTUNED_METHODS}; it has {list(gains)}")
    best = gains[untuned].max(axis=1)
    base = best.abs().where(best != 0)
    return pd.DataFrame(
        {
            "tuned": gains["tuned"],
            "best untuned": best,
            "best untuned method": gains[untuned].idxmax(axis=1),
            "relative (%)": 100 * (gains["tuned"] - best) / base,
        }
    )
