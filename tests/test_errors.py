from __future__ import annotations

import pickle

import pytest

from screening.errors import (
    ConfigError,
    MissingDependencyError,
    ScreeningError,
    SeriesNotFoundError,
    ValidationError,
    attempt_import,
)
from screening.reasons import ReasonCode


def test_message_names_reason_and_file():
    err = ValidationError(
        "3 slices, expected at least 10", reason=ReasonCode.TOO_FEW_SLICES, path="src/series-1"
    )
    text = str(err)
    assert "3 slices" in text and "[TOO_FEW_SLICES]" in text and "src/series-1" in text


def test_errors_refine_builtins():
    assert issubclass(SeriesNotFoundError, FileNotFoundError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(MissingDependencyError, ImportError)
    with pytest.raises(FileNotFoundError):
        raise SeriesNotFoundError("no series", path="x")


def test_errors_survive_pickling_with_reason_and_path():
    err = ValidationError("gantry tilt 12°", reason=ReasonCode.GANTRY_TILT, path="a/b")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ValidationError
    assert back.reason is ReasonCode.GANTRY_TILT and back.path == "a/b"
    assert str(back) == str(err)


def test_attempt_import_names_the_extra():
    assert attempt_import("json", "core") is not None
    with pytest.raises(MissingDependencyError, match=r"screening\[gpu\]") as info:
        attempt_import("no_such_module_xyz", "gpu")
    assert isinstance(info.value.__cause__, ImportError)
    assert isinstance(info.value, ScreeningError)
