"""Machine and version facts written beside every benchmark figure."""

from __future__ import annotations

from shrink.deploy.bench import machine_info


def machine() -> dict:
    info = machine_info()
    info.pop("onnxruntime_providers", None)
    import torch

    info["torch_threads"] = torch.get_num_threads()
    for name in ("torch_pruning", "onnx", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            pass
    return info


def header(info: dict) -> str:
    return " · ".join(f"{k}: {v}" for k, v in info.items())
