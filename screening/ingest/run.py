"""Ingest orchestration: sources -> discovery -> one Dask task per series -> stores + catalog.

:func:`ingest_series` is the per-series task (pure: a work item and frozen config in, one small
scans-table row out); :func:`ingest` drives discovery and the tasks on the cluster from
:mod:`screening.runtime`, streams rows into the catalog and compacts it at the end.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screening._version import __version__
from screening.config import FrozenConfig, require
from screening.errors import DiskFullError, InputError, failure_reason, is_disk_full
from screening.ingest.dicom import DicomHeader, FileProblem, covariates, read_dicom_series
from screening.ingest.discovery import NiftiFile, Rejection, WorkItem, plan, scan_files
from screening.ingest.masks import (
    MASK_AXES_TOLERANCE_DEG,
    axes_angle_deg,
    combine_labels,
    mask_to_grid,
)
from screening.ingest.nifti import is_nifti, read_nifti_ct, read_nifti_labels
from screening.ingest.pseudonym import PseudonymKey, missing_key_error
from screening.ingest.sources import FoundFile, SourceProblem, SourceSpec, walk_source
from screening.ingest.validate import ValidationConfig
from screening.location import Location, Where, is_url
from screening.reasons import ReasonCode, SourceFormat, Status
from screening.runtime.client import open_client
from screening.runtime.cluster import ClusterConfig, worker_count
from screening.runtime.stream import run_bounded
from screening.store.catalog import (
    CatalogWriter,
    check_store_key,
    ingest_lock,
    now_utc,
    read_catalog,
)
from screening.store.scan import (
    StoreConfig,
    ct_sha256,
    is_complete,
    open_scan_store,
    scan_store_path,
    scan_store_relpath,
    write_scan_store,
)
from screening.store.volume import ScanVolume
from screening.tables import check_partition_value

__all__ = ["IngestConfig", "IngestSummary", "ingest", "ingest_series"]

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"


@dataclass(frozen=True, kw_only=True)
class IngestConfig(FrozenConfig):
    """Everything that decides what ingest accepts and how it stores it."""

    validation: ValidationConfig = field(default_factory=ValidationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    header_batch_files: int = 256
    max_in_flight_per_worker: int = 2

    def __post_init__(self) -> None:
        require(self.header_batch_files >= 1, "header_batch_files must be >= 1")
        require(self.max_in_flight_per_worker >= 1, "max_in_flight_per_worker must be >= 1")


def _base_row(
    scan_id: str,
    spec: SourceSpec,
    source_format: SourceFormat | None,
    source_path: str,
    series_key: str,
) -> dict[str, Any]:
    row: dict[str, Any] = dict(spec.extra)
    row.update(
        scan_id=scan_id,
        cohort=spec.cohort,
        site=spec.site,
        source_format=None if source_format is None else source_format.value,
        source_path=source_path,
        series_key=series_key,
        engine_version=__version__,
        ingested_at=now_utc(),
    )
    return row


def rejection_row(r: Rejection) -> dict[str, Any]:
    row = _base_row(r.scan_id, r.spec, r.source_format, r.source_path, r.series_key)
    row.update(status=Status.REJECTED.value, reason=r.reason.value, message=r.message)
    return row


def _patient_pseudo_id(key: PseudonymKey | None, patient_id: str | None) -> str | None:
    if key is None or not patient_id:
        return None
    return key.pseudonym("patient", patient_id)


def _read_volume(
    item: WorkItem, cfg: IngestConfig, key: PseudonymKey | None
) -> tuple[ScanVolume, dict[str, Any]]:
    """Read the series; return the volume and its covariate columns (no identifiers)."""
    if item.source_format is SourceFormat.NIFTI:
        assert item.nifti_path is not None
        v = cfg.validation
        volume = read_nifti_ct(
            item.nifti_path, v.max_voxels, v.axial_tolerance_deg, min_slices=v.min_slices
        )
        return volume, {"patient_pseudo_id": _patient_pseudo_id(key, item.spec.patient_id)}
    volume, first_ds = read_dicom_series(
        item.headers, item.names, cfg.validation, folder=item.source_path
    )
    cols = covariates(first_ds)
    patient_id = item.spec.patient_id or str(first_ds.get("PatientID", "") or "").strip()
    cols["patient_pseudo_id"] = _patient_pseudo_id(key, patient_id)
    del first_ds  # the dataset holds identifiers: drop it as soon as covariates are taken
    return volume, cols


def _reference_labels(item: WorkItem, volume: ScanVolume, cfg: IngestConfig) -> Any:
    spec = item.spec
    if spec.liver_mask is None and spec.spleen_mask is None:
        return None, False, 0
    masks: dict[str, Any] = {}
    resampled = False
    for organ, path, labels in (
        ("liver", spec.liver_mask, spec.liver_labels),
        ("spleen", spec.spleen_mask, spec.spleen_labels),
    ):
        if path is None:
            continue
        if not is_nifti(path):
            raise InputError(
                f"{organ} mask {os.path.basename(path)} is not a NIfTI file (.nii/.nii.gz); "
                "convert it first",
                reason=ReasonCode.MASK_GRID_MISMATCH,
                path=path,
            )
        mask, grid = read_nifti_labels(path, labels, cfg.validation.max_voxels)
        # Both grids are canonicalised, which drops rotation: a mask on other axes would land
        # in the wrong place, so it must share the CT's axes (up to order and sign).
        angle = axes_angle_deg(grid.direction, volume.direction)
        if angle > MASK_AXES_TOLERANCE_DEG:
            raise InputError(
                f"{organ} mask {os.path.basename(path)} has voxel axes rotated {angle:.1f} deg "
                f"from the CT's (tolerance {MASK_AXES_TOLERANCE_DEG} deg); expected a mask on "
                "the CT's grid axes: resample it onto the CT (same affine rotation) first",
                reason=ReasonCode.MASK_GRID_MISMATCH,
                path=path,
            )
        on_grid = mask_to_grid(
            mask, grid.spacing_mm, grid.origin_mm, volume.shape, volume.spacing_mm,
            volume.origin_mm, path=path,
        )  # fmt: skip
        masks[organ] = on_grid.mask
        resampled |= on_grid.resampled
    labels_zyx, overlap = combine_labels(masks.get("liver"), masks.get("spleen"), volume.shape)
    return labels_zyx, resampled, overlap


def ingest_series(
    item: WorkItem, store_root: str, cfg: IngestConfig, key: PseudonymKey | None
) -> dict[str, Any]:
    """The per-series task: read, validate, convert, write the store; return the scans row.

    Bad input returns a ``rejected`` row with its reason code; bugs raise (the run loop turns
    them into ``failed`` rows). A store that is already complete is not rewritten: its row is
    rebuilt from the store's attributes.
    """
    store_path = scan_store_path(store_root, item.scan_id)
    rel_store = scan_store_relpath(item.scan_id)
    if is_complete(store_path):
        row = dict(open_scan_store(store_path).attrs["scan"])
        row.update(ingested_at=now_utc(), engine_version=__version__)
        return row
    row = _base_row(item.scan_id, item.spec, item.source_format, item.source_path, item.series_key)
    try:
        volume, cols = _read_volume(item, cfg, key)
        seg_reference, resampled, overlap = _reference_labels(item, volume, cfg)
    except InputError as e:
        where = _display(item, e.path)
        row.update(
            status=Status.REJECTED.value,
            reason=(e.reason or ReasonCode.UNREADABLE_FILE).value,
            message=e.message + (f" (file: {where})" if where else ""),
            n_slices=len(item.headers) or None,
        )
        return row
    nz, ny, nx = volume.shape
    notes = [n for n in (item.note,) if n]
    if overlap:
        notes.append(f"{overlap} voxel(s) in both liver and spleen masks kept as liver")
    row.update(cols)
    row.update(
        n_slices=nz,
        rows=ny,
        columns=nx,
        spacing_z_mm=volume.spacing_mm[0],
        spacing_y_mm=volume.spacing_mm[1],
        spacing_x_mm=volume.spacing_mm[2],
        has_seg_reference=seg_reference is not None,
        mask_resampled=bool(resampled) if seg_reference is not None else None,
        store_path=rel_store,
        status=Status.OK.value,
        message="; ".join(notes) or None,
    )
    row["ct_sha256"] = volume.ct_sha256 or ct_sha256(volume.ct_hu)
    stored_row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    write_scan_store(
        store_root, item.scan_id, volume, stored_row, cfg.store, seg_reference, row["ct_sha256"]
    )
    return row


def _display(item: WorkItem, path: str | None) -> str | None:
    """The user's name for ``path`` (an absolute path inside the item), else the series path."""
    if path is None:
        return None
    for h, name in zip(item.headers, item.names, strict=False):
        if h.path == path:
            return name
    if item.nifti_path == path:
        return item.source_path
    spec = item.spec
    if path in (spec.liver_mask, spec.spleen_mask):
        return os.path.basename(path)
    return item.source_path


@dataclass
class IngestSummary:
    """What a run did: counts by status and by reason, and where things are."""

    store: str
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    skipped_complete: int = 0
    n_files: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.counts[row["status"]] += 1
        if row.get("reason"):
            self.reasons[row["reason"]] += 1

    def describe(self) -> str:
        done = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "none new"
        skipped = f"; {self.skipped_complete} already complete (skipped)"
        lines = [
            f"ingest: {self.n_files} file(s) examined; series this run: {done}"
            + (skipped if self.skipped_complete else "")
        ]
        for reason, n in self.reasons.most_common():
            lines.append(f"  {reason}: {n}")
        lines.append(f"scans table: {Path(self.store) / 'catalog'} (Parquet, by cohort)")
        return "\n".join(lines)


def _failed_row(item: WorkItem, error: BaseException) -> dict[str, Any]:
    row = _base_row(item.scan_id, item.spec, item.source_format, item.source_path, item.series_key)
    reason, message = failure_reason(error)
    row.update(status=Status.FAILED.value, reason=reason.value, message=message[:500])
    return row


def _specs(sources: Sequence[str], cohort: str) -> list[SourceSpec]:
    return [
        SourceSpec(path=s if is_url(s) else str(Path(s).resolve()), label=str(s), cohort=cohort)
        for s in sources
    ]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="series", disable=not enabled, leave=False)


def ingest(
    sources: Sequence[str],
    store: Where,
    *,
    cohort: str = "default",
    manifest: Sequence[SourceSpec] = (),
    key: PseudonymKey | None = None,
    cfg: IngestConfig | None = None,
    cluster: ClusterConfig | None = None,
    progress: bool = False,
) -> IngestSummary:
    """Ingest DICOM/NIfTI sources (and manifest rows) into the scan store at ``store``.

    Parameters
    ----------
    sources
        Folders, NIfTI files or archives.
    manifest
        Rows from :func:`screening.ingest.read_manifest` (masks, site, pass-through columns).
    key
        Pseudonymisation key; required as soon as any non-NIfTI file is found.
    """
    cfg = cfg or IngestConfig()
    cluster = cluster or ClusterConfig()
    check_partition_value(cohort, "cohort")
    specs = _specs(sources, cohort) + list(manifest)
    for spec in specs:
        check_partition_value(spec.cohort, "cohort")
    if not specs:
        raise InputError("nothing to ingest: give a SOURCE or a --manifest")
    root = Location.of(store)
    root.check_reachable()
    summary = IngestSummary(store=root.url)
    with ingest_lock(root):
        check_store_key(root, key.fingerprint if key is not None else None)
        # Archives are extracted beside a local store (the workers see it). For a store in an
        # object store they are extracted on this machine's disk and the members uploaded to
        # STORE/.staging/, which workers anywhere can read (_stage_in_bucket).
        staging = (
            root.local_path() / STAGING_DIR
            if root.is_local
            else Path(tempfile.gettempdir()) / f"screening-staging-{uuid.uuid4().hex}"
        )
        # Raw DICOM extracted from archives carries identifiers: staging is removed on every
        # way out (errors, disk full, Ctrl-C); what a SIGKILLed ingest left is removed here,
        # by the next ingest, which holds the same lock.
        _remove_staging(root, staging)
        try:
            _ingest_locked(root, staging, specs, key, cfg, cluster, progress, summary)
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise DiskFullError(
                f"no space left on the device while ingesting into {root} (extracting archives "
                "or writing scan stores): the ingest stopped cleanly; catalog rows and complete "
                "scan stores written before are kept, and nothing extracted is left behind. "
                "Free space and re-run the same command to resume",
                reason=ReasonCode.DISK_FULL,
                path=root,
            ) from e
        finally:
            _remove_staging(root, staging)
    return summary


def _remove_staging(root: Location, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    if not root.is_local:
        (root / STAGING_DIR).remove(recursive=True)


def _stage_in_bucket(
    found: Sequence[FoundFile], staging: Path, bucket_staging: Location
) -> list[FoundFile]:
    """Upload the files extracted into the local ``staging`` folder to ``bucket_staging`` (same
    relative names) and point their records there, so that workers on other machines read
    them; the local copies are removed at once. Other files are returned as they are."""
    local, remote, out = [], [], []
    staged = staging.resolve()  # extraction names files with symlinks resolved
    for f in found:
        path = Path(f.path)
        if not is_url(f.path) and path.is_relative_to(staged):
            target = bucket_staging / path.relative_to(staged).as_posix()
            local.append(f.path)
            remote.append(target.path)
            f = dataclasses.replace(f, path=target.url)
        out.append(f)
    if local:
        log.info("uploading %d file(s) extracted from archives to %s", len(local), bucket_staging)
        bucket_staging.fs.put(local, remote)  # one call: fsspec uploads them concurrently
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_key(specs: Sequence[SourceSpec], key: PseudonymKey | None) -> None:
    """Refuse a keyless ingest before anything is extracted: any file that is not NIfTI
    (archives included, they may hold DICOM) needs a key, as does a patient_id column."""
    if key is not None:
        return
    if any(s.patient_id for s in specs):
        raise missing_key_error("a manifest with a patient_id column")
    for spec in specs:
        listed, _ = walk_source(spec, None)
        if any(not is_nifti(f.path) for f in listed):
            raise missing_key_error("ingest of DICOM (any non-NIfTI file, archives included)")


def _ingest_locked(
    root: Location,
    staging: Path,
    specs: Sequence[SourceSpec],
    key: PseudonymKey | None,
    cfg: IngestConfig,
    cluster: ClusterConfig,
    progress: bool,
    summary: IngestSummary,
) -> None:
    _check_key(specs, key)
    found: list[FoundFile] = []
    problems: list[SourceProblem] = []
    for spec in specs:
        f, p = walk_source(spec, staging)
        found.extend(f)
        problems.extend(p)
    if not root.is_local:
        found = _stage_in_bucket(found, staging, root / STAGING_DIR)
    summary.n_files = len(found)
    existing = read_catalog(root)
    ok_ids = {
        sid
        for sid, status in zip(
            existing["scan_id"].to_pylist(), existing["status"].to_pylist(), strict=True
        )
        if status == Status.OK.value
    }
    writer = CatalogWriter(root)
    try:
        # Ingest is CPU work: no GPU workers (and no torch import to count GPUs).
        with open_client(dataclasses.replace(cluster, gpu_workers=0)) as client:
            run_token = uuid.uuid4().hex[:8]
            scanned = _scan(client, found, cfg, run_token, progress)
            work = plan(found, scanned, problems, key)
            for r in work.rejections:
                row = rejection_row(r)
                writer.add(row)
                summary.add(row)
            todo = []
            for item in work.items:
                if item.scan_id in ok_ids and is_complete(scan_store_path(root, item.scan_id)):
                    summary.skipped_complete += 1
                else:
                    todo.append(item)
            in_flight = cfg.max_in_flight_per_worker * worker_count(client)
            bar = _progress(len(todo), "ingest", progress)
            outcomes = run_bounded(
                client,
                ingest_series,
                todo,
                key=lambda it: f"ingest-{it.scan_id[:24]}-{run_token}",
                max_in_flight=in_flight,
                args=(root.url, cfg, key),
            )
            for outcome in outcomes:
                if is_disk_full(outcome.error):  # not the scan's fault: stop, redo it later
                    raise OSError(errno.ENOSPC, "no space left on device (reported by a task)")
                if outcome.error is not None:
                    row = _failed_row(outcome.item, outcome.error)
                    log.warning("scan %s failed: %s", outcome.item.scan_id[:16], row["message"])
                else:
                    row = outcome.result
                writer.add(row)
                summary.add(row)
                bar.update(1)
            bar.close()
    finally:
        writer.compact()


def _scan(
    client: Any, found: Sequence[FoundFile], cfg: IngestConfig, run_token: str, progress: bool
) -> dict[str, DicomHeader | FileProblem | NiftiFile]:
    """Read every file's header in batches on the workers."""
    from tqdm import tqdm

    paths = sorted({f.path for f in found})
    batches = [
        (i, tuple(paths[i : i + cfg.header_batch_files]))
        for i in range(0, len(paths), cfg.header_batch_files)
    ]
    scanned: dict[str, DicomHeader | FileProblem | NiftiFile] = {}
    bar = tqdm(total=len(paths), desc="discover", unit="file", disable=not progress, leave=False)
    outcomes = run_bounded(
        client,
        _scan_batch,
        batches,
        key=lambda b: f"headers-{b[0]}-{run_token}",
        max_in_flight=4 * worker_count(client),
    )
    for outcome in outcomes:
        _, batch = outcome.item
        if outcome.error is not None:  # a worker died in a decoder: the files become rows
            why = f"header scan failed ({type(outcome.error).__name__})"
            for path in batch:
                scanned[path] = FileProblem(path, ReasonCode.INTERNAL_ERROR, why)
        else:
            for record in outcome.result:
                scanned[record.path] = record
        bar.update(len(batch))
    bar.close()
    return scanned


def _scan_batch(batch: tuple[int, tuple[str, ...]]) -> list[DicomHeader | FileProblem | NiftiFile]:
    return scan_files(batch[1])
