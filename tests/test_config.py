from __future__ import annotations

import pytest

from screening.errors import ConfigError
from screening.reasons import ContrastPhase
from screening.synthetic import PhantomSpec, ScanGeometry


def test_round_trip_through_dict():
    spec = PhantomSpec(liver_hu=31.5, contrast_phase=ContrastPhase.ARTERIAL, padding_hu=-2000.0)
    assert PhantomSpec.from_dict(spec.to_dict()) == spec
    geom = ScanGeometry.preset("small", patient_position="FFS")
    back = ScanGeometry.from_dict(geom.to_dict())
    assert back == geom and isinstance(back.shape, tuple)


def test_digest_changes_with_content_only():
    assert PhantomSpec().digest() == PhantomSpec().digest()
    assert PhantomSpec().digest() != PhantomSpec(liver_hu=40.0).digest()


def test_unknown_field_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown field"):
        PhantomSpec.from_dict({"liver_hu": 50.0, "liver_HU": 1.0})
    with pytest.raises(ConfigError, match="padding_hu"):
        PhantomSpec(padding_hu=-500.0)
    with pytest.raises(ConfigError, match="patient_position"):
        ScanGeometry.preset("small", patient_position="XYZ")
    with pytest.raises(ConfigError, match="size"):
        ScanGeometry.preset("huge")  # type: ignore[arg-type]


def test_configs_are_frozen():
    spec = PhantomSpec()
    with pytest.raises(AttributeError):
        spec.liver_hu = 1.0  # type: ignore[misc]
