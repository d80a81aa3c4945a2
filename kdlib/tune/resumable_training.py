"""Training that can stop after any step and go on there, in this process or another: the seeded batches by
global step, the learning rate at each step, and the optimiser state of stacked students split per member and put
back together. Successive halving (``kdlib.tune.halving``) continues its surviving grid points with these."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from kdlib.core.train import TrainConfig, epoch_batches, make_optimizer
from kdlib.tune.stacking import GroupedStack, UnsupportedModel, VmapStack, stack_students

# ------------------------------------------------------------------------------------------ batches and schedule


class BatchStream:
    """``train.epoch_batches`` addressed by global step: training can stop after any step and restart there, in
    this process or another (``states``: the generator's state at the start of each epoch reached so far)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, states: dict[int, torch.Tensor] | None = None
    ) -> None:
        self.x, self.y, self.cfg = x, y, cfg
        self.per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
        self.states = dict(states or {0: torch.Generator().manual_seed(cfg.seed).get_state()})

    def _generator(self, epoch: int) -> torch.Generator:
        known = max(e for e in self.states if e <= epoch)
        generator = torch.Generator()
        generator.set_state(self.states[known])
        for e in range(known, epoch):  # draw the epochs in between as training would
            for _ in epoch_batches(self.x, self.y, self.cfg, generator):
                pass
            self.states[e + 1] = generator.get_state()
        return generator

    def between(self, start: int, end: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The batches of global steps ``start .. end - 1``."""
        step = start
        while step < end:
            epoch, offset = divmod(step, self.per_epoch)
            generator = self._generator(epoch)
            for number, batch in enumerate(epoch_batches(self.x, self.y, self.cfg, generator)):
                if number < offset:
                    continue
                if step >= end:
                    return
                yield batch
                step += 1
            self.states[epoch + 1] = generator.get_state()

    def latest(self) -> dict[int, torch.Tensor]:
        """The newest known epoch-start state (all a restart needs)."""
        last = max(self.states)
        return {last: self.states[last]}


def cosine_learning_rates(cfg: TrainConfig, total_steps: int) -> list[float]:
    """The learning rate at each step of ``train.fit``'s schedule (torch's cosine scheduler, stepped once per
    batch over the whole budget), so that training may stop and go on at any step with the same rates."""
    dummy = torch.zeros(1, requires_grad=True)
    optimizer = make_optimizer([dummy], cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total_steps))
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: changes nothing, keeps the scheduler's order check quiet
        scheduler.step()
    return rates


# ------------------------------------------------------------------------------------------------ stacks


class SingleStack(nn.Module):
    """One student in the stacked interface, for models no backend can stack (trained one at a time)."""

    def __init__(self, member: nn.Module) -> None:
        super().__init__()
        self.members, self.count = [member], 1
        self.member = member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member(x).unsqueeze(0)

    def write_back(self) -> None:
        """Nothing to copy: the member itself is trained."""


AnyStack = GroupedStack | VmapStack | SingleStack


def param_pairs(stack: AnyStack) -> list[tuple[torch.Tensor, list[str]]]:
    """Each trained tensor of the stack with the name of its slice in each member (member ``g``'s slice of a
    stacked tensor ``P`` is ``P.reshape(G, *shape)[g]``, as the stacks' ``write_back`` copies it)."""
    if isinstance(stack, VmapStack):
        return [(tensor, [name] * stack.count) for name, tensor in stack.params.items()]
    if isinstance(stack, SingleStack):
        return [(p, [name]) for name, p in stack.member.named_parameters()]
    names = [{id(p): n for n, p in m.named_parameters()} for m in stack.members]
    pairs = []
    for module, name, own, _shared in stack.links:
        tensor = getattr(module, name)
        if isinstance(tensor, nn.Parameter):
            pairs.append((tensor, [names[g][id(t)] for g, t in enumerate(own)]))
    covered = {id(t) for t, _ in pairs}
    if any(id(p) not in covered for p in stack.parameters() if p.requires_grad):
        raise UnsupportedModel("a stacked parameter without its members")
    return pairs


OptState = dict[str, dict[str, torch.Tensor]]
"""A member's optimiser state: parameter name -> the optimiser's tensors for it (momentum, Adam moments, step)."""


def load_optimizer(optimizer: torch.optim.Optimizer, pairs: list, states: list[OptState]) -> None:
    """Put the members' optimiser states into the stacked optimiser (nothing for members that have not trained)."""
    for tensor, names in pairs:
        own = [state.get(name) for state, name in zip(states, names, strict=True)]
        if not own[0]:
            continue
        stacked = {}
        for key, value in own[0].items():
            if value.ndim > 0 and len(own) * value.numel() == tensor.numel():
                parts = torch.cat([o[key].reshape(-1) for o in own]).reshape(tensor.shape)
                stacked[key] = parts.to(tensor.device).contiguous(memory_format=memory_layout(tensor))
            else:  # shared by all members (e.g. Adam's step count)
                stacked[key] = value.clone()
        optimizer.state[tensor] = stacked


def memory_layout(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.ndim == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def save_optimizer(optimizer: torch.optim.Optimizer, pairs: list, count: int) -> list[OptState]:
    """The stacked optimiser's state sliced per member, on the CPU."""
    states: list[OptState] = [{} for _ in range(count)]
    for tensor, names in pairs:
        state = optimizer.state.get(tensor, {})
        for key, value in state.items():
            sliced = value.numel() == tensor.numel() and value.ndim > 0
            for g in range(count):
                part = value.reshape(count, -1)[g].clone() if sliced else value.clone()
                states[g].setdefault(names[g], {})[key] = part.cpu()
    return states


def stack_or_single(members: list[nn.Module], probe: torch.Tensor, backend: str) -> AnyStack:
    if backend == "sequential":
        return SingleStack(members[0])  # chunks of one
    return stack_students(members, probe, backend)
