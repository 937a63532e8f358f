"""Reason codes (docs/data-contracts.md) and the other categories that land in Parquet.

One StrEnum per category. The same values are listed in ``schemas/*.yaml`` under
``categories``; ``tests/test_schemas.py`` fails when the two drift apart.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "SYNTHETIC_MARK",
    "ContrastPhase",
    "ReasonCode",
    "Segmenter",
    "SourceFormat",
    "Stage",
    "Status",
    "SteatosisGrade",
]

#: Written by ``screening synth`` into every image it makes (DICOM ImageComments, NIfTI
#: ``descrip``) and recorded at ingest as ``source.synthetic``: a model trained on synthetic
#: phantoms only is flagged (MODEL_SYNTHETIC_ONLY) on every scan that does not carry it.
SYNTHETIC_MARK = "screening synth phantom"


class ReasonCode(StrEnum):
    """Why a scan was rejected, failed, or had a result withheld.

    Used in ``scans.reason``, ``measurements.reason``, ``failures.reason`` and carried by
    every :class:`screening.errors.ScreeningError`.
    """

    # reading files
    NO_DICM = "NO_DICM"  # not a DICOM Part 10 file (no 'DICM' preamble)
    UNREADABLE_FILE = "UNREADABLE_FILE"  # file could not be opened or parsed at all
    PIXELDATA_SHORT = "PIXELDATA_SHORT"  # pixel data shorter than Rows x Columns x bits
    PIXELDATA_LONG = "PIXELDATA_LONG"  # pixel data longer than Rows x Columns x bits (wrong Rows?)
    PIXELDATA_CORRUPT = "PIXELDATA_CORRUPT"  # codestream undecodable, or a slice unlike its stack
    CODEC_UNAVAILABLE = "CODEC_UNAVAILABLE"  # transfer syntax with no installed decoder
    ARCHIVE_UNSAFE_MEMBER = "ARCHIVE_UNSAFE_MEMBER"  # '../', absolute or link member not extracted
    ARCHIVE_TOO_DEEP = "ARCHIVE_TOO_DEEP"  # archives nested deeper than the limit: not extracted
    DISK_FULL = "DISK_FULL"  # no space left while writing: stopped cleanly, committed rows kept
    # series discovery
    MISSING_SERIES_UID = "MISSING_SERIES_UID"  # grouped by geometry instead (recorded)
    LOCALIZER = "LOCALIZER"  # scout / topogram
    NON_IMAGING = "NON_IMAGING"  # dose report, structured report, secondary capture
    NOT_CT = "NOT_CT"  # modality other than CT
    NOT_AXIAL = "NOT_AXIAL"  # sagittal / coronal reformat
    DERIVED_IMAGE = "DERIVED_IMAGE"  # ImageType not ORIGINAL/PRIMARY (MPR, MIP)
    # volume validation
    TOO_FEW_SLICES = "TOO_FEW_SLICES"
    NOT_A_VOLUME = "NOT_A_VOLUME"  # all slices at one position
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"  # one SOPInstanceUID, different pixel data
    MULTIPLE_RECONSTRUCTIONS = "MULTIPLE_RECONSTRUCTIONS"  # kernels / thicknesses mixed in a series
    SLICE_INCREMENT_INCONSISTENT = "SLICE_INCREMENT_INCONSISTENT"  # gaps or uneven steps
    IMAGE_ORIENTATION_INCONSISTENT = "IMAGE_ORIENTATION_INCONSISTENT"
    GANTRY_TILT = "GANTRY_TILT"
    RESCALE_INCOMPLETE = "RESCALE_INCOMPLETE"  # only one of RescaleSlope / RescaleIntercept
    RESCALE_INVALID = "RESCALE_INVALID"  # RescaleSlope zero / negative, or a value not finite
    SIZE_LIMIT = "SIZE_LIMIT"  # larger than the configured voxel limit
    NON_FINITE_VALUES = "NON_FINITE_VALUES"  # NaN / infinite voxels in a float image
    PIXEL_SPACING_INVALID = "PIXEL_SPACING_INVALID"  # PixelSpacing zero, negative or not finite
    IMAGE_PLANE_INVALID = "IMAGE_PLANE_INVALID"  # orientation not unit/orthogonal, or not finite
    MASK_GRID_MISMATCH = "MASK_GRID_MISMATCH"  # reference mask does not cover the CT grid
    # measurement and QC
    CONTRAST_HEADER = "CONTRAST_HEADER"  # contrast agent recorded in the DICOM header
    CONTRAST_IMAGE = "CONTRAST_IMAGE"  # contrast enhancement evident in the image
    NO_LIVER = "NO_LIVER"  # empty liver mask
    LIVER_TRUNCATED = "LIVER_TRUNCATED"  # liver cut off by the field of view
    ORIENTATION_SUSPECT = "ORIENTATION_SUSPECT"  # liver on the patient's left / spleen on right
    LIVER_VOLUME_IMPLAUSIBLE = "LIVER_VOLUME_IMPLAUSIBLE"  # outside the configured range (ml)
    NO_SPLEEN = "NO_SPLEEN"  # empty spleen mask: spleen values and L/S withheld
    SPLEEN_NOT_SEGMENTED = "SPLEEN_NOT_SEGMENTED"  # the model has no spleen class: L/S withheld
    MODEL_SYNTHETIC_ONLY = (
        "MODEL_SYNTHETIC_ONLY"  # synthetic-only model on a scan synth did not make
    )
    ERODED_EMPTY = "ERODED_EMPTY"  # a mask vanishes under erosion: eroded values withheld
    ROI_MOVED = "ROI_MOVED"  # an AI-ROI shifted along its row, or its slice swapped (see roi.py)
    ROI_NOT_PLACED = "ROI_NOT_PLACED"  # an AI-ROI circle fits nowhere on its row / slice
    NO_SEGMENTATION = "NO_SEGMENTATION"  # the scan store has no `seg` / `seg_reference` to measure
    STORE_CORRUPT = "STORE_CORRUPT"  # stored ct no longer matches its ingest checksum
    # running
    WORKER_LOST = "WORKER_LOST"  # the worker died while running the task (retried)
    INTERNAL_ERROR = "INTERNAL_ERROR"  # an unexpected exception (a bug): message has the type


class Status(StrEnum):
    """Outcome of one scan at one stage."""

    OK = "ok"
    REJECTED = "rejected"  # the input is not usable (validation), by design
    FAILED = "failed"  # something went wrong while processing a usable input


class SourceFormat(StrEnum):
    DICOM = "dicom"
    NIFTI = "nifti"


class Stage(StrEnum):
    """Pipeline stage named in the ``failures`` table."""

    INGEST = "ingest"
    PREPROCESS = "preprocess"
    SEGMENT = "segment"
    MEASURE = "measure"
    SCAN = "scan"  # the whole chain as one task (a cluster without GPU workers)


class SteatosisGrade(StrEnum):
    """Grade from the MRI-PDFF estimate (cut-offs 5 / 15 / 25 % by default)."""

    NONE = "none"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class Segmenter(StrEnum):
    """Where the measured masks come from: the U-Net (``seg``) or masks given at ingest
    (``seg_reference``: an expert's or another tool's, measured exactly like ``seg``)."""

    UNET = "unet"
    REFERENCE = "reference"
    CUSTOM = "custom"  # a segmentation function given to the run (Python API / --segment-fn)


class ContrastPhase(StrEnum):
    NONE = "none"
    ARTERIAL = "arterial"
    PORTAL_VENOUS = "portal_venous"
