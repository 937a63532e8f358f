"""Shared fixtures: real CT fixtures (skipped with a message when absent) and small phantoms."""

from __future__ import annotations

from pathlib import Path

import pytest

from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom

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
