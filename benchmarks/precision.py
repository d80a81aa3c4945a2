"""Float32 vs. bfloat16 autocast on this CPU (``KDLIB_PRECISION``): time per training step, and what it changes in
pre-trained and fine-tuned accuracy.

    python benchmarks/precision.py                      # step times of the study's models (seconds)
    python benchmarks/precision.py --accuracy           # plus a smoke study per precision (minutes)

Step times: median over steps of one training step through ``train.fit`` (one thread, channels-last as in
training), per model and precision. Accuracy: the fine-tuning baseline of the smoke study (which pre-trains both
parties first) on ``--scenarios`` for ``--seeds`` seeds, in fresh temporary folders, once per precision; printed as
mean ± standard deviation over seeds of the test accuracy (%) of the pre-trained student and teacher and of the
fine-tuned student.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_speed import step_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16")
ACCURACY_SCRIPT = """
import sys
from kdlib.study.runner import open_study
study = open_study("smoke", scenarios=sys.argv[1], seeds=int(sys.argv[2]), methods="finetune", progress=False)
study.run_all(workers=1)
frame = study.frame()
table = frame.groupby("scenario", sort=False)[["acc_before", "teacher_acc", "acc_after"]].agg(["mean", "std"]) * 100
print(table.round(1).to_string())
"""


def step_times(models: list[str], batch: int) -> None:
    print(f"one training step, batch {batch}, one thread (median of 8 after 2 warm-up steps), ms:")
    print(f"{'model':<12}" + "".join(f"{p:>10}" for p in PRECISIONS) + f"{'ratio':>8}")
    for model in models:
        times = {}
        for precision in PRECISIONS:
            os.environ["KDLIB_PRECISION"] = precision
            times[precision] = step_seconds.__wrapped__(model, (3, 32, 32), batch, augment=False)  # not its cache
        row = "".join(f"{1000 * times[p]:>10.1f}" for p in PRECISIONS)
        print(f"{model:<12}{row}{times['fp32'] / times['bf16']:>8.2f}", flush=True)


def accuracy(scenarios: str, seeds: int) -> None:
    for precision in PRECISIONS:
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "KDLIB_PRECISION": precision, "KDLIB_RESULTS": f"{folder}/results",
                   "KDLIB_CACHE": f"{folder}/cache", "KDLIB_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # fmt: skip
            done = subprocess.run([sys.executable, "-c", ACCURACY_SCRIPT, scenarios, str(seeds)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"the {precision} study failed:\n{done.stderr[-3000:]}")
        print(f"\n{precision}: test accuracy (%), mean and standard deviation over {seeds} seeds")
        print(done.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn-small,resnet8,resnet20", help="comma list of model names")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--accuracy", action="store_true", help="also run the smoke study once per precision")
    parser.add_argument("--scenarios", default="iid,dirichlet:0.1")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from kdlib.core.precision import cpu_has_native_bf16

    print(f"native bfloat16 on this CPU: {cpu_has_native_bf16()}")
    step_times(args.models.split(","), args.batch)
    if args.accuracy:
        accuracy(args.scenarios, args.seeds)


if __name__ == "__main__":
    main()
