"""Recovering accuracy after a cut: fine-tuning, distillation, BatchNorm recalibration.

May import: _util/, errors. Entry points: `fit`, `recalibrate_bn` (train.py), `evaluate` (evaluate.py).
"""
