"""Our numbers against the paper's claims (Alballa et al., arXiv 2402.14922): each claim's effect in accuracy points
(paired by seed), the ratio of mean gains with Fieller's interval (or "undefined"), against comparators fixed
before any test number is read, and a verdict word from one rule (``kdlib.study.effects.verdict``) after Holm's
correction across the claims of a table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kdlib.study.effects import Effect, holm, verdict

PAPER_TUNING_GAIN_IID = 16.0
"""Tuned KD's gain over the best untuned method under IID data, in % (the paper's abstract)."""
PAPER_TUNING_GAIN_NON_IID = 139.0
"""The same, averaged over non-IID scenarios, in % (the paper's abstract)."""
PAPER_FL_ROUND_REDUCTION = 60.6
"""Fewer communication rounds for FedAvg started from a KD-consolidated model, in % (the paper's abstract)."""
PAPER_DEFAULT = "standard"
"""The paper's untuned default: standard KD at the study's fixed (T, alpha)."""
BEST_BY_VALIDATION = "best untuned (by validation)"
"""The other comparator: per scenario, the untuned method with the highest mean *validation* gain."""


def untuned_methods(frame: pd.DataFrame) -> list[str]:
    """The methods of ``frame`` that the registry marks ``untuned`` (a new KD method joins the comparison)."""
    from kdlib.study.methods import methods_with_role

    return list(methods_with_role("untuned", list(dict.fromkeys(frame["method"]))))


def best_untuned_by_validation(frame: pd.DataFrame, scenario: str) -> str:
    """The untuned method with the highest mean validation gain (``val_gain``) over seeds in ``scenario``: chosen
    before, and without, looking at any test number."""
    part = frame[(frame["scenario"] == scenario) & frame["method"].isin(untuned_methods(frame))]
    if part.empty:
        raise ValueError(f"scenario {scenario!r} has no untuned method to compare with")
    if "val_gain" not in part or part["val_gain"].isna().all():
        raise ValueError(
            "the records hold no validation gain (val_gain): they predate the one protocol; run the study again"
        )
    return str(part.groupby("method")["val_gain"].mean().idxmax())


def comparator_for(frame: pd.DataFrame, scenario: str, comparator: str) -> str:
    """The method a comparator names in one scenario (``PAPER_DEFAULT`` or ``BEST_BY_VALIDATION``)."""
    return best_untuned_by_validation(frame, scenario) if comparator == BEST_BY_VALIDATION else comparator


def paired_gains(frame: pd.DataFrame, scenario: str, comparator: str) -> tuple[pd.Series, pd.Series, str]:
    """Per seed, in points: tuned minus the comparator's gain, and the comparator's gain (seeds with both)."""
    part = frame[frame["scenario"] == scenario]
    gains = part.pivot_table(index="seed", columns="method", values="gain") * 100
    method = comparator_for(frame, scenario, comparator)
    if "tuned" not in gains or method not in gains:
        raise ValueError(f"scenario {scenario!r} needs tuned and {method}; it has {list(gains)}")
    paired = gains[["tuned", method]].dropna()
    return (paired["tuned"] - paired[method]).rename(scenario), paired[method].rename(scenario), method


def pooled_effect(frame: pd.DataFrame, scenarios: Sequence[str], comparator: str) -> tuple[Effect, list[str]]:
    """The effect over ``scenarios`` pooled per seed: each seed's mean difference and mean comparator gain over
    the scenarios (seeds with every scenario), then a paired difference and a ratio of the means."""
    parts = [paired_gains(frame, s, comparator) for s in scenarios]
    difference = pd.concat([p[0] for p in parts], axis=1).dropna().mean(axis=1)
    base = pd.concat([p[1] for p in parts], axis=1).dropna().mean(axis=1)
    return Effect.of(difference.tolist(), base.tolist()), [p[2] for p in parts]


@dataclass
class ClaimCheck:
    """One of the paper's claims against our stored runs: the effect (in points, or rounds), the ratio of means
    (%), the comparator, and the verdict after Holm's correction (``apply_holm``)."""

    claim: str
    paper: float
    effect: Effect
    unit: str
    comparator: str
    checked_with: str
    adjusted_p: float = math.nan
    verdict: str = "inconclusive"
    why: str = "not yet judged: call apply_holm on every claim of the table"

    def row(self) -> dict:
        return {
            "claim": self.claim,
            "comparator": self.comparator,
            "effect": f"{self.effect.difference.text()} {self.unit}",
            "ratio of means": self.effect.ratio.text(),
            "paper": f"{self.paper:+.1f}%",
            "n": self.effect.n,
            "Holm p": f"{self.adjusted_p:.2g}" if math.isfinite(self.adjusted_p) else "n/a",
            "verdict": self.verdict,
            "why": self.why,
            "checked with": self.checked_with,
        }


def apply_holm(checks: Sequence[ClaimCheck]) -> list[ClaimCheck]:
    """Holm-adjust the claims' p-values together and give each its verdict (``effects.verdict``)."""
    adjusted = holm([c.effect.p_value for c in checks])
    for check, p in zip(checks, adjusted, strict=True):
        check.adjusted_p = p
        check.verdict, check.why = verdict(check.effect, check.paper, p, unit=check.unit)
    return list(checks)


def _checked_with(frame: pd.DataFrame, scenarios: Sequence[str], methods: Sequence[str]) -> str:
    transfer = ", ".join(sorted(frame["transfer"].dropna().unique())) if "transfer" in frame else "student"
    names = {"student": "the student's own data", "union": "both parties' data", "public": "a public split"}
    compared = ", ".join(f"{s}: {m}" for s, m in zip(scenarios, methods, strict=True))
    return f"transfer set: {names.get(transfer, transfer)}; comparator per scenario: {compared}"


def tuning_claims(frame: pd.DataFrame, iid: Sequence[str] = ("iid",)) -> list[ClaimCheck]:
    """The paper's two tuning claims (+16% IID, +139% non-IID pooled) against the runs of ``frame`` (as
    ``Study.frame()``), each against two comparators fixed before any test number is read: the paper's untuned
    default (standard KD) and the best untuned method by validation gain. Not yet judged: ``apply_holm``."""
    scenarios = list(dict.fromkeys(frame["scenario"]))
    checks = []
    for label, paper, names in (
        ("tuned over untuned, IID", PAPER_TUNING_GAIN_IID, [s for s in scenarios if s in iid]),
        ("tuned over untuned, non-IID (pooled)", PAPER_TUNING_GAIN_NON_IID, [s for s in scenarios if s not in iid]),
    ):
        if not names:
            continue
        for comparator in (PAPER_DEFAULT, BEST_BY_VALIDATION):
            if comparator == PAPER_DEFAULT and PAPER_DEFAULT not in set(frame["method"]):
                continue
            effect, methods = pooled_effect(frame, names, comparator)
            shown = "standard KD (paper's default)" if comparator == PAPER_DEFAULT else comparator
            checks.append(ClaimCheck(label, paper, effect, "points", shown, _checked_with(frame, names, methods)))
    return checks


def improvement_table(frame: pd.DataFrame, scenarios: Sequence[str] | None = None) -> pd.DataFrame:
    """Per scenario and comparator: tuned minus the comparator in points, and the ratio of means or "undefined"."""
    rows = []
    for name in scenarios or list(dict.fromkeys(frame["scenario"])):
        if name not in set(frame["scenario"]):
            continue
        for comparator in (PAPER_DEFAULT, BEST_BY_VALIDATION):
            difference, base, method = paired_gains(frame, name, comparator)
            effect = Effect.of(difference.tolist(), base.tolist())
            rows.append(
                {
                    "scenario": name,
                    "comparator": method if comparator == PAPER_DEFAULT else f"{method} (best by validation)",
                    "comparator gain (points)": effect.base.text(),
                    "tuned - comparator (points)": effect.difference.text(),
                    "ratio of means (%)": effect.ratio.text(),
                    "seeds": effect.n,
                }
            )
    return pd.DataFrame(rows).set_index(["scenario", "comparator"])


def federated_claims(summary: pd.DataFrame, starts: Sequence[str] | None = None) -> list[ClaimCheck]:
    """The paper's 60.6% fewer FedAvg rounds, per KD start, from ``fl.analysis.round_reduction_summary`` rows: per
    seed (a ``seed`` column; without one, all rows are one seed) the rounds saved and FedAvg-from-scratch's rounds,
    each averaged over the scenarios where both reached the target; the claim's ratio is their ratio of means.
    ``starts`` (None): every start whose registry role is ``kd`` (the summary's ``role`` column)."""
    checks = []
    for start in _kd_starts(summary, starts):
        part = summary[summary["start"] == start] if "start" in summary else summary.iloc[:0]
        part = part.assign(saved=part["rounds_random"].astype(float) - part["rounds_to_target"].astype(float))
        part = part.dropna(subset=["saved"])
        if part.empty:
            continue
        by_seed = part.groupby("seed") if "seed" in part else [(0, part)]
        per_seed = pd.DataFrame([{"saved": g["saved"].mean(), "base": g["rounds_random"].mean()} for _, g in by_seed])
        base = per_seed["base"].astype(float).tolist()
        effect = Effect.of(per_seed["saved"].tolist(), base, "FedAvg's rounds from scratch")
        scenarios = ", ".join(dict.fromkeys(part["scenario"]))
        checks.append(
            ClaimCheck(
                f"fewer FedAvg rounds from a KD start ({start})", PAPER_FL_ROUND_REDUCTION, effect, "rounds",
                "FedAvg from scratch", f"a public split (distilled from all clients); scenarios: {scenarios}",
            )
        )  # fmt: skip
    return checks


def _kd_starts(summary: pd.DataFrame, starts: Sequence[str] | None) -> Sequence[str]:
    """``starts``, or (None) every start of the summary whose registry role is ``kd``."""
    if starts is not None:
        return starts
    return tuple(dict.fromkeys(summary.loc[summary["role"] == "kd", "start"])) if "role" in summary else ()


def federated_scenario_table(summary: pd.DataFrame, starts: Sequence[str] | None = None) -> pd.DataFrame:
    """How much each scenario carries the federated claim: per KD start, the rounds saved and the ratio of means on
    each scenario alone and on all the others, computed as ``federated_claims`` does. A reading aid beside the
    verdicts: no verdict word and no Holm correction."""
    scenarios = list(dict.fromkeys(summary["scenario"])) if "scenario" in summary else []
    subsets = []
    for scenario in scenarios:
        alone = summary["scenario"] == scenario
        subsets.append((f"{scenario} alone", summary[alone]))
        if len(scenarios) > 1:
            subsets.append((f"all but {scenario}", summary[~alone]))
    rows = [
        {
            "start": start,
            "scenarios": label,
            "rounds from scratch": check.effect.base.text(),
            "rounds saved": check.effect.difference.text(),
            "ratio of means (%)": check.effect.ratio.text(),
            "seeds": check.effect.n,
        }
        for start in _kd_starts(summary, starts)
        for label, subset in subsets
        for check in federated_claims(subset, [start])
    ]
    return pd.DataFrame(rows).set_index(["start", "scenarios"]) if rows else pd.DataFrame()


def verdict_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per claim and comparator: effect, ratio of means, paper, n, Holm p, verdict and why (Holm applied
    across ``checks`` here)."""
    return pd.DataFrame([c.row() for c in apply_holm(checks)]).set_index(["claim", "comparator"])


def record_device(record: dict) -> str:
    """Where a record ran: its ``device`` ("cpu", "cuda"); a record from before that field ran on the CPU when its
    torch was a CPU-only build, else "unknown"."""
    if record.get("device"):
        return str(record["device"])
    return "cpu" if str(record.get("env", {}).get("torch", "")).endswith("+cpu") else "unknown"


def provenance(records: Sequence[dict]) -> pd.DataFrame:
    """Which code made the records, and where: one row per (commit, dirty, device) with its record count, and the keys
    whose records were made by more than one commit (a rerun by changed code is visible as such)."""
    rows = pd.DataFrame(
        [
            {
                "key": r["key"],
                "commit": str(r.get("env", {}).get("git", ""))[:12] or "unknown",
                "dirty": r.get("env", {}).get("dirty", "unknown"),
                "device": record_device(r),
            }
            for r in records
        ]  # fmt: skip
    )
    if rows.empty:
        return pd.DataFrame(columns=["commit", "dirty", "device", "records", "keys made by several commits"])
    mixed = rows.groupby("key")["commit"].nunique()
    mixed_keys = set(mixed[mixed > 1].index)
    table = rows.groupby(["commit", "dirty", "device"]).agg(records=("key", "size")).reset_index()
    table["keys made by several commits"] = [
        int(rows[(rows["commit"] == c) & rows["key"].isin(mixed_keys)]["key"].nunique()) for c in table["commit"]
    ]
    return table


def provenance_by_part(parts: Mapping[str, Sequence[dict]]) -> pd.DataFrame:
    """``provenance`` of each part's records (e.g. the distillation study, the federated claim), with the part's name
    as the first column."""
    tables = [provenance(records).assign(part=name) for name, records in parts.items()]
    table = pd.concat(tables, ignore_index=True) if tables else provenance([]).assign(part=[])
    return table[["part", *[c for c in table.columns if c != "part"]]]


def markdown_table(table: pd.DataFrame) -> str:
    """A frame as a Markdown table (its index as the first columns)."""
    flat = table.reset_index()
    cells = [[str(v).replace("|", "\\|") for v in row] for row in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


MIN_SEEDS_TO_QUOTE = 5
"""A verdict table goes into a figures folder's README only when every claim has at least this many seeds."""
BLOCK_BEGIN, BLOCK_END = "<!-- verdicts: written by notebooks/08_findings.ipynb -->", "<!-- /verdicts -->"


def save_verdicts(
    table: pd.DataFrame, context: str, name: str = "verdicts", sources: pd.DataFrame | None = None
) -> Path:
    """Write the verdict table, with the line that says where it comes from (and ``sources``, the provenance table),
    as ``<figures>/<name>.md``. Where ``<figures>/README.md`` holds the verdict block's markers, the block between them
    is rewritten too (``readme_block``)."""
    from kdlib.paths import figures_dir

    body = f"{context}\n\n{markdown_table(table)}"
    if sources is not None:
        index = [column for column in ("part", "commit") if column in sources]
        body += f"\nMade by (commit, dirty tree, device):\n\n{markdown_table(sources.set_index(index))}"
    path = figures_dir() / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Verdicts\n\nWritten by notebooks/08_findings.ipynb: {body}")
    readme = path.parent / "README.md"
    if readme.is_file():
        text = readme.read_text()
        if BLOCK_BEGIN in text and BLOCK_END in text:
            readme.write_text(readme_block(text, table, body))
    return path


def readme_block(text: str, table: pd.DataFrame, body: str) -> str:
    """``text`` with its verdict block (between ``BLOCK_BEGIN`` and ``BLOCK_END``) replaced by ``body``, or, while a
    claim has fewer than ``MIN_SEEDS_TO_QUOTE`` seeds, by a line that says no verdict is quoted yet and why."""
    head, rest = text.split(BLOCK_BEGIN, 1)
    _, tail = rest.split(BLOCK_END, 1)
    fewest = int(pd.to_numeric(table["n"]).min()) if len(table) else 0
    if fewest < MIN_SEEDS_TO_QUOTE:
        body = (f"No verdict is quoted yet: the fewest seeds behind a claim is {fewest}, and this project quotes "
                f"verdicts from {MIN_SEEDS_TO_QUOTE} seeds on (08_findings writes the table here then).")  # fmt: skip
    return f"{head}{BLOCK_BEGIN}\n{body.strip()}\n{BLOCK_END}{tail}"
