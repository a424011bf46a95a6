"""Version of shrink, and the installed versions of what it runs on (for plans and reports)."""

from __future__ import annotations

__version__ = "0.1.0"


def installed_version(dist_name: str) -> str | None:
    """The version of the installed distribution ``dist_name`` (e.g. "torch-pruning"), or None.

    Read from the installed package's metadata, not from the module's ``__version__``, which some
    packages do not keep up to date (torch_pruning 1.6.1 says "1.6.0").
    """
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """What a report records: shrink and the installed versions of its dependencies."""
    import platform

    found = {"shrink": __version__}  # the code running, which may be a checkout newer than what is installed
    for dist in ("torch", "torch-pruning", "onnx", "onnxruntime", "safetensors"):
        found[dist.replace("-", "_")] = installed_version(dist)
    found["onnxruntime"] = found["onnxruntime"] or installed_version("onnxruntime-gpu")
    found["python"] = platform.python_version()
    return found
