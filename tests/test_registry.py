"""The method registry: the five methods keep their run keys, and one registry entry with one loss function adds
a method to the CLI, the study, the store and the gain figure (a toy: soft-target matching without labels)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from kdlib.__main__ import build_parser, main
from kdlib.core.distill import DistillOutcome, frozen_logits
from kdlib.core.losses import distillation_term, kd_loss, soft_targets
from kdlib.core.train import RunOptions, fit
from kdlib.errors import KDConfigError
from kdlib.notebook import plots
from kdlib.study.config import METHODS, StudyConfig, scale_config
from kdlib.study.methods import Method, MethodRun, get_method, method_names, register, registered, unregister
from kdlib.study.results import ResultsStore, run_key
from kdlib.study.runner import Study, run_config

# --------------------------------------------------------------------- run keys under the one protocol

METHOD_FIELDS: dict[str, tuple[str, ...]] = {  # what each method's registry entry adds to the common fields
    "finetune": (),
    "standard": ("temperature", "alpha"),
    "tuned": ("grid_temperatures", "grid_alphas", "selection", "tuning_search"),
    "dml": ("dml_temperature",),
    "dp": ("dp_temperature", "dp_alpha", "dp_variant"),
    "dp_shared": ("temperature", "alpha", "dp_variant"),
    "finetune_val": ("val_size",),
}
COMMON = ("dataset", "n_train", "n_test", "seed", "teacher_model", "student_model", "pretrain", "distill", "transfer",
          "epoch_selection")  # fmt: skip


def expected_run_config(cfg: StudyConfig, scenario: str, method: str, seed: int) -> dict:
    """A run's identity written out by hand: the common fields (the protocol's ``epoch_selection`` among them),
    the method's own, ``public_fraction`` for a public transfer set, ``val_fraction`` for tuned KD choosing on the
    transfer data, and ``val_size`` when there is a validation split."""
    full = {**cfg.as_dict(), "seed": seed}
    fields = COMMON + METHOD_FIELDS[method] + (("public_fraction",) if cfg.transfer == "public" else ())
    if method == "tuned" and cfg.selection == "transfer":
        fields += ("val_fraction",)
    if cfg.val_size and "val_size" not in fields:
        fields += ("val_size",)
    return {"scenario": scenario, "method": method, "scale": cfg.scale, **{k: full[k] for k in fields}}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"transfer": "public", "public_fraction": 0.3},
        {"selection": "transfer", "val_fraction": 0.3},
        {"val_size": 0, "selection": "transfer", "transfer": "union", "epoch_selection": "last"},
        {"temperature": 2.0, "alpha": 0.9, "dp_variant": "unsupervised", "tuning_search": "grid"},
    ],
)
@pytest.mark.parametrize("scale", ["smoke", "full", "paper"])
def test_every_method_has_the_run_key_its_entry_declares(scale: str, changes: dict) -> None:
    cfg = scale_config(scale, **changes)
    assert METHODS == tuple(METHOD_FIELDS) == cfg.methods
    for method in METHOD_FIELDS:
        for seed in (cfg.seed, cfg.seed + 1):
            assert run_config(cfg, "dirichlet:0.1", method, seed=seed) == expected_run_config(
                cfg, "dirichlet:0.1", method, seed
            )


def test_a_change_of_protocol_or_of_dp_settings_changes_exactly_the_runs_it_decides() -> None:
    cfg = scale_config("full")
    keys = {m: run_key("distill", run_config(cfg, "iid", m)) for m in METHOD_FIELDS}
    last = scale_config("full", epoch_selection="last")
    assert all(run_key("distill", run_config(last, "iid", m)) != keys[m] for m in METHOD_FIELDS)
    reference_dp = scale_config("full", dp_temperature=4.0, dp_alpha=0.5)
    changed = {m for m in METHOD_FIELDS if run_key("distill", run_config(reference_dp, "iid", m)) != keys[m]}
    assert changed == {"dp"}
    shared = scale_config("full", temperature=2.0)
    changed = {m for m in METHOD_FIELDS if run_key("distill", run_config(shared, "iid", m)) != keys[m]}
    assert changed == {"standard", "dp_shared"}
    assert cfg.dp_temperature == 1.0 and cfg.dp_alpha == 1.0  # FantasticGains' kl_dp_dist.yaml


def test_labels_come_from_the_registry() -> None:
    assert plots.METHOD_LABELS == {name: get_method(name).label for name in method_names()}
    assert plots.METHOD_LABELS["dp"] == "data-partitioning KD"
    with pytest.raises(KDConfigError, match="method"):
        get_method("nope")


# -------------------------------------------------------------------------------- a toy method, end to end


def soft_match_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``: the teacher's soft targets only, no labels."""
    return distillation_term(student_logits, soft_targets(teacher_logits.detach(), temperature), temperature)


def run_soft_match(run: MethodRun) -> DistillOutcome:
    teacher = frozen_logits(run.teacher, run.x, run.cfg.distill, run.device)

    def batch_loss(xb: torch.Tensor, _yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return soft_match_loss(run.student(xb), teacher(xb, idx), run.cfg.temperature)

    options = RunOptions(run.device, run.progress, run.on_epoch_end, desc="soft match")
    history = fit([run.student], run.x, run.y, batch_loss, run.cfg.distill, options)
    return DistillOutcome(history)


TOY = Method("soft_match", "soft-target matching (no labels)", ("temperature",), run_soft_match)
TINY = ["--dataset", "digits", "--set", "n_train=null", "--set", "n_test=null", "--set", "teacher_model=mlp",
        "--set", "student_model=mlp", "--set", "pretrain={\"epochs\": 1}", "--set", "distill={\"epochs\": 1}",
        "--set", "val_size=100", "--set", "seeds=1", "--quiet"]  # fmt: skip


@pytest.fixture
def toy():
    with registered(TOY) as method:
        yield method
    assert "soft_match" not in method_names()


def test_the_toy_loss_is_kd_without_labels() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y, other = torch.randint(0, 5, (8,)), torch.randint(0, 5, (8,))
    assert torch.allclose(soft_match_loss(s, t, 3.0), kd_loss(s, t, y, 3.0, 1.0))
    assert torch.allclose(kd_loss(s, t, y, 3.0, 1.0), kd_loss(s, t, other, 3.0, 1.0))  # labels play no part
    assert soft_match_loss(t, t, 3.0).abs() < 1e-6


def test_a_registered_method_reaches_the_cli_study_store_and_figure(
    toy: Method, tmp_path: Path, isolated_folders, capsys: pytest.CaptureFixture
) -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "--scenario", "iid", "--method", "soft_match"]).method == "soft_match"
    results = tmp_path / "results"
    assert main(["run", "--scenario", "iid", "--method", "soft_match", "--results", str(results), *TINY]) == 0
    assert "gain" in capsys.readouterr().out

    cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, teacher_model="mlp", student_model="mlp",
                       pretrain={"epochs": 1}, distill={"epochs": 1}, val_size=100, seeds=1)  # fmt: skip
    assert "soft_match" in cfg.methods  # a registered method is one of the study's methods
    key = run_key("distill", run_config(cfg, "iid", "soft_match"))
    assert set(run_config(cfg, "iid", "soft_match")) >= {"temperature", "method"}
    assert "alpha" not in run_config(cfg, "iid", "soft_match")  # only the fields its entry names

    store = ResultsStore.open("study", results)
    record = store.get(key)
    assert record is not None and record["config"]["method"] == "soft_match"
    assert record["curves"] and "test_acc" in record["curves"][-1]

    study = Study(cfg.replace(scenarios=("iid",), methods=("finetune", "soft_match")), store, device="cpu",
                  progress=False)  # fmt: skip
    assert study.run("iid", "soft_match") == record  # stored: the study finds it instead of running it again
    study.run_all()
    frame = study.frame()
    assert set(frame["method"]) == {"finetune", "soft_match"}
    assert "soft_match" in study.gain_table().columns

    fig = plots.plot_method_gains(frame, "caption")
    labels = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert "soft-target matching (no labels)" in labels
    plt.close(fig)


def test_an_unregistered_method_is_refused_everywhere(toy: Method) -> None:
    with pytest.raises(KDConfigError, match="soft_match"):
        register(Method("soft_match", "again", (), run_soft_match))  # a taken name is not silently replaced
    unregister("soft_match")
    try:
        with pytest.raises(KDConfigError, match="methods"):
            StudyConfig(methods=("soft_match",))
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--scenario", "iid", "--method", "soft_match"])
        with pytest.raises(KDConfigError, match="method"):
            run_config(StudyConfig(), "iid", "soft_match")
    finally:
        register(TOY)  # the fixture takes it out again
