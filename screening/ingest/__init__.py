"""Ingest: DICOM/NIfTI archives and manifests into validated, pseudonymised zarr scan stores.

``ingest(...)`` runs discovery and one Dask task per series; the readers, validation and store
functions are usable on their own.
"""

from screening.ingest.catalog import read_catalog
from screening.ingest.dicom import read_dicom_series, read_header
from screening.ingest.nifti import read_nifti_ct, read_nifti_labels
from screening.ingest.pseudonym import PseudonymKey, generate_key_file, load_key
from screening.ingest.run import IngestConfig, IngestSummary, ingest, ingest_series
from screening.ingest.sources import SourceSpec, read_manifest
from screening.ingest.store import (
    ScanStore,
    StoreConfig,
    open_scan_store,
    scan_store_path,
    write_scan_store,
)
from screening.ingest.validate import ValidationConfig, validate_stack
from screening.ingest.volume import ScanVolume

__all__ = [
    "IngestConfig",
    "IngestSummary",
    "PseudonymKey",
    "ScanStore",
    "ScanVolume",
    "SourceSpec",
    "StoreConfig",
    "ValidationConfig",
    "generate_key_file",
    "ingest",
    "ingest_series",
    "load_key",
    "open_scan_store",
    "read_catalog",
    "read_dicom_series",
    "read_header",
    "read_manifest",
    "read_nifti_ct",
    "read_nifti_labels",
    "scan_store_path",
    "validate_stack",
    "write_scan_store",
]
