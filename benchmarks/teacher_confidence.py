"""How confident a published CIFAR-10 ResNet is on this project's JPEG re-encoded CIFAR-10: accuracy, mean top
probability and ECE (15 bins), at T=1 and at standard KD's T=4, on a seeded sample of each split. The logits come
from the study's own ``predict_logits``, in the study's precision.

    python benchmarks/teacher_confidence.py                      # resnet56, 2,000 images per split
    python benchmarks/teacher_confidence.py --model resnet20 --n 5000

It explains the public-teacher scenario's calibration (figures/full/public_teacher/README.md): a teacher more
confident than it is accurate hands its confidence to a student that matches its logits at high T. The train split
is the pool the study's parties are drawn from; the published model was trained on the original PNG images of it.
"""

from __future__ import annotations

import argparse

import torch

from kdlib.core.calibration import expected_calibration_error
from kdlib.core.models import PRETRAINED_RESNETS, load_pretrained_resnet
from kdlib.core.train import predict_logits
from kdlib.data.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56", choices=PRETRAINED_RESNETS)
    parser.add_argument("--n", type=int, default=2000, help="images sampled per split (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("cifar10", progress=False)
    model = load_pretrained_resnet(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{args.model} on CIFAR-10 (JPEG re-encoded), {args.n} images per split, seed {args.seed}")
    print(f"{'split':<6} {'T':>4} {'accuracy %':>11} {'mean top prob %':>16} {'ECE (15 bins) pts':>18}")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        sample = torch.randperm(len(y), generator=generator)[: args.n]
        logits = predict_logits(model, x[sample], "cpu")  # as the study computes its teacher's logits
        accuracy = 100 * (logits.argmax(1) == y[sample]).float().mean().item()
        for temperature in (1.0, 4.0):
            scaled = logits / temperature
            top = 100 * torch.softmax(scaled, dim=1).max(dim=1).values.mean().item()
            ece = 100 * expected_calibration_error(scaled, y[sample])
            print(f"{split:<6} {temperature:>4g} {accuracy:>11.1f} {top:>16.1f} {ece:>18.1f}")


if __name__ == "__main__":
    main()
