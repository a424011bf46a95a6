"""Recovering accuracy after a cut: fine-tuning, distillation, BatchNorm recalibration.

May import: _util/, errors. Entry points: `fit`, `recalibrate_bn` (train.py), `evaluate` (evaluate.py).
train (the loop) uses objectives (what is minimised: labels or next token), distributed (torchrun:
the process group, DDP/FSDP, each rank's batches) and checkpoint (resumable runs).
"""
