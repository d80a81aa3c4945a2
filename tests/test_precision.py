"""kdlib.core.precision: bf16 autocast of forward passes on the CPU, float32 everywhere else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlib.core.losses import distillation_term, dml_losses, dp_select_targets, kd_loss, soft_targets
from kdlib.core.precision import autocast_dtype, cpu_has_native_bf16, mixed_precision, precision_label
from kdlib.core.train import TrainConfig, fit, predict_logits
from kdlib.errors import KDConfigError
from kdlib.study.results import environment_info

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("fp32", None), ("bf16", torch.bfloat16), ("BF16", torch.bfloat16), (" fp32 ", None)],
)
def test_the_setting_chooses_the_cpu_autocast_type(monkeypatch, setting, expected) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", setting)
    assert autocast_dtype(CPU) is expected


def test_auto_follows_the_cpus_native_bf16_and_is_the_default(monkeypatch) -> None:
    monkeypatch.delenv("KDLIB_PRECISION", raising=False)
    assert autocast_dtype(CPU) is (torch.bfloat16 if cpu_has_native_bf16() else None)
    monkeypatch.setenv("KDLIB_PRECISION", "auto")
    assert autocast_dtype(CPU) is (torch.bfloat16 if cpu_has_native_bf16() else None)


CPUINFO_AVX512_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq\n\nprocessor\t: 1\n"
CPUINFO_AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    ("text", "native"), [(CPUINFO_AVX512_ONLY, False), (CPUINFO_AVX512_BF16, True), (CPUINFO_ARM, True), ("", False)]
)
def test_native_bf16_is_read_off_the_cpu_flags_not_avx512_alone(tmp_path, monkeypatch, text, native) -> None:
    from kdlib.core import precision

    (tmp_path / "cpuinfo").write_text(text)
    assert bool(precision.NATIVE_BF16_FLAGS & precision.cpu_flags(tmp_path / "cpuinfo")) is native
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()
    # an AVX-512 CPU without bf16 instructions gets float32 even where oneDNN says it "supports" bfloat16
    flags = precision.cpu_flags(tmp_path / "cpuinfo")
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "onednn_takes_bf16", lambda: True)
    monkeypatch.delenv("KDLIB_PRECISION", raising=False)
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() is native
        assert (autocast_dtype(CPU) is torch.bfloat16) is precision.cpu_has_native_bf16()
    finally:
        precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("setting", ["auto", "bf16", "fp32"])
def test_gpus_keep_float32(monkeypatch, setting) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", setting)
    assert autocast_dtype(torch.device("cuda")) is None


@pytest.mark.parametrize("bad", ["fp16", "half", "1", "bfloat"])
def test_a_bad_setting_is_named_with_what_to_write(monkeypatch, bad) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", bad)
    with pytest.raises(KDConfigError, match="KDLIB_PRECISION.*one of auto, bf16, fp32"):
        autocast_dtype(CPU)


@pytest.mark.parametrize(("setting", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_forward_passes_run_in_the_chosen_type_and_leave_weights_float32(monkeypatch, setting, dtype) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", setting)
    layer = nn.Linear(4, 3)
    with mixed_precision(CPU):
        out = layer(torch.randn(5, 4))
    assert out.dtype is dtype
    assert layer.weight.dtype is torch.float32
    assert precision_label(CPU) == ("bf16 autocast" if dtype is torch.bfloat16 else "fp32")


def test_losses_on_bf16_logits_are_the_float32_losses_of_the_same_values() -> None:
    gen = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(16, 10, generator=gen)).bfloat16()
    teacher = (3 * torch.randn(16, 10, generator=gen)).bfloat16()
    labels = torch.randint(0, 10, (16,), generator=gen)
    s32, t32 = student.float(), teacher.float()
    for temperature in (1.0, 4.0, 16.0):  # high T: soft targets need float32's resolution
        loss = kd_loss(student, teacher, labels, temperature, 0.7)
        assert loss.dtype is torch.float32
        assert torch.equal(loss, kd_loss(s32, t32, labels, temperature, 0.7))
        probs = soft_targets(teacher, temperature)
        assert probs.dtype is torch.float32 and torch.equal(probs, soft_targets(t32, temperature))
        assert torch.equal(distillation_term(student, probs, temperature), distillation_term(s32, probs, temperature))
    for own, reference in zip(dml_losses([student, teacher], labels, 2.0), dml_losses([s32, t32], labels, 2.0),
                              strict=True):  # fmt: skip
        assert own.dtype is torch.float32 and torch.equal(own, reference)
    targets, source = dp_select_targets([teacher], student, labels)
    targets32, source32 = dp_select_targets([t32], s32, labels)
    assert targets.dtype is torch.float32 and torch.equal(targets, targets32) and torch.equal(source, source32)


def test_float64_inputs_stay_float64() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    assert soft_targets(logits, 2.0).dtype is torch.float64
    assert kd_loss(logits, logits, torch.tensor([0, 1, 2, 0]), 2.0, 0.5).dtype is torch.float64


def test_bf16_training_keeps_float32_parameters_and_learns(monkeypatch) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", "bf16")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 6, generator=gen)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    before = float((predict_logits(model, x, "cpu").argmax(1) == y).float().mean())
    history = fit([model], x, y, lambda xb, yb, _i: nn.functional.cross_entropy(model(xb), yb),
                  TrainConfig(epochs=15, batch_size=32, lr=0.1))  # fmt: skip
    logits = predict_logits(model, x, "cpu")
    assert logits.dtype is torch.float32
    assert all(p.dtype is torch.float32 for p in model.parameters())
    assert history[-1]["loss"] < history[0]["loss"]
    assert float((logits.argmax(1) == y).float().mean()) > max(0.9, before)


def test_every_stored_run_records_the_cpu_precision(monkeypatch) -> None:
    monkeypatch.setenv("KDLIB_PRECISION", "fp32")
    assert environment_info()["cpu_precision"] == "fp32"
    monkeypatch.setenv("KDLIB_PRECISION", "bf16")
    assert environment_info()["cpu_precision"] == "bf16 autocast"
