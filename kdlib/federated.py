"""Federated learning on Flower: the ``kdlib.fl`` package under its former name (every name of the old module
``kdlib.federated`` still imports from here)."""

from __future__ import annotations

from kdlib.fl import *  # noqa: F403
from kdlib.fl import __all__ as _fl_all
from kdlib.fl.simulation import descendants as _descendants
from kdlib.fl.simulation import ray_env as _ray_env

__all__ = [*_fl_all, "_descendants", "_ray_env"]
