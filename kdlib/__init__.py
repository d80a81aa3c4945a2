"""kdlib: knowledge distillation between pre-trained models, for study notebooks."""

from kdlib.errors import KDConfigError

__all__ = ["KDConfigError"]
__version__ = "0.1.0"
