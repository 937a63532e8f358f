"""Ingest: DICOM/NIfTI archives and manifests into validated, pseudonymised zarr scan stores.

``ingest(...)`` runs discovery and one Dask task per series; the readers, validation and store
functions are usable on their own.
"""

from screening.ingest.dicom import read_dicom_series, read_header
from screening.ingest.nifti import read_nifti_ct, read_nifti_labels
from screening.ingest.pseudonym import PseudonymKey, generate_key_file, load_key
from screening.ingest.run import IngestConfig, IngestSummary, ingest, ingest_series
from screening.ingest.sources import SourceSpec, read_manifest
from screening.ingest.validate import ValidationConfig, validate_stack

__all__ = [
    "IngestConfig",
    "IngestSummary",
    "PseudonymKey",
    "SourceSpec",
    "ValidationConfig",
    "generate_key_file",
    "ingest",
    "ingest_series",
    "load_key",
    "read_dicom_series",
    "read_header",
    "read_manifest",
    "read_nifti_ct",
    "read_nifti_labels",
    "validate_stack",
]
