"""nnU-Net v2 result folders as a backend: a folder built here in nnU-Net's real layout.

``plans.json`` and ``dataset.json`` are written as nnU-Net 2.5 writes them (a tiny PlainConvUNet,
CT normalisation, a TotalSegmentator-like label list with the spleen at 1 and the liver at 5);
``fold_0/checkpoint_final.pth`` is saved the way nnU-Net's trainer saves it, numpy floats in its
training log included. The weights are random (seeded): what the tests pin is that our
hand-over (array orientation, spacing, label mapping) gives exactly what nnU-Net's own file-based
prediction gives on a RAS NIfTI, as TotalSegmentator calls it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2", reason="nnU-Net backend tests need the 'nnunet' extra")

from screening.errors import MissingDependencyError, ModelFileError  # noqa: E402
from screening.model.backends import load_backend, model_kind  # noqa: E402
from screening.model.nnunet import NnUNetConfig, load_nnunet, to_model_orientation  # noqa: E402

LABELS = {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3,
          "gallbladder": 4, "liver": 5}  # fmt: skip
TRAINER = "nnUNetTrainerNoMirroring"
LIVER_BIAS = 0.5
ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}  # fmt: skip
RESAMPLE = "resample_data_or_seg_to_shape"
PLANS = {
    "dataset_name": "Dataset901_Tiny", "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [4.0, 3.0, 3.0],
    "original_median_shape_after_transp": [16, 40, 40],
    "image_reader_writer": "NibabelIOWithReorient", "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": [8, 32, 32], "median_image_size_in_voxels": [16, 40, 40],
        "spacing": [4.0, 3.0, 3.0], "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False], "resampling_fn_data": RESAMPLE,
        "resampling_fn_seg": RESAMPLE, "resampling_fn_probabilities": RESAMPLE,
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                      "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                     "force_separate_z": None},
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
        "architecture": ARCH, "batch_dice": False,
    }},
    "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {"0": {
        "max": 400.0, "mean": 60.0, "median": 55.0, "min": -200.0, "percentile_00_5": -100.0,
        "percentile_99_5": 250.0, "std": 60.0}},
}  # fmt: skip
DATASET = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4,
           "file_ending": ".nii.gz"}  # fmt: skip


def _folder(root: Path, seed: int = 0, folds: tuple[int, ...] = (0,)) -> Path:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    root.mkdir(parents=True, exist_ok=True)
    (root / "plans.json").write_text(json.dumps(PLANS))
    (root / "dataset.json").write_text(json.dumps(DATASET))
    torch.manual_seed(seed)
    for fold in folds:
        net = get_network_from_plans(  # (it writes deep_supervision into the kwargs it gets)
            ARCH["network_class_name"], dict(ARCH["arch_kwargs"]), ARCH["_kw_requires_import"],
            1, len(LABELS), allow_init=True, deep_supervision=True,
        )  # fmt: skip
        with torch.no_grad():  # tilt the head so the liver (5) and spleen (1) both win somewhere
            for head in net.decoder.seg_layers:
                head.bias[5] += LIVER_BIAS
        (root / f"fold_{fold}").mkdir()
        checkpoint = {  # nnUNetTrainer.save_checkpoint's keys and value types
            "network_weights": net.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)]},
            "_best_ema": np.float64(0.5),
            "current_epoch": 1,
            "init_args": {"plans": PLANS, "configuration": "3d_fullres", "fold": fold,
                          "dataset_json": DATASET, "device": torch.device("cpu")},
            "trainer_name": TRAINER,
            "inference_allowed_mirroring_axes": None,
        }  # fmt: skip
        torch.save(checkpoint, root / f"fold_{fold}" / "checkpoint_final.pth")
    return root


def _scan() -> np.ndarray:
    rng = np.random.default_rng(3)
    ct = rng.normal(0, 30, size=(14, 36, 44)).astype(np.int16)
    ct[:, 6:26, 3:20] += 60  # left-right and front-back asymmetric: a flip changes the answer
    ct[2:12, 20:30, 28:40] -= 120
    return ct


SPACING = (2.5, 1.6, 1.4)


def _nnunet_reference(folder: Path, ct: np.ndarray, tmp: Path) -> np.ndarray:
    """nnU-Net's own prediction from a RAS NIfTI file, back in canonical (z, y, x) LPS."""
    import nibabel as nib
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    ras = ct[:, ::-1, ::-1].transpose(2, 1, 0)  # canonical LPS (z, y, x) → RAS (i, j, k)
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    (tmp / "in").mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(ras), affine), tmp / "in" / "case_0000.nii.gz")
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    # nnunetv2 2.5 calls torch.load with the default weights_only=True, which refuses the
    # numpy floats in its own checkpoints; this file is ours, so allow them here.
    with torch.serialization.safe_globals([np._core.multiarray.scalar, np.dtype,
                                           type(np.dtype("f8"))]):  # fmt: skip
        predictor.initialize_from_trained_model_folder(str(folder), (0,))
    predictor.predict_from_files(str(tmp / "in"), str(tmp / "out"), num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)  # fmt: skip
    out = np.asarray(nib.load(tmp / "out" / "case.nii.gz").dataobj)
    return out.transpose(2, 1, 0)[:, ::-1, ::-1]


def test_backend_matches_nnunet_on_a_ras_file_and_maps_labels_by_name(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model")
    assert model_kind(folder) == "nnunet"
    backend = load_backend(folder)
    assert backend.kind == "nnunet"
    assert backend.organs == ("liver", "spleen")
    ct = _scan()
    labels = backend.segment(ct, SPACING, device="cpu", threads=1).labels
    values = _nnunet_reference(folder, ct, tmp_path)
    assert values.shape == ct.shape
    assert {1, 5} <= set(np.unique(values).tolist())  # spleen and liver both drawn
    expected = np.select([values == 5, values == 1], [1, 2], 0).astype(np.uint8)
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 1, 2}
    # The id covers the weights: another seed is another model.
    other = load_backend(_folder(tmp_path / "other", seed=1))
    assert other.model_id != backend.model_id


def _as_saved_under_numpy1(checkpoint: Path) -> None:
    """Rewrite a checkpoint's pickle as numpy 1 wrote it (``numpy.core.multiarray.scalar``):
    torch.save's protocol 2 names globals as text lines, so the swap keeps the pickle valid."""
    import zipfile

    with zipfile.ZipFile(checkpoint) as z:
        parts = {i.filename: z.read(i) for i in z.infolist()}
    pkl = next(name for name in parts if name.endswith("/data.pkl"))
    assert b"numpy._core.multiarray" in parts[pkl]
    parts[pkl] = parts[pkl].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with zipfile.ZipFile(checkpoint, "w", zipfile.ZIP_STORED) as z:
        for name, data in parts.items():
            z.writestr(name, data)


def test_numpy1_checkpoints_load_and_code_does_not(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model")
    _as_saved_under_numpy1(folder / "fold_0" / "checkpoint_final.pth")
    backend = load_nnunet(folder)
    assert backend.organs == ("liver", "spleen")


def test_orientation_setting_flips_the_hand_over() -> None:
    ct = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(to_model_orientation(ct, "LPS"), ct)
    np.testing.assert_array_equal(to_model_orientation(ct, "RAS"), ct[:, ::-1, ::-1])
    np.testing.assert_array_equal(to_model_orientation(ct, "LPI"), ct[::-1])
    with pytest.raises(Exception, match="axis codes"):
        NnUNetConfig(orientation="SAR")


def test_folds_are_ensembled_and_named_in_the_id(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model", folds=(0, 1))
    both = load_nnunet(folder)
    one = load_nnunet(folder, config=NnUNetConfig(folds=("0",)))
    assert len(both.predictor.list_of_parameters) == 2
    assert both.model_id != one.model_id
    assert both.producer()["config"]["folds"] is None
    with pytest.raises(ModelFileError, match="fold 3") as err:
        load_nnunet(folder, config=NnUNetConfig(folds=("3",)))
    assert "fold_3" in str(err.value)


def test_broken_folders_are_clear_errors_naming_the_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model")
    (folder / "dataset.json").write_text(
        json.dumps({**DATASET, "labels": {"background": 0, "kidney": 1}})
    )
    with pytest.raises(ModelFileError, match="no 'liver' label") as err:
        load_backend(folder)
    assert "dataset.json" in str(err.value)

    folder = _folder(tmp_path / "trimmed")
    (folder / "plans.json").unlink()
    with pytest.raises(ModelFileError):  # no plans: not recognised as a model folder at all
        load_backend(folder)
    with pytest.raises(ModelFileError, match=r"no plans\.json"):
        load_nnunet(folder)

    folder = _folder(tmp_path / "pickle")
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "trainer_name": TRAINER, "init_args": {},
                "evil": print}, ckpt)  # fmt: skip
    with pytest.raises(ModelFileError, match="weights-only") as err:
        load_backend(folder)
    assert "checkpoint_final.pth" in str(err.value)

    folder = _folder(tmp_path / "truncated")
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=r"checkpoint_final\.pth"):
        load_backend(folder)

    folder = _folder(tmp_path / "arch")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [
        8, 16, 32]  # fmt: skip
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_backend(folder)


def test_missing_nnunetv2_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    folder = _folder(tmp_path / "model")
    for name in [m for m in sys.modules if m == "nnunetv2" or m.startswith("nnunetv2.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # import nnunetv2 → ImportError
    with pytest.raises(MissingDependencyError, match=r"screening\[nnunet\]"):
        load_backend(folder)


def test_screening_run_with_an_nnunet_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folder travels to a real Dask worker by reference; the CLI's nnU-Net options reach
    it (and name the pipeline)."""
    from screening.cli import main
    from screening.store.scan import open_scan_store
    from screening.synthetic.stores import write_phantom_stores

    folder = _folder(tmp_path / "model")
    store = tmp_path / "store"
    ids = write_phantom_stores(store, 1, seed=4)
    argv = ["run", str(store), "--workers", "1", "--quiet", "--no-overlays", "--model", str(folder)]
    assert main([*argv, "--out", str(tmp_path / "r1"), "--nnunet-folds", "0"]) == 0
    assert "1 of 1 scan(s) finished (1 ok)" in capsys.readouterr().out
    attrs = open_scan_store(store / "scans" / f"{ids[0]}.zarr").derived_attrs("seg")
    assert attrs is not None and attrs["backend"] == "nnunet"
    assert attrs["organs"] == ["liver", "spleen"] and attrs["training_domain"] == "unknown"
    assert main([*argv, "--out", str(tmp_path / "r2"), "--nnunet-orientation", "LPS"]) == 0
    ids_of = [{p.stem for p in (tmp_path / r / "pipelines").glob("*.json")} for r in ("r1", "r2")]
    assert ids_of[0] and ids_of[1] and ids_of[0] != ids_of[1]  # the setting is in the id
    assert main([*argv, "--out", str(tmp_path / "r3"), "--nnunet-orientation", "up"]) != 0
    assert "axis codes" in capsys.readouterr().err
