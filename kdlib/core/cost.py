"""What a model costs to keep and to run: parameters, serialised size (safetensors bytes) and CPU latency per
batch (median and interquartile range over repeated timed runs, one torch thread, float32)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from safetensors.torch import save
from torch import nn

LATENCY_BATCHES = (1, 64)
LATENCY_REPEATS = {1: 30, 64: 10}
WARMUP = 3


def parameter_count(model: nn.Module) -> int:
    """The number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def serialized_bytes(model: nn.Module) -> int:
    """The size of the model's weights as a safetensors file, in bytes."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return len(save(state))


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside, the previous count restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def latency_ms(model: nn.Module, in_shape: tuple[int, ...], batch: int, repeats: int) -> list[float]:
    """Wall times in ms of ``repeats`` forward passes of a batch of ``batch`` random inputs, on the CPU in float32
    with one thread, after ``WARMUP`` untimed passes."""
    model = model.cpu().eval()
    x = torch.randn(batch, *in_shape)
    times = []
    with one_thread():
        for i in range(WARMUP + repeats):
            started = time.perf_counter()
            model(x)
            if i >= WARMUP:
                times.append(1000 * (time.perf_counter() - started))
    return times


def quartile_spread(values: list[float]) -> float:
    """The interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q3 - q1


def model_cost(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, float]:
    """Parameters, safetensors bytes, and per-image latency at each of ``LATENCY_BATCHES`` (median and IQR of the
    batch time divided by the batch size, in ms)."""
    out: dict[str, float] = {"params": parameter_count(model), "size_bytes": serialized_bytes(model)}
    for batch in LATENCY_BATCHES:
        per_image = [t / batch for t in latency_ms(model, in_shape, batch, LATENCY_REPEATS[batch])]
        out[f"latency_b{batch}_ms"] = statistics.median(per_image)
        out[f"latency_b{batch}_iqr_ms"] = quartile_spread(per_image)
    return out
