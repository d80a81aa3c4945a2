"""Tests for kdlib.teaching and the exercise notebooks: every check passes on the model answer, rejects typical
mistakes with a helpful message, and every exercise notebook runs with solutions (and stops kindly without)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib import teaching
from kdlib.teaching import TeachingCheckError

EXERCISES = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
NOTEBOOKS = ("ex1_kd_loss", "ex2_temperature", "ex3_partitions", "ex4_tuning")


# ------------------------------------------------------------------------------------------- wrong soft targets
def soft_unsoftened(z, T):
    return torch.softmax(z, dim=-1)


def soft_multiplied(z, T):
    return torch.softmax(z * T, dim=-1)


def soft_log(z, T):
    return torch.log_softmax(z / T, dim=-1)


def soft_axis0(z, T):
    return torch.softmax(z / T, dim=0)


def soft_axis1(z, T):
    return torch.softmax(z / T, dim=1)


def soft_divided_probs(z, T):
    return torch.softmax(z, dim=-1) / T


def soft_unnormalised(z, T):
    return torch.exp(z / T)


def soft_naive_exp(z, T):
    e = torch.exp(z / T)
    return e / e.sum(dim=-1, keepdim=True)


def soft_max_only(z, T):
    return torch.softmax(z / T, dim=-1).max(dim=-1).values


def soft_numpy(z, T):
    return torch.softmax(z / T, dim=-1).numpy()


def soft_no_return(z, T):
    torch.softmax(z / T, dim=-1)


def not_written(*args):
    raise NotImplementedError("Your turn")


# ------------------------------------------------------------------------------------------------ wrong KD losses
def _kl(s, t, T, reduction="batchmean"):
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction=reduction)


def kd_no_t2(s, t, y, T, a):
    return a * _kl(s, t, T) + (1 - a) * F.cross_entropy(s, y)


def kd_t2_twice(s, t, y, T, a):
    return a * T**4 * _kl(s, t, T) + (1 - a) * F.cross_entropy(s, y)


def kd_alpha_swapped(s, t, y, T, a):
    return (1 - a) * T**2 * _kl(s, t, T) + a * F.cross_entropy(s, y)


def kd_reverse(s, t, y, T, a):
    kl = F.kl_div(F.log_softmax(t.detach() / T, -1), F.softmax(s / T, -1), reduction="batchmean")
    return a * T**2 * kl + (1 - a) * F.cross_entropy(s, y)


def kd_ce_softened(s, t, y, T, a):
    return a * T**2 * _kl(s, t, T) + (1 - a) * F.cross_entropy(s / T, y)


def kd_unsoftened(s, t, y, T, a):
    return a * T**2 * _kl(s, t, 1.0) + (1 - a) * F.cross_entropy(s, y)


def kd_negative_kl(s, t, y, T, a):
    pt = F.softmax(t.detach() / T, -1)
    kl = (pt * (F.log_softmax(s / T, -1) - torch.log(pt))).sum(-1).mean()
    return a * T**2 * kl + (1 - a) * F.cross_entropy(s, y)


def kd_mean_reduction(s, t, y, T, a):
    with warnings.catch_warnings():  # torch warns that 'mean' is not the true KL: the very mistake
        warnings.simplefilter("ignore", UserWarning)
        return a * T**2 * _kl(s, t, T, reduction="mean") + (1 - a) * F.cross_entropy(s, y)


def kd_sum_reduction(s, t, y, T, a):
    return a * T**2 * _kl(s, t, T, reduction="sum") + (1 - a) * F.cross_entropy(s, y)


def kd_probs_in_kl_div(s, t, y, T, a):
    kl = F.kl_div(F.softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="batchmean")
    return a * T**2 * kl + (1 - a) * F.cross_entropy(s, y)


def kd_per_sample(s, t, y, T, a):
    kl = _kl(s, t, T, reduction="none").sum(-1)
    return a * T**2 * kl + (1 - a) * F.cross_entropy(s, y, reduction="none")


def kd_not_detached(s, t, y, T, a):
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    return a * T**2 * kl + (1 - a) * F.cross_entropy(s, y)


def kd_item(s, t, y, T, a):
    return (a * T**2 * _kl(s, t, T) + (1 - a) * F.cross_entropy(s, y)).item()


def kd_mse_hard(s, t, y, T, a):
    hard = F.mse_loss(F.softmax(s, -1), F.one_hot(y, s.shape[-1]).to(s.dtype))
    return a * T**2 * _kl(s, t, T) + (1 - a) * hard


# --------------------------------------------------------------------------------------------------- wrong entropy
def entropy_no_minus(p):
    return torch.xlogy(p, p).sum(-1)


def entropy_bits(p):
    return -(p * torch.log2(p)).sum(-1)


def entropy_class_mean(p):
    return -torch.xlogy(p, p).mean(-1)


def entropy_batch_mean(p):
    return -torch.xlogy(p, p).sum(-1).mean()


def entropy_wrong_axis(p):
    return -torch.xlogy(p, p).sum(0)


def entropy_log_of_zero(p):
    return -(p * torch.log(p)).sum(-1)


# ------------------------------------------------------------------------------------------ wrong Dirichlet splits
def _per_class(labels, num_parties, alpha, rng, cut):
    parts = [[] for _ in range(num_parties)]
    for cls in np.unique(labels):
        samples = rng.permutation(np.flatnonzero(labels == cls))
        for party, piece in enumerate(cut(samples, rng.dirichlet([alpha] * num_parties))):
            parts[party].append(piece)
    return [np.sort(np.concatenate(p)) for p in parts]


def _retry(draw):
    for _ in range(1000):
        split = draw()
        if min(len(p) for p in split) > 0:
            return split
    raise RuntimeError("no split")


def _cumsum_cut(samples, shares):
    return np.split(samples, (np.cumsum(shares)[:-1] * len(samples)).astype(int))


def split_floor(labels, num_parties, alpha, seed):
    rng = np.random.default_rng(seed)

    def cut(samples, shares):
        counts = np.floor(shares * len(samples)).astype(int)
        starts = np.concatenate([[0], np.cumsum(counts)])
        return [samples[starts[i] : starts[i + 1]] for i in range(num_parties)]

    return _retry(lambda: _per_class(labels, num_parties, alpha, rng, cut))


def split_with_replacement(labels, num_parties, alpha, seed):
    rng = np.random.default_rng(seed)

    def cut(samples, shares):
        counts = np.maximum(1, np.round(shares * len(samples)).astype(int))
        return [rng.choice(samples, size=c, replace=True) for c in counts]

    return _retry(lambda: _per_class(labels, num_parties, alpha, rng, cut))


def split_inverse_alpha(labels, num_parties, alpha, seed):
    rng = np.random.default_rng(seed)
    return _retry(lambda: _per_class(labels, num_parties, 1 / alpha, rng, _cumsum_cut))


def split_unseeded(labels, num_parties, alpha, seed):
    rng = np.random.default_rng()
    return _retry(lambda: _per_class(labels, num_parties, alpha, rng, _cumsum_cut))


def split_ignores_seed(labels, num_parties, alpha, seed):
    rng = np.random.default_rng(0)
    return _retry(lambda: _per_class(labels, num_parties, alpha, rng, _cumsum_cut))


def split_one_draw(labels, num_parties, alpha, seed):
    rng = np.random.default_rng(seed)

    def draw():
        shares = rng.dirichlet([alpha] * num_parties)
        return [np.sort(p) for p in _cumsum_cut(rng.permutation(len(labels)), shares)]

    return _retry(draw)


def split_iid(labels, num_parties, alpha, seed):
    return [np.sort(p) for p in np.array_split(np.random.default_rng(seed).permutation(len(labels)), num_parties)]


def split_labels(labels, num_parties, alpha, seed):
    parts = split_iid(labels, num_parties, alpha, seed)
    return [labels[p] for p in parts]


def split_masks(labels, num_parties, alpha, seed):
    parts = split_iid(labels, num_parties, alpha, seed)
    return [np.isin(np.arange(len(labels)), p) for p in parts]


def split_no_retry(labels, num_parties, alpha, seed):
    return _per_class(labels, num_parties, alpha, np.random.default_rng(seed), _cumsum_cut)


# ------------------------------------------------------------------------------------------------ wrong tuning picks
def pick_by_test(grid):
    best = max(grid, key=lambda r: r["test_acc"])
    return best["temperature"], best["alpha"]


def pick_worst(grid):
    best = min(grid, key=lambda r: r["val_acc"])
    return best["temperature"], best["alpha"]


def pick_swapped(grid):
    best = max(grid, key=lambda r: r["val_acc"])
    return best["alpha"], best["temperature"]


def pick_row(grid):
    return max(grid, key=lambda r: r["val_acc"])


def pick_first(grid):
    return grid[0]["temperature"], grid[0]["alpha"]


# ---------------------------------------------------------------------------------------------- fixtures for answers
COUNTS = {
    "α = 100": np.array([[30, 31, 29, 30, 30], [30, 29, 31, 30, 30]]),
    "α = 0.1": np.array([[58, 2, 40, 1, 60], [2, 58, 20, 59, 0]]),
}
HEATMAP = lambda answers: teaching.check_heatmap_reading(answers, COUNTS, focus_class=3)  # noqa: E731


def _grid(scores: dict[tuple[float, float], float]) -> list[dict]:
    return [
        {"temperature": t, "alpha": a, "val_acc": v, "val_gain": v - 0.5, "test_acc": 0.5}
        for (t, a), v in scores.items()
    ]


SMALL_ALPHA_WINS = _grid({(t, a): 0.9 - a / 2 - t / 100 for t in (1.0, 4.0, 16.0) for a in (0.25, 0.5, 0.9)})
FLAT = _grid({(t, a): 0.8 + 0.001 * a for t in (1.0, 4.0) for a in (0.25, 0.9)})
EXPLAIN = lambda letter: teaching.check_tuning_explanation(letter, SMALL_ALPHA_WINS)  # noqa: E731
EXPLAIN_FLAT = lambda letter: teaching.check_tuning_explanation(letter, FLAT)  # noqa: E731
PREDICT = teaching.check_temperature_prediction
RIGHT_PREDICTION = teaching.solution("temperature_prediction")


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize(
    ("check", "answer"),
    [
        (teaching.check_soft_targets, teaching.solution("soft_targets")),
        (teaching.check_kd_loss, teaching.solution("kd_loss")),
        (teaching.check_entropy, teaching.solution("entropy")),
        (PREDICT, RIGHT_PREDICTION),
        (teaching.check_dirichlet_split, teaching.solution("dirichlet_split")),
        (HEATMAP, teaching.solution("heatmap_answers")(COUNTS)),
        (teaching.check_pick_best, teaching.solution("pick_best")),
        (EXPLAIN, teaching.solution("tuning_explanation")(SMALL_ALPHA_WINS)),
        (EXPLAIN_FLAT, teaching.solution("tuning_explanation")(FLAT)),
    ],
    ids=["soft_targets", "kd_loss", "entropy", "prediction", "dirichlet", "heatmap", "pick_best", "explain", "flat"],
)
def test_checks_pass_on_model_answers(check: Callable, answer: object, capsys: pytest.CaptureFixture) -> None:
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("✓ ")


def test_kdlib_own_functions_pass_the_checks(capsys: pytest.CaptureFixture) -> None:
    from kdlib.core.losses import kd_loss, soft_targets
    from kdlib.data.partition import PartitionSpec, partition_indices

    assert teaching.check_soft_targets(soft_targets)
    assert teaching.check_kd_loss(kd_loss)
    assert teaching.check_entropy(lambda p: torch.special.entr(p).sum(-1))
    assert teaching.check_dirichlet_split(
        lambda labels, k, alpha, seed: partition_indices(
            labels, PartitionSpec("dirichlet", k, alpha=alpha, min_size=1), seed
        )
    )


WRONG = [
    # soft targets
    (teaching.check_soft_targets, not_written, "not written yet"),
    (teaching.check_soft_targets, soft_no_return, "forget the `return`"),
    (teaching.check_soft_targets, soft_unsoftened, "forgot to soften with T"),
    (teaching.check_soft_targets, soft_multiplied, "multiplied the logits by T"),
    (teaching.check_soft_targets, soft_log, "log-probabilities"),
    (teaching.check_soft_targets, soft_axis0, "wrong axis"),
    (teaching.check_soft_targets, soft_axis1, "fails on one example"),
    (teaching.check_soft_targets, soft_divided_probs, "divided the probabilities by T"),
    (teaching.check_soft_targets, soft_unnormalised, "forgot to normalise"),
    (teaching.check_soft_targets, soft_naive_exp, "exp overflows"),
    (teaching.check_soft_targets, soft_max_only, "same shape as the input"),
    (teaching.check_soft_targets, soft_numpy, "return a torch tensor"),
    # KD loss
    (teaching.check_kd_loss, not_written, "not written yet"),
    (teaching.check_kd_loss, kd_no_t2, "T² factor is missing"),
    (teaching.check_kd_loss, kd_t2_twice, "16 times kdlib's at T=4: did you multiply by T² twice"),
    (teaching.check_kd_loss, kd_alpha_swapped, "alpha weights the wrong term: with alpha=1 your loss equals cross"),
    (teaching.check_kd_loss, kd_reverse, "KL(student || teacher) instead of KL(teacher || student)"),
    (teaching.check_kd_loss, kd_ce_softened, "divided the logits by T for the cross-entropy term too"),
    (teaching.check_kd_loss, kd_unsoftened, "forgot to soften with T"),
    (teaching.check_kd_loss, kd_negative_kl, "wrong sign: KL divergence is never negative"),
    (teaching.check_kd_loss, kd_mean_reduction, "divided by the number of classes (10)"),
    (teaching.check_kd_loss, kd_sum_reduction, "batch size (8) times"),
    (teaching.check_kd_loss, kd_probs_in_kl_div, "LOG-probabilities"),
    (teaching.check_kd_loss, kd_per_sample, "shape (8,), expected a scalar (its mean is right): average"),
    (teaching.check_kd_loss, kd_not_detached, "detach its logits"),
    (teaching.check_kd_loss, kd_item, "return a torch tensor"),
    (teaching.check_kd_loss, kd_mse_hard, "with alpha=0 the loss must be plain cross-entropy"),
    # entropy
    (teaching.check_entropy, entropy_no_minus, "minus sign"),
    (teaching.check_entropy, entropy_bits, "bits"),
    (teaching.check_entropy, entropy_class_mean, "SUMS over them"),
    (teaching.check_entropy, entropy_batch_mean, "one number for the whole batch"),
    (teaching.check_entropy, entropy_wrong_axis, "not the batch"),
    (teaching.check_entropy, entropy_log_of_zero, "0 · log 0 counts as 0"),
    # temperature prediction
    (PREDICT, {"entropy": ..., "limit": ..., "top_class": ...}, "not written yet"),
    (PREDICT, {**RIGHT_PREDICTION, "entropy": "falls"}, "entropy falls as T grows; it rises"),
    (PREDICT, {**RIGHT_PREDICTION, "limit": "one-hot"}, "One-hot is the T → 0 limit"),
    (PREDICT, {**RIGHT_PREDICTION, "top_class": "changes"}, "keeps the order of the logits"),
    (PREDICT, {**RIGHT_PREDICTION, "limit": "flat"}, "is not one of 'uniform'"),
    # Dirichlet split
    (teaching.check_dirichlet_split, not_written, "not written yet"),
    (teaching.check_dirichlet_split, split_floor, "never assigned"),
    (teaching.check_dirichlet_split, split_with_replacement, "more than once"),
    (teaching.check_dirichlet_split, split_inverse_alpha, "Skew falls as alpha shrinks"),
    (teaching.check_dirichlet_split, split_unseeded, "gave different splits"),
    (teaching.check_dirichlet_split, split_ignores_seed, "gave the same split"),
    (teaching.check_dirichlet_split, split_one_draw, "for EACH class"),
    (teaching.check_dirichlet_split, split_iid, "like an IID shuffle"),
    (teaching.check_dirichlet_split, split_labels, "looks like labels"),
    (teaching.check_dirichlet_split, split_masks, "boolean mask"),
    (teaching.check_dirichlet_split, split_no_retry, "is empty"),
    # heatmap reading
    (HEATMAP, {"most_even": ..., "holder": ...}, "not written yet"),
    (HEATMAP, {"most_even": "α = 0.1", "holder": 1}, "is not the most even split"),
    (HEATMAP, {"most_even": 100, "holder": 3}, "Rows are parties and columns are classes"),
    (HEATMAP, {"most_even": "α = 100", "holder": 0}, "party 0 holds 1 images, party 1 holds 59"),
    # picking (T, alpha)
    (teaching.check_pick_best, not_written, "not written yet"),
    (teaching.check_pick_best, pick_by_test, "best TEST accuracy"),
    (teaching.check_pick_best, pick_worst, "WORST cell"),
    (teaching.check_pick_best, pick_swapped, "return (T, alpha) in that order"),
    (teaching.check_pick_best, pick_row, "whole grid row"),
    (teaching.check_pick_best, pick_first, "Choose the row with the largest val_acc"),
    # explaining the grid
    (EXPLAIN, ..., "not written yet"),
    (EXPLAIN, "B", "the largest T is not where the grid peaks"),
    (EXPLAIN, "C", "More weight on the teacher scores worse here"),
    (EXPLAIN, "D", "The grid is not flat"),
    (EXPLAIN, "E", "is not one of the letters"),
    (EXPLAIN_FLAT, "A", "The grid is flat: every cell scores within 2 points"),
]


@pytest.mark.parametrize(
    ("check", "answer", "fragment"),
    WRONG,
    ids=[f"{getattr(c, '__name__', 'check')}-{getattr(a, '__name__', repr(a))[:40]}" for c, a, _ in WRONG],
)
def test_checks_reject_typical_mistakes(check: Callable, answer: object, fragment: str) -> None:
    with pytest.raises(TeachingCheckError) as info:
        check(answer)
    message = str(info.value)
    assert fragment in message
    assert "assert" not in message.lower()


def test_every_check_rejects_at_least_two_mistakes() -> None:
    wrapped = {
        HEATMAP: "check_heatmap_reading",
        EXPLAIN: "check_tuning_explanation",
        EXPLAIN_FLAT: "check_tuning_explanation",
    }
    counted: dict[str, int] = {}
    for check, answer, _fragment in WRONG:
        if answer is not not_written and answer is not Ellipsis:
            name = wrapped.get(check, getattr(check, "__name__", ""))
            counted[name] = counted.get(name, 0) + 1
    for name in (n for n in teaching.__all__ if n.startswith("check_")):
        assert counted.get(name, 0) >= 2, name


def test_teaching_error_is_an_assertion_error_and_not_a_bare_one() -> None:
    assert issubclass(TeachingCheckError, AssertionError)
    with pytest.raises(TeachingCheckError, match="Expected your function kd_loss"):
        teaching.check_kd_loss("kd_loss")


def test_kd_message_reports_both_values() -> None:
    with pytest.raises(TeachingCheckError, match=r"at T=4, alpha=0\.7: kdlib gives [\d.]+, yours [\d.]+"):
        teaching.check_kd_loss(kd_no_t2)


def test_learner_exception_is_named_with_the_call() -> None:
    def broken(z, T):
        return z / T @ torch.ones(3)

    with pytest.raises(TeachingCheckError, match=r"(?s)raised RuntimeError: .*soft_targets\(logits of shape \(8, 10\)"):
        teaching.check_soft_targets(broken)


def test_solution_registry_and_show_solution(capsys: pytest.CaptureFixture) -> None:
    teaching.show_solution("kd_loss")
    assert "kl_div" in capsys.readouterr().out
    with pytest.raises(KeyError, match="known"):
        teaching.solution("nope")


def test_compare_guess_never_fails(capsys: pytest.CaptureFixture) -> None:
    teaching.compare_guess((16.0, 0.9), SMALL_ALPHA_WINS)
    teaching.compare_guess((3.0, 0.1), SMALL_ALPHA_WINS)
    teaching.compare_guess(..., SMALL_ALPHA_WINS)
    out = capsys.readouterr().out
    assert "rank 9 of 9" in out and "not a grid cell" in out and "No guess recorded" in out


def test_entropy_solution_matches_log_c_for_uniform() -> None:
    assert float(teaching.solution("entropy")(torch.full((1, 10), 0.1))[0]) == pytest.approx(math.log(10))


# ------------------------------------------------------------------------------------------------ the notebooks
# nbval runs every exercise notebook with its model answers as part of the test command (pyproject's testpaths and
# addopts, notebooks/exercises/conftest.py): each cell is a test, and a check that fails stops its notebook. These
# tests check what nbval cannot: how the notebooks are stored and wired, and the grading of executed notebooks.
def exercise(name: str):
    import nbformat

    return nbformat.read(EXERCISES / f"{name}.ipynb", as_version=4)


def test_exercise_notebooks_are_stored_without_outputs() -> None:
    import nbformat

    found = sorted(p.stem for p in EXERCISES.glob("*.ipynb"))
    assert found == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = exercise(name)
        nbformat.validate(nb)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "solutions = False" in tagged[0].source
        for cell in nb.cells:
            assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_exercise_swaps_in_its_answers_before_its_two_checks(name: str) -> None:
    code = [c.source for c in exercise(name).cells if c.cell_type == "code"]
    switch = [i for i, source in enumerate(code) if "solutions = teaching.solutions_wanted(solutions)" in source]
    assert switch == [1], "the cell after the parameters reads the switch, before any answer is used"
    checks = [i for i, source in enumerate(code) if source.startswith("teaching.check_")]
    assert len(checks) == 2
    swaps = [i for i, source in enumerate(code) if source.startswith("# Model answer") and "if solutions:" in source]
    for check in checks:  # the answer it checks is swapped in (under solutions) between the stub and the check
        assert any(swap < check for swap in swaps)
    stubs = [source for source in code if "# Your turn" in source]
    assert all('raise NotImplementedError("Your turn' in source for source in stubs)  # the handout stops at its check


def test_the_test_command_runs_the_exercises_under_nbval() -> None:
    import tomllib

    options = tomllib.loads((EXERCISES.parents[1] / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks/exercises" in options["testpaths"]
    assert "--nbval-lax" in options["addopts"].split()
    assert (EXERCISES / "conftest.py").is_file()


def test_solutions_are_wanted_by_the_parameter_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(teaching.SOLUTIONS_ENV, raising=False)
    assert teaching.solutions_wanted(True) and not teaching.solutions_wanted(False)
    monkeypatch.setenv(teaching.SOLUTIONS_ENV, "1")
    assert teaching.solutions_wanted(False)
    monkeypatch.setenv(teaching.SOLUTIONS_ENV, "0")
    assert not teaching.solutions_wanted(False)


def executed_copy(folder: Path, name: str, outputs: list[list[dict]]) -> Path:
    """An exercise notebook as papermill would leave it, with the given outputs on its first code cells."""
    import nbformat

    nb = exercise("ex1_kd_loss")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell, cell_outputs in zip(code, outputs, strict=False):
        cell.outputs = [nbformat.from_dict(o) for o in cell_outputs]
    path = folder / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_grade_report_counts_checks_and_names_the_first_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The report of a class's executed notebooks, on the outputs a real check prints or raises."""
    with pytest.raises(TeachingCheckError) as failure:
        teaching.check_soft_targets(not_written)
    teaching.check_soft_targets(teaching.solution("soft_targets"))
    teaching.check_kd_loss(teaching.solution("kd_loss"))
    ticks = capsys.readouterr().out.splitlines()
    assert len(ticks) == 2 and all(line.startswith("✓") for line in ticks)

    def stream(text: str) -> dict:
        return {"output_type": "stream", "name": "stdout", "text": text + "\n"}

    error = {"output_type": "error", "ename": "TeachingCheckError", "evalue": str(failure.value), "traceback": []}
    checks = [[], [], [], [], [stream(ticks[0])], [], [], [stream(ticks[1])]]  # ex1's checks: code cells 4, 7
    executed_copy(tmp_path / "class" / "alice", "ex1_kd_loss", checks)
    executed_copy(tmp_path / "class" / "bob", "ex1_kd_loss", [[], [], [], [], [error]])
    executed_copy(tmp_path / "class" / "carol", "ex1_kd_loss", [])
    report = teaching.grade_report(tmp_path / "class").set_index("notebook")
    assert report.loc["alice/ex1_kd_loss.ipynb", ["status", "checks_passed", "error"]].tolist() == ["passed", 2, ""]
    bob = report.loc["bob/ex1_kd_loss.ipynb"]
    assert (bob["status"], bob["checks_passed"], bob["error"]) == ("failed", 0, "TeachingCheckError")
    assert "soft_targets is not written yet: replace the `raise NotImplementedError(...)`" in bob["message"]
    assert report.loc["carol/ex1_kd_loss.ipynb", "status"] == "not run"
    assert teaching.main(["report", str(tmp_path / "class" / "alice")]) == 0
    assert teaching.main(["report", str(tmp_path / "class")]) == 1
    printed = capsys.readouterr().out
    assert "TeachingCheckError" in printed and "1 of 3 notebooks passed every check" in printed
