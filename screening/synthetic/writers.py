"""Write phantoms as a DICOM series (one file per slice) or NIfTI, and truth masks as NIfTI.

The DICOM files carry *fake* patient identifiers (name, ID, birth date, accession number,
institution) on purpose, so that the privacy rules of ingest can be tested against them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import UID

from screening.config import FrozenConfig, require
from screening.errors import attempt_import
from screening.geometry import nifti_affine_from_canonical, reorient_nifti
from screening.reasons import SYNTHETIC_MARK
from screening.synthetic.phantom import Phantom

__all__ = [
    "TRANSFER_SYNTAXES",
    "DicomInfo",
    "write_dicom_series",
    "write_nifti",
]

#: Transfer syntaxes the writer can produce (JPEG 2000 needs pylibjpeg-openjpeg, JPEG-LS
#: imagecodecs' CharLS: pydicom's own JPEG-LS encoder needs pyjpegls, which is not installed).
TRANSFER_SYNTAXES = ("explicit", "implicit", "rle", "j2k", "jpegls")

# Row and column direction cosines (LPS) and the array flips that produce them from a canonical
# slice (rows = y toward P, columns = x toward L), by PatientPosition.
_ORIENTATION: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], bool, bool]] = {
    #        row dir       col dir     flip rows  flip cols
    "HFS": ((1, 0, 0), (0, 1, 0), False, False),
    "FFS": ((-1, 0, 0), (0, 1, 0), False, True),
    "HFP": ((-1, 0, 0), (0, -1, 0), True, True),
    "FFP": ((1, 0, 0), (0, -1, 0), True, False),
}


@dataclass(frozen=True, kw_only=True)
class DicomInfo(FrozenConfig):
    """Header content of a synthetic series. Identifiers are fake but realistic in form."""

    manufacturer: str = "SYNTHETIC"
    model: str = "Phantom CT"
    convolution_kernel: str = "STANDARD"
    institution: str = "Synthetic General Hospital"
    patient_name: str = "DOE^JANE"
    patient_id: str = "SYN00000000"
    patient_birth_date: str = "19600101"
    patient_age_years: int = 65
    accession_number: str = "ACC00000000"
    study_date: str = "20240115"
    rescale_intercept: float = -1024.0
    contrast_agent: str | None = None  # ContrastBolusAgent, e.g. "IOHEXOL 350"
    transfer_syntax: str = "explicit"
    uid_seed: str = "0"  # UIDs are derived from it, so files are reproducible
    study_uid_seed: str | None = None  # shared by series of one study (repeat scans)

    def __post_init__(self) -> None:
        require(
            self.transfer_syntax in TRANSFER_SYNTAXES,
            f"transfer_syntax {self.transfer_syntax!r} must be one of {TRANSFER_SYNTAXES}",
        )
        require(
            self.rescale_intercept in (-1024.0, 0.0),
            f"rescale_intercept {self.rescale_intercept} must be -1024 or 0",
        )


def _uid(*parts: str) -> UID:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=list(parts))


def _stored_values(phantom: Phantom, intercept: float) -> tuple[NDArray[np.integer], bool]:
    """Stored pixel values (HU − intercept) and whether they fit unsigned 16 bit."""
    stored = phantom.hu.astype(np.int32) - int(intercept)
    unsigned = bool(stored.min() >= 0)
    dtype = np.uint16 if unsigned else np.int16
    return stored.astype(dtype), unsigned


def write_dicom_series(
    phantom: Phantom, out_dir: str | os.PathLike[str], info: DicomInfo
) -> list[Path]:
    """Write one CT series, a file per slice, in the orientation of the patient position.

    Files are named ``IM00001.dcm``… in acquisition order: head-first series run from the
    top slice down, feet-first from the bottom up. Stored values are ``HU − RescaleIntercept``
    (slope 1), unsigned when they all fit, else signed; padding gets ``PixelPaddingValue``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        CTImageStorage,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGLSLossless,
        RLELossless,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geom, spec = phantom.geometry, phantom.spec
    position = geom.patient_position
    row_dir, col_dir, flip_rows, flip_cols = _ORIENTATION[position]
    nz, ny, nx = phantom.hu.shape
    dz, dy, dx = geom.spacing_mm
    ox, oy, oz = geom.origin_mm()
    stored, unsigned = _stored_values(phantom, info.rescale_intercept)
    study_uid = _uid("study", info.study_uid_seed or info.uid_seed)
    series_uid = _uid("series", info.uid_seed)
    frame_uid = _uid("frame", info.uid_seed)
    syntax = {
        "explicit": ExplicitVRLittleEndian,
        "implicit": ImplicitVRLittleEndian,
        "rle": RLELossless,
        "j2k": JPEG2000Lossless,
        "jpegls": JPEGLSLossless,
    }[info.transfer_syntax]
    order = range(nz - 1, -1, -1) if position.startswith("HF") else range(nz)
    paths = []
    for instance, k in enumerate(order, start=1):
        img = stored[k]
        if flip_rows:
            img = img[::-1]
        if flip_cols:
            img = img[:, ::-1]
        # LPS of the written pixel (0, 0): the canonical corner its flips moved there.
        ipp = (
            ox + (nx - 1) * dx * flip_cols,
            oy + (ny - 1) * dy * flip_rows,
            oz + k * dz,
        )
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = _uid("sop", info.uid_seed, str(instance))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        # Fake identifiers, on purpose: inputs for the privacy tests; never in any output.
        ds.PatientName, ds.PatientID = info.patient_name, info.patient_id  # fake, for tests
        ds.PatientBirthDate, ds.PatientSex = info.patient_birth_date, spec.patient_sex  # fake
        ds.PatientAge = f"{info.patient_age_years:03d}Y"
        ds.AccessionNumber, ds.InstitutionName = info.accession_number, info.institution  # fake
        ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = info.study_date
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 2, instance
        ds.Manufacturer, ds.ManufacturerModelName = info.manufacturer, info.model
        ds.ImageComments = SYNTHETIC_MARK  # what ingest records as source.synthetic
        ds.ConvolutionKernel = info.convolution_kernel
        ds.KVP = f"{spec.kvp:g}"
        ds.Exposure = f"{spec.exposure_mas:.0f}"
        ds.SliceThickness = f"{dz:g}"
        ds.SpacingBetweenSlices = f"{dz:g}"
        ds.PatientPosition = position
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [str(v) for v in (*row_dir, *col_dir)]
        ds.SliceLocation = f"{ipp[2]:.4f}"
        ds.PixelSpacing = [f"{dy:g}", f"{dx:g}"]  # row spacing, column spacing
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = (
            f"{info.rescale_intercept:g}",
            "1",
            "HU",
        )
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        if spec.padding_hu is not None:
            ds.PixelPaddingValue = int(spec.padding_hu - info.rescale_intercept)
        if info.contrast_agent:
            ds.ContrastBolusAgent, ds.ContrastBolusRoute = info.contrast_agent, "IV"
        ds.PixelData = np.ascontiguousarray(img).tobytes()
        if syntax != ExplicitVRLittleEndian:
            if syntax == ImplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = syntax
            elif syntax == JPEGLSLossless:
                _set_jpegls(ds, np.ascontiguousarray(img))
            else:
                # keep our deterministic SOPInstanceUID (compress() makes a new one by default)
                ds.compress(syntax, np.ascontiguousarray(img), generate_instance_uid=False)
        path = out / f"IM{instance:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _set_jpegls(ds: Any, img: NDArray[np.generic]) -> None:
    """Encode one frame as JPEG-LS lossless (CharLS through imagecodecs) and encapsulate it.
    The stored bit pattern is encoded as unsigned 16-bit, as DICOM JPEG-LS carries signed
    pixels; PixelRepresentation tells the decoder how to read it back."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    imagecodecs = attempt_import("imagecodecs", "dev")
    frame = imagecodecs.jpegls_encode(img.view(np.uint16), level=0)  # type: ignore[attr-defined]
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def write_nifti(
    volume_zyx: NDArray[np.generic],
    phantom: Phantom,
    path: str | os.PathLike[str],
    axcodes: Sequence[str] = ("R", "A", "S"),
) -> Path:
    """Write a canonical ``(z, y, x)`` array on the phantom's grid as NIfTI (RAS world).

    ``axcodes`` orders the stored array (nibabel codes); the world position of every voxel is
    the phantom's, whatever the order. Integer data are stored without scaling.
    """
    import nibabel as nib

    affine = nifti_affine_from_canonical(phantom.spacing_mm, phantom.origin_mm)
    data, affine = reorient_nifti(volume_zyx.transpose(2, 1, 0), affine, axcodes)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    img.header["descrip"] = SYNTHETIC_MARK.encode()  # what ingest records as source.synthetic
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, out)
    return out


def birth_date_for(age_years: int, study_date: str) -> str:
    """A fake birth date consistent with ``age_years`` at ``study_date`` (YYYYMMDD)."""
    study = dt.datetime.strptime(study_date, "%Y%m%d").date()
    return study.replace(year=study.year - age_years, day=1).strftime("%Y%m%d")
