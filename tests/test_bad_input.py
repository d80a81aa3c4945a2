"""Bad input fails early, through the public entry points, with a message naming the field, the value and what is
allowed; and a refused call loses nothing (the results store is untouched, no folder appears).

The table ``CASES`` is the contract: one row per bad value, each with the exception type and message fragments.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlib.__main__ import main
from kdlib.core.checkpoints import load_checkpoint, save_checkpoint
from kdlib.core.distill import TeacherSpec, run_standard
from kdlib.core.losses import kd_loss
from kdlib.core.models import build_model, load_pretrained_resnet
from kdlib.core.train import RunOptions, TrainConfig
from kdlib.data.datasets import load_dataset
from kdlib.data.partition import PartitionSpec, parse_partition, partition_indices
from kdlib.errors import KDConfigError
from kdlib.notebook.figure_layout import save_figure
from kdlib.study.config import StudyConfig, scale_config
from kdlib.study.results import ResultsStore
from kdlib.study.runner import open_study


class CLIFailed(Exception):
    """``python -m kdlib ...`` ended with a non-zero status; the message is ``exit N: <stderr>``."""


def cli(*argv: str) -> None:
    """Run the command line in-process; raise CLIFailed with its exit status and stderr unless it succeeds."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse
            code = exit_.code
    if code:
        raise CLIFailed(f"exit {code}: {err.getvalue()}")


# ------------------------------------------------------------------------------------------- bad files, made here


def mlp(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", num_classes, (1, 8, 8))


def truncated_checkpoint(tmp: Path) -> Path:
    path = save_checkpoint(mlp(), tmp / "party.safetensors", {"acc": 0.5})
    path.write_bytes(path.read_bytes()[:200])
    return path


def checkpoint_bad_meta(tmp: Path) -> Path:
    path = save_checkpoint(mlp(), tmp / "party.safetensors", {"acc": 0.5})
    path.with_suffix(".json").write_text('{"acc": 0.')
    return path


def truncated_pretrained(tmp: Path) -> Path:
    folder = tmp / "pretrained"
    folder.mkdir()
    torch.save({"state_dict": mlp().state_dict(), "best_prec1": 91.0}, folder / "resnet20-12fca82f.th")
    path = folder / "resnet20-12fca82f.th"
    path.write_bytes(path.read_bytes()[:300])
    return folder


class Payload:
    """Unpickling this writes a marker file: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a data file ran"))


def pickled_pretrained(tmp: Path) -> Path:
    folder = tmp / "pretrained"
    folder.mkdir()
    torch.save({"state_dict": Payload(tmp / "marker")}, folder / "resnet20-12fca82f.th")
    return folder


def corrupted_cache(tmp: Path) -> Path:
    (tmp / "data" / "cache").mkdir(parents=True)
    (tmp / "data" / "cache" / "cifar10.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    return tmp / "data"


def pickled_cache(tmp: Path) -> Path:
    (tmp / "data" / "cache").mkdir(parents=True)
    arrays = {"x_train": np.array([Payload(tmp / "marker")], dtype=object)}
    np.savez(tmp / "data" / "cache" / "cifar10.npz", **arrays, allow_pickle=True)
    return tmp / "data"


def truncated_cifar_binary(tmp: Path) -> Path:
    folder = tmp / "data" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2 + 100))  # two records and a cut-off third
    return tmp / "data"


def quiet_load(name: str, root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unreadable cache warns before the error
        load_dataset(name, root=root, progress=False)


def not_a_folder(tmp: Path) -> Path:
    (tmp / "afile").write_text("a file, not a folder")
    return tmp / "afile" / "results"


def figure():
    import matplotlib.pyplot as plt

    return plt.figure()


# ------------------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Path], object]
    error: type[BaseException]
    fragments: tuple[str, ...]


DIGIT_LABELS = np.repeat(np.arange(10), 5)
TWO_CLASSES = np.array([0, 1, 0, 1, 0, 1])
STUDY_CLI = ("study", "--dataset", "digits", "--quiet")

CASES = [
    # temperature T <= 0
    Case("T=0 in StudyConfig", lambda t: StudyConfig(temperature=0), KDConfigError, ("temperature=0", "T > 0")),
    Case("T<0 via scale_config", lambda t: scale_config("smoke", temperature=-2.0), KDConfigError,
         ("temperature=-2.0", "T > 0")),
    Case("T not a number", lambda t: scale_config("smoke", temperature="hot"), KDConfigError,
         ("temperature='hot'", "positive number")),
    Case("grid T=0", lambda t: scale_config("full", grid_temperatures=[1, 0]), KDConfigError,
         ("temperature=0.0", "T > 0")),
    Case("dml T<0", lambda t: StudyConfig(dml_temperature=-1), KDConfigError, ("temperature=-1", "T > 0")),
    Case("kd_loss T=0", lambda t: kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                          0, 0.5), KDConfigError, ("temperature=0", "T > 0")),
    # alpha outside [0, 1]
    Case("alpha>1", lambda t: StudyConfig(alpha=1.5), KDConfigError, ("alpha=1.5", "[0, 1]")),
    Case("alpha<0 via scale_config", lambda t: scale_config("smoke", alpha=-0.1), KDConfigError,
         ("alpha=-0.1", "[0, 1]")),
    Case("grid alpha>1", lambda t: scale_config("smoke", grid_alphas="0.5,2"), KDConfigError, ("alpha=2.0", "[0, 1]")),
    Case("grid alpha not numbers", lambda t: scale_config("smoke", grid_alphas="a,b"), KDConfigError,
         ("grid_alphas=", "a list of numbers")),
    Case("kd_loss alpha>1", lambda t: kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                              4.0, 1.01), KDConfigError, ("alpha=1.01", "[0, 1]")),
    # Dirichlet alpha <= 0
    Case("Dirichlet alpha=0", lambda t: PartitionSpec("dirichlet", alpha=0), KDConfigError, ("alpha=0", "> 0")),
    Case("Dirichlet alpha<0 text", lambda t: parse_partition("dirichlet:-0.5"), KDConfigError,
         ("partition='dirichlet:-0.5'", "> 0")),
    Case("Dirichlet alpha=0 in scenarios", lambda t: scale_config("smoke", scenarios="iid,dirichlet:0"), KDConfigError,
         ("partition='dirichlet:0'", "> 0")),
    # more parties than samples
    Case("5 parties, 3 samples", lambda t: partition_indices(np.array([0, 1, 0]), PartitionSpec("iid", num_parties=5)),
         KDConfigError, ("num_parties=5", "at most the number of samples used (3)")),
    Case("Dirichlet min_size too large", lambda t: partition_indices(
        DIGIT_LABELS, PartitionSpec("dirichlet", num_parties=4, alpha=1.0, min_size=20)), KDConfigError,
        ("min_size=20", "at most 12")),
    Case("0 parties", lambda t: PartitionSpec("iid", num_parties=0), KDConfigError, ("num_parties=0", ">= 1")),
    # a class the data set lacks
    Case("class 7 of 2", lambda t: partition_indices(TWO_CLASSES, PartitionSpec(
        "class_disjoint", party_classes=((0,), (7,)))), KDConfigError, ("party_classes=", "[0, 2); got [7]")),
    Case("class 12 of 10 (text form)", lambda t: partition_indices(DIGIT_LABELS, parse_partition("disjoint:0-4|5-12")),
         KDConfigError, ("party_classes=", "[0, 10); got [10, 11, 12]")),
    Case("class 12 of digits in a study", lambda t: open_study(
        "smoke", dataset="digits", n_train=None, n_test=None, scenarios="iid,disjoint:0-4|5-12", progress=False,
        results=str(t / "r")).run_all(),
        KDConfigError, ("party_classes=", "[0, 10)")),
    Case("12 classes per party of 10", lambda t: partition_indices(DIGIT_LABELS, parse_partition("disjoint:12")),
         KDConfigError, ("classes_per_party=12", "at most num_classes=10")),
    # teacher and student with different class counts
    Case("run_standard 10 vs 3 classes", lambda t: run_standard(
        mlp(3), torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), TeacherSpec(mlp(10), 4.0, 0.5),
        TrainConfig(epochs=1), RunOptions("cpu", False)), KDConfigError,
        ("teacher[0].num_classes=10", "student's number of classes (3)")),
    Case("kd_loss 10 vs 3 logits", lambda t: kd_loss(torch.zeros(2, 3), torch.zeros(2, 10),
                                                     torch.zeros(2, dtype=torch.long), 4.0, 0.5),
         KDConfigError, ("teacher_logits='shape (2, 10)'", "(2, 3)", "same classes")),
    Case("checkpoint of a 10-class model into a 3-class one", lambda t: load_checkpoint(
        mlp(3), save_checkpoint(mlp(10), t / "ten.safetensors")), KDConfigError, ("checkpoint=", "does not fit")),
    # unknown method / model / data set / scale / field names
    Case("unknown method", lambda t: scale_config("smoke", methods="standard,nope"), KDConfigError,
         ("methods=('standard', 'nope')", "finetune, standard, tuned, dml, dp")),
    Case("unknown teacher model", lambda t: scale_config("smoke", teacher_model="resnet9000"), KDConfigError,
         ("teacher_model='resnet9000'", "resnet20")),
    Case("unknown student model", lambda t: StudyConfig(student_model="tiny"), KDConfigError,
         ("student_model='tiny'", "cnn-small")),
    Case("build_model unknown", lambda t: build_model("nope", 10, (3, 32, 32)), KDConfigError, ("model='nope'", "mlp")),
    Case("build_model 0 classes", lambda t: build_model("mlp", 0, (3, 32, 32)), KDConfigError,
         ("num_classes=0", "positive integer")),
    Case("load_dataset unknown", lambda t: load_dataset("mnist"), KDConfigError,
         ("dataset='mnist'", "digits, cifar10, cifar100, imagefolder:PATH")),
    Case("config unknown data set", lambda t: scale_config("smoke", dataset="imagenet"), KDConfigError,
         ("dataset='imagenet'", "digits, cifar10")),
    Case("unknown published ResNet", lambda t: load_pretrained_resnet("resnet99"), KDConfigError,
         ("model='resnet99'", "resnet20, resnet32, resnet44, resnet56")),
    Case("unknown scale", lambda t: scale_config("huge"), KDConfigError, ("scale='huge'", "smoke, full, paper")),
    Case("unknown field", lambda t: scale_config("smoke", temprature=2), KDConfigError,
         ("temprature=2", "a field of StudyConfig", "temperature")),
    Case("unknown training field", lambda t: scale_config("smoke", distill={"epochz": 2}), KDConfigError,
         ("distill.epochz=2", "epochs")),
    Case("negative epochs", lambda t: scale_config("smoke", distill={"epochs": -1}), KDConfigError,
         ("distill.epochs=-1", ">= 0")),
    Case("n_train too small", lambda t: scale_config("smoke", n_train=5), KDConfigError, ("n_train=5", ">= 20")),
    Case("negative seed", lambda t: scale_config("smoke", seed=-1), KDConfigError, ("seed=-1", ">= 0")),
    Case("scenarios not a list", lambda t: scale_config("smoke", scenarios=5), KDConfigError,
         ("scenarios=5", "comma-separated")),
    Case("batch_size 0", lambda t: TrainConfig(batch_size=0), KDConfigError, ("batch_size=0", ">= 1")),
    # papermill parameters, as a notebook's first cells hand them to open_study
    Case("papermill scale", lambda t: open_study(scale="huge"), KDConfigError, ("scale='huge'", "smoke, full, paper")),
    Case("papermill device", lambda t: open_study("smoke", device="tpu", results=str(t / "r")), KDConfigError,
         ("device='tpu'", "'auto', 'cpu' or 'cuda[:N]'")),
    Case("papermill scenarios", lambda t: open_study("smoke", scenarios="iid,nope"), KDConfigError,
         ("partition='nope'", "a known kind")),
    Case("papermill seed", lambda t: open_study("smoke", seed="zero"), KDConfigError, ("seed='zero'", ">= 0")),
    Case("papermill overrides typo", lambda t: open_study("smoke", **{"distil": {"epochs": 1}}), KDConfigError,
         ("distil=", "a field of StudyConfig")),
    # corrupted or truncated checkpoints and data files
    Case("truncated checkpoint", lambda t: load_checkpoint(mlp(), truncated_checkpoint(t)), KDConfigError,
         ("checkpoint=", "party.safetensors", "corrupted", "Delete it")),
    Case("corrupted checkpoint metadata", lambda t: load_checkpoint(mlp(), checkpoint_bad_meta(t)), KDConfigError,
         ("checkpoint metadata=", "party.json", "corrupted")),
    Case("truncated published checkpoint", lambda t: load_pretrained_resnet("resnet20", truncated_pretrained(t)),
         KDConfigError, ("checkpoint=", "resnet20-12fca82f.th", "SHA-256", "damaged")),
    Case("published checkpoint with pickled code", lambda t: load_pretrained_resnet("resnet20", pickled_pretrained(t)),
         KDConfigError, ("checkpoint=", "resnet20-12fca82f.th", "SHA-256", "damaged")),  # never unpickled
    Case("missing published checkpoint", lambda t: load_pretrained_resnet("resnet20", t), FileNotFoundError,
         ("resnet20-*.th", "KDLIB_PRETRAINED")),
    Case("corrupted data cache", lambda t: quiet_load("cifar10", corrupted_cache(t)), FileNotFoundError,
         ("cifar10.npz is unreadable", "delete it")),
    Case("data cache with pickled objects", lambda t: quiet_load("cifar10", pickled_cache(t)), FileNotFoundError,
         ("cifar10.npz is unreadable", "allow_pickle=False")),
    Case("truncated CIFAR binary", lambda t: quiet_load("cifar10", truncated_cifar_binary(t)), KDConfigError,
         ("CIFAR binary file=", "data_batch_1.bin", "3073-byte records")),
    # unwritable results folder, and paths that would leave the project
    Case("results folder under a file", lambda t: ResultsStore.open("study", not_a_folder(t)), PermissionError,
         ("results folder", "afile", "writable folder")),
    Case("results folder ../../etc", lambda t: ResultsStore.open("study", "../../etc"), KDConfigError,
         ("results='../../etc'", "without '..'")),
    Case("results folder via open_study", lambda t: open_study("smoke", results="../outside"), KDConfigError,
         ("results='../outside'", "without '..'")),
    Case("absolute path with ..", lambda t: ResultsStore.open("study", f"{t}/../../etc"), KDConfigError,
         ("results=", "without '..'")),
    Case("store name with a folder", lambda t: ResultsStore.open("../study", t), KDConfigError,
         ("name='../study'", "plain store name")),
    Case("data root ../..", lambda t: load_dataset("digits", root="../.."), KDConfigError,
         ("root='../..'", "without '..'")),
    Case("image folder ../", lambda t: load_dataset("imagefolder:../../etc", root=t), KDConfigError,
         ("dataset='../../etc'", "without '..'")),
    Case("figure name with a folder", lambda t: save_figure(figure(), "../escape", t), KDConfigError,
         ("name='../escape'", "plain figure file name")),
    # the command line: argparse exits 2; our checks print 'error: ...' and return 2
    Case("CLI unknown method", lambda t: cli("run", "--scenario", "iid", "--method", "nope"), CLIFailed,
         ("exit 2", "--method", "invalid choice: 'nope'")),
    Case("CLI unknown scale", lambda t: cli("study", "--scale", "huge"), CLIFailed,
         ("exit 2", "--scale", "invalid choice: 'huge'")),
    Case("CLI negative epochs", lambda t: cli(*STUDY_CLI, "--set", 'distill={"epochs": -1}'), CLIFailed,
         ("exit 2", "error: distill.epochs=-1", ">= 0")),
    Case("CLI T=0", lambda t: cli(*STUDY_CLI, "--set", "temperature=0"), CLIFailed,
         ("exit 2", "error: temperature=0", "T > 0")),
    Case("CLI --set without =", lambda t: cli(*STUDY_CLI, "--set", "n_train"), CLIFailed,
         ("exit 2", "error: --set='n_train'", "KEY=VALUE")),
    Case("CLI unknown data set", lambda t: cli("study", "--dataset", "mnist"), CLIFailed,
         ("exit 2", "error: dataset='mnist'", "digits, cifar10")),
    Case("CLI bad scenario", lambda t: cli("run", "--dataset", "digits", "--scenario", "dirichlet:0", "--method",
                                           "standard"), CLIFailed, ("exit 2", "error: partition='dirichlet:0'", "> 0")),
    Case("CLI bad device", lambda t: cli(*STUDY_CLI, "--device", "tpu"), CLIFailed,
         ("exit 2", "error: device='tpu'", "'auto', 'cpu'")),
    Case("CLI --results ../../etc", lambda t: cli(*STUDY_CLI, "--results", "../../etc"), CLIFailed,
         ("exit 2", "error: results='../../etc'", "without '..'")),
    Case("CLI unwritable --results", lambda t: cli(*STUDY_CLI, "--results", str(not_a_folder(t))), CLIFailed,
         ("exit 2", "error: Cannot create the results folder", "afile")),
    Case("CLI reproduce --only unknown", lambda t: cli("reproduce", "--only", "zz"), CLIFailed,
         ("exit 2", "error: only='zz'", "prefixes of notebooks")),
    Case("CLI reproduce --output ../..", lambda t: cli("reproduce", "--only", "00", "--output", "../../tmp/nb"),
         CLIFailed, ("exit 2", "error: output='../../tmp/nb'", "without '..'")),
    Case("CLI reproduce bad override", lambda t: cli("reproduce", "--set", "alpha=3"), CLIFailed,
         ("exit 2", "error: alpha=3", "[0, 1]")),
    # issue 14: values that passed unchecked and gave stored results
    Case("distill lr Infinity", lambda t: scale_config("smoke", distill={"lr": float("inf")}), KDConfigError,
         ("distill.lr=inf", "finite")),
    Case("CLI distill lr Infinity", lambda t: cli(*STUDY_CLI, "--set", 'distill={"lr": Infinity}'), CLIFailed,
         ("exit 2", "error: distill.lr=inf", "finite")),
    Case("weight decay NaN", lambda t: TrainConfig(weight_decay=float("nan")), KDConfigError,
         ("weight_decay=nan", "finite")),
    Case("augment as a string", lambda t: scale_config("smoke", pretrain={"augment": "false"}), KDConfigError,
         ("pretrain.augment='false'", "boolean")),
    Case("augment as a number", lambda t: TrainConfig(augment=1), KDConfigError, ("augment=1", "boolean")),
    Case("val_fraction too small", lambda t: scale_config("smoke", val_fraction=0.0001), KDConfigError,
         ("val_fraction=0.0001", "[0.05, 1)", "enough samples")),
    Case("temperature null", lambda t: scale_config("smoke", temperature=None), KDConfigError,
         ("temperature=None", "null is allowed only for n_train and n_test")),
    Case("dataset null (papermill)", lambda t: open_study("smoke", dataset=None, results=str(t / "r")), KDConfigError,
         ("dataset=None", "null is allowed only")),
    Case("CLI dataset null", lambda t: cli("study", "--quiet", "--set", "dataset=null"), CLIFailed,
         ("exit 2", "error: dataset=None", "null")),
    Case("CLI temperature null", lambda t: cli(*STUDY_CLI, "--set", "temperature=null"), CLIFailed,
         ("exit 2", "error: temperature=None", "null")),
    Case("temperature as a string", lambda t: StudyConfig(temperature="4"), KDConfigError,
         ("temperature='4'", "not a string")),
    Case("grid temperature as a string", lambda t: StudyConfig(grid_temperatures=("4",)), KDConfigError,
         ("grid_temperatures=('4',)", "finite numbers")),
    Case("public_fraction infinite", lambda t: StudyConfig(public_fraction=float("inf")), KDConfigError,
         ("public_fraction=inf", "a finite number")),
    Case("fullwidth Dirichlet alpha", lambda t: parse_partition("dirichlet:\uff10.\uff15"), KDConfigError,
         ("partition='dirichlet:\uff10.\uff15'", "ASCII digits")),
    Case("fullwidth alpha in scenarios", lambda t: scale_config("smoke", scenarios="iid,dirichlet:\uff10.\uff15"),
         KDConfigError, ("partition=", "ASCII digits")),
    Case("superscript classes per party", lambda t: parse_partition("disjoint:\u00b2"), KDConfigError,
         ("partition='disjoint:\u00b2'", "bad item")),
    Case("fullwidth class range", lambda t: parse_partition("disjoint:0-\uff14|5-9"), KDConfigError,
         ("partition=", "bad item")),
    Case("fullwidth quantity size", lambda t: parse_partition("quantity:1,\uff12"), KDConfigError,
         ("partition=", "ASCII digits")),
    Case("infinite Dirichlet alpha", lambda t: parse_partition("dirichlet:inf"), KDConfigError,
         ("partition='dirichlet:inf'", "a number")),
    Case("CLI bad scenario with superscript", lambda t: cli("run", "--dataset", "digits", "--scenario",
                                                            "disjoint:\u00b2", "--method", "standard"),
         CLIFailed, ("exit 2", "error: partition='disjoint:\u00b2'")),
    Case("seed 2**64", lambda t: scale_config("smoke", seed=2**64), KDConfigError,
         ("seed=18446744073709551616", "2**32")),
    Case("seed 2**32", lambda t: StudyConfig(seed=2**32), KDConfigError, ("seed=4294967296", "< 2**32")),
    Case("training seed 2**64", lambda t: TrainConfig(seed=2**64), KDConfigError, ("seed=", "2**63")),
    Case("CLI seed 2**64", lambda t: cli(*STUDY_CLI, "--seed", str(2**64)), CLIFailed, ("exit 2", "error: seed=")),
    Case("CLI --seed and --set seed disagree", lambda t: cli(*STUDY_CLI, "--seed", "1", "--set", "seed=2"), CLIFailed,
         ("exit 2", "--seed 1 and --set seed=2 disagree")),
    Case("CLI --dataset and --set dataset disagree", lambda t: cli(*STUDY_CLI, "--set", "dataset=cifar10"), CLIFailed,
         ("exit 2", "--dataset digits and --set dataset='cifar10' disagree")),
    Case("CLI reproduce --seed and --set seed", lambda t: cli("reproduce", "--seed", "1", "--set", "seed=2"),
         CLIFailed, ("exit 2", "disagree")),
    Case("CLI device meta", lambda t: cli(*STUDY_CLI, "--device", "meta"), CLIFailed,
         ("exit 2", "error: device='meta'", "'cpu'")),
    Case("CLI device mps", lambda t: cli(*STUDY_CLI, "--device", "mps"), CLIFailed, ("exit 2", "error: device='mps'")),
    Case("CLI device cuda:x", lambda t: cli(*STUDY_CLI, "--device", "cuda:x"), CLIFailed,
         ("exit 2", "error: device='cuda:x'")),
    Case("CLI reproduce device meta", lambda t: cli("reproduce", "--only", "01", "--device", "meta"), CLIFailed,
         ("exit 2", "error: device='meta'")),
    Case("papermill device meta", lambda t: open_study("smoke", device="meta", results=str(t / "r")), KDConfigError,
         ("device='meta'", "'auto', 'cpu'")),
    Case("CLI --set scale", lambda t: cli(*STUDY_CLI, "--set", "scale=paper"), CLIFailed,
         ("exit 2", "--set scale='paper'", "--scale")),
    Case("CLI reproduce --set scale", lambda t: cli("reproduce", "--set", "scale=paper"), CLIFailed,
         ("exit 2", "--scale")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_early_with_a_clear_message(case: Case, tmp_path: Path, isolated_folders) -> None:
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    message = str(info.value)
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert not (tmp_path / "marker").exists(), "a loader ran code from a file"


def test_the_table_covers_every_listed_case() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------------ nothing is lost


def test_a_refused_command_leaves_the_results_store_untouched(tmp_path: Path, isolated_folders) -> None:
    store = ResultsStore.open("study", tmp_path / "results")
    store.append("distill", {"scenario": "iid", "method": "standard"}, {"gain": 0.01})
    before = store.path.read_bytes()
    for argv in (("--set", "alpha=2"), ("--set", "scenarios=iid,dirichlet:0"), ("--device", "tpu")):
        with pytest.raises(CLIFailed, match="exit 2"):
            cli(*STUDY_CLI, "--results", str(store.path.parent), *argv)
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["study.jsonl"]


def test_refused_paths_create_no_folder(tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    for folder in ("../escaped", "sub/../../escaped"):
        with pytest.raises(KDConfigError, match="without '..'"):
            ResultsStore.open("study", folder)
    assert not (tmp_path / "escaped").exists()


def test_relative_results_folder_is_taken_from_the_project(isolated_folders) -> None:
    from kdlib.paths import PROJECT_ROOT, user_folder

    assert user_folder("results/sub", "results", PROJECT_ROOT) == PROJECT_ROOT / "results" / "sub"
    assert user_folder(None, "results", PROJECT_ROOT / "results") == PROJECT_ROOT / "results"
    assert user_folder(str(isolated_folders["results"]), "results", PROJECT_ROOT) == isolated_folders["results"]


def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    from kdlib.paths import user_folder

    project = tmp_path / "project"
    project.mkdir()
    (project / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(KDConfigError, match="a path inside"):
        user_folder("link/elsewhere", "results", project / "results", root=project)


def test_a_pickled_payload_in_a_data_file_never_runs(tmp_path: Path, isolated_folders) -> None:
    """Both loaders that meet files from elsewhere refuse pickles: torch with weights_only, numpy without pickle."""
    folder = pickled_pretrained(tmp_path)
    marker = tmp_path / "marker"
    with pytest.raises(KDConfigError):
        load_pretrained_resnet("resnet20", folder)
    with pytest.raises(FileNotFoundError):
        quiet_load("cifar10", pickled_cache(tmp_path / "npz"))
    assert not marker.exists() and not (tmp_path / "npz" / "marker").exists()
    # and the payload is real: plain unpickling would have run it
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# ------------------------------------------------------------------------- issue 14: every value where it enters

TINY_STUDY = (*STUDY_CLI, "--set", "n_train=null", "--set", "n_test=null", "--set", "scenarios=iid", "--set",
              "methods=finetune", "--set", "teacher_model=mlp", "--set", "student_model=mlp")


@pytest.mark.parametrize("variable", ["KDLIB_DATA", "KDLIB_CACHE", "KDLIB_RESULTS"])
def test_a_folder_variable_naming_a_file_fails_before_any_training(
    variable: str, tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("a file")
    monkeypatch.setenv(variable, str(afile))
    with pytest.raises(CLIFailed) as info:
        cli(*TINY_STUDY)
    assert f"error: {variable}='{afile}' is not valid: a folder, but it names a file" in str(info.value)
    assert not (isolated_folders["cache"] / "parties").exists(), "training started before the check"
    monkeypatch.setenv(variable, str(afile / "below"))
    with pytest.raises(CLIFailed, match="lies under the file"):
        cli(*TINY_STUDY)


def test_a_figures_variable_naming_a_file_fails_before_any_notebook(
    tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "afile").write_text("a file")
    monkeypatch.setenv("KDLIB_FIGURES", str(tmp_path / "afile"))
    with pytest.raises(CLIFailed, match="KDLIB_FIGURES=.* names a file"):
        cli("reproduce", "--only", "01", "--output", str(tmp_path / "nb"))
    assert not (tmp_path / "nb").exists()


def test_an_unwritable_cache_folder_fails_before_any_training(
    tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setenv("KDLIB_CACHE", str(locked / "cache"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(CLIFailed, match=r"KDLIB_CACHE: the folder .*locked is not writable"):
        cli(*TINY_STUDY)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "\uff12", "1.5"])
def test_kdlib_threads_is_checked(value: str, isolated_folders, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdlib.core.train import set_cpu_threads

    monkeypatch.setenv("KDLIB_THREADS", value)
    with pytest.raises(KDConfigError, match=f"KDLIB_THREADS='{value}' is not valid: an integer >= 1"):
        set_cpu_threads()
    with pytest.raises(CLIFailed, match="KDLIB_THREADS="):
        cli(*TINY_STUDY)
    assert not isolated_folders["cache"].exists()


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "0.1", None, True])
def test_every_float_of_a_train_config_is_a_finite_number(field: str, value: object) -> None:
    with pytest.raises(KDConfigError, match=f"^{field}="):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field", ["temperature", "alpha", "dml_temperature", "val_fraction", "public_fraction"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), "0.5", None, True])
def test_every_float_of_a_study_config_is_a_finite_number(field: str, value: object) -> None:
    with pytest.raises(KDConfigError, match=f"^{field}=|^temperature=|^alpha="):
        StudyConfig(**{field: value})


def test_good_values_still_pass() -> None:
    cfg = scale_config("smoke", seed=2**32 - 1, val_fraction=0.05, selection="transfer", temperature=2,
                       pretrain={"augment": True})  # fmt: skip
    assert cfg.seed == 2**32 - 1 and cfg.pretrain.augment is True and cfg.temperature == 2
    assert scale_config("smoke", n_train=None).n_train is None  # null still means "all" where it has a meaning
    assert parse_partition("dirichlet:0.5").alpha == 0.5 and parse_partition("disjoint:3").classes_per_party == 3
    assert parse_partition("quantity:1e0,2").sizes == (1.0, 2.0)


def test_a_config_error_shows_as_one_line_in_a_notebook() -> None:
    error = KDConfigError("device", "tpu", "'auto' or 'cpu'")
    assert error._render_traceback_() == ["KDConfigError: device='tpu' is not valid: 'auto' or 'cpu'"]


def test_reproduce_names_the_notebook_and_the_parameter() -> None:
    from papermill.exceptions import PapermillExecutionError

    from kdlib.notebook.reproduce import failure_line

    def failed(ename: str, evalue: str, traceback: list[str]) -> PapermillExecutionError:
        return PapermillExecutionError(2, 3, "open_study(...)", ename, evalue, traceback)

    direct = failed("KDConfigError", "seed='x' is not valid: an integer >= 0", ["KDConfigError: seed='x' ..."])
    assert failure_line("03_standard_kd.ipynb", direct) == (
        "03_standard_kd.ipynb: bad parameter: seed='x' is not valid: an integer >= 0"
    )
    wrapped = failed("RuntimeError", "setup failed", [
        "\x1b[0;31m---------\x1b[0m", "\x1b[0;31mKDConfigError\x1b[0m: alpha=3 is not valid: a number in [0, 1]",
        "During handling of the above exception, another exception occurred:", "RuntimeError: setup failed",
    ])
    assert failure_line("04_tuned_kd.ipynb", wrapped) == (
        "04_tuned_kd.ipynb: bad parameter: alpha=3 is not valid: a number in [0, 1]"
    )
    other = failed("ZeroDivisionError", "division by zero", ["ZeroDivisionError: division by zero"])
    assert failure_line("05.ipynb", other) == "05.ipynb failed in cell 3: ZeroDivisionError: division by zero"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parameters", "named"),
    [({"seed": -3}, "seed=-3"), ({"overrides": "[1, 2]"}, "overrides=[1, 2]"), ({"overrides": "{n_train: -5}"},
                                                                                "n_train=-5")],
)
def test_a_bad_papermill_parameter_is_one_line_in_the_executed_notebook(
    tmp_path: Path, isolated_folders, parameters: dict, named: str
) -> None:
    """The setup cell of a real notebook, run by papermill with a bad parameter (``overrides`` given as text
    included): its error output is one line."""
    import json

    import papermill as pm

    from kdlib.notebook.reproduce import NOTEBOOKS_DIR, failure_line

    target = tmp_path / "01.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOKS_DIR / "01_partitions.ipynb"), str(target), parameters=parameters,
                            cwd=str(NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3")
    assert failure_line("01_partitions.ipynb", info.value).startswith(f"01_partitions.ipynb: bad parameter: {named}")
    errors = [o for c in json.loads(target.read_text())["cells"] for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["traceback"] == [f"KDConfigError: {errors[0]['evalue']}"]


def test_notebook_overrides_takes_a_mapping_or_its_yaml_text_and_nothing_else() -> None:
    from kdlib.study.config import notebook_overrides

    assert notebook_overrides({"n_train": 500}) == {"n_train": 500}
    assert notebook_overrides("{n_train: 500, distill: {epochs: 2}}") == {"n_train": 500, "distill": {"epochs": 2}}
    assert notebook_overrides(None) == {} and notebook_overrides("") == {}
    for bad in ("[1, 2]", "{a: [", 5, {1: 2}):
        with pytest.raises(KDConfigError, match="overrides="):
            notebook_overrides(bad)


def test_every_study_notebook_normalises_overrides_before_using_them() -> None:
    """A string ``overrides`` from papermill must reach kdlib's check, not Python's ``**`` (a TypeError): a notebook
    hands it to ``lesson.setup`` (which normalises it) or calls ``notebook_overrides`` before any other use."""
    import json

    from kdlib.notebook.reproduce import NOTEBOOKS_DIR

    for path in sorted(NOTEBOOKS_DIR.glob("0[1-8]_*.ipynb")):
        code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        code = [src for src in code if not src.lstrip().startswith("# Parameters")]
        uses = [i for i, src in enumerate(code) if "overrides" in src]
        setups = ("lesson.setup(", "lesson.setup_federated(")
        via_setup = [any(c in src for c in setups) and "overrides=overrides" in src for src in code]
        normalised = [i for i, src in enumerate(code) if "notebook_overrides(overrides)" in src or via_setup[i]]
        assert uses and normalised and normalised[0] == uses[0], path.name


def test_a_notebooks_setup_takes_overrides_as_papermill_text_and_refuses_bad_text(tmp_path: Path) -> None:
    from kdlib.notebook import lesson

    text = "{n_train: 500, n_test: 200}"  # as papermill's -p passes it
    study = lesson.setup("smoke", dataset="digits", results=str(tmp_path / "r"), overrides=text)
    assert (study.cfg.n_train, study.cfg.n_test) == (500, 200)
    with pytest.raises(KDConfigError, match="overrides"):
        lesson.setup("smoke", dataset="digits", results=str(tmp_path / "r"), overrides="[1, 2]")


@pytest.mark.parametrize("variable", ["KDLIB_CACHE", "KDLIB_FIGURES"])
def test_a_notebook_study_checks_its_cache_and_figures_folders_when_opened(
    tmp_path: Path, isolated_folders, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """``open_study`` (what every notebook calls first) refuses an unusable folder before any training."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(variable, str(blocker))
    with pytest.raises(KDConfigError, match=variable):
        open_study("smoke", dataset="digits", results=str(tmp_path / "r"))


def test_messages_name_the_parameter_and_what_to_do(tmp_path: Path) -> None:
    """public_fraction that leaves the parties nothing, val_fraction where it has no effect, and a folder that is
    not an image folder: each refused in one line naming the parameter."""
    from kdlib.data.datasets import load_dataset
    from kdlib.study.parties import make_scenario

    data = load_dataset("digits")
    cfg = scale_config("smoke", dataset="digits", n_train=None, n_test=None, transfer="public", public_fraction=0.999)
    with pytest.raises(KDConfigError, match=r"public_fraction=0\.999.*a smaller fraction.*for 2 parties"):
        make_scenario(data, "iid", cfg)
    with pytest.raises(KDConfigError, match=r"val_fraction=0\.999.*only with selection='transfer'"):
        scale_config("smoke", val_fraction=0.999)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    with pytest.raises(KDConfigError, match=r"image folder=.*no train/ folder"):
        load_dataset(f"imagefolder:{tmp_path / 'notes'}", tmp_path / "data")
