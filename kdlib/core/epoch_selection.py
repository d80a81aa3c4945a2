"""Checkpoint (epoch) selection on the validation split: the one rule by which every method of the study picks the
student it returns. The test split is never read here."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from kdlib.core.metrics import accuracy
from kdlib.core.train import predict_logits


@dataclass
class EpochSelection:
    """Watches one student over its training epochs: ``observe(epoch)`` scores it on ``(x_val, y_val)`` and keeps
    a copy of its weights when the score beats every earlier epoch's (ties go to the earlier epoch);
    ``restore()`` loads the best epoch's weights back. With ``active=False`` it only scores, and the student of
    the last epoch is kept."""

    student: nn.Module
    x_val: torch.Tensor
    y_val: torch.Tensor
    device: str | torch.device = "auto"
    active: bool = True
    best_epoch: int = 0
    best_score: float = -math.inf
    scores: list[float] = field(default_factory=list)
    _state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def score(self) -> float:
        """The student's accuracy on the validation split now."""
        return accuracy(predict_logits(self.student, self.x_val, self.device), self.y_val)

    def observe(self, epoch: int) -> float:
        """Score the student after ``epoch`` (1-based) and remember it if it is the best so far."""
        value = self.score()
        self.scores.append(value)
        if not self.active:
            self.best_epoch, self.best_score = epoch, value
        elif value > self.best_score:
            self.best_epoch, self.best_score = epoch, value
            self._state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        return value

    def restore(self) -> int:
        """Load the best epoch's weights into the student (nothing to do when inactive or never observed);
        returns the chosen epoch (0: none observed)."""
        if self.active and self._state is not None:
            self.student.load_state_dict(copy.deepcopy(self._state))
        return self.best_epoch
