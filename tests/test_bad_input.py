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
from kdlib.checkpoints import load_checkpoint, save_checkpoint
from kdlib.config import StudyConfig, scale_config
from kdlib.data import load_dataset
from kdlib.distill import run_standard
from kdlib.errors import KDConfigError
from kdlib.losses import kd_loss
from kdlib.models import build_model, load_pretrained_resnet
from kdlib.partition import PartitionSpec, parse_partition, partition_indices
from kdlib.plots import save_figure
from kdlib.results import ResultsStore
from kdlib.study import open_study
from kdlib.train import TrainConfig


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
        mlp(3), mlp(10), torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 4.0, 0.5,
        TrainConfig(epochs=1), "cpu", False), KDConfigError,
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
         KDConfigError, ("checkpoint=", "resnet20-12fca82f.th", "corrupted or truncated")),
    Case("published checkpoint with pickled code", lambda t: load_pretrained_resnet("resnet20", pickled_pretrained(t)),
         KDConfigError, ("checkpoint=", "resnet20-12fca82f.th", "readable torch checkpoint")),
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
