"""The prose around a verdict block quotes the block: its seed count and every effect and ratio it states.

The block between the verdict markers is written by 08_findings; the sentences that explain it are written by
hand and rewritten as seeds come. These tests catch a sentence left at an older seed count's numbers, and a number
that neither the block nor ``figures/full/prose_numbers.py`` (which recomputes the rest from the store) holds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.study.config import scale_config
from kdlib.study.findings import BLOCK_BEGIN, BLOCK_END

ROOT = Path(__file__).resolve().parents[1]
MAIN_FINDINGS = ROOT / "figures" / "full" / "README.md"
PUBLIC_FINDINGS = ROOT / "figures" / "full" / "public_teacher" / "README.md"


def normalise(text: str) -> str:
    """One spelling for numbers: ASCII minus, single spaces, ``[-13%, +9%]`` as ``[-13, +9]``."""
    text = text.replace("\u2212", "-")
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\[([+-]?[\d.]+)%, ([+-]?[\d.]+)%\]", r"[\1, \2]", text)


def verdict_rows(readme: str) -> list[dict[str, str]]:
    """The rows of the verdict table inside the block (header names as keys)."""
    block = readme.split(BLOCK_BEGIN, 1)[1].split(BLOCK_END, 1)[0]
    table = block[block.index("| claim |"):].split("\n\n", 1)[0].strip().splitlines()  # up to the blank line

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    return [dict(zip(cells(table[0]), cells(line), strict=True)) for line in table[2:]]  # [1]: the |---| line


def effect_number(effect: str) -> str:
    """``'+3.80 ± 0.83 points'`` -> ``'3.80 ± 0.83'`` (the sign is spelt in words in some sentences)."""
    found = re.search(r"[+-]?([\d.]+ ± [\d.]+)", effect)
    assert found, effect
    return found.group(1)


def ratio_interval(ratio: str) -> str | None:
    """``'+130% [+84, +208]'`` -> ``'[+84, +208]'``; None for an undefined ratio."""
    found = re.search(r"\[[+-]?[\d.]+, [+-]?[\d.]+\]", ratio)
    return found.group(0) if found else None


def is_federated(row: dict[str, str]) -> bool:
    """The federated claim's rows, whose seeds are the federated study's, not the distillation study's."""
    return "FedAvg" in row["claim"]


def check_prose_quotes_block(readme: str, prose: str, *, quote_ratios: bool) -> None:
    rows = verdict_rows(readme)
    study_seeds = {row["n"] for row in rows if not is_federated(row)}
    assert study_seeds, "no verdict rows"
    (n,) = study_seeds
    prose = normalise(prose)
    for row in filter(is_federated, rows):  # the federated claim's own n; its numbers are checked like the others'
        assert f"federated claim's {row['n']} seeds" in prose, f"the prose does not give the federated n {row['n']}"
    assert f"What the {n} seeds show" in prose, f"the prose does not say it reads {n} seeds"
    stale = sorted(set(re.findall(r"(\d+) seeds show", prose)) - {n})
    assert not stale, f"the prose names {stale} seeds beside the block's {n}"
    for row in rows:
        quoted = effect_number(normalise(row["effect"]))
        assert quoted in prose, f"{row['claim']} / {row['comparator']}: the block's {quoted} is not in the prose"
        interval = ratio_interval(normalise(row["ratio of means"]))
        if quote_ratios and interval is not None:
            assert interval in prose, f"{row['claim']} / {row['comparator']}: ratio {interval} is not in the prose"


def test_the_main_study_prose_quotes_its_verdict_block() -> None:
    readme = MAIN_FINDINGS.read_text()
    check_prose_quotes_block(readme, readme.split("## Verdicts", 1)[0], quote_ratios=True)


def test_the_top_readme_quotes_the_main_study_block() -> None:
    all_rows = verdict_rows(MAIN_FINDINGS.read_text())
    rows = [row for row in all_rows if not is_federated(row)]
    (n,) = {row["n"] for row in rows}
    top = normalise((ROOT / "README.md").read_text())
    claims, federated = top.split("**The tuning claims**", 1)[1].split("**The federated claim**", 1)
    federated = federated.split("## ", 1)[0]
    for row in (row for row in all_rows if is_federated(row)):
        assert effect_number(normalise(row["effect"])) in federated and f"{row['n']} seeds" in federated, row
    assert f"`full`, {n} seeds" in claims and f"full scale, {n} seeds" in claims
    if int(n) < scale_config("full").seeds:  # the seed count is said to be partial until every seed is in
        assert f"{n} seeds so far" in top and f"({n} so far)" in top
    else:
        assert "so far" not in top and f"images, {n} seeds)" in top and f"(all {n})" in top
    for row in rows:
        if (row["claim"].endswith("IID") and row["comparator"].startswith("standard")) or "best" in row["comparator"]:
            assert effect_number(normalise(row["effect"])) in claims, row


def test_the_public_teacher_prose_names_its_seed_count() -> None:
    readme = PUBLIC_FINDINGS.read_text()
    (n,) = {row["n"] for row in verdict_rows(readme)}
    assert f"({n} seeds)" in readme.splitlines()[0]
    assert f"What the {n} seeds show" in readme


@pytest.mark.parametrize(
    ("prose", "message"),
    [
        ("What the 8 seeds show: +3.80 ± 1.23 points, [+84, +208]; -0.58 ± 0.46, [-44, -6]", "3.80 ± 0.83"),
        ("What the 7 seeds show: +3.80 ± 0.83 points, [+84, +208]; -0.58 ± 0.46, [-44, -6]", "8 seeds"),
        ("What the 8 seeds show: +3.80 ± 0.83 points, [+84, +200]; -0.58 ± 0.46, [-44, -6]", "[+84, +208]"),
    ],
)
def test_a_stale_sentence_is_caught(prose: str, message: str) -> None:
    table = (
        "| claim | comparator | effect | ratio of means | n |\n|---|---|---|---|---|\n"
        "| tuned over untuned, non-IID (pooled) | best untuned (by validation) | +3.80 ± 0.83 points "
        "| +130% [+84, +208] | 8 |\n"
        "| tuned over untuned, IID | best untuned (by validation) | -0.58 ± 0.46 points | -27% [-44%, -6%] | 8 |\n"
    )
    readme = f"{prose}\n{BLOCK_BEGIN}\n{table}{BLOCK_END}\n"
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_prose_quotes_block(readme, prose, quote_ratios=True)
    good = "What the 8 seeds show: +3.80 ± 0.83 points, [+84%, +208%]; -0.58 ± 0.46, [-44, -6]"
    check_prose_quotes_block(f"{good}\n{BLOCK_BEGIN}\n{table}{BLOCK_END}\n", good, quote_ratios=True)


def test_the_federated_rows_are_quoted_with_their_own_seed_count() -> None:
    table = (
        "| claim | comparator | effect | ratio of means | n |\n|---|---|---|---|---|\n"
        "| tuned over untuned, IID | best untuned (by validation) | -0.58 ± 0.46 points | -27% [-44%, -6%] | 8 |\n"
        "| fewer FedAvg rounds from a KD start (kd_dp) | FedAvg from scratch | +19.80 ± 2.87 rounds "
        "| +61% [+56, +66] | 5 |\n"
    )
    study = "What the 8 seeds show: -0.58 ± 0.46, [-44, -6]."
    for prose, message in [
        (f"{study} Over 5 seeds, 19.80 ± 2.87 rounds, [+56, +66].", "federated n 5"),
        (f"{study} The federated claim's 5 seeds: 19.80 ± 2.87 rounds.", "[+56, +66]"),
        (f"{study} The federated claim's 5 seeds: 19.80 ± 2.80 rounds, [+56, +66].", "19.80 ± 2.87"),
    ]:
        with pytest.raises(AssertionError, match=re.escape(message)):
            check_prose_quotes_block(f"{prose}\n{BLOCK_BEGIN}\n{table}{BLOCK_END}\n", prose, quote_ratios=True)
    good = f"{study} The federated claim's 5 seeds: 19.80 ± 2.87 rounds, [+56, +66]."
    check_prose_quotes_block(f"{good}\n{BLOCK_BEGIN}\n{table}{BLOCK_END}\n", good, quote_ratios=True)


PLUS_MINUS = re.compile(r"([+-]?\d+\.(\d+)) ± (\d+\.\d+)")


def prose_numbers(*parts: str) -> list[tuple[float, float]]:
    """Every ``mean ± half-width`` that ``figures/full/prose_numbers.py`` prints for ``parts``, from the store."""
    env = {**os.environ, "KDLIB_RESULTS": str(MAIN_FINDINGS.parent)}
    found = []
    for part in parts:
        done = subprocess.run([sys.executable, "figures/full/prose_numbers.py", "--part", part], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        found += [(float(mean), float(half)) for mean, _, half in PLUS_MINUS.findall(done.stdout)]
    return found


def unsourced_numbers(readme: str, sources: list[tuple[float, float]]) -> list[str]:
    """The ``mean ± half-width`` pairs of the prose above the verdicts that neither the verdict block nor ``sources``
    holds, at the prose's precision; a sentence of history ("With 5 seeds ...") may quote older numbers."""
    prose = re.sub(r"With \d+ seeds[^.]*\.", "", normalise(readme.split("## Verdicts", 1)[0]))
    block_text = normalise(readme.split(BLOCK_BEGIN, 1)[1].split(BLOCK_END, 1)[0])
    block = [(float(mean), float(half)) for mean, _, half in PLUS_MINUS.findall(block_text)]
    missing = []
    for mean, decimals, half in PLUS_MINUS.findall(prose):
        step = 0.5 * 10 ** -len(decimals) + 0.005  # the prose's rounding of a number printed to 2 decimals
        if not any(abs(abs(m) - abs(float(mean))) <= step and abs(h - float(half)) <= step for m, h in block + sources):
            missing.append(f"{mean} ± {half}")
    return missing


@pytest.mark.parametrize(("readme", "parts"), [(MAIN_FINDINGS, ("main", "federated")),
                                               (PUBLIC_FINDINGS, ("public_teacher",))])  # fmt: skip
def test_every_number_of_the_prose_comes_from_the_store(readme: Path, parts: tuple[str, ...]) -> None:
    text, sources = readme.read_text(), prose_numbers(*parts)
    assert unsourced_numbers(text, sources) == []
    assert unsourced_numbers(f"{text}\nStandard KD gains 9.99 ± 0.01 points.", sources) == []  # below the verdicts
    planted = text.replace("## Verdicts", "A stale sentence: 9.99 ± 0.01 points.\n\n## Verdicts", 1)
    assert unsourced_numbers(planted, sources) == ["9.99 ± 0.01"]
    rounded = text.replace("## Verdicts", f"So: {sources[0][0]:.1f} ± {sources[0][1]:.1f} points.\n\n## Verdicts", 1)
    assert unsourced_numbers(rounded, sources) == []  # a printed number, rounded to 1 decimal, is still sourced
