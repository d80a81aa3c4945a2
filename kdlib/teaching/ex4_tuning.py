"""Exercise 4, tuning: checks of the learner's pick of the best (T, alpha) and of the explanation of the grid,
the guess comparison, and the model answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from kdlib.teaching.common import call_learner, fail, need_callable, ok


def _toy_grid(seed: int) -> list[dict]:
    """A random (T, alpha) grid shaped like ``distill.grid_search``'s, whose test-best cell is not val-best."""
    rng = np.random.default_rng(seed)
    cells = [(t, a) for t in (1.0, 2.0, 4.0, 8.0) for a in (0.1, 0.5, 0.9)]
    val = rng.permutation(len(cells)) / len(cells) * 0.5 + 0.3
    test = rng.permutation(len(cells)) / len(cells) * 0.5 + 0.3
    if test.argmax() == val.argmax():
        test = np.roll(test, 1)
    return [
        {"temperature": t, "alpha": a, "val_acc": float(v), "val_gain": float(v) - 0.45, "test_acc": float(s)}
        for (t, a), v, s in zip(cells, val, test, strict=True)
    ]


def _pair(value: object, name: str, grid_cells: Sequence[tuple[float, float]]) -> tuple[float, float]:
    if isinstance(value, Mapping):
        raise fail(
            f"Your {name} returned a whole grid row (a dict with keys {list(value)}); return the pair "
            "(row['temperature'], row['alpha'])."
        )
    try:
        t, a = value  # type: ignore[misc]
        pair = (float(t), float(a))
    except (TypeError, ValueError):
        raise fail(f"Your {name} returned {value!r}; return a pair (T, alpha), e.g. (4.0, 0.5).") from None
    if pair not in grid_cells:
        if (pair[1], pair[0]) in grid_cells:
            return pair
        temps = sorted({c[0] for c in grid_cells})
        alphas = sorted({c[1] for c in grid_cells})
        raise fail(
            f"(T={pair[0]:g}, alpha={pair[1]:g}) is not a cell of the grid: T is one of {temps} and alpha "
            f"one of {alphas}."
        )
    return pair


def check_pick_best(fn: Callable[[list[dict]], tuple[float, float]]) -> bool:
    """Check ``fn(grid) -> (T, alpha)``: the cell with the best validation accuracy (what ``run_tuned`` picks)."""
    name = "pick_best"
    need_callable(fn, name)
    for seed in range(3):
        grid = _toy_grid(seed)
        cells = [(r["temperature"], r["alpha"]) for r in grid]
        out = call_learner(fn, name, ([dict(r) for r in grid],), f"pick_best(a random grid of {len(grid)} cells)")
        pair = _pair(out, name, cells)
        by_val = max(grid, key=lambda r: r["val_acc"])
        best = (by_val["temperature"], by_val["alpha"])
        if pair == best:
            continue
        row = {(r["temperature"], r["alpha"]): r for r in grid}.get(pair)
        if row is None:  # _pair let it through because (alpha, T) is a cell
            raise fail(f"Your {name} returned (alpha, T) = {pair}; return (T, alpha) in that order.")
        by_test = max(grid, key=lambda r: r["test_acc"])
        if pair == (by_test["temperature"], by_test["alpha"]):
            raise fail(
                f"You picked the cell with the best TEST accuracy (T={pair[0]:g}, alpha={pair[1]:g}). The test set "
                "must never choose hyper-parameters, or the reported accuracy is no longer an honest estimate: choose "
                "by row['val_acc'], the validation split carved from the transfer data."
            )
        worst = min(grid, key=lambda r: r["val_acc"])
        if pair == (worst["temperature"], worst["alpha"]):
            raise fail(
                f"You picked the WORST cell (lowest val_acc, {worst['val_acc']:.3f}): use max, not min "
                "(max(grid, key=lambda row: row['val_acc']))."
            )
        raise fail(
            f"Your pick (T={pair[0]:g}, alpha={pair[1]:g}) has val_acc {row['val_acc']:.3f}; the best cell "
            f"(T={best[0]:g}, alpha={best[1]:g}) has {by_val['val_acc']:.3f}. Choose the row with the largest val_acc."
        )
    return ok(f"{name} picks the best validation cell of 3 random grids, never looking at the test accuracy.")


TUNING_EXPLANATIONS: dict[str, str] = {
    "A": "Small alpha wins: the teacher never saw the student's classes, so on the student's images its soft "
    "targets point at the wrong classes; the less weight on them, the better.",
    "B": "Large T wins: higher temperatures always transfer more dark knowledge.",
    "C": "Large alpha wins: the teacher is the better model, so the most weight on its soft targets is best.",
    "D": "The grid is flat: (T, alpha) makes no real difference here.",
}
"""The choices of ``check_tuning_explanation`` (print them in the notebook; the letter is the answer)."""


def _grid_verdict(grid: Sequence[Mapping[str, float]]) -> tuple[str, dict[float, float], dict[float, float]]:
    """Which explanation the grid supports, with mean validation accuracy per alpha and per T."""
    alphas = sorted({float(r["alpha"]) for r in grid})
    temps = sorted({float(r["temperature"]) for r in grid})
    by_alpha = {a: float(np.mean([r["val_acc"] for r in grid if r["alpha"] == a])) for a in alphas}
    by_temp = {t: float(np.mean([r["val_acc"] for r in grid if r["temperature"] == t])) for t in temps}
    spread = max(r["val_acc"] for r in grid) - min(r["val_acc"] for r in grid)
    if spread < 0.02:
        return "D", by_alpha, by_temp
    return ("A" if by_alpha[alphas[0]] > by_alpha[alphas[-1]] else "C"), by_alpha, by_temp


def check_tuning_explanation(answer: str, grid: Sequence[Mapping[str, float]]) -> bool:
    """Check the letter of :data:`TUNING_EXPLANATIONS` the learner chose against what ``grid`` shows."""
    if answer is Ellipsis or answer is None:
        raise fail('explanation is not written yet: replace `...` with the letter of your answer, e.g. "A".')
    letter = str(answer).strip().upper()
    if letter not in TUNING_EXPLANATIONS:
        raise fail(f"explanation = {answer!r} is not one of the letters {', '.join(TUNING_EXPLANATIONS)}.")
    right, by_alpha, by_temp = _grid_verdict(grid)
    alphas, temps = list(by_alpha), list(by_temp)
    per_alpha = ", ".join(f"alpha={a:g}: {100 * v:.1f}%" for a, v in by_alpha.items())
    per_temp = ", ".join(f"T={t:g}: {100 * v:.1f}%" for t, v in by_temp.items())
    evidence = f"Mean validation accuracy per alpha: {per_alpha}; per T: {per_temp}."
    if letter == right:
        return ok(f"{letter}: {TUNING_EXPLANATIONS[letter]} {evidence}")
    if right == "D":
        reason = (
            "The grid is flat: every cell scores within 2 points of the others, so no choice of (T, alpha) stands "
            "out here."
        )
    elif letter == "B" and max(by_temp, key=by_temp.get) == temps[-1]:
        reason = (
            f"The largest T does score best on average here (T={temps[-1]:g}: {100 * by_temp[temps[-1]]:.1f}%), but "
            "'always' is too strong, and the bigger differences run along alpha: compare the columns. As T grows "
            "without bound the soft targets become uniform and carry nothing."
        )
    elif letter == "B":
        reason = (
            f"Look along the T axis: the largest T is not where the grid peaks (T={temps[-1]:g} averages "
            f"{100 * by_temp[temps[-1]]:.1f}%, T={temps[0]:g} {100 * by_temp[temps[0]]:.1f}%). Softer targets carry "
            "more of the teacher's view, which only helps when that view is right for these images."
        )
    elif letter == "D":
        reason = "The grid is not flat: its cells differ a lot. Compare the columns (alpha) of the heatmap."
    elif letter == "C":
        reason = (
            f"More weight on the teacher scores worse here (alpha={alphas[-1]:g} averages "
            f"{100 * by_alpha[alphas[-1]]:.1f}% vs {100 * by_alpha[alphas[0]]:.1f}% at alpha={alphas[0]:g}). Which "
            "classes did the teacher pre-train on, and which images does the student distil on?"
        )
    else:
        reason = (
            f"Less weight on the teacher scores worse here (alpha={alphas[0]:g} averages "
            f"{100 * by_alpha[alphas[0]]:.1f}% vs {100 * by_alpha[alphas[-1]]:.1f}% at alpha={alphas[-1]:g}): the "
            "teacher's soft targets help on these images."
        )
    raise fail(f"Not what the grid shows. {reason} {evidence}")


def compare_guess(guess: tuple[float, float], grid: Sequence[Mapping[str, float]]) -> None:
    """Print how a (T, alpha) guessed before the run fares on the grid (a guess may be wrong: this never fails)."""
    ranked = sorted(grid, key=lambda r: -r["val_acc"])
    best = ranked[0]
    try:
        t, a = (float(v) for v in guess)
    except (TypeError, ValueError):
        print(f"No guess recorded ({guess!r}); the best cell is T={best['temperature']:g}, alpha={best['alpha']:g}.")
        return
    cell = next((r for r in ranked if r["temperature"] == t and r["alpha"] == a), None)
    if cell is None:
        print(
            f"Your guess (T={t:g}, alpha={a:g}) is not a grid cell; the best cell is T={best['temperature']:g}, "
            f"alpha={best['alpha']:g} ({100 * best['val_acc']:.1f}% validation accuracy)."
        )
        return
    rank = ranked.index(cell) + 1
    print(
        f"Your guess (T={t:g}, alpha={a:g}): {100 * cell['val_acc']:.1f}% validation accuracy, rank {rank} of "
        f"{len(grid)}; the best cell (T={best['temperature']:g}, alpha={best['alpha']:g}) scores "
        f"{100 * best['val_acc']:.1f}%."
    )


# ---------------------------------------------------------------------------------------------- model answers
def solution_pick_best(grid: list[dict]) -> tuple[float, float]:
    """The (T, alpha) of the row with the best validation accuracy; the test accuracy is never looked at."""
    best = max(grid, key=lambda row: row["val_acc"])
    return best["temperature"], best["alpha"]


def solution_tuning_explanation(grid: Sequence[Mapping[str, float]]) -> str:
    """The letter the grid supports (compare the mean validation accuracy of the smallest and largest alpha)."""
    return _grid_verdict(grid)[0]
