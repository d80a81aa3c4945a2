"""What ``benchmarks/grid_speed.py`` prints from the replay of the tuned path, on constructed replays: the hit rate
with its interval, the noise floor (the grid's own choice at another seed) and the paired test gains."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from kdlib.paths import PROJECT_ROOT


def _load_benchmark(name: str):
    """A benchmark script as a module (they live outside the package, beside one another)."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grid_speed():
    yield _load_benchmark("grid_speed")
    sys.modules.pop("grid_speed_under_test", None)


def _replay(accs: tuple[float, float], chosen: int, gains: tuple[float, float]) -> dict:
    rows = [
        {"temperature": 1.0, "alpha": alpha, "val_acc": acc, "test_gain": gain}
        for alpha, acc, gain in zip((0.1, 0.9), accs, gains, strict=True)
    ]
    best = max(rows, key=lambda r: r["val_acc"])
    return {"grid": dict(best), "halving": dict(rows[chosen]), "rows": rows}


def test_replay_report_counts_hits_the_noise_floor_and_paired_gains(grid_speed, capsys) -> None:
    replays = [
        _replay((0.50, 0.40), 1, (0.02, 0.00)),  # halving 10 points below the grid's best: a miss
        _replay((0.45, 0.50), 1, (0.01, 0.03)),  # the grid's best itself: a hit
        _replay((0.600, 0.598), 1, (0.04, 0.02)),  # 0.2 points below: a hit
    ]
    grid_speed._report_halving({"replay": {"replays": replays}}, None)
    out = capsys.readouterr().out
    assert "within 0.5 validation points of the grid's best in 2/3" in out
    assert "gaps 10.00, 0.00, 0.20" in out
    # seed 0's best (alpha 0.1) misses at seed 1 and hits at seed 2; seed 1's (0.9) misses at 0, hits at 2;
    # seed 2's (0.1) hits at 0, misses at 1
    assert "in 3/6 seed pairs" in out
    # grid's choice gains 2, 3, 4 points; halving's 0, 3, 2: paired differences -2, 0, -2
    assert "grid's choice +3.00 ±" in out and "halving's choice +1.67 ±" in out and "halving minus grid -1.33 ±" in out


def test_without_each_seeds_grid_the_noise_floor_is_left_out(grid_speed, capsys) -> None:
    replays = [_replay((0.5, 0.4), 0, (0.0, 0.0))]
    grid_speed._report_halving({"replay": {"replays": replays}}, None)
    out = capsys.readouterr().out
    assert "1/1" in out and "noise floor" not in out


def _stored_scores(path, seeds: int = 3, steps: int = 6) -> None:
    """A 3 x 3 grid whose point 4 ends best; early on point 0 leads, so a schedule that stops too early misses 4."""
    import gzip
    import json

    entries = []
    for seed in range(seeds):
        acc = [[0.5 + (0.05 if i == 0 and k < 4 else 0.0) + (0.02 * k if i == 4 else 0.0) for i in range(9)]
               for k in range(steps)]  # fmt: skip
        rows = [
            {"temperature": t, "alpha": a, "val_acc": acc[-1][i], "test_gain": 0.01 * (i == 4) + 0.001 * seed}
            for i, (t, a) in enumerate((t, a) for t in (1.0, 4.0, 16.0) for a in (0.1, 0.5, 0.9))
        ]
        entries.append({"seed": seed, "total": steps, "acc": acc, "loss": [[1.0] * 9] * steps, "rows": rows})
    with gzip.open(path, "wt") as handle:
        json.dump({"scale": "smoke", "scenario": "made-up", "seeds": entries}, handle)


@pytest.fixture(scope="module")
def halving_schedules():
    yield _load_benchmark("halving_schedules")
    sys.modules.pop("halving_schedules_under_test", None)


def test_schedule_analysis_replays_the_default_and_finds_what_keeps_the_late_winner(
    halving_schedules, tmp_path, capsys
) -> None:
    stored = tmp_path / "smoke-made-up.json.gz"
    _stored_scores(stored)
    halving_schedules.main(["--analyse", str(stored)])
    out = capsys.readouterr().out
    # 9 points, 6 steps: the default stops at step 1 (keep 3: point 0, then 1 and 2 on ties) and 2 (keep 1), so
    # point 4, best at the end by 10 points, is lost on every seed; the grid's choice is the same on every seed
    line = next(text for text in out.splitlines() if text.startswith("smoke-made-up"))
    assert " 0/3 (" in line and "noise floor 6/6 seed pairs" in line
    assert "+1.10 ± " in line  # the grid's choice: 1 point plus 0, 0.1, 0.2 for the seeds
    # with more budget some searched schedule keeps point 4 on every seed
    assert any(text.strip().startswith("smoke-made-up") and " 3/3," in text for text in out.splitlines())
