"""Which ViT size learns CIFAR-10 (JPEG re-encoded) to a useful accuracy on the ``full`` scale's student data, and
what it costs per epoch on this CPU (issue 25, item 4: a heterogeneous teacher / student pair worth reading).

    KDLIB_DATA=data KDLIB_CACHE=cache python benchmarks/vit_size.py                       # every size, 5 epochs
    python benchmarks/vit_size.py --sizes vit-tiny,resnet8 --epochs 3
    python benchmarks/vit_size.py --sizes vit-192 --epochs 2 --max-steps 40              # a quick cost probe

Data: kdlib's own loaders, as the study gets them: ``scale_config("full")`` (20,000 training images subsampled,
5,000 test images), its ``iid`` scenario (``make_scenario``: the 1,000-image validation split held out, the rest
split between the two parties) and the student's partition, party 1 (about 9,500 images). Each size is trained on
it from scratch through kdlib's loop (``train_supervised``: seeded batches, random crop + flip augmentation, cosine
learning rate over ``--epochs``, bfloat16 autocast where the CPU has it, see ``KDLIB_PRECISION``) and evaluated on
the 5,000 test images after every epoch.

Optimiser: ResNet-8 (the ``full`` scale's student) gets the scale's pre-training settings (SGD, lr 0.05, momentum
0.9, weight decay 5e-4, batch 64); the ViTs get Adam (``--vit-lr``, default 1e-3, ``--vit-weight-decay``, default
1e-4, batch 64), kdlib's other optimiser (``TrainConfig(optimizer="adam")``), because transformers train poorly with
the CNNs' SGD settings. Only the number of epochs departs from the scale, so the cosine schedule is compressed into
``--epochs``: these are short-budget accuracies, not converged ones.

The ViTs are transformers' ``ViTForImageClassification`` built here (``kdlib/core/models.py`` is not changed),
wrapped in kdlib's ``HFClassifier`` so that ``forward`` returns logits. ``vit-tiny`` copies ``_build_vit``'s config
on 32 x 32 images (patch 8: 16 patches, hidden 64, 2 layers, 2 heads, MLP 128).

Printed per size: parameters, seconds per training epoch (test evaluation excluded; the first epoch includes
warm-up), seconds to evaluate the 5,000 test images, test accuracy after each epoch, and extrapolations: one
student pre-training at the scale's ``pretrain.epochs`` and one distillation run at ``distill.epochs`` (student
training only: no teacher forward passes, no per-epoch validation), with the ratio of the seconds per epoch to
ResNet-8's (measured in the same call when ``resnet8`` is among ``--sizes``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdlib.core.metrics import accuracy  # noqa: E402
from kdlib.core.models import HFClassifier, build_model, count_parameters  # noqa: E402
from kdlib.core.precision import precision_label  # noqa: E402
from kdlib.core.train import (  # noqa: E402
    RunOptions,
    TrainConfig,
    predict_logits,
    seed_everything,
    set_cpu_threads,
    train_supervised,
)
from kdlib.data.datasets import Dataset, Subsample, load_dataset  # noqa: E402
from kdlib.study.config import StudyConfig, method_names, scale_config  # noqa: E402
from kdlib.study.parties import make_scenario  # noqa: E402

STUDENT = 1
"""Party 1 of a scenario is the student."""


@dataclass(frozen=True)
class ViTSize:
    """A ViT's shape: patch side (pixels), hidden size, layers, attention heads, MLP width."""

    patch: int
    hidden: int
    layers: int
    heads: int
    mlp: int

    def describe(self) -> str:
        return f"patch {self.patch}, hidden {self.hidden}, {self.layers} layers, {self.heads} heads, mlp {self.mlp}"


VIT_SIZES: dict[str, ViTSize] = {
    "vit-tiny": ViTSize(patch=8, hidden=64, layers=2, heads=2, mlp=128),  # = kdlib's vit-tiny on 32 x 32 images
    "vit-64-p4": ViTSize(patch=4, hidden=64, layers=2, heads=2, mlp=128),  # vit-tiny's width on 64 patches
    "vit-128": ViTSize(patch=4, hidden=128, layers=4, heads=4, mlp=256),
    "vit-192": ViTSize(patch=4, hidden=192, layers=6, heads=3, mlp=384),
}
REFERENCE = "resnet8"
SIZES: tuple[str, ...] = (*VIT_SIZES, REFERENCE)
DEFAULT_SIZES = ("vit-tiny", "vit-128", "vit-192", REFERENCE)


def build_vit(size: ViTSize, num_classes: int, in_shape: tuple[int, int, int]) -> HFClassifier:
    """A freshly initialised transformers ViT of ``size`` whose forward returns logits."""
    from transformers import ViTConfig, ViTForImageClassification

    c, h, w = in_shape
    config = ViTConfig(
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.mlp,
        image_size=h if h == w else (h, w),
        patch_size=size.patch,
        num_channels=c,
        num_labels=num_classes,
    )
    return HFClassifier(ViTForImageClassification(config))


def student_data(seed: int) -> tuple[Dataset, torch.Tensor, StudyConfig]:
    """The ``full`` scale's data set for ``seed`` and the indices of the ``iid`` student's partition."""
    cfg = scale_config("full", seed=seed)
    dataset = load_dataset(cfg.dataset, subsample=Subsample(cfg.n_train, cfg.n_test, seed), progress=False)
    scenario = make_scenario(dataset, "iid", cfg)
    return dataset, torch.as_tensor(scenario.parts[STUDENT]), cfg


def train_config(name: str, cfg: StudyConfig, args: argparse.Namespace) -> TrainConfig:
    """ResNet-8: the scale's pre-training settings; a ViT: Adam. Both with ``--epochs`` and the student's seed."""
    base = {**cfg.pretrain.as_dict(), "epochs": args.epochs, "seed": cfg.seed * 1000 + STUDENT}
    if name in VIT_SIZES:
        base.update(optimizer="adam", lr=args.vit_lr, weight_decay=args.vit_weight_decay)
    return TrainConfig(**base)


class StopTraining(Exception):
    """Raised by the step limit of a cost probe (``--max-steps``)."""


def measure(name: str, dataset: Dataset, idx: torch.Tensor, cfg: StudyConfig, args: argparse.Namespace) -> dict:
    """Train ``name`` on the student's partition; seconds per epoch, evaluation seconds and test accuracy per epoch."""
    seed_everything(cfg.seed * 1000 + STUDENT)
    if name in VIT_SIZES:
        model: nn.Module = build_vit(VIT_SIZES[name], dataset.num_classes, dataset.in_shape)
    else:
        model = build_model(name, dataset.num_classes, dataset.in_shape)
    train_cfg = train_config(name, cfg, args)
    x, y = dataset.x_train[idx], dataset.y_train[idx]
    epoch_s: list[float] = []
    eval_s: list[float] = []
    accs: list[float] = []
    clock = [time.perf_counter()]

    def on_epoch_end(epoch: int) -> dict:
        epoch_s.append(time.perf_counter() - clock[0])
        start = time.perf_counter()
        acc = accuracy(predict_logits(model, dataset.x_test, "cpu"), dataset.y_test)
        eval_s.append(time.perf_counter() - start)
        accs.append(acc)
        print(f"  {name} epoch {epoch}: {epoch_s[-1]:.1f} s train, {eval_s[-1]:.1f} s test, acc {100 * acc:.1f}%",
              flush=True)  # fmt: skip
        clock[0] = time.perf_counter()
        return {"test_acc": acc}

    run_model: nn.Module = StepLimit(model, args.max_steps) if args.max_steps else model
    result = {"name": name, "params": count_parameters(model), "epochs": args.epochs, "cfg": train_cfg}
    try:
        train_supervised(run_model, x, y, train_cfg, RunOptions("cpu", progress=False, on_epoch_end=on_epoch_end))
    except StopTraining:
        elapsed = time.perf_counter() - clock[0]
        per_step = elapsed / args.max_steps
        steps_per_epoch = -(-len(x) // train_cfg.batch_size)
        epoch_s = [per_step * steps_per_epoch]
        print(f"  {name}: {args.max_steps} steps in {elapsed:.1f} s -> {epoch_s[0]:.1f} s per epoch (estimated)")
    result.update(epoch_s=epoch_s, eval_s=eval_s, accs=accs)
    return result


class StepLimit(nn.Module):
    """``model`` whose forward raises ``StopTraining`` after ``limit`` training calls (a cost probe)."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model = model
        self.limit = limit
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.limit:
            raise StopTraining
        return self.model(x)


def per_epoch(result: dict) -> float:
    """Seconds per training epoch: the median over epochs after the first (warm-up) when there are 3 or more."""
    times = result["epoch_s"]
    return statistics.median(times[1:]) if len(times) >= 3 else statistics.median(times)


def report(results: list[dict], cfg: StudyConfig, train_size: int) -> None:
    pre, distill = cfg.pretrain.epochs, cfg.distill.epochs
    runs = len(cfg.scenarios) * len(method_names()) * cfg.seeds
    reference = next((per_epoch(r) for r in results if r["name"] == REFERENCE), None)
    print()
    print(f"full scale, iid, student partition: {train_size} training images, {cfg.n_test} test images; "
          f"{torch.get_num_threads()} thread(s), precision {precision_label(torch.device('cpu'))}")  # fmt: skip
    print(f"extrapolated: pre-training = {pre} epochs, one distillation run = {distill} epochs (student side only); "
          f"the study has {len(cfg.scenarios)} scenarios x {len(method_names())} methods x {cfg.seeds} seeds = "
          f"{runs} method runs (tuned KD's grid costs more than one run)")  # fmt: skip
    header = (f"{'size':<10}{'params':>9}{'epochs':>7}{'s/epoch':>9}{'x resnet8':>10}{'s/test':>8}"
              f"{'best acc':>9}{'last acc':>9}{'pretrain s':>11}{'distill s':>10}  acc per epoch (%)")  # fmt: skip
    print(header)
    for r in results:
        sec = per_epoch(r)
        ratio = f"{sec / reference:.1f}" if reference else "-"
        accs = r["accs"]
        best = f"{100 * max(accs):.1f}" if accs else "-"
        last = f"{100 * accs[-1]:.1f}" if accs else "-"
        test = f"{statistics.median(r['eval_s']):.1f}" if r["eval_s"] else "-"
        curve = " ".join(f"{100 * a:.1f}" for a in accs)
        print(f"{r['name']:<10}{r['params']:>9,}{len(accs):>7}{sec:>9.1f}{ratio:>10}{test:>8}{best:>9}{last:>9}"
              f"{pre * sec:>11.0f}{distill * sec:>10.0f}  {curve}")  # fmt: skip
    for r in results:
        shape = VIT_SIZES[r["name"]].describe() if r["name"] in VIT_SIZES else "kdlib build_model"
        c = r["cfg"]
        print(f"  {r['name']}: {shape}; {c.optimizer} lr {c.lr} wd {c.weight_decay} batch {c.batch_size} "
              f"augment {c.augment}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--epochs", default="5", help="epochs per size: one number, or one per size (e.g. 5,5,3,5)")
    parser.add_argument("--vit-lr", type=float, default=1e-3)
    parser.add_argument("--vit-weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="stop each size after this many steps (cost probe)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}: choose from {', '.join(SIZES)}")
    epochs = [int(e) for e in args.epochs.split(",")]
    if len(epochs) == 1:
        epochs *= len(sizes)
    if len(epochs) != len(sizes) or min(epochs) < 1:
        parser.error("--epochs: one positive number, or one per size")
    set_cpu_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dataset, idx, cfg = student_data(args.seed)
    print(f"student partition: {len(idx)} images; test: {len(dataset.x_test)}", flush=True)
    results = []
    for name, n in zip(sizes, epochs, strict=True):
        args.epochs = n
        results.append(measure(name, dataset, idx, cfg, args))
    report(results, cfg, len(idx))


if __name__ == "__main__":
    main()
