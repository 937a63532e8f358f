"""Shared fixtures: real CT fixtures (skipped with a message when absent) and small phantoms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom

# Property tests draw the same examples on every run, so CI cannot fail by chance; set
# HYPOTHESIS_PROFILE=explore to search new random examples while developing.
settings.register_profile("repeatable", derandomize=True, deadline=None)  # noisy shared CPU
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of the read-only real CT fixtures; skips the test when the folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT fixtures not found at {REAL_DATA} (only on the project machines)")
    return REAL_DATA


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    return make_phantom(PhantomSpec(padding_hu=-2000.0), ScanGeometry.preset("small"), seed=11)
