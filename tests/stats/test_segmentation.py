"""Segmentation agreement: analytic cases, a literal copy of medpy 0.4.0's algorithm, brute
force, MONAI, empty masks, cropping at the array border, the store wrapper and the summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from scipy import ndimage

from screening.errors import ConfigError
from screening.stats.segmentation import (
    SEGMENTATION_SCHEMA,
    SegmentationMetrics,
    dice,
    jaccard,
    segmentation_metrics,
    segmentation_row,
    segmentation_table,
    summarise_segmentation,
    surface_distances,
)
from screening.store.scan import (
    StoreConfig,
    open_scan_store,
    scan_store_path,
    write_derived_array,
    write_scan_store,
)
from screening.store.volume import ScanVolume
from screening.synthetic.stores import write_phantom_stores

Mask = NDArray[np.bool_]
Method = Literal["kdtree", "edt"]
METHODS: tuple[Method, ...] = ("kdtree", "edt")


# --- references -------------------------------------------------------------------------------


def medpy_surface_distances(
    result: Mask, reference: Mask, spacing: tuple[float, ...]
) -> NDArray[np.float64]:
    """medpy 0.4.0 ``__surface_distances`` verbatim (connectivity 1), on the uncropped array."""
    footprint = ndimage.generate_binary_structure(result.ndim, 1)
    result_border = result ^ ndimage.binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ ndimage.binary_erosion(
        reference, structure=footprint, iterations=1
    )
    dt = ndimage.distance_transform_edt(~reference_border, sampling=spacing)
    out: NDArray[np.float64] = dt[result_border]
    return out


def medpy_metrics(pred: Mask, ref: Mask, spacing: tuple[float, ...]) -> dict[str, float]:
    """medpy 0.4.0 ``dc``, ``jc``, ``hd``, ``hd95`` and ``assd`` (mean of the two ``asd``)."""
    d_pr = medpy_surface_distances(pred, ref, spacing)
    d_rp = medpy_surface_distances(ref, pred, spacing)
    inter = np.count_nonzero(pred & ref)
    return {
        "dice": 2.0 * inter / (np.count_nonzero(pred) + np.count_nonzero(ref)),
        "jaccard": inter / np.count_nonzero(pred | ref),
        "hd_mm": max(d_pr.max(), d_rp.max()),
        "hd95_mm": float(np.percentile(np.hstack((d_pr, d_rp)), 95)),
        "assd_mm": float(np.mean((d_pr.mean(), d_rp.mean()))),
    }


def brute_force_distances(a: Mask, b: Mask, spacing: tuple[float, ...]) -> NDArray[np.float64]:
    """Nearest surface voxel by exhaustive pairwise distances, surfaces found by neighbour count
    (a voxel is surface unless all 6 face neighbours, inside the array, are in the mask)."""

    def surface(m: Mask) -> Mask:
        padded = np.pad(m, 1, constant_values=False)
        inner = padded[1:-1, 1:-1, 1:-1].copy()
        for ax in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=ax)[1:-1, 1:-1, 1:-1]
        out: Mask = m & ~inner
        return out

    pa_ = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    out: NDArray[np.float64] = np.sqrt(((pa_[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)
    return out


def assert_metrics_equal(m: SegmentationMetrics, ref: dict[str, float]) -> None:
    for key, value in ref.items():
        assert getattr(m, key) == pytest.approx(value, rel=1e-12, abs=1e-12), key


def box(shape: tuple[int, int, int], lo: tuple[int, ...], hi: tuple[int, ...]) -> Mask:
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


# --- analytic cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_single_voxels_give_the_anisotropic_euclidean_distance(method: Method) -> None:
    a = box((6, 6, 6), (1, 1, 1), (2, 2, 2))
    b = box((6, 6, 6), (2, 3, 4), (3, 4, 5))  # offset (1, 2, 3) voxels
    spacing = (2.5, 0.7, 0.8)
    expected = math.sqrt(2.5**2 + (2 * 0.7) ** 2 + (3 * 0.8) ** 2)
    m = segmentation_metrics(a, b, spacing, method=method)
    assert (m.dice, m.jaccard, m.pred_voxels, m.ref_voxels, m.reason) == (0.0, 0.0, 1, 1, None)
    for value in (m.hd_mm, m.hd95_mm, m.assd_mm):
        assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 3), (2, 2)])
def test_cubes_offset_along_one_axis(method: Method, axis: int, k: int) -> None:
    """Cubes of side 5 offset by k voxels: Dice (5-k)/5, Jaccard (5-k)/(5+k), HD = k × spacing
    along that axis (2.5 mm in z, 0.7 mm in x): an axis mix-up changes it."""
    spacing = (2.5, 0.9, 0.7)
    a = box((12, 12, 12), (2, 2, 2), (7, 7, 7))
    b = np.roll(a, k, axis=axis)
    m = segmentation_metrics(a, b, spacing, method=method)
    assert m.dice == pytest.approx((5 - k) / 5)
    assert m.jaccard == pytest.approx((5 - k) / (5 + k))
    assert m.hd_mm == pytest.approx(k * spacing[axis], rel=1e-12)
    assert 0 < m.assd_mm < m.hd_mm and m.hd95_mm <= m.hd_mm
    assert_metrics_equal(m, medpy_metrics(a, b, spacing))


@pytest.mark.parametrize("method", METHODS)
def test_concentric_boxes(method: Method) -> None:
    """A 3-cube centred in a 7-cube: Dice 2·27/(27+343), Jaccard 27/343; each of A's 26
    surface voxels is nearest to the face of B straight out along its closest axis."""
    spacing = (2.5, 1.0, 1.2)
    inner = box((9, 9, 9), (3, 3, 3), (6, 6, 6))
    outer = box((9, 9, 9), (1, 1, 1), (8, 8, 8))
    m = segmentation_metrics(inner, outer, spacing, method=method)
    assert m.dice == pytest.approx(54 / 370)
    assert m.jaccard == pytest.approx(27 / 343)
    d_in_out, d_out_in = surface_distances(inner, outer, spacing, method=method)
    expected = [
        min(
            min(i - 1, 7 - i) * spacing[0],
            min(j - 1, 7 - j) * spacing[1],
            min(k - 1, 7 - k) * spacing[2],
        )
        for i, j, k in np.argwhere(inner)
        if (i, j, k) != (4, 4, 4)  # the centre is not surface
    ]
    np.testing.assert_allclose(d_in_out, expected, rtol=1e-12)
    assert d_out_in.size == 7**3 - 5**3  # the shell of the 7-cube
    assert m.hd_mm == pytest.approx(d_out_in.max())  # the corners of B are farthest
    assert m.assd_mm == pytest.approx((np.mean(expected) + d_out_in.mean()) / 2)


@pytest.mark.parametrize("method", METHODS)
def test_identity_gives_dice_one_and_zero_distances(method: Method) -> None:
    rng = np.random.default_rng(3)
    a = ndimage.binary_opening(rng.random((10, 12, 14)) < 0.6)
    m = segmentation_metrics(a, a.copy(), (2.5, 0.7, 0.7), method=method)
    assert (m.dice, m.jaccard, m.hd_mm, m.hd95_mm, m.assd_mm) == (1.0, 1.0, 0.0, 0.0, 0.0)


def test_dice_and_jaccard_functions() -> None:
    a = box((4, 4, 4), (0, 0, 0), (2, 4, 4))
    b = box((4, 4, 4), (1, 0, 0), (4, 4, 4))
    assert dice(a, b) == pytest.approx(2 * 16 / (32 + 48))
    assert jaccard(a, b) == pytest.approx(16 / 64)
    empty = np.zeros_like(a)
    assert dice(a, empty) == 0.0 and jaccard(empty, b) == 0.0
    assert math.isnan(dice(empty, empty)) and math.isnan(jaccard(empty, empty))
    with pytest.raises(ConfigError, match="same shape"):
        dice(a, b[:3])


# --- empty masks --------------------------------------------------------------------------------


def test_empty_masks_give_nan_distances_with_a_reason() -> None:
    a = box((5, 5, 5), (1, 1, 1), (3, 3, 3))
    empty = np.zeros_like(a)
    spacing = (2.5, 0.7, 0.7)
    m = segmentation_metrics(empty, a, spacing)
    assert (m.dice, m.jaccard, m.pred_voxels, m.ref_voxels) == (0.0, 0.0, 0, 8)
    assert m.reason == "empty prediction"
    assert all(math.isnan(v) for v in (m.hd_mm, m.hd95_mm, m.assd_mm))
    m = segmentation_metrics(a, empty, spacing)
    assert (m.dice, m.reason) == (0.0, "empty reference")
    assert math.isnan(m.assd_mm)
    m = segmentation_metrics(empty, empty, spacing)
    assert m.reason == "empty prediction and reference"
    assert all(math.isnan(v) for v in (m.dice, m.jaccard, m.hd_mm, m.hd95_mm, m.assd_mm))
    with pytest.raises(ConfigError, match="non-empty"):  # medpy raises RuntimeError here
        surface_distances(a, empty, spacing)
    with pytest.raises(ConfigError, match="spacing_mm"):
        segmentation_metrics(a, a, (1.0, 0.0, 1.0))


# --- medpy semantics on random masks, cropping and the array border ---------------------------

spacings = st.tuples(*[st.floats(0.3, 3.0, allow_nan=False)] * 3)
masks = hnp.arrays(
    bool, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7), elements=st.booleans()
)


@given(a=masks, data=st.data(), spacing=spacings)
def test_random_masks_match_medpy_and_brute_force(
    a: Mask, data: st.DataObject, spacing: tuple[float, float, float]
) -> None:
    b = data.draw(hnp.arrays(bool, a.shape, elements=st.booleans()))
    if not (a.any() and b.any()):
        return  # empty masks are tested on their own above
    expected = medpy_metrics(a, b, spacing)
    brute = brute_force_distances(a, b, spacing), brute_force_distances(b, a, spacing)
    for method in METHODS:
        m = segmentation_metrics(a, b, spacing, method=method)
        assert_metrics_equal(m, expected)
        for ours, theirs in zip(
            surface_distances(a, b, spacing, method=method), brute, strict=True
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_voxels_on_the_array_edge_are_surface() -> None:
    """medpy erodes with border_value=0: a mask filling the array has all its face voxels as
    surface, so losing the last slice moves that face by one slice (HD = z spacing)."""
    full = np.ones((4, 5, 6), dtype=bool)
    cut = full.copy()
    cut[-1] = False
    d_full, _ = surface_distances(full, full, (2.5, 0.7, 0.7))
    assert d_full.size == 4 * 5 * 6 - 2 * 3 * 4  # all but the interior voxels
    m = segmentation_metrics(full, cut, (2.5, 0.7, 0.7))
    assert m.hd_mm == pytest.approx(2.5)
    assert_metrics_equal(m, medpy_metrics(full, cut, (2.5, 0.7, 0.7)))


@pytest.mark.parametrize("method", METHODS)
def test_cropping_changes_nothing_even_at_the_array_border(method: Method) -> None:
    """Masks touching the array's faces give the same result as medpy on the uncropped array,
    and as the same masks placed inside a larger array (where they touch nothing)."""
    rng = np.random.default_rng(7)
    spacing = (2.5, 0.8, 0.7)
    shape = (12, 20, 18)
    a = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=2)
    b = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=2)
    a[0, 3:9, 2:7] = a[5:9, -1, :4] = a[:, 4, -1] = True  # touch z=0, y=end, x=end
    b[-1, 10:15, 5:12] = b[2:6, 0, 8:] = True  # touch z=end, y=0
    m = segmentation_metrics(a, b, spacing, method=method)
    assert_metrics_equal(m, medpy_metrics(a, b, spacing))
    big_a, big_b = np.zeros((20, 30, 26), bool), np.zeros((20, 30, 26), bool)
    big_a[3:15, 5:25, 4:22], big_b[3:15, 5:25, 4:22] = a, b
    big = segmentation_metrics(big_a, big_b, spacing, method=method)
    assert_metrics_equal(big, medpy_metrics(a, b, spacing))
    assert (big.pred_voxels, big.ref_voxels) == (m.pred_voxels, m.ref_voxels)


# --- MONAI ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # inside MONAI
def test_against_monai_where_the_definitions_agree() -> None:
    """MONAI 1.6 finds surfaces as medpy does (scipy binary_erosion XOR mask, default cross
    structure, crop with margin 1) and exact Euclidean nearest distances, so the directed
    distances and HD agree. Its aggregates differ: HD95 is max(p95(d_pr), p95(d_rp)), not the
    95th percentile of the pooled distances, and symmetric ASD is the mean of the pooled
    distances, not the mean of the two directed means. Checked as such; MONAI works in float32.
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(11)
    spacing = (2.5, 0.7, 0.9)
    shape = (10, 16, 14)
    for _ in range(3):
        a = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=2)
        b = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=2)
        a[0, :4, :4] = True  # on the border too
        ours = segmentation_metrics(a, b, spacing)
        d_pr, d_rp = surface_distances(a, b, spacing)
        y_pred, y = a[None, None].astype(np.float32), b[None, None].astype(np.float32)
        kw: dict[str, Any] = {"include_background": True, "spacing": spacing}
        hd = compute_hausdorff_distance(y_pred, y, **kw)
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, **kw)
        asd = compute_average_surface_distance(y_pred, y, symmetric=True, **kw)
        assert float(hd[0, 0]) == pytest.approx(ours.hd_mm, rel=1e-6)
        directed_p95 = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
        assert float(hd95[0, 0]) == pytest.approx(directed_p95, rel=1e-6)
        pooled = np.concatenate([d_pr, d_rp]).mean()
        assert float(asd[0, 0]) == pytest.approx(pooled, rel=1e-6)
        if d_pr.size != d_rp.size:  # the aggregates really differ: medpy's is ours
            assert ours.assd_mm != pytest.approx(pooled, rel=1e-9)
    # Where the two surfaces are the same size (a shifted cube), the ASSDs agree too.
    a = box((12, 12, 12), (2, 2, 2), (7, 7, 7))
    b = np.roll(a, 2, axis=0)
    y_pred, y = (m[None, None].astype(np.float32) for m in (a, b))
    their = compute_average_surface_distance(
        y_pred, y, include_background=True, symmetric=True, spacing=spacing
    )
    assert float(their[0, 0]) == pytest.approx(segmentation_metrics(a, b, spacing).assd_mm, 1e-6)


# --- scan stores --------------------------------------------------------------------------------


def dilated_seg(labels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Each organ of ``labels`` grown by one voxel (face connectivity): a plausible, imperfect
    prediction."""
    out = labels.copy()
    cross = ndimage.generate_binary_structure(3, 1)
    for label in (1, 2):
        out[ndimage.binary_dilation(labels == label, structure=cross) & (out == 0)] = label
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantoms (truth as seg_reference): the first with a dilated ``seg``, the second with
    none; plus a store with a ``seg`` but no reference."""
    root = tmp_path_factory.mktemp("store")
    ids = write_phantom_stores(root, 2, seed=5, cohort="c1")
    first = scan_store_path(root, ids[0])
    truth = open_scan_store(first).read("seg_reference")
    write_derived_array(first, "seg", dilated_seg(truth), {"model_id": "test-dilation"})
    ct = np.zeros((6, 8, 8), dtype=np.int16)
    identity = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    volume = ScanVolume(ct, (2.5, 1.0, 1.0), (0.0, 0.0, 0.0), identity, {"format": "synthetic"})
    path = write_scan_store(
        root, "noref", volume, {"scan_id": "noref", "cohort": "c2"}, StoreConfig()
    )
    write_derived_array(path, "seg", np.ones(ct.shape, np.uint8), {})
    return root


def test_segmentation_row_on_a_dilated_truth(store_root: Path) -> None:
    path = sorted((store_root / "scans").glob("p*.zarr"))[0]
    rows = {r["organ"]: r for r in segmentation_row(path)}
    assert list(rows) == ["liver", "spleen"]
    store = open_scan_store(path)
    seg, ref = store.read("seg"), store.read("seg_reference")
    voxel_ml = float(np.prod(store.spacing_mm)) / 1000
    for organ, label in (("liver", 1), ("spleen", 2)):
        r = rows[organ]
        assert r["scan_id"] == path.name.removesuffix(".zarr") and r["cohort"] == "c1"
        assert r["reason"] is None
        assert 0.6 < r["dice"] < 1 and 0 < r["jaccard"] < r["dice"]
        # Grown by one voxel: every prediction surface voxel is one step from the truth.
        assert 0 < r["assd_mm"] <= r["hd95_mm"] <= r["hd_mm"] <= 2 * max(store.spacing_mm)
        assert r["pred_volume_ml"] > r["ref_volume_ml"] > 0
        assert r["ref_volume_ml"] == pytest.approx(np.count_nonzero(ref == label) * voxel_ml)
        direct = segmentation_metrics(seg == label, ref == label, store.spacing_mm)
        assert (r["dice"], r["hd_mm"], r["assd_mm"]) == (direct.dice, direct.hd_mm, direct.assd_mm)
    assert rows["liver"]["dice"] > rows["spleen"]["dice"]  # the bigger organ loses less


def test_missing_arrays_become_rows_with_a_reason(store_root: Path) -> None:
    no_seg = sorted((store_root / "scans").glob("p*.zarr"))[1]
    rows = segmentation_row(no_seg)
    assert [(r["organ"], r["reason"], r["dice"]) for r in rows] == [
        ("liver", "no seg", None),
        ("spleen", "no seg", None),
    ]
    rows = segmentation_row(scan_store_path(store_root, "noref"), labels={"liver": 1})
    assert [(r["organ"], r["reason"], r["hd_mm"]) for r in rows] == [
        ("liver", "no seg_reference", None)
    ]


def test_segmentation_table_sequential_and_on_a_cluster(store_root: Path) -> None:
    from distributed import Client, LocalCluster

    table = segmentation_table(store_root)
    assert table.schema == SEGMENTATION_SCHEMA
    assert table.num_rows == 6  # 3 stores × 2 organs
    assert table["reason"].to_pylist().count(None) == 2
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as lc,
        Client(lc) as client,
    ):
        assert segmentation_table(store_root, client=client).equals(table)


# --- summary ----------------------------------------------------------------------------------


def test_summary_mean_std_and_undefined_rows() -> None:
    table = pa.table(
        {
            "group": ["normal", "normal", "normal", "steatosis", "steatosis"],
            "dice": [0.9, 0.8, None, 0.95, float("nan")],
            "hd_mm": [5.0, 7.0, 9.0, None, None],
        }
    )
    out = summarise_segmentation(table, ["group"], metrics=["dice", "hd_mm"])
    rows = {(r["group"], r["metric"]): r for r in out.to_pylist()}
    assert list(rows) == [
        ("normal", "dice"),
        ("normal", "hd_mm"),
        ("steatosis", "dice"),
        ("steatosis", "hd_mm"),
    ]
    r = rows[("normal", "dice")]
    assert (r["n"], r["n_undefined"]) == (2, 1)
    assert r["mean"] == pytest.approx(0.85) and r["std"] == pytest.approx(
        np.std([0.9, 0.8], ddof=1)
    )
    r = rows[("normal", "hd_mm")]
    assert (r["n"], r["mean"], r["std"]) == (3, 7.0, 2.0)  # ddof = 1: sqrt((4 + 0 + 4) / 2)
    r = rows[("steatosis", "dice")]
    assert (r["n"], r["n_undefined"], r["mean"], r["std"]) == (1, 1, 0.95, None)
    r = rows[("steatosis", "hd_mm")]
    assert (r["n"], r["n_undefined"], r["mean"], r["std"]) == (0, 2, None, None)
    with pytest.raises(ConfigError, match="not in the table"):
        summarise_segmentation(table, ["cohort"])


def test_summary_of_a_store_table_by_cohort_and_organ(store_root: Path) -> None:
    out = summarise_segmentation(segmentation_table(store_root), ["cohort", "organ"])
    rows = {(r["cohort"], r["organ"], r["metric"]): r for r in out.to_pylist()}
    assert len(rows) == 2 * 2 * 5
    liver = rows[("c1", "liver", "dice")]
    assert (liver["n"], liver["n_undefined"]) == (1, 1) and 0.6 < liver["mean"] < 1
    assert liver["std"] is None
    assert rows[("c2", "spleen", "assd_mm")]["n_undefined"] == 1
