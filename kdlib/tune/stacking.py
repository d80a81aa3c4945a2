"""Stacking G students of one architecture into one model, so that a grid of (T, alpha) trains them together: grouped
convolutions, linear and batch-norm layers (``GroupedStack``), or ``torch.func.vmap`` over stacked parameters
(``VmapStack``); ``stack_students`` picks a backend and checks the stack against its members."""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdlib.core.models import MLP, BasicBlock, ResNetCIFAR, ShortcutA, SmallCNN
from kdlib.errors import KDConfigError

_PROBE_TOLERANCE = 1e-4
CPU_CHUNK = 5
"""Students per stack on the CPU, where small stacks whose activations stay in cache train fastest
(``benchmarks/grid_speed.py`` measures it)."""


class UnsupportedModel(Exception):
    """A stacking backend cannot represent this model (the caller may try another)."""


# ----------------------------------------------------------------------------------------------------------
# Stacking G students: the "grouped" layers
# ----------------------------------------------------------------------------------------------------------

Link = tuple[nn.Module, str, list[torch.Tensor], bool]
"""(grouped module, tensor name, the members' tensors, shared): a shared tensor holds one value for all members."""


def _spread(x: torch.Tensor, members: int) -> torch.Tensor:
    """A shared activation ``(N, C, ...)`` repeated for every member: ``(N, G * C, ...)``."""
    return x.repeat(1, members, *([1] * (x.ndim - 2)))


def _cat_parameter(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in tensors]).clone())


class GroupedConv2d(nn.Module):
    """G copies of one ``Conv2d``: a convolution with ``G * groups`` groups on member-major channels."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = convs[0]
        if first.padding_mode != "zeros":
            raise UnsupportedModel(f"Conv2d padding_mode={first.padding_mode!r}")
        self.members, self.in_channels, self.groups = len(convs), first.in_channels, first.groups
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = _cat_parameter([c.weight for c in convs])
        self.bias = _cat_parameter([c.bias for c in convs]) if first.bias is not None else None
        self.links: list[Link] = [(self, "weight", [c.weight for c in convs], False)]
        if self.bias is not None:
            self.links.append((self, "bias", [c.bias for c in convs], False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.groups * self.members
        if x.shape[1] == self.in_channels and self.groups == 1:  # shared input: one wide convolution
            groups = 1
        elif x.shape[1] == self.in_channels:
            x = _spread(x, self.members)
        elif x.shape[1] != self.in_channels * self.members:
            raise UnsupportedModel(f"Conv2d input with {x.shape[1]} channels")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, groups)


class GroupedLinear(nn.Module):
    """G copies of one ``Linear`` on member-major features ``(N, G * in)``, or on a shared input ``(N, in)``."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        first = layers[0]
        self.members, self.in_features, self.out_features = len(layers), first.in_features, first.out_features
        self.weight = _cat_parameter([m.weight for m in layers])
        self.bias = _cat_parameter([m.bias for m in layers]) if first.bias is not None else None
        self.links: list[Link] = [(self, "weight", [m.weight for m in layers], False)]
        if self.bias is not None:
            self.links.append((self, "bias", [m.bias for m in layers], False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise UnsupportedModel(f"Linear on a {x.ndim}-d input")
        n, g = x.shape[0], self.members
        if x.shape[1] == self.in_features * g:
            weight = self.weight.view(g, self.out_features, self.in_features)
            out = torch.bmm(x.view(n, g, self.in_features).transpose(0, 1), weight.transpose(1, 2))
            out = out.transpose(0, 1).reshape(n, g * self.out_features)
            return out if self.bias is None else out + self.bias
        if x.shape[1] == self.in_features:
            return F.linear(x, self.weight, self.bias)
        raise UnsupportedModel(f"Linear input with {x.shape[1]} features")


class GroupedBatchNorm(nn.Module):
    """G copies of one ``BatchNorm1d/2d``: one batch norm over ``G * C`` channels (statistics are per channel)."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        first = norms[0]
        self.members, self.channels = len(norms), first.num_features
        like = first.weight if first.affine else first.running_mean
        self.norm = type(first)(
            first.num_features * len(norms), first.eps, first.momentum, first.affine, first.track_running_stats
        ).to(device=like.device, dtype=like.dtype)
        self.links: list[Link] = []
        for name in ("weight", "bias"):
            if first.affine:
                getattr(self.norm, name).data.copy_(torch.cat([getattr(m, name).detach() for m in norms]))
                self.links.append((self.norm, name, [getattr(m, name) for m in norms], False))
        if first.track_running_stats:
            for name in ("running_mean", "running_var"):
                getattr(self.norm, name).copy_(torch.cat([getattr(m, name) for m in norms]))
                self.links.append((self.norm, name, [getattr(m, name) for m in norms], False))
            counts = {int(m.num_batches_tracked) for m in norms}
            if len(counts) != 1:
                raise UnsupportedModel("students with different BatchNorm num_batches_tracked")
            self.norm.num_batches_tracked.copy_(norms[0].num_batches_tracked)
            self.links.append((self.norm, "num_batches_tracked", [m.num_batches_tracked for m in norms], True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.channels and self.members > 1:
            x = _spread(x, self.members)
        return self.norm(x)


class GroupedShortcutA(nn.Module):
    """G copies of ``models.ShortcutA``: subsample and zero-pad the channels of each member separately."""

    def __init__(self, shortcut: ShortcutA, members: int) -> None:
        super().__init__()
        self.members, self.stride = members, shortcut.stride
        self.pad_front, self.pad_back = shortcut.pad_front, shortcut.pad_back
        self.links: list[Link] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, h, w = x.shape
        if channels % self.members:
            raise UnsupportedModel("ShortcutA on a shared input")
        x = x.reshape(n, self.members, channels // self.members, h, w)
        if self.stride != 1:
            x = x[..., :: self.stride, :: self.stride]
        x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x.reshape(n, -1, x.shape[-2], x.shape[-1])


# Containers whose forward only uses per-channel or member-major-safe operations (flatten(1), residual adds, ...).
_SAFE_CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, MLP, SmallCNN, ResNetCIFAR, BasicBlock)
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def _grouped_leaf(leaves: list[nn.Module]) -> nn.Module | None:
    """The grouped version of one layer (None: keep the layer as it is); raise when the layer is unknown."""
    first = leaves[0]
    if type(first) is nn.Conv2d:
        return GroupedConv2d(leaves)  # type: ignore[arg-type]
    if type(first) is nn.Linear:
        return GroupedLinear(leaves)  # type: ignore[arg-type]
    if type(first) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return GroupedBatchNorm(leaves)  # type: ignore[arg-type]
    if type(first) is ShortcutA:
        return GroupedShortcutA(first, len(leaves))  # type: ignore[arg-type]
    if type(first) is nn.Flatten and (first.start_dim, first.end_dim) == (1, -1):
        return None
    if type(first) is nn.Dropout and first.p == 0:
        return None
    if type(first) in _PASS_THROUGH:
        return None
    raise UnsupportedModel(f"layer {type(first).__name__}")


def _pool_before_relu(body: nn.Module) -> None:
    """Swap ``ReLU, MaxPool2d`` into ``MaxPool2d, ReLU`` inside sequences: the same numbers forward and backward
    (max commutes with the monotone ReLU and both pick the same element), but the ReLU runs on the pooled map,
    a quarter of the memory traffic on the CPU."""
    for module in body.modules():
        if isinstance(module, nn.Sequential):
            keys = list(module._modules)
            for first, second in itertools.pairwise(keys):
                if type(module._modules[first]) is nn.ReLU and type(module._modules[second]) is nn.MaxPool2d:
                    module._modules[first], module._modules[second] = module._modules[second], module._modules[first]


class GroupedStack(nn.Module):
    """G students of one architecture as one model: ``forward(x)`` gives ``(G, N, classes)`` logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = list(members)
        self.count = len(members)
        first = self.members[0]
        if any(type(m) is not type(first) for m in self.members):
            raise UnsupportedModel("students of different types")
        self.body = copy.deepcopy(first)
        self.links: list[Link] = []
        for name, module in list(self.body.named_modules()):
            copies = [m.get_submodule(name) for m in self.members]
            if any(type(c) is not type(module) or c.extra_repr() != module.extra_repr() for c in copies):
                raise UnsupportedModel(f"students that differ at {name or 'the root'}")
            children = list(module.children())
            if children:
                if type(module) not in _SAFE_CONTAINERS:
                    raise UnsupportedModel(f"container {type(module).__name__}")
                if (
                    next(module.parameters(recurse=False), None) is not None
                    or next(module.buffers(False), None) is not None
                ):
                    raise UnsupportedModel(f"{type(module).__name__} with parameters of its own")
                continue
            grouped = _grouped_leaf(copies)
            if grouped is None:
                continue
            self.links += grouped.links
            parent, _, child = name.rpartition(".")
            self.body.get_submodule(parent)._modules[child] = grouped
        self.body.requires_grad_(True)
        _pool_before_relu(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        n = out.shape[0]
        return out.view(n, self.count, -1).transpose(0, 1)

    def write_back(self) -> None:
        """Copy the trained stacked tensors into the member students."""
        with torch.no_grad():
            for module, name, own, shared in self.links:
                stacked = getattr(module, name)
                for g, tensor in enumerate(own):
                    tensor.copy_(stacked if shared else stacked.reshape(self.count, *tensor.shape)[g])


# ----------------------------------------------------------------------------------------------------------
# Stacking G students: torch.func
# ----------------------------------------------------------------------------------------------------------


class VmapStack:
    """G students as stacked tensors run by ``vmap(functional_call)``; buffers are stacked and passed in too, so
    batch norm's in-place running-statistic updates land in each member's slice."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        self.members = list(members)
        self.count = len(members)
        for m in self.members:
            for module in m.modules():
                if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
                    raise UnsupportedModel("dropout (random masks cannot match the one-at-a-time runs)")
        for m in self.members:
            m.eval()  # stack_module_state wants one mode; the stack's own mode is set by train()/eval()
        params, buffers = stack_module_state(self.members)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(self.members[0]).to("meta")
        for module in self.base.modules():
            if hasattr(module, "inplace"):
                module.inplace = False  # in-place activations force copies of whole batched tensors under vmap

        def call(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._forward = vmap(call, in_dims=(0, 0, None))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, self.buffers, x)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())

    def train(self, mode: bool = True) -> VmapStack:
        self.base.train(mode)
        return self

    def eval(self) -> VmapStack:
        return self.train(False)

    def check_train_mode(self, x: torch.Tensor) -> None:
        """One training-mode forward on copies of the buffers: surfaces vmap's refusals (random ops) early."""
        from torch.func import functional_call, vmap

        buffers = {k: v.clone() for k, v in self.buffers.items()}
        self.base.train()
        try:
            with torch.no_grad():
                vmap(lambda p, b, xb: functional_call(self.base, (p, b), (xb,)), in_dims=(0, 0, None))(
                    self.params, buffers, x
                )
        except RuntimeError as exc:
            raise UnsupportedModel(f"vmap in training mode: {exc}") from exc

    def write_back(self) -> None:
        with torch.no_grad():
            for g, member in enumerate(self.members):
                for name, value in self.params.items():
                    member.get_parameter(name).copy_(value[g])
                for name, value in self.buffers.items():
                    member.get_buffer(name).copy_(value[g])


Stack = GroupedStack | VmapStack


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Full float32 convolutions and matrix products inside (no TF32 on CUDA), the previous settings after.

    On Ampere and later GPUs cuDNN computes float32 convolutions in TF32 by default (10-bit mantissa), which
    differs from run to run of different kernels by ~1e-3: more than the stack check allows, though no worse for
    training. The check therefore compares the stacked and the members' logits in full float32.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _check_stack(stack: Stack, probe: torch.Tensor) -> None:
    """Raise ``UnsupportedModel`` unless the stack's eval-mode logits equal each member's own (in full float32)."""
    stack.eval()
    try:
        with torch.no_grad(), exact_float32():
            stacked = stack(probe)
            own = torch.stack([m.eval()(probe) for m in stack.members])
    except (UnsupportedModel, RuntimeError) as exc:
        raise UnsupportedModel(str(exc)) from exc
    if stacked.shape != own.shape:
        raise UnsupportedModel(f"stacked logits of shape {tuple(stacked.shape)}, expected {tuple(own.shape)}")
    scale = 1.0 + float(own.abs().max())
    if float((stacked - own).abs().max()) > _PROBE_TOLERANCE * scale:
        raise UnsupportedModel("stacked logits differ from the students' own")


def stack_students(members: Sequence[nn.Module], probe: torch.Tensor, backend: str = "auto") -> Stack:
    """G students of one architecture (already on the probe's device) as one stacked model, checked on ``probe``.

    ``backend``: ``"grouped"``, ``"vmap"``, or ``"auto"`` (grouped when the model is made of known layers, else
    vmap). Raises ``UnsupportedModel`` when no backend can stack these students.
    """
    if backend not in ("auto", "grouped", "vmap"):
        raise KDConfigError("backend", backend, "'auto', 'grouped' or 'vmap'")
    reasons = []
    for name in ("grouped", "vmap") if backend == "auto" else (backend,):
        try:
            stack: Stack = GroupedStack(members) if name == "grouped" else VmapStack(members)
            _check_stack(stack, probe)
            if isinstance(stack, VmapStack):
                stack.check_train_mode(probe)
            return stack
        except UnsupportedModel as exc:
            reasons.append(f"{name}: {exc}")
    raise UnsupportedModel("; ".join(reasons))
