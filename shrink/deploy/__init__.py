"""Getting a compressed model out: store it, export it to ONNX with a parity check, time it.

store (save/load: safetensors + plan.json, replayed on a fresh model) · export (ONNX + ONNX
Runtime parity) · bench (latency on torch / ONNX Runtime, CPU / CUDA) · timing (interleaved calls, whether two models
can be ranked).

May import: cut/, layers/, _util/, errors. Entry points: `save`, `load`, `export_onnx`, `benchmark`.
"""
