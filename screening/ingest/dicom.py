"""DICOM: per-file headers for discovery, and reading one validated series into HU.

Discovery reads headers only (``stop_before_pixels``) and keeps what grouping, filtering and
validation need; identifiers (PatientID, names, dates, accession, institution) are never copied
into :class:`DicomHeader`. The series reader then decodes pixels slice by slice straight into
the canonical int16 volume, so peak memory stays near one volume.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.errors import DicomReadError, ValidationError
from screening.ingest.validate import SliceStack, ValidationConfig, validate_stack
from screening.ingest.volume import hu_int16_in_place, to_hu_int16
from screening.location import input_size, is_url, open_input
from screening.reasons import SYNTHETIC_MARK, ReasonCode, SourceFormat
from screening.store.volume import ScanVolume

__all__ = [
    "DicomHeader",
    "FileProblem",
    "classify",
    "covariates",
    "read_dicom_series",
    "read_header",
]

log = logging.getLogger(__name__)

# SOP classes that are images but not axial CT volumes we can measure.
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: Decoding plugin preference per compressed transfer syntax, fastest per CPU-second first
#: (BENCHMARKS.md "Decoders", bench/bench_decoders.py): GDCM's CharLS decodes JPEG-LS in
#: 0.4× pylibjpeg's time; for JPEG 2000 GDCM is faster on the wall clock only by running two
#: threads (more CPU in all), which a busy ingest worker cannot spare, so pylibjpeg leads;
#: RLE: pylibjpeg-rle, 4–7× pydicom's pure Python. The first *installed* one is used; pydicom's
#: own order is the fallback when it fails or none is installed.
DECODER_PREFERENCE: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.80": ("gdcm", "pylibjpeg"),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ("gdcm", "pylibjpeg"),  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "gdcm", "pillow"),  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "gdcm", "pillow"),  # JPEG 2000
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),  # RLE lossless
}
_LOCALIZER_WORDS = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
_DERIVED_WORDS = {"MPR", "MIP", "MINIP", "REFORMATTED", "PROJECTION IMAGE", "VOLUME RENDERING"}
_IV_WORDS = {"IV", "INTRAVENOUS", "INTRAVASCULAR", "IA", "INTRAARTERIAL", "ARTERIAL"}
_ENTERAL_WORDS = {"ORAL", "RECTAL", "PO"}
_NO_CONTRAST = {"", "NONE", "NO", "N", "N/A", "NA", "0", "NIL", "NONE GIVEN", "NO CONTRAST"}


@dataclass(frozen=True)
class FileProblem:
    """A file that is not usable on its own (junk, unreadable). ``path`` is absolute."""

    path: str
    reason: ReasonCode
    message: str


@dataclass(frozen=True)
class DicomHeader:
    """What discovery keeps from one DICOM file. No patient identifiers."""

    path: str
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6)
    position: tuple[float, ...] | None  # ImagePositionPatient (3)
    rows: int
    columns: int
    pixel_spacing: tuple[float, ...] | None  # [row spacing (y), column spacing (x)] mm
    n_frames: int
    has_pixels: bool
    transfer_syntax: str
    raw_pixels: RawPixels | None = None  # set when the slice can be read without pydicom
    # What makes one reconstruction: constant within a series (MULTIPLE_RECONSTRUCTIONS).
    slice_thickness: float | None = None
    kernel: tuple[str, ...] = ()


@dataclass(frozen=True)
class RawPixels:
    """Where an uncompressed little-endian 16-bit slice lies in its file, and how to read it.

    Discovery fills this in, so the series reader can read pixel data with one ``pread`` per
    slice instead of parsing every file a second time (see bench/bench_ingest.py).
    """

    offset: int
    length: int
    signed: bool
    bits_stored: int
    slope: float
    intercept: float
    rescale_assumed: bool
    padding: tuple[int, int] | None  # PixelPaddingValue .. PixelPaddingRangeLimit (stored)


# The header elements discovery reads on every file: (kind, tag, VR). They are decoded straight
# from pydicom's raw, not yet converted elements; pydicom's generic per-element conversion of
# these ~20 values cost as much as parsing the file (bench/bench_ingest.py).
_RAW_ELEMENTS: dict[str, tuple[str, int, str]] = {
    "ImageType": ("texts", 0x00080008, "CS"),
    "SOPClassUID": ("text", 0x00080016, "UI"),
    "SOPInstanceUID": ("text", 0x00080018, "UI"),
    "Modality": ("text", 0x00080060, "CS"),
    "StudyInstanceUID": ("text", 0x0020000D, "UI"),
    "SeriesInstanceUID": ("text", 0x0020000E, "UI"),
    "ImagePositionPatient": ("ds", 0x00200032, "DS"),
    "ImageOrientationPatient": ("ds", 0x00200037, "DS"),
    "FrameOfReferenceUID": ("text", 0x00200052, "UI"),
    "SamplesPerPixel": ("us", 0x00280002, "US"),
    "NumberOfFrames": ("is", 0x00280008, "IS"),
    "Rows": ("us", 0x00280010, "US"),
    "Columns": ("us", 0x00280011, "US"),
    "PixelSpacing": ("ds", 0x00280030, "DS"),
    "SliceThickness": ("ds", 0x00180050, "DS"),
    "ConvolutionKernel": ("texts", 0x00181210, "SH"),
    "BitsAllocated": ("us", 0x00280100, "US"),
    "BitsStored": ("us", 0x00280101, "US"),
    "PixelRepresentation": ("us", 0x00280103, "US"),
    "RescaleIntercept": ("ds", 0x00281052, "DS"),
    "RescaleSlope": ("ds", 0x00281053, "DS"),
}


def _decode_raw(kind: str, value: bytes) -> Any:
    """A raw little-endian value as pydicom converts it (its default settings); ValueError
    when the value is not the simple case, so the caller asks pydicom instead."""
    if kind == "us":
        if len(value) != 2:
            raise ValueError("not one US value")
        return int.from_bytes(value, "little")
    text = value.decode("latin-1").rstrip(" \0")  # float() and int() ignore other blanks
    if not text:
        raise ValueError("empty")
    items = text.split("\\")
    if kind == "texts":
        return items
    if kind == "ds":
        numbers = [float(v) for v in items]
        return numbers[0] if len(numbers) == 1 else numbers
    if len(items) > 1:
        raise ValueError("multi-valued")
    return text if kind == "text" else int(text)  # "is"


def _get(ds: Any, keyword: str, default: Any = None, raw: bool = True) -> Any:
    """``ds.get(keyword, default)`` for the elements in :data:`_RAW_ELEMENTS`, decoded from the
    raw bytes when the element is a plain little-endian one; anything else (absent, converted,
    big endian, empty, multi-valued where one value is expected, unparsable) is left to pydicom,
    so the value is what pydicom would give. ``raw=False`` always asks pydicom (tests)."""
    from pydicom.dataelem import RawDataElement

    kind, tag, vr = _RAW_ELEMENTS[keyword]
    e = ds.get_item(tag) if raw else None
    if (
        type(e) is RawDataElement
        and e.is_little_endian
        and e.VR in (vr, None)
        and isinstance(e.value, bytes)
    ):
        try:
            return _decode_raw(kind, e.value)
        except ValueError:
            pass
    return ds.get(keyword, default)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return (
        list(value)
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
        else [value]
    )


def _thickness(value: Any) -> float | None:
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return round(t, 3) if np.isfinite(t) else None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def read_header(path: str, raw_values: bool = True) -> DicomHeader | FileProblem:
    """Read one file's header (no pixel data). Never raises for bad files: returns a problem.

    ``raw_values=False`` has pydicom convert every value (the reference the fast decoding of
    :func:`_get` is tested against).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open_input(path) as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            # The reader stops at (7FE0,0010); a file that ends here has no pixel data.
            size = input_size(f)
            has_pixels = f.tell() < size
            raw = _raw_pixels(ds, f, size, raw_values) if has_pixels else None
    except InvalidDicomError:
        return FileProblem(
            path, ReasonCode.NO_DICM, "not a DICOM Part 10 file (no 'DICM' prefix at byte 128)"
        )
    except Exception as e:  # untrusted bytes: any parser failure is a property of the file
        return FileProblem(
            path, ReasonCode.UNREADABLE_FILE, f"DICOM header unreadable ({type(e).__name__})"
        )
    meta = getattr(ds, "file_meta", None)

    def get(keyword: str, default: Any = None) -> Any:
        return _get(ds, keyword, default, raw_values)

    try:
        return DicomHeader(
            path=path,
            study_uid=str(get("StudyInstanceUID", "") or ""),
            series_uid=str(get("SeriesInstanceUID", "") or ""),
            sop_uid=str(get("SOPInstanceUID", "") or ""),
            frame_of_reference_uid=str(get("FrameOfReferenceUID", "") or ""),
            modality=str(get("Modality", "") or "").upper(),
            sop_class_uid=str(get("SOPClassUID", "") or ""),
            image_type=tuple(str(v).upper() for v in (get("ImageType") or ())),
            orientation=_floats(get("ImageOrientationPatient"), 6),
            position=_floats(get("ImagePositionPatient"), 3),
            rows=int(get("Rows", 0) or 0),
            columns=int(get("Columns", 0) or 0),
            pixel_spacing=_floats(get("PixelSpacing"), 2),
            n_frames=int(get("NumberOfFrames", 1) or 1),
            has_pixels=has_pixels,
            transfer_syntax=str(getattr(meta, "TransferSyntaxUID", "") or ""),
            raw_pixels=raw,
            slice_thickness=_thickness(get("SliceThickness")),
            kernel=tuple(str(v).strip().upper() for v in _as_list(get("ConvolutionKernel"))),
        )
    except (ValueError, TypeError) as e:
        return FileProblem(
            path, ReasonCode.UNREADABLE_FILE, f"DICOM header has invalid values ({e})"
        )


_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def _raw_pixels(ds: Any, f: Any, size: int, raw_values: bool = True) -> RawPixels | None:
    """Locate uncompressed 16-bit little-endian pixel data right after the header, or None.

    Anything unusual (compressed, 8/32-bit, colour, rescale incomplete or invalid) returns None
    and the slice is read through pydicom, which also produces the precise error.
    """
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts not in (_EXPLICIT_LE, _IMPLICIT_LE):
        return None
    try:

        def get(keyword: str, default: Any = None) -> Any:
            return _get(ds, keyword, default, raw_values)

        if int(get("BitsAllocated", 0)) != 16 or int(get("SamplesPerPixel", 1)) != 1:
            return None
        bits_stored = int(get("BitsStored", 16))
        signed = int(get("PixelRepresentation", 0)) == 1
        has_slope, has_intercept = "RescaleSlope" in ds, "RescaleIntercept" in ds
        if has_slope != has_intercept:
            return None
        slope = float(get("RescaleSlope")) if has_slope else 1.0
        intercept = float(get("RescaleIntercept")) if has_intercept else 0.0
        if not (np.isfinite(slope) and np.isfinite(intercept)) or slope <= 0:
            return None  # pydicom's path refuses it with RESCALE_INVALID, naming the file
        padding = None
        if "PixelPaddingValue" in ds:
            low = int(ds.PixelPaddingValue)
            high = int(ds.get("PixelPaddingRangeLimit", low))
            padding = (min(low, high), max(low, high))
    except (TypeError, ValueError):
        return None
    head = f.read(12)
    if len(head) < 8 or head[:4] != _PIXEL_DATA_TAG:
        return None
    if ts == _EXPLICIT_LE:
        if head[4:6] not in (b"OW", b"OB") or len(head) < 12:
            return None
        length, header_len = int.from_bytes(head[8:12], "little"), 12
    else:
        length, header_len = int.from_bytes(head[4:8], "little"), 8
    if length == 0xFFFFFFFF:  # encapsulated
        return None
    offset = f.tell() - len(head) + header_len
    return RawPixels(
        offset=offset,
        length=min(length, size - offset),  # a truncated file shows here
        signed=signed,
        bits_stored=bits_stored,
        slope=slope,
        intercept=intercept,
        rescale_assumed=not has_slope,
        padding=padding,
    )


def _in_place_ok(raw: RawPixels, transpose: bool, flip: tuple[bool, bool, bool]) -> bool:
    """The common layout: stored as displayed, 16 bits used, slope 1, integer intercept."""
    return (
        not transpose
        and not flip[1]
        and not flip[2]
        and raw.bits_stored == 16
        and raw.slope == 1.0
        and float(raw.intercept).is_integer()
    )


def _read_raw_into(h: DicomHeader, name: str, target: NDArray[Any]) -> None:
    raw = h.raw_pixels
    assert raw is not None
    n_bytes = 2 * h.rows * h.columns
    if raw.length < n_bytes:
        raise DicomReadError(
            f"{name}: pixel data is {raw.length} bytes, expected {n_bytes} for {h.rows}x"
            f"{h.columns} 16-bit (truncated file?)",
            reason=ReasonCode.PIXELDATA_SHORT,
            path=h.path,
        )
    _check_not_long(raw.length, n_bytes, (h.rows, h.columns), h.path, name)
    try:
        with _open_pixels(h.path) as f:
            f.seek(raw.offset)
            got = f.readinto(target.data.cast("B"))
    except OSError as e:
        raise DicomReadError(
            f"{name} could not be read ({e})", reason=ReasonCode.UNREADABLE_FILE, path=h.path
        ) from e
    if got != n_bytes:
        raise DicomReadError(
            f"{name}: pixel data ends early (truncated file)",
            reason=ReasonCode.PIXELDATA_SHORT,
            path=h.path,
        )


def _open_pixels(path: str) -> Any:
    """Unbuffered for a local file (one ``readinto`` straight into the volume); an object
    store's file fetches the pixel data's range."""
    return open(path, "rb", buffering=0) if not is_url(path) else open_input(path)


def _check_not_long(
    length: int, expected: int, matrix: tuple[int, int], path: str, name: str
) -> None:
    """More pixel data than Rows x Columns x bits account for (one pad byte allowed): the
    header's matrix is wrong, and reading it as given would keep part of the image only."""
    if length > expected + 1:
        raise DicomReadError(
            f"{name}: pixel data is {length} bytes, but Rows x Columns ({matrix[0]}x{matrix[1]}) "
            f"x bits account for {expected}; the header's matrix does not describe the image",
            reason=ReasonCode.PIXELDATA_LONG,
            path=path,
        )


def _read_raw_slice(h: DicomHeader, name: str) -> NDArray[np.integer[Any]]:
    """Read one uncompressed slice into a new array (for layouts that need flips or masking)."""
    raw = h.raw_pixels
    assert raw is not None
    plane = np.empty((h.rows, h.columns), dtype="<i2" if raw.signed else "<u2")
    _read_raw_into(h, name, plane)
    if raw.bits_stored < 16:  # bits above HighBit are not pixel data (PS3.5 8.1.1)
        shift = 16 - raw.bits_stored
        if raw.signed:
            plane = (plane << shift) >> shift  # sign-extend
        else:
            plane &= np.uint16((1 << raw.bits_stored) - 1)
    return plane


def classify(h: DicomHeader) -> tuple[ReasonCode, str] | None:
    """Why this file is not part of an axial CT volume, or ``None`` when it may be."""
    if not h.has_pixels:
        return ReasonCode.NON_IMAGING, "no pixel data (dose report, structured report, or header)"
    if h.sop_class_uid.startswith(_SECONDARY_CAPTURE_PREFIX):
        return ReasonCode.NON_IMAGING, "secondary capture (screenshot), not a CT image"
    if h.modality != "CT":
        return ReasonCode.NOT_CT, f"modality {h.modality or 'missing'}, expected CT"
    words = set(h.image_type)
    if words & _LOCALIZER_WORDS:
        return ReasonCode.LOCALIZER, "localizer / scout image"
    if h.image_type[:1] == ("DERIVED",) or words & _DERIVED_WORDS:
        return ReasonCode.DERIVED_IMAGE, f"derived image ({'/'.join(h.image_type)})"
    if h.n_frames > 1 or h.sop_class_uid == _ENHANCED_CT_STORAGE:
        return ReasonCode.NOT_A_VOLUME, "multi-frame (enhanced) CT is not supported yet"
    if h.orientation is None or h.position is None or h.pixel_spacing is None:
        return ReasonCode.NOT_A_VOLUME, "no image plane (orientation, position or pixel spacing)"
    if not _plane_valid(h.orientation, h.position):
        return (
            ReasonCode.IMAGE_PLANE_INVALID,
            f"ImageOrientationPatient {list(h.orientation)} / ImagePositionPatient "
            f"{list(h.position)}: expected finite values and two orthogonal unit vectors",
        )
    if h.rows <= 0 or h.columns <= 0:
        return ReasonCode.NOT_A_VOLUME, "no Rows / Columns"
    if not all(np.isfinite(s) and s > 0 for s in h.pixel_spacing):
        # A zero or negative spacing would make volumes, mm offsets and the ROI geometry wrong.
        return (
            ReasonCode.PIXEL_SPACING_INVALID,
            f"PixelSpacing {list(h.pixel_spacing)} mm; expected two positive values",
        )
    return None


def _plane_valid(orientation: Sequence[float], position: Sequence[float]) -> bool:
    """Finite position; row and column cosines finite, unit length and orthogonal (1 %)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if not (np.all(np.isfinite(row)) and np.all(np.isfinite(col))):
        return False
    if not np.all(np.isfinite(np.asarray(position, float))):
        return False
    return bool(
        abs(np.linalg.norm(row) - 1) < 0.01
        and abs(np.linalg.norm(col) - 1) < 0.01
        and abs(float(row @ col)) < 0.01
    )


def _age_years(ds: Any) -> float | None:
    """PatientAge (nnnY/M/W/D), else birth and study date. The dates themselves are not kept."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "YMWD":
        per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.2425}[text[3]]
        return round(int(text[:3]) / per_year, 2)
    birth = _date(ds.get("PatientBirthDate"))
    study = _date(ds.get("StudyDate") or ds.get("SeriesDate") or ds.get("AcquisitionDate"))
    if birth is None or study is None or study < birth:
        return None
    return round((study - birth).days / 365.2425, 2)


def _date(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _float(ds: Any, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def contrast_in_header(ds: Any) -> bool:
    """True when intravascular contrast is recorded; oral or rectal contrast alone does not count
    (it does not change liver attenuation). An agent with no route counts as intravascular."""
    agent = (_text(ds, "ContrastBolusAgent") or "").upper()
    route = (_text(ds, "ContrastBolusRoute") or "").upper()
    words = set(re.split(r"[^A-Z]+", route)) - {""}
    if words & _IV_WORDS:
        return True
    if words & _ENTERAL_WORDS:
        return False
    return agent not in _NO_CONTRAST or bool(words)


def covariates(ds: Any) -> dict[str, Any]:
    """The coarse covariates epidemiologists need; nothing that identifies a patient."""
    sex = (_text(ds, "PatientSex") or "").upper()
    study = _date(ds.get("StudyDate") or ds.get("SeriesDate") or ds.get("AcquisitionDate"))
    return {
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "kvp": _float(ds, "KVP"),
        "convolution_kernel": _text(ds, "ConvolutionKernel"),
        "slice_thickness_mm": _float(ds, "SliceThickness"),
        "patient_sex": sex if sex in {"F", "M", "O"} else None,
        "patient_age_years": _age_years(ds),
        "study_year": study.year if study else None,
        "patient_position": _text(ds, "PatientPosition"),
        "contrast_header": contrast_in_header(ds),
    }


def _rescale(ds: Any, name: str, path: str) -> tuple[float, float, bool]:
    has_slope, has_intercept = "RescaleSlope" in ds, "RescaleIntercept" in ds
    if has_slope != has_intercept:
        present, missing = (
            ("RescaleSlope", "RescaleIntercept")
            if has_slope
            else ("RescaleIntercept", "RescaleSlope")
        )
        raise DicomReadError(
            f"{name} has {present} but no {missing}; HU cannot be computed. Expected both (or "
            "neither, meaning stored values are already HU)",
            reason=ReasonCode.RESCALE_INCOMPLETE,
            path=path,
        )
    if not has_slope:
        return 1.0, 0.0, True
    try:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except (TypeError, ValueError) as e:
        raise DicomReadError(
            f"{name} has a non-numeric RescaleSlope/RescaleIntercept",
            reason=ReasonCode.RESCALE_INCOMPLETE,
            path=path,
        ) from e
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope <= 0:
        # Slope 0 turns the whole slice into one value (-1024 HU with the usual intercept).
        raise DicomReadError(
            f"{name} has RescaleSlope {slope:g} and RescaleIntercept {intercept:g}; expected a "
            "positive, finite slope and a finite intercept",
            reason=ReasonCode.RESCALE_INVALID,
            path=path,
        )
    return slope, intercept, False


def _padding_mask(ds: Any, stored: np.ndarray) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or within the padding range), as stored values."""
    if "PixelPaddingValue" not in ds:
        return None
    low = int(ds.PixelPaddingValue)
    high = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else low
    return _padding_in(stored, (min(low, high), max(low, high)))


def _padding_in(stored: np.ndarray, padding: tuple[int, int] | None) -> np.ndarray | None:
    if padding is None:
        return None
    low, high = padding
    mask = (stored >= low) & (stored <= high) if high > low else stored == low
    return mask if mask.any() else None


def _read_dataset(h: DicomHeader, name: str, pydicom: Any) -> Any:
    try:
        with open_input(h.path) as f:
            return pydicom.dcmread(f)
    except Exception as e:  # untrusted bytes: any parser failure is a property of the file
        raise DicomReadError(
            f"{name} could not be read ({type(e).__name__})",
            reason=ReasonCode.UNREADABLE_FILE,
            path=h.path,
        ) from e


def _decoder_available(ds: Any) -> bool:
    """Whether an installed plugin can decode this file's transfer syntax at all."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ds.file_meta.TransferSyntaxUID).is_available)
    except Exception:  # unknown syntax, no file meta: no decoder
        return False


@functools.cache
def preferred_decoder(transfer_syntax: str) -> str | None:
    """The first installed plugin of ``DECODER_PREFERENCE`` for a syntax (None: pydicom's
    order)."""
    try:
        from pydicom.pixels import get_decoder

        installed = get_decoder(transfer_syntax).available_plugins
    except Exception:  # unknown or uncompressed syntax
        return None
    return next((p for p in DECODER_PREFERENCE.get(transfer_syntax, ()) if p in installed), None)


def _decode_preferred(ds: Any, ts: Any) -> np.ndarray | None:
    """Decode with the preferred plugin; None when there is none or it fails (the caller then
    lets pydicom try every plugin, which also yields the error to report)."""
    plugin = preferred_decoder(str(ts)) if ts is not None else None
    if plugin is None:
        return None
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, decoding_plugin=plugin))
    except Exception:  # another plugin may still decode it; the errors come from there
        return None


def _decode(ds: Any, name: str, path: str) -> np.ndarray:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and not getattr(ts, "is_compressed", True) and "PixelData" in ds:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * samples * bits // 8
        _check_not_long(len(ds.PixelData), expected, (int(ds.Rows), int(ds.Columns)), path, name)
    if ts is not None and getattr(ts, "is_compressed", False) and "PixelData" in ds:
        pixels = _decode_preferred(ds, ts)
        if pixels is not None:
            return pixels
    try:
        return np.asarray(ds.pixel_array)
    except AttributeError as e:
        raise DicomReadError(
            f"{name} has no pixel data", reason=ReasonCode.NON_IMAGING, path=path
        ) from e
    except ValueError as e:
        if "less than expected" in str(e) or "length" in str(e):
            raise DicomReadError(
                f"{name}: pixel data is shorter than Rows x Columns x BitsAllocated (truncated "
                "file?)",
                reason=ReasonCode.PIXELDATA_SHORT,
                path=path,
            ) from e
        raise DicomReadError(
            f"{name}: pixel data cannot be decoded ({e})",
            reason=ReasonCode.PIXELDATA_CORRUPT,
            path=path,
        ) from e
    except (RuntimeError, NotImplementedError) as e:
        name_ts = getattr(ts, "name", str(ts))
        if _decoder_available(ds):  # a decoder exists and every one failed: the data is bad
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DicomReadError(
                f"{name}: the {name_ts} pixel data cannot be decoded ({first_line}); the "
                "codestream is damaged or truncated",
                reason=ReasonCode.PIXELDATA_CORRUPT,
                path=path,
            ) from e
        raise DicomReadError(
            f"{name}: no installed decoder for transfer syntax {name_ts} ({ts}); install the "
            "pylibjpeg plugins (pylibjpeg-libjpeg, -openjpeg, -rle) or GDCM",
            reason=ReasonCode.CODEC_UNAVAILABLE,
            path=path,
        ) from e


def read_dicom_series(
    headers: Sequence[DicomHeader],
    names: Sequence[str],
    cfg: ValidationConfig,
    folder: str | None = None,
) -> tuple[ScanVolume, Any]:
    """Validate, decode and canonicalise one series.

    Parameters
    ----------
    headers
        The series' files (from :func:`read_header`), any order. Exact copies (same
        SOPInstanceUID) must already be removed.
    names
        Display names of the files for messages (relative paths), parallel to ``headers``.
    cfg
        Validation tolerances and the size limit.
    folder
        The series folder, named by errors.

    Returns
    -------
    volume, first_dataset
        The canonical volume and the header dataset of its first slice (for covariates and
        the patient pseudonym; the caller must not store its identifiers).

    Raises
    ------
    ValidationError, DicomReadError
        With the reason code and the file(s) concerned.
    """
    import pydicom

    first = headers[0]
    mismatched = [
        i
        for i, h in enumerate(headers)
        if (h.rows, h.columns, h.pixel_spacing) != (first.rows, first.columns, first.pixel_spacing)
    ]
    if mismatched:
        i = mismatched[0]
        raise ValidationError(
            f"slices differ in matrix or pixel spacing: {names[0]} is {first.rows}x"
            f"{first.columns} at {first.pixel_spacing} mm, {names[i]} is {headers[i].rows}x"
            f"{headers[i].columns} at {headers[i].pixel_spacing} mm; expected one grid per series",
            reason=ReasonCode.NOT_A_VOLUME,
            path=folder,
        )
    _check_one_reconstruction(headers, names, folder)
    n_voxels = len(headers) * first.rows * first.columns
    if n_voxels > cfg.max_voxels:
        raise ValidationError(
            f"{len(headers)} x {first.rows} x {first.columns} = {n_voxels:,} voxels exceeds the "
            f"limit of {cfg.max_voxels:,} (ValidationConfig.max_voxels)",
            reason=ReasonCode.SIZE_LIMIT,
            path=folder,
        )
    stack = validate_stack(
        [h.orientation or () for h in headers],
        [h.position or () for h in headers],
        names,
        cfg,
        path=folder,
    )
    return _decode_stack(headers, names, stack, folder, pydicom)


def _check_one_reconstruction(
    headers: Sequence[DicomHeader], names: Sequence[str], folder: str | None
) -> None:
    """One series, one reconstruction: a second kernel or slice thickness under the same
    SeriesInstanceUID is two images interleaved (their positions can even form one even grid,
    so the geometry checks alone would merge them)."""
    seen: dict[tuple[float | None, tuple[str, ...]], int] = {}
    for i, h in enumerate(headers):
        seen.setdefault((h.slice_thickness, h.kernel), i)
    if len(seen) > 1:
        (a, i), (b, j) = list(seen.items())[:2]
        raise ValidationError(
            f"{len(seen)} reconstructions in one series: {names[i]} is {a[0]} mm, kernel "
            f"{'/'.join(a[1]) or 'none'}; {names[j]} is {b[0]} mm, kernel "
            f"{'/'.join(b[1]) or 'none'}. Expected one slice thickness and kernel per series "
            "(export each reconstruction as its own series)",
            reason=ReasonCode.MULTIPLE_RECONSTRUCTIONS,
            path=folder,
        )


#: A slice is unlike its stack when it differs from the mean of its two neighbours this many
#: times more than slices typically do, and by at least ``_SLICE_RESIDUAL_MIN_HU`` on average.
#: Intact scans measured here stay under 2.5× (real CT ≤ 1.9×, phantoms ≤ 2.5×).
_SLICE_RESIDUAL_FACTOR = 8.0
_SLICE_RESIDUAL_MIN_HU = 40.0


def slice_outliers(ct: NDArray[np.int16]) -> list[int]:
    """Canonical z indices of slices that their neighbours do not explain: what a damaged
    codestream decoded without an error (no checksum guards JPEG 2000 or RLE data) or a wrong
    per-slice header makes. Anatomy changes smoothly along z, so an intact slice is close to
    the mean of the slices on either side; a damaged one stands out as a local peak of that
    residual. Damage too small to stand out (a few tens of HU) is not detected.

    Parameters
    ----------
    ct : (z, y, x) int16 HU
    """
    n = ct.shape[0]
    if n < 4:
        return []
    sub = ct[:, ::4, ::4].astype(np.float32)
    r = np.empty(n, dtype=np.float64)  # how far each slice is from what its neighbours predict
    r[1:-1] = np.abs(sub[1:-1] - 0.5 * (sub[:-2] + sub[2:])).mean(axis=(1, 2))
    # End slices: predicted from the next two (linear extrapolation; about twice the noise of
    # an interior prediction, well inside the limit for intact scans).
    r[0] = np.abs(sub[0] - (2 * sub[1] - sub[2])).mean()
    r[-1] = np.abs(sub[-1] - (2 * sub[-2] - sub[-3])).mean()
    limit = max(_SLICE_RESIDUAL_FACTOR * float(np.median(r[1:-1])), _SLICE_RESIDUAL_MIN_HU)
    padded = np.concatenate([[0.0], r, [0.0]])
    peak = (padded[1:-1] > padded[:-2]) & (padded[1:-1] >= padded[2:])
    return [int(k) for k in np.flatnonzero((r > limit) & peak)]


def _decode_stack(
    headers: Sequence[DicomHeader],
    names: Sequence[str],
    stack: SliceStack,
    folder: str | None,
    pydicom: Any,
) -> tuple[ScanVolume, Any]:
    first = headers[0]
    perm, flip = stack.axes.perm, stack.axes.flip
    # Source axes are (column, row, slice); in-plane, canonical y/x come from row/column.
    transpose = perm[1] == 0  # canonical y runs along the source column axis: swap in-plane
    ny, nx = (first.columns, first.rows) if transpose else (first.rows, first.columns)
    n = len(headers)
    ct = np.empty((n, ny, nx), dtype=np.int16)
    slice_order = stack.order[::-1] if flip[0] else stack.order
    padded = 0
    rescale_assumed = False
    slopes: set[float] = set()
    intercepts: set[float] = set()
    # ct_sha256 is taken slice by slice, in canonical z order (= the C-order byte stream), while
    # each finished slice is still in cache: cheaper than a second pass over the whole volume.
    digest = hashlib.sha256()
    for k, idx in enumerate(slice_order):
        h, name = headers[idx], names[idx]
        raw = h.raw_pixels
        if raw is not None and _in_place_ok(raw, transpose, flip):
            # Read straight into the output slice and convert there: no temporaries at all.
            target = ct[k].view(np.int16 if raw.signed else np.uint16)
            _read_raw_into(h, name, target)
            pad = _padding_in(target, raw.padding)
            padded += 0 if pad is None else int(np.count_nonzero(pad))
            hu_int16_in_place(target, int(raw.intercept), pad)
            slopes.add(raw.slope)
            intercepts.add(raw.intercept)
            rescale_assumed |= raw.rescale_assumed
            digest.update(ct[k].astype("<i2", copy=False))
            continue
        if raw is not None:
            stored = _read_raw_slice(h, name)
            slope, intercept, assumed = raw.slope, raw.intercept, raw.rescale_assumed
            padding = _padding_in(stored, raw.padding)
        else:
            ds = _read_dataset(h, name, pydicom)
            slope, intercept, assumed = _rescale(ds, name, h.path)
            stored = _decode(ds, name, h.path)
            if stored.shape != (h.rows, h.columns):
                raise DicomReadError(
                    f"{name}: decoded pixel array has shape {stored.shape}, expected "
                    f"({h.rows}, {h.columns}) from its header",
                    reason=ReasonCode.NOT_A_VOLUME,
                    path=h.path,
                )
            padding = _padding_mask(ds, stored)
        rescale_assumed |= assumed
        slopes.add(slope)
        intercepts.add(intercept)
        if padding is not None:
            padded += int(padding.sum())
        plane = stored.T if transpose else stored
        if flip[1]:
            plane = plane[::-1]
        if flip[2]:
            plane = plane[:, ::-1]
        pad_plane = None
        if padding is not None:
            pad_plane = padding.T if transpose else padding
            if flip[1]:
                pad_plane = pad_plane[::-1]
            if flip[2]:
                pad_plane = pad_plane[:, ::-1]
        to_hu_int16(plane, slope, intercept, pad_plane, out=ct[k])
        digest.update(ct[k].astype("<i2", copy=False))

    bad = slice_outliers(ct)
    if bad:
        shown = [names[slice_order[k]] for k in bad[:3]]
        raise DicomReadError(
            f"{len(bad)} slice(s) unlike both neighbours, decoded into values no neighbouring "
            f"anatomy explains: {', '.join(shown)}; the pixel data is damaged (or those files "
            "belong to another image)",
            reason=ReasonCode.PIXELDATA_CORRUPT,
            path=headers[slice_order[bad[0]]].path,
        )
    # Covariates and the patient pseudonym come from one header (no pixel data needed).
    with open_input(headers[stack.order[0]].path) as f:
        first_ds = pydicom.dcmread(f, stop_before_pixels=True)
    # Canonical spacing: in-plane from PixelSpacing [row spacing (y), column spacing (x)].
    dy_src, dx_src = first.pixel_spacing or (1.0, 1.0)
    spacing_y, spacing_x = (dx_src, dy_src) if transpose else (dy_src, dx_src)
    spacing = (float(stack.step_mm), float(spacing_y), float(spacing_x))
    origin = _origin(headers, stack, transpose)
    direction = (
        tuple(float(v) for v in stack.row_cosine),
        tuple(float(v) for v in stack.col_cosine),
        tuple(float(v) for v in stack.normal),
    )
    source = {
        "format": SourceFormat.DICOM.value,
        "transfer_syntax": first.transfer_syntax,
        "rescale_slope": sorted(slopes),
        "rescale_intercept": sorted(intercepts),
        "rescale_assumed": rescale_assumed,
        "padding_voxels": padded,
        "obliquity_deg": round(stack.axes.obliquity_deg, 3),
        "synthetic": _text(first_ds, "ImageComments") == SYNTHETIC_MARK,
    }
    return ScanVolume(ct, spacing, origin, direction, source, digest.hexdigest()), first_ds


def _origin(
    headers: Sequence[DicomHeader], stack: SliceStack, transpose: bool
) -> tuple[float, float, float]:
    """LPS position of canonical voxel (0, 0, 0)."""
    flip = stack.axes.flip
    first = headers[0]
    z_idx = stack.order[-1] if flip[0] else stack.order[0]
    p = np.asarray(headers[z_idx].position, dtype=np.float64)
    dy_src, dx_src = first.pixel_spacing or (1.0, 1.0)
    # Canonical y/x index 0 sits at the source's last row/column when that axis is flipped.
    row_axis_flipped = flip[2] if transpose else flip[1]
    col_axis_flipped = flip[1] if transpose else flip[2]
    if row_axis_flipped:
        p = p + (first.rows - 1) * dy_src * stack.col_cosine
    if col_axis_flipped:
        p = p + (first.columns - 1) * dx_src * stack.row_cosine
    return (float(p[0]), float(p[1]), float(p[2]))
