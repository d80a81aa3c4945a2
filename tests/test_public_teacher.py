"""A published teacher (``published:resnet56``): its file is checked against the SHA-256 prefix in its name before
it is loaded, the config accepts it for CIFAR-10 only, and as party 0 it knows every class and is not trained."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdlib.core.models import PUBLISHED_TEACHERS, check_file_digest, load_pretrained_resnet
from kdlib.errors import KDConfigError
from kdlib.study.config import scale_config
from kdlib.study.parties import published_party

SHARED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"
REAL = sorted(SHARED.glob("resnet20-*.th"))
needs_shared = pytest.mark.skipif(not REAL, reason=f"needs the published checkpoints in {SHARED} (CI has them)")


@needs_shared
def test_the_published_file_matches_its_digest_and_a_changed_byte_is_refused(tmp_path: Path) -> None:
    digest = check_file_digest(REAL[0])
    assert digest.startswith(REAL[0].stem.split("-")[1])
    copy = tmp_path / REAL[0].name
    shutil.copy(REAL[0], copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(KDConfigError, match="SHA-256 starts with"):
        load_pretrained_resnet("resnet20", tmp_path)


def test_a_checkpoint_named_without_its_digest_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "resnet20-latest.th"
    odd.write_bytes(b"anything")
    with pytest.raises(KDConfigError, match="first hex digits of its SHA-256"):
        check_file_digest(odd)


def test_the_config_takes_a_published_teacher_for_cifar10_only() -> None:
    assert PUBLISHED_TEACHERS == tuple(f"published:resnet{d}" for d in (20, 32, 44, 56))
    assert scale_config("full", teacher_model="published:resnet56").teacher_model == "published:resnet56"
    with pytest.raises(KDConfigError, match="CIFAR-10 only"):
        scale_config("smoke", dataset="digits", teacher_model="published:resnet56")
    with pytest.raises(KDConfigError, match="student_model"):
        scale_config("smoke", student_model="published:resnet56")  # a published model is a teacher only


@needs_shared
def test_a_published_party_knows_every_class_and_reports_its_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    fake = SimpleNamespace(name="cifar10", num_classes=10, x_test=torch.randn(40, 3, 32, 32, generator=generator),
                           y_test=torch.randint(0, 10, (40,), generator=generator))  # fmt: skip
    model, meta = published_party(fake, "published:resnet20", "cpu")
    assert meta["own_classes"] == list(range(10)) and meta["train_size"] == 50_000
    assert 0.0 <= meta["test_acc"] <= 1.0
    assert meta["config"]["published_test_acc"] == pytest.approx(model.best_prec1 / 100)
    with pytest.raises(KDConfigError, match="CIFAR-10"):
        published_party(SimpleNamespace(name="digits", num_classes=10), "published:resnet20", "cpu")


def test_a_figure_caption_says_where_a_published_teacher_comes_from(tmp_path: Path) -> None:
    from kdlib.study.results import ResultsStore
    from kdlib.study.runner import Study

    study = Study(scale_config("full", teacher_model="published:resnet56"), ResultsStore.open("study", tmp_path),
                  device="cpu", progress=False)  # fmt: skip
    assert "published:resnet56 (trained by others on all 50,000 original CIFAR-10 training images)" in (
        study.caption_details()
    )
