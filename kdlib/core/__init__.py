"""The KD core: models, pure losses, the one training loop (``fit``), each method's step, metrics (accuracy,
calibration, cost) and safe checkpoints. Nothing here knows about scenarios, the study or notebooks."""
