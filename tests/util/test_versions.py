"""Versions come from the installed distributions, not from modules' own __version__ strings."""

from __future__ import annotations

from importlib import metadata

from shrink._util.versions import installed_version, versions
from shrink.app import report


def test_installed_version_reads_distribution_metadata():
    assert installed_version("torch-pruning") == metadata.version("torch-pruning")
    assert installed_version("no-such-distribution-shrink-test") is None


def test_report_versions_are_the_installed_ones():
    recorded = report._versions()
    assert recorded["torch_pruning"] == metadata.version("torch-pruning")
    assert recorded["onnxruntime"] == metadata.version("onnxruntime")
    assert recorded == versions()
