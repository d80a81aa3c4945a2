"""Loss functions of the study, as pure functions on logits.

Convention (stated once, used everywhere): **alpha weights the distillation term**.

    L_KD = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

so alpha = 0 is plain fine-tuning on the labels and alpha = 1 is pure distillation. The T^2 factor keeps the
gradient of the soft term on the same scale as the hard term when T changes (Hinton et al. 2015, section 2).
KL terms are averaged over the batch ("batchmean"), as torch's ``kl_div`` documents for the true KL divergence.
Every loss works in float32, also on logits a model computed under bfloat16 autocast (``kdlib.core.precision``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdlib.errors import KDConfigError


def _full(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 when a model computed them in a lower precision (bf16 autocast), else unchanged."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise if it is not a positive finite number."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise KDConfigError("temperature", temperature, "a positive number, e.g. 4.0") from None
    if not value > 0 or value == float("inf"):
        raise KDConfigError("temperature", temperature, "a positive finite number (T > 0), e.g. 4.0")
    return value


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise if it lies outside [0, 1]."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise KDConfigError("alpha", alpha, "a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise KDConfigError("alpha", alpha, "a number in [0, 1] (the weight of the distillation term)")
    return value


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of ``logits / T``: the softened distribution a teacher hands to its student."""
    return F.softmax(_full(logits) / check_temperature(temperature), dim=-1)


def distillation_term(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(target_probs || softmax(s / T))``, averaged over the batch.

    ``target_probs`` are already-softened probabilities (one teacher's, an average of teachers', a peer's).
    """
    temperature = check_temperature(temperature)
    if target_probs.shape != student_logits.shape:
        raise KDConfigError(
            "target_probs",
            f"shape {tuple(target_probs.shape)}",
            f"the student's logit shape {tuple(student_logits.shape)}: teacher and student need the same classes",
        )
    log_student = F.log_softmax(_full(student_logits) / temperature, dim=-1)
    kl = F.kl_div(log_student, _full(target_probs), reduction="batchmean")
    return temperature**2 * kl


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's KD loss: ``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y)`` (see module doc)."""
    alpha, temperature = check_alpha(alpha), check_temperature(temperature)
    if teacher_logits.shape != student_logits.shape:
        raise KDConfigError(
            "teacher_logits",
            f"shape {tuple(teacher_logits.shape)}",
            f"the student's logit shape {tuple(student_logits.shape)}: teacher and student need the same classes",
        )
    student_logits = _full(student_logits)
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0.0:
        return hard
    soft = distillation_term(student_logits, soft_targets(teacher_logits.detach(), temperature), temperature)
    return alpha * soft + (1.0 - alpha) * hard


def averaged_soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Mean of several teachers' softened distributions (multi-teacher KD with averaged soft targets)."""
    if len(teacher_logits) == 0:
        raise KDConfigError("teachers", 0, "at least one teacher")
    probs = [soft_targets(t.detach(), temperature) for t in teacher_logits]
    return torch.stack(probs).mean(dim=0)


def dml_losses(
    peer_logits: Sequence[torch.Tensor], labels: torch.Tensor, temperature: float = 1.0
) -> list[torch.Tensor]:
    """Deep mutual learning (Zhang et al. 2018): one loss per peer.

    Peer i minimises ``CE(z_i, y) + mean_{j != i} T^2 KL(p_j || p_i)`` with the other peers' outputs detached,
    so summing the returned losses and stepping one optimiser updates every peer by its own objective.
    """
    if len(peer_logits) < 2:
        raise KDConfigError("peers", len(peer_logits), "at least two peers for mutual learning")
    losses = []
    for i, own in enumerate(peer_logits):
        others = [soft_targets(z.detach(), temperature) for j, z in enumerate(peer_logits) if j != i]
        mimicry = torch.stack([distillation_term(own, p, temperature) for p in others]).mean()
        losses.append(F.cross_entropy(_full(own), labels) + mimicry)
    return losses


def dp_select_targets(
    teacher_logits: Sequence[torch.Tensor],
    initial_student_logits: torch.Tensor,
    labels: torch.Tensor | None,
    variant: str = "supervised",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-partitioning KD target choice (after Roth et al., ICLR 2024), per sample.

    Sources are numbered 0 = the frozen initial student, 1..K = the teachers. A sample is routed to the most
    confident teacher when that teacher beats the frozen student: on the probability of the true class
    (``variant="supervised"``, needs ``labels``) or on its largest probability (``"unsupervised"``). Ties stay with
    the student. Returns ``(target_logits, source)`` with ``source`` an int64 tensor of source numbers.
    """
    if variant not in ("supervised", "unsupervised"):
        raise KDConfigError("dp_variant", variant, "'supervised' or 'unsupervised'")
    if len(teacher_logits) == 0:
        raise KDConfigError("teachers", 0, "at least one teacher")
    candidates = torch.stack([_full(initial_student_logits.detach()), *[_full(t.detach()) for t in teacher_logits]])
    probs = F.softmax(candidates, dim=-1)  # (K + 1, B, C)
    if variant == "supervised":
        if labels is None:
            raise KDConfigError("labels", None, "true labels for the supervised variant")
        index = labels.view(1, -1, 1).expand(probs.shape[0], -1, 1)
        confidence = probs.gather(2, index).squeeze(2)
    else:
        confidence = probs.max(dim=2).values
    best_teacher = confidence[1:].argmax(dim=0)  # (B,)
    teacher_conf = confidence[1:].gather(0, best_teacher.view(1, -1)).squeeze(0)
    source = torch.where(teacher_conf > confidence[0], best_teacher + 1, torch.zeros_like(best_teacher))
    batch = torch.arange(candidates.shape[1], device=candidates.device)
    return candidates[source, batch], source
