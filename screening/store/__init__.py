"""Where scans and results live: the zarr scan stores with their catalog, and results folders.

Every stage reads and writes through this layer; it imports only the contracts below it
(errors, reasons, config, schemas, tables), never a stage.
"""

from screening.store.catalog import CatalogWriter, read_catalog
from screening.store.results import (
    FAILURES_DIR,
    MEASUREMENTS_DIR,
    ResultSink,
    compact_results,
    read_pipeline,
    write_pipeline_record,
)
from screening.store.scan import (
    ScanStore,
    StoreConfig,
    is_complete,
    open_scan_store,
    scan_store_path,
    write_derived_array,
    write_scan_store,
)
from screening.store.volume import ScanVolume

__all__ = [
    "FAILURES_DIR",
    "MEASUREMENTS_DIR",
    "CatalogWriter",
    "ResultSink",
    "ScanStore",
    "ScanVolume",
    "StoreConfig",
    "compact_results",
    "is_complete",
    "open_scan_store",
    "read_catalog",
    "read_pipeline",
    "scan_store_path",
    "write_derived_array",
    "write_pipeline_record",
    "write_scan_store",
]
