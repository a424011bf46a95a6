import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# `make test` (and CI) draws the same examples on every run, so a red run is a change, not luck;
# HYPOTHESIS_PROFILE=fuzz draws fresh ones each run, for hunting (DEVELOPERS.md).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
