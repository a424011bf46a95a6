"""Machine and version facts written beside every benchmark figure."""

from __future__ import annotations

from shrink.deploy.bench import machine_info


def machine() -> dict:
    info = machine_info()
    info.pop("onnxruntime_providers", None)
    import torch

    info["torch_threads"] = torch.get_num_threads()
    from shrink._util.versions import installed_version

    for dist in ("torch-pruning", "onnx", "transformers"):  # installed distributions, not __version__
        version = installed_version(dist)
        if version:
            info[dist.replace("-", "_")] = version
    import os

    info["load_average"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def header(info: dict) -> str:
    return " · ".join(f"{k}: {v}" for k, v in info.items())
