"""The shipped real-CT liver model: port shapes, safe loading, FOV handling, real-CT Dice."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from screening.errors import ConfigError, ModelFileError
from screening.model.backends import load_backend, model_kind
from screening.model.liver3mm.inference import (
    Liver3mmConfig,
    _window_starts,
    body_box,
    cut_scan_circle,
    cut_sides,
    liver_region,
    native_mask,
    network_input,
    prep_image,
    residual_noise_hu,
    segment_liver_3mm,
    segments,
)
from screening.model.liver3mm.model import LIVER3MM_DIR, load_liver3mm
from screening.model.liver3mm.network import build_liver3mm_network, output_shape
from screening.preprocess import Prepared

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def liver3mm():  # type: ignore[no-untyped-def]
    return load_liver3mm()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# ----------------------------------------------------------------------------- the port


@pytest.mark.parametrize(
    ("size", "expected"), [((27, 27, 27), (1, 1, 1)), ((54, 81, 27), (28, 55, 1))]
)
def test_network_output_loses_13_voxels_per_side(
    size: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    net = build_liver3mm_network().eval()
    with torch.inference_mode():
        y = net(torch.zeros((1, 1, *size)))
    assert tuple(y.shape) == (1, 1, *expected) == (1, 1, *output_shape(size))
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # a sigmoid


def test_network_refuses_sizes_that_are_not_multiples_of_27() -> None:
    with pytest.raises(ValueError, match="multiple of 27"):
        output_shape((189, 162, 160))


def test_shipped_weights_have_the_original_parameter_count(liver3mm) -> None:  # type: ignore[no-untyped-def]
    n = sum(p.numel() for p in liver3mm.network.parameters())
    assert n == 3_874_961  # the Keras graph's count (scripts/liver3mm/README.md)
    assert liver3mm.card["weights"]["sha256"] == liver3mm.model_id
    assert liver3mm.card["training_domain"] == "real"
    assert "Apache" in liver3mm.card["source"]["licence"]


# ----------------------------------------------------------------------------- safe loading


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(LIVER3MM_DIR, dst)
    return dst


def test_tampered_weights_are_refused_naming_the_file(tmp_path: Path) -> None:
    d = _copy_model(tmp_path)
    data = bytearray((d / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256") as e:
        load_liver3mm(d)
    assert "weights.safetensors" in str(e.value)


def test_a_pickle_with_a_matching_hash_is_still_refused(tmp_path: Path) -> None:
    """Hash checks only bind weights to a card; the format check stops a pickle anyway."""
    d = _copy_model(tmp_path)
    evil = b"\x80\x04\x95" + b"not tensors" * 10
    (d / "weights.safetensors").write_bytes(evil)
    card = json.loads((d / "model_card.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256(evil).hexdigest()
    (d / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_liver3mm(d)


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    d = _copy_model(tmp_path)
    (d / "weights.safetensors").unlink()
    with pytest.raises(ModelFileError, match="cannot read the weights"):
        load_liver3mm(d)
    (d / "model_card.json").unlink()
    with pytest.raises(ModelFileError, match="not a model"):
        model_kind(d)
    with pytest.raises(ModelFileError, match=r"no model_card\.json"):
        load_liver3mm(d)


def test_model_kinds_and_backends(tmp_path: Path) -> None:
    assert model_kind("liver3mm") == "liver3mm" and model_kind("demo") == "unet"
    assert model_kind(_copy_model(tmp_path)) == "liver3mm"
    real = load_backend("liver3mm")
    assert real.organs == ("liver",) and real.training_domain == "real"
    assert real.preprocess_cfg == Liver3mmConfig().prep_spec()  # a CPU task can prepare
    assert real.producer()["kind"] == "liver3mm"
    demo = load_backend("demo")
    assert demo.organs == ("liver", "spleen") and demo.training_domain == "synthetic"
    assert real.producer() != demo.producer()


# ----------------------------------------------------------------------------- FOV handling


def test_window_starts_centre_a_short_box_and_cover_a_long_one() -> None:
    assert _window_starts(100, 136, 0.5) == [100 // 2 - 136 // 2]
    starts = _window_starts(300, 136, 0.5)
    assert starts[0] == 0 and starts[-1] == 300 - 136
    assert all(b - a <= 136 for a, b in itertools.pairwise(starts))  # no gap


def _body_phantom(shape: tuple[int, int, int] = (60, 80, 90)) -> np.ndarray:
    """Air around an ellipsoidal soft-tissue body (3 mm voxels), a table below it."""
    _z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - 40) / 25.0) ** 2 + ((x - 45) / 35.0) ** 2 <= 1.0
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[np.broadcast_to(body, shape)] = 40
    ct[:, 72:74, 10:80] = 200  # the table: thin, apart from the body
    return ct


def test_body_box_excludes_air_and_table_and_keeps_full_z() -> None:
    ct = _body_phantom()
    image = network_input(ct, (3.0, 3.0, 3.0))
    box = body_box(image, -150.0)
    assert box is not None
    assert (box[0].start, box[0].stop) == (0, 60)  # eroded, then grown back to the edge
    assert 13 <= box[1].start <= 16 and 64 <= box[1].stop <= 67  # body only (y 15..65)
    assert box[2].start >= 9 and box[2].stop <= 81
    assert cut_sides(image, box, -150.0, 0.2) == ((False, False),) * 3


def test_a_field_of_view_cutting_the_body_repeats_the_edge_not_water() -> None:
    ct = np.full((40, 50, 50), 60, dtype=np.int16)  # tissue up to every x/y edge
    image = network_input(ct, (3.0, 3.0, 3.0))
    box = body_box(image, -150.0)
    assert box is not None
    cut = cut_sides(image, box, -150.0, 0.2)
    assert cut == ((False, False), (True, True), (True, True))
    (_, seg), *_ = list(segments(image, box, Liver3mmConfig(), cut))
    level = np.clip(60 / 1000, -0.2, 0.2) * 2.5
    # the network's (x, y, z): x and y continue the tissue to the segment's corners, while
    # the slices above and below the scan stay zero
    z_in = np.flatnonzero(seg[94, 81, :])
    assert len(z_in) == 40
    assert np.allclose(seg[0, 0, z_in], level) and np.allclose(seg[-1, -1, z_in], level)
    assert np.allclose(seg[:, :, : z_in[0]], 0.0) and np.allclose(seg[:, :, z_in[-1] + 1 :], 0.0)


def test_a_scan_circle_counts_as_cut_only_where_the_body_reaches_it() -> None:
    from screening.scan_circle import circle_radius

    radius = circle_radius((60, 60))
    ct = np.full((10, 60, 60), -1000, dtype=np.int16)
    ct[:, radius < 0.7] = 40  # the body well inside the circle
    ct[:, radius > 1.0] = -1024
    assert cut_scan_circle(ct, -150.0) is None
    ct[:, radius <= 1.0] = 40  # the body fills the circle: cut by it
    outside = cut_scan_circle(ct, -150.0)
    assert outside is not None and (outside == (radius > 1.0)).all()


def _noisy(ct: np.ndarray, sd_hu: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(ct.shape) * sd_hu
    return np.clip(ct + np.rint(noise), -1024, 3071).astype(np.int16)


def test_residual_noise_measures_noise_not_anatomy() -> None:
    """Flat tissue with sharp edges reads as no noise; added noise raises it monotonically."""
    ct = _body_phantom()
    ct[20:40, 30:50, 30:60] = 150  # an organ with sharp edges
    clean = network_input(ct, (3.0, 3.0, 3.0)) / 2.5 * 1000  # back to HU
    assert residual_noise_hu(clean.astype(np.float32)) < 1.0
    levels = [residual_noise_hu(_noisy(ct, sd).astype(np.float32)) for sd in (10, 20, 40)]
    assert levels[0] < levels[1] < levels[2]
    assert 0.5 * 40 < levels[2] < 1.5 * 40  # the SD itself, give or take the median's bias
    assert residual_noise_hu(np.full((5, 5, 5), -1000, np.float32)) == 0.0  # no soft tissue


def test_a_noisy_scan_gets_the_stronger_median_and_a_clean_one_does_not() -> None:
    from scipy import ndimage

    from screening.model.liver3mm.inference import (
        MEDIAN_SPACING_MM,
        MODEL_SPACING_MM,
        _resample,
    )

    def by_hand(ct: np.ndarray, size: int) -> np.ndarray:
        fine = _resample(ct, (3.0, 3.0, 3.0), MEDIAN_SPACING_MM)
        fine = ndimage.median_filter(fine, size=size, mode="nearest")
        coarse = _resample(fine, MEDIAN_SPACING_MM, MODEL_SPACING_MM)
        return np.clip(coarse / 1000.0, -0.2, 0.2) * 2.5

    clean, noisy = _body_phantom(), _noisy(_body_phantom(), 120.0)
    limit = Liver3mmConfig().denoise_above_hu
    assert np.allclose(network_input(clean, (3.0, 3.0, 3.0), limit), by_hand(clean, 3))
    assert np.allclose(network_input(noisy, (3.0, 3.0, 3.0), limit), by_hand(noisy, 5))
    assert np.allclose(network_input(noisy, (3.0, 3.0, 3.0), None), by_hand(noisy, 3))
    with pytest.raises(ConfigError, match="denoise_above_hu"):
        Liver3mmConfig(denoise_above_hu=0.0)


def test_prep_written_by_a_cpu_task_gives_the_same_mask(liver3mm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The GPU task's input made ahead by a CPU task (``write_prep``) is the same float16
    image the in-memory path makes, so the mask is identical; and its grid is recorded."""
    from screening.preprocess import read_prep, write_prep
    from screening.scan_circle import exterior_to_json
    from screening.store.scan import open_scan_store
    from screening.synthetic.stores import write_phantom_stores

    write_phantom_stores(tmp_path / "store", 1, seed=5)
    path = next((tmp_path / "store" / "scans").glob("*.zarr"))
    spec = Liver3mmConfig().prep_spec()
    rec = write_prep(path, spec)
    assert not rec["reused"] and write_prep(path, spec)["reused"]
    store = open_scan_store(path)
    ct, spacing = store.read("ct"), store.spacing_mm
    prepared = read_prep(store, spec)
    assert prepared is not None
    prep = prepared.image
    attrs = store.derived_attrs("prep")
    assert attrs is not None and attrs["spacing_mm"] == [3.0, 3.0, 3.0]
    assert prep.dtype == np.float16 and float(prep.min()) >= 0.0 and float(prep.max()) <= 1.0
    assert np.array_equal(prep, prep_image(ct, spacing, spec.cut_circle(ct), spec.denoise_above_hu))
    # what the GPU task needs of the CT is recorded, so it does not read the CT
    assert prepared.ct_shape == ct.shape and attrs["ct_shape"] == list(ct.shape)
    assert prepared.ct_notes == {"scan_circle_exterior": exterior_to_json(spec.cut_circle(ct))}
    with_prep = segment_liver_3mm(liver3mm.network, None, spacing, Liver3mmConfig(), prep=prepared)
    in_memory = segment_liver_3mm(liver3mm.network, ct, spacing, Liver3mmConfig())
    assert with_prep.liver.any() and np.array_equal(with_prep.liver, in_memory.liver)
    assert with_prep.seconds["preprocess_s"] < in_memory.seconds["preprocess_s"]
    with pytest.raises(ValueError, match="needs the CT or its prep"):
        segment_liver_3mm(liver3mm.network, None, spacing, Liver3mmConfig())


def test_a_prep_from_before_ct_notes_is_made_again(tmp_path: Path) -> None:
    """A ``prep`` written before the CT's shape and notes were recorded (same digest, no
    ``ct_notes``) is neither reused by ``write_prep`` nor trusted by the GPU task."""
    from screening.preprocess import read_prep, write_prep
    from screening.store.scan import open_scan_store, write_derived_array
    from screening.synthetic.stores import write_phantom_stores

    write_phantom_stores(tmp_path / "store", 1, seed=5)
    path = next((tmp_path / "store" / "scans").glob("*.zarr"))
    spec = Liver3mmConfig().prep_spec()
    write_prep(path, spec)
    store = open_scan_store(path)
    attrs = store.derived_attrs("prep")
    assert attrs is not None
    old = {k: v for k, v in attrs.items() if k not in ("ct_shape", "ct_notes")}
    write_derived_array(path, "prep", store.read("prep"), old)
    assert read_prep(open_scan_store(path), spec) is None
    assert not write_prep(path, spec)["reused"]
    assert read_prep(open_scan_store(path), spec) is not None


@pytest.mark.parametrize("seed", range(12))
def test_native_mask_over_the_liver_box_equals_the_whole_volume_interpolation(seed: int) -> None:
    """Interpolating only the box around the non-zero probabilities gives exactly what
    interpolating every native voxel gives (boxes at the array edges included)."""
    from screening.model.inference import probs_to_native
    from screening.model.liver3mm.inference import MODEL_SPACING_MM

    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(6, 30, 3))
    lo = [int(rng.integers(0, n - 1)) for n in shape]
    hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, shape, strict=True)]
    prob = np.zeros(shape, dtype=np.float32)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    prob[box] = rng.random(prob[box].shape, dtype=np.float32)
    spacing = tuple(float(v) for v in rng.choice([0.7, 0.8, 1.25, 2.5, 3.0, 5.0], 3))
    native = tuple(max(1, round(n * 3.0 / s)) for n, s in zip(shape, spacing, strict=True))
    whole = probs_to_native(np.stack([1 - prob, prob]), MODEL_SPACING_MM, native, spacing) == 1
    np.testing.assert_array_equal(native_mask(prob, native, spacing), whole)


def test_hysteresis_drops_a_half_believed_appendage_and_keeps_the_organ() -> None:
    prob = np.zeros((40, 40, 40), dtype=np.float32)
    prob[10:30, 10:30, 10:30] = 0.95  # the liver
    prob[30:40, 15:25, 15:25] = 0.6  # a bowel loop hanging below, half believed
    region = liver_region(prob, Liver3mmConfig())
    assert region[10:30, 10:30, 10:30].all()
    assert region[30:32].any() and not region[33:].any()  # grows 6 mm, no further
    assert not liver_region(np.full((5, 5, 5), 0.6, dtype=np.float32), Liver3mmConfig()).any()


def test_an_empty_scan_has_no_liver(liver3mm) -> None:  # type: ignore[no-untyped-def]
    ct = np.full((20, 30, 30), -1000, dtype=np.int16)
    res = segment_liver_3mm(liver3mm.network, ct, (3.0, 3.0, 3.0), Liver3mmConfig())
    assert not res.liver.any() and res.n_windows == 0


# ----------------------------------------------------------------------------- real CT


@pytest.fixture(scope="module")
def real_cases(real_data: Path):  # type: ignore[no-untyped-def]
    from screening.model.real_cases import load_lits117, load_totalsegmentator_example

    return {"ts": load_totalsegmentator_example(real_data), "lits": load_lits117(real_data)}


@pytest.mark.real_data
@pytest.mark.parametrize("key", ["ts", "lits"])
def test_real_cases_are_in_canonical_lps(real_cases, key: str) -> None:  # type: ignore[no-untyped-def]
    """The loaders' orientation, checked on the anatomy: the liver lies on the patient's right
    of the spine (lower x), the vertebrae behind it (higher y), and the liver's largest
    cross-section in its upper half (higher z). (A flip of any one axis fails here; LiTS 117's
    earlier z ↔ x mix-up, a reflection these centroids cannot see, cost 0.10 Dice and is
    caught by the floors below.)"""
    case = real_cases[key]
    bone = case.ct_hu > 250
    liver_zyx = np.array(np.nonzero(case.liver)).mean(axis=1)
    bone_zyx = np.array(np.nonzero(bone)).mean(axis=1)
    assert liver_zyx[2] < bone_zyx[2] - 10, "liver should be at lower x (patient's right)"
    assert liver_zyx[1] < bone_zyx[1], "vertebrae should be posterior (higher y) of the liver"
    area = case.liver.sum(axis=(1, 2))
    z = np.nonzero(area)[0]
    assert int(np.argmax(area)) > (z.min() + z.max()) / 2, "liver bulk should be superior"


@pytest.mark.real_data
def test_real_ct_liver_dice_floors(liver3mm, real_cases) -> None:  # type: ignore[no-untyped-def]
    """Floors just under what BENCHMARKS.md records (0.957 / 0.952): a change that loses
    real-CT accuracy fails here. Both are above the issue's 0.92."""
    floors = {"ts": 0.94, "lits": 0.93}
    for key, case in real_cases.items():
        res = segment_liver_3mm(liver3mm.network, case.ct_hu, case.spacing_mm, Liver3mmConfig())
        assert _dice(res.liver, case.liver) >= floors[key], key


@pytest.mark.real_data
def test_a_steatotic_liver_is_still_liver(liver3mm, real_cases) -> None:  # type: ignore[no-untyped-def]
    """The TotalSegmentator liver (47 HU) made fatty: 27 HU lower (≈ 20 HU, moderate
    steatosis) inside its reference mask. Segmented as liver, not dropped."""
    case = real_cases["ts"]
    ct = case.ct_hu.copy()
    ct[case.liver] -= 27
    assert abs(float(np.median(ct[case.liver])) - 20.0) <= 3.0
    res = segment_liver_3mm(liver3mm.network, ct, case.spacing_mm, Liver3mmConfig())
    assert _dice(res.liver, case.liver) >= 0.92


def test_run_with_tampered_weights_stops_before_any_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from screening.cli import main
    from screening.synthetic.stores import write_phantom_stores

    store = tmp_path / "store"
    write_phantom_stores(store, 2, seed=3)
    d = _copy_model(tmp_path)
    data = bytearray((d / "weights.safetensors").read_bytes())
    data[100] ^= 0x01
    (d / "weights.safetensors").write_bytes(bytes(data))
    argv = ["run", str(store), "--out", str(tmp_path / "r"), "--workers", "1", "--quiet"]
    assert main([*argv, "--model", str(d)]) == 2
    err = capsys.readouterr().err
    assert "weights.safetensors" in err and "sha256" in err
    assert not list((tmp_path / "r").glob("measurements/*/*.parquet"))
    assert not any(p.name == "seg" for p in store.rglob("seg"))


@pytest.mark.real_data
def test_a_field_of_view_that_cuts_the_liver_below(liver3mm, real_cases) -> None:  # type: ignore[no-untyped-def]
    """Chest CT's situation: only the upper liver in view (the top 96 mm of the scan)."""
    case = real_cases["ts"]
    ct, ref = case.ct_hu[80:], case.liver[80:]
    res = segment_liver_3mm(liver3mm.network, ct, case.spacing_mm, Liver3mmConfig())
    assert _dice(res.liver, ref) >= 0.93  # 0.966 measured


@pytest.mark.real_data
def test_a_scan_circle_that_cuts_the_body_and_liver(liver3mm, real_cases) -> None:  # type: ignore[no-untyped-def]
    """A tight chest reconstruction (LIDC-IDRI reconstructs 236–350 mm): the top 96 mm in a
    230 mm scan circle, padding outside. Continuing the image past the circle keeps the
    network from reading it as skin (0.962 measured; 0.887 without), and no liver is put
    where nothing was imaged."""
    from screening.model.real_cases import chest_reconstruction
    from screening.scan_circle import circle_radius

    case = chest_reconstruction(real_cases["ts"], 80, 230.0)
    res = segment_liver_3mm(liver3mm.network, case.ct_hu, case.spacing_mm, Liver3mmConfig())
    assert res.scan_circle_continued
    assert not res.liver[:, circle_radius(case.ct_hu.shape[1:]) > 1.0].any()
    dice = _dice(res.liver, case.liver)
    assert dice >= 0.94
    off = Liver3mmConfig(continue_scan_circle=False)
    plain = segment_liver_3mm(liver3mm.network, case.ct_hu, case.spacing_mm, off)
    assert not plain.scan_circle_continued and _dice(plain.liver, case.liver) < dice - 0.03
    # The GPU task's way: the exterior travels in the prep's attributes (JSON), not the CT.
    prepared = Liver3mmConfig().prep_spec().prepare(case.ct_hu, case.spacing_mm, threads=None)
    notes = json.loads(json.dumps(dict(prepared.ct_notes)))
    given = Prepared(prepared.image, prepared.ct_shape, notes)
    gpu = segment_liver_3mm(liver3mm.network, None, case.spacing_mm, Liver3mmConfig(), prep=given)
    assert gpu.scan_circle_continued and np.array_equal(gpu.liver, res.liver)


@pytest.mark.real_data
def test_a_noisy_low_dose_scan_is_denoised_before_the_network(liver3mm, real_cases) -> None:  # type: ignore[no-untyped-def]
    """Noise of SD 80 HU on the 3 mm voxels (a sharp-kernel low-dose CT, extreme): with the
    original 3 × 3 × 3 median the network loses the liver (0.54 measured); the 5 × 5 × 5
    median that the residual noise switches on keeps it (0.84)."""
    from screening.model.real_cases import with_noise

    case = with_noise(real_cases["ts"], 80.0)
    ct = case.ct_hu
    res = segment_liver_3mm(liver3mm.network, ct, case.spacing_mm, Liver3mmConfig())
    plain = Liver3mmConfig(denoise_above_hu=None)
    original = segment_liver_3mm(liver3mm.network, ct, case.spacing_mm, plain)
    assert _dice(res.liver, case.liver) >= 0.80
    assert _dice(original.liver, case.liver) < _dice(res.liver, case.liver) - 0.1


def test_screening_segment_defaults_to_the_real_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from screening.cli import main
    from screening.store.scan import open_scan_store
    from screening.synthetic.stores import write_phantom_stores

    store = tmp_path / "store"
    (scan_id,) = write_phantom_stores(store, 1, seed=5)
    assert main(["segment", str(store), "--device", "cpu", "--quiet"]) == 0
    assert "segmented 1 scan(s)" in capsys.readouterr().out
    attrs = open_scan_store(store / "scans" / f"{scan_id}.zarr").derived_attrs("seg")
    assert attrs is not None and attrs["backend"] == "liver3mm"
    assert attrs["model_id"] == load_liver3mm().model_id and attrs["organs"] == ["liver"]
