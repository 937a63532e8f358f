"""Results in an S3 bucket, against a real S3-compatible server process (moto's server mode,
started here on localhost), with credentials and endpoint from the standard environment."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from screening.errors import ScreeningError, StoreError
from screening.location import Location
from screening.pipeline import RunConfig, run_cohort
from screening.query import run_query
from screening.reasons import Segmenter
from screening.schemas import load_table_schema
from screening.store import compact_results, read_pipeline
from screening.tables import COMMITS_DIR, compact_dataset, read_dataset, write_part
from tests.pipeline import segmenters
from tests.pipeline.conftest import fresh_cluster, write_phantom_store

moto_server = pytest.importorskip("moto.server", reason="moto[s3] (dev extra) runs the S3 server")
pytest.importorskip("s3fs", reason="s3fs (extra 's3') reads and writes s3:// URLs")

BUCKET = "screening-results"
FAILURES = load_table_schema("failures")


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server on a free local port, the AWS_* environment pointing at it (as a user
    would set it), and one empty bucket. Yields the endpoint URL."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def s3_scheduler(s3: str) -> Iterator[str]:
    """Workers started after the environment is set: they write overlays to the bucket too."""
    with fresh_cluster() as address:
        yield address


def _rows(where: str, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in run_query(where, sql).to_pylist()]


def _failure_rows(scan: str, n: int) -> list[dict]:
    return [
        {"scan_id": f"{scan}{i}", "pipeline_id": "p", "cohort": "c1", "stage": "segment",
         "reason": "INTERNAL_ERROR", "message": "m", "attempt": 1,
         "at": datetime(2026, 12, 5, tzinfo=UTC)}
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("where", ["local", "s3"])
def test_compaction_is_invisible_until_its_commit_record(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A compaction killed after writing its merged parts, before its commit record, shows
    the old rows once (never twice); the record switches to the merged parts at once."""
    if where == "s3":
        request.getfixturevalue("s3")
        root = Location.of(f"s3://{BUCKET}/tables-{tmp_path.name}/failures")
    else:
        root = Location.of(tmp_path / "failures")
    write_part(root, FAILURES, _failure_rows("a", 3))
    write_part(root, FAILURES, _failure_rows("b", 2))
    # What a killed compaction leaves: a merged part nobody has committed.
    write_part(root, FAILURES, _failure_rows("a", 3) + _failure_rows("b", 2), prefix="merged")
    assert read_dataset(root, FAILURES).num_rows == 5
    dropped = compact_dataset(root, FAILURES, key="scan_id", order_by="attempt")
    assert dropped == 0
    assert read_dataset(root, FAILURES).num_rows == 5
    parts = root.glob("*=*/*.parquet")
    assert [p.name.split("-")[0] for p in parts] == ["merged"], "old parts and orphans removed"
    assert len((root / COMMITS_DIR).glob("*.json")) == 1


def test_missing_bucket_is_a_clear_error(s3: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"bucket s3://no-such-bucket does not exist") as err:
        run_query("s3://no-such-bucket/results", "select 1")
    assert "AWS_ACCESS_KEY_ID" in str(err.value) and "testing" not in str(err.value)


def test_run_into_a_bucket_resume_query_and_compact(
    s3: str, s3_scheduler: str, tmp_path: Path
) -> None:
    from distributed import Client

    store = tmp_path / "store"
    ids = write_phantom_store(store, 5, seed=3)
    results = f"s3://{BUCKET}/run-{tmp_path.name}/results"
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver, flush_rows=2)
    with Client(s3_scheduler) as client:
        first = run_cohort(store, results, cfg, client)
        assert first.by_status == {"ok": 5} and not first.interrupted
        again = run_cohort(store, results, cfg, client)
    assert again.n_todo == 0 and again.n_skipped == 5, "resume reads the bucket"
    rows = _rows(results, "select scan_id, status, overlay_file from measurements")
    assert sorted(r[0] for r in rows) == sorted(ids) and {r[1] for r in rows} == {"ok"}
    bucket = Location.of(results)
    for _, _, overlay in rows:  # written by the workers, straight to the bucket
        assert (bucket / overlay).read_bytes()[:4] == b"\x89PNG"
    assert read_pipeline(results)["pipeline_id"] == first.pipeline_id
    n_parts = len(bucket.glob("measurements/*=*/*.parquet"))
    assert n_parts >= 2, "flush_rows=2 wrote several parts"
    assert compact_results(results) == {"measurements": 0, "failures": 0}
    assert len(bucket.glob("measurements/*=*/*.parquet")) == 1  # one per cohort partition
    assert _rows(results, "select count(*), count(distinct scan_id) from measurements") == [(5, 5)]


def test_unwritable_results_prefix_stops_before_any_scan(
    s3: str, s3_scheduler: str, tmp_path: Path
) -> None:
    from distributed import Client

    store = tmp_path / "store"
    write_phantom_store(store, 1, seed=4)
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver)
    with Client(s3_scheduler) as client, pytest.raises(ScreeningError, match="does not exist"):
        run_cohort(store, "s3://missing-bucket-x/results", cfg, client)


def test_worker_sigkill_mid_run_into_a_bucket_leaves_one_row_per_scan(
    s3: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed mid-run (its scans retried), then the same run again: the bucket's
    measurements hold exactly one row per scan, written by workers that write overlays there."""
    import signal
    import threading

    from distributed import Client

    store = tmp_path / "store"
    ids = write_phantom_store(store, 6, seed=8)
    calls = tmp_path / "calls"
    calls.mkdir()
    results = f"s3://{BUCKET}/kill-{tmp_path.name}/results"
    cfg = RunConfig(
        segmenter=Segmenter.CUSTOM, segment_fn=segmenters.CountingSegmenter(str(calls), 0.5)
    )
    with fresh_cluster() as address, Client(address) as client:
        victim = sorted(client.run(os.getpid).values())[0]

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 120
            while len(list(calls.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        first = run_cohort(store, results, cfg, client)
        killer.join(timeout=130)
        assert not killer.is_alive()
        assert victim not in client.run(os.getpid).values()  # it really died
        again = run_cohort(store, results, cfg, client)
    assert first.by_status == {"ok": 6}, first.describe()
    assert again.n_todo == 0
    counts = _rows(results, "select scan_id, count(*) from measurements group by 1")
    assert sorted(counts) == sorted((i, 1) for i in ids)


def _nifti_phantoms(folder: Path, n: int) -> list[Path]:
    import nibabel as nib
    import numpy as np

    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        ph = make_phantom(PhantomSpec(), ScanGeometry.preset("small"), seed=40 + i)
        hu = np.maximum(ph.hu, -1024).astype(np.int16)
        affine = np.diag([-ph.spacing_mm[2], -ph.spacing_mm[1], ph.spacing_mm[0], 1.0])
        path = folder / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), affine), path)
        out.append(path)
    return out


def test_store_and_results_in_the_bucket_ingest_run_query_stats(
    s3: str, s3_scheduler: str, tmp_path: Path
) -> None:
    """Scan stores written to the bucket (marker last, no rename), run from there, rows and
    statistics read back from there."""
    from distributed import Client

    from screening.ingest import ingest
    from screening.runtime import ClusterConfig
    from screening.stats.compute import compute_stats
    from screening.store import is_complete, open_scan_store, read_catalog

    sources = _nifti_phantoms(tmp_path / "nifti", 3)
    store = f"s3://{BUCKET}/cohort-{tmp_path.name}/store"
    results = f"s3://{BUCKET}/cohort-{tmp_path.name}/results"
    summary = ingest(
        [str(p) for p in sources], store, cluster=ClusterConfig(scheduler=s3_scheduler)
    )
    catalog = read_catalog(store)
    ids = sorted(catalog["scan_id"].to_pylist())
    assert len(ids) == 3 and set(catalog["status"].to_pylist()) == {"ok"}, summary.describe()
    for scan_id in ids:
        scan = Location.of(store) / f"scans/{scan_id}.zarr"
        assert is_complete(scan) and open_scan_store(scan).read("ct").dtype.name == "int16"
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver)
    with Client(s3_scheduler) as client:
        first = run_cohort(store, results, cfg, client)
        assert first.by_status == {"ok": 3}, first.describe()
        # In a bucket a derived array lives under a new key the group attributes point at.
        one = open_scan_store(Location.of(store) / f"scans/{ids[0]}.zarr")
        assert one.has("seg") and one.key("seg").startswith("seg-")
    rows = run_query(results, "select scan_id, liver_hu_3d from measurements")
    assert sorted(rows.column("scan_id").to_pylist()) == ids
    joined = run_query(
        results, "select count(*) as n from measurements join scans using (scan_id)", store
    )
    assert joined.column("n").to_pylist() == [3]
    stats = compute_stats(results, tmp_path / "stats")
    assert (tmp_path / "stats" / "prevalence.parquet").is_file(), stats.describe()


def test_a_half_written_store_in_the_bucket_is_not_complete(s3: str, tmp_path: Path) -> None:
    """What a task killed mid-write leaves in the bucket (chunks, no marker) never reads as a
    store, and the next write replaces it."""
    import numpy as np

    from screening.store import StoreConfig, open_scan_store, write_scan_store
    from screening.store.scan import scan_store_path
    from screening.store.volume import ScanVolume

    root = f"s3://{BUCKET}/half-{tmp_path.name}/store"
    ct = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    volume = ScanVolume(ct, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), eye)
    leftover = scan_store_path(root, "s1")
    (leftover / "ct" / "c" / "0" / "0" / "0").put_bytes(b"half a chunk")
    (leftover / "zarr.json").put_bytes(b"{}")
    with pytest.raises(StoreError, match="completion marker"):
        open_scan_store(leftover)
    written = write_scan_store(root, "s1", volume, {"scan_id": "s1"}, StoreConfig())
    np.testing.assert_array_equal(open_scan_store(written).read("ct"), ct)
    assert not (leftover / "ct" / "c" / "0" / "0" / "0").read_bytes().startswith(b"half")


def test_derived_array_replaced_in_the_bucket_switches_by_pointer(s3: str, tmp_path: Path) -> None:
    import numpy as np

    from screening.store import StoreConfig, open_scan_store, write_scan_store
    from screening.store.scan import write_derived_array
    from screening.store.volume import ScanVolume

    root = f"s3://{BUCKET}/derived-{tmp_path.name}/store"
    ct = np.zeros((4, 5, 6), dtype=np.int16)
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    path = write_scan_store(
        root, "s2", ScanVolume(ct, (2.0, 1.0, 1.0), (0.0,) * 3, eye), {}, StoreConfig()
    )
    first = np.ones((4, 5, 6), dtype=np.uint8)
    write_derived_array(path, "seg", first, {"producer": "a"})
    write_derived_array(path, "seg", first * 2, {"producer": "b"})
    store = open_scan_store(path)
    assert store.key("seg").startswith("seg-") and store.derived_attrs("seg") == {"producer": "b"}
    np.testing.assert_array_equal(store.read("seg"), first * 2)
    arrays = {p.name for p in path.glob("seg*")}
    assert arrays == {store.key("seg")}, "the replaced array is removed"


def test_report_from_results_in_the_bucket(s3: str, s3_scheduler: str, tmp_path: Path) -> None:
    """The HTML report reads measurements and QC overlays straight from the bucket; a row
    whose overlay path points outside RESULTS is not followed."""
    from distributed import Client

    from screening.stats.compute import compute_stats
    from screening.stats.report import render_report

    store = tmp_path / "store"
    write_phantom_store(store, 3, seed=21)
    results = f"s3://{BUCKET}/report-{tmp_path.name}/results"
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver)
    with Client(s3_scheduler) as client:
        assert run_cohort(store, results, cfg, client).by_status == {"ok": 3}
    compute_stats(results, tmp_path / "stats")
    out = render_report(tmp_path / "stats", results, tmp_path / "report.html")
    html = Path(out).read_text()
    assert "AI-3D" in html and results in html  # the reproduce commands name the bucket URL


def test_report_thumbnails_read_overlays_in_the_bucket_and_stay_inside(s3: str) -> None:
    import io

    from PIL import Image

    from screening.measure.overlay import write_overlay
    from screening.stats.report._gallery import _inside, thumbnail_png

    root = Location.of(f"s3://{BUCKET}/gallery/results")
    buf = io.BytesIO()
    Image.new("RGB", (400, 200), (200, 30, 30)).save(buf, format="PNG")
    write_overlay(root / "overlays/p/s.png", buf.getvalue())
    target = _inside(root, "overlays/p/s.png")
    assert target is not None
    with Image.open(io.BytesIO(thumbnail_png(target, width=100))) as im:
        assert im.size == (100, 50)
    assert _inside(root, "../../other-bucket/x.png") is None
    assert _inside(root, "s3://other/x.png") is None


def _upload_cohort(tmp_path: Path, prefix: str, n: int = 2) -> tuple[Path, str]:
    """A small synthetic DICOM cohort on disk, and the same files copied into the bucket."""
    import s3fs

    from screening.synthetic.cohort import generate_cohort

    cohort = tmp_path / "cohort"
    generate_cohort(cohort, n, seed=5, size="small")
    url = f"s3://{BUCKET}/{prefix}"
    s3fs.S3FileSystem().put(str(cohort / "images"), url.removeprefix("s3://"), recursive=True)
    return cohort / "images", url


def test_ingest_dicom_from_a_bucket_equals_ingest_from_disk(
    s3: str, s3_scheduler: str, tmp_path: Path
) -> None:
    """`screening ingest s3://bucket/prefix/`: objects listed, headers read by range, series
    read on the workers; the same scans, bit for bit, as ingesting the files from disk."""
    from screening.ingest import PseudonymKey, ingest
    from screening.runtime import ClusterConfig
    from screening.store import read_catalog

    local, url = _upload_cohort(tmp_path, f"src-{tmp_path.name}/images")
    key = PseudonymKey(b"k" * 32)
    cluster = ClusterConfig(scheduler=s3_scheduler)
    ingest([str(local)], tmp_path / "local-store", key=key, cluster=cluster)
    remote_store = f"s3://{BUCKET}/src-{tmp_path.name}/store"
    summary = ingest([url], remote_store, key=key, cluster=cluster)
    a, b = read_catalog(tmp_path / "local-store"), read_catalog(remote_store)
    pairs = lambda t: sorted(zip(t["scan_id"].to_pylist(), t["ct_sha256"].to_pylist(), strict=True))  # noqa: E731
    assert pairs(a) == pairs(b) and b.num_rows >= 2, summary.describe()
    assert set(b["status"].to_pylist()) == {"ok"}


def test_files_extracted_here_are_moved_to_the_bucket_staging(s3: str, tmp_path: Path) -> None:
    """_stage_in_bucket: extracted files go up under the same relative names and their records
    point there; files not extracted here (a local source, a bucket object) are left as they are."""
    from screening.ingest.run import _stage_in_bucket
    from screening.ingest.sources import FoundFile, SourceSpec

    spec = SourceSpec(path="x", label="x", cohort="c")
    staging = tmp_path / "staging"
    (staging / "d1" / "s").mkdir(parents=True)
    (staging / "d1" / "s" / "1.dcm").write_bytes(b"one")
    (staging / "d1" / "2.dcm").write_bytes(b"two")
    (tmp_path / "plain.dcm").write_bytes(b"plain")
    found = [
        FoundFile(str(staging / "d1" / "s" / "1.dcm"), "a.zip!s/1.dcm", spec),
        FoundFile(str(tmp_path / "plain.dcm"), "plain.dcm", spec),
        FoundFile(f"s3://{BUCKET}/elsewhere/3.dcm", "3.dcm", spec),
        FoundFile(str(staging / "d1" / "2.dcm"), "a.zip!2.dcm", spec),
    ]
    target = Location.of(f"s3://{BUCKET}/stage-{tmp_path.name}/store/.staging")
    out = _stage_in_bucket(found, staging, target)
    assert [f.path for f in out] == [
        f"{target.url}/d1/s/1.dcm",
        str(tmp_path / "plain.dcm"),
        f"s3://{BUCKET}/elsewhere/3.dcm",
        f"{target.url}/d1/2.dcm",
    ]
    assert [f.name for f in out] == [f.name for f in found], "names for messages unchanged"
    assert (target / "d1/s/1.dcm").read_bytes() == b"one"
    assert (target / "d1/2.dcm").read_bytes() == b"two"
    assert not staging.exists(), "the local copies are removed once uploaded"


def test_an_archive_in_a_bucket_is_staged_in_the_bucket_for_the_workers(
    s3: str, s3_scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip in the bucket, ingested into a store in the bucket: its members are uploaded to
    STORE/.staging/ and the local copies removed before any task runs, so workers on other
    machines read them; the scans equal a local ingest of the same zip, and nothing extracted
    is left behind, here or in the bucket."""
    import shutil

    import s3fs

    from screening.ingest import PseudonymKey, ingest
    from screening.runtime import ClusterConfig
    from screening.store import read_catalog

    local, _ = _upload_cohort(tmp_path, f"zip-{tmp_path.name}/unused")
    archive = Path(shutil.make_archive(str(tmp_path / "cohort"), "zip", local))
    prefix = f"{BUCKET}/zip-{tmp_path.name}"
    s3fs.S3FileSystem().put_file(str(archive), f"{prefix}/in/cohort.zip")
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(client_tmp))
    key = PseudonymKey(b"z" * 32)
    cluster = ClusterConfig(scheduler=s3_scheduler)
    ingest([str(archive)], tmp_path / "local-store", key=key, cluster=cluster)
    remote_store = f"s3://{prefix}/store"
    summary = ingest([f"s3://{prefix}/in/cohort.zip"], remote_store, key=key, cluster=cluster)
    a, b = read_catalog(tmp_path / "local-store"), read_catalog(remote_store)
    pairs = lambda t: sorted(zip(t["scan_id"].to_pylist(), t["ct_sha256"].to_pylist(), strict=True))  # noqa: E731
    assert pairs(a) == pairs(b) and b.num_rows >= 2, summary.describe()
    assert set(b["status"].to_pylist()) == {"ok"}, summary.describe()
    assert not (Location.of(remote_store) / ".staging").exists(), "bucket staging removed"
    assert list(client_tmp.iterdir()) == [], "local extraction removed"


def test_bad_bucket_sources_are_rows_and_the_rest_goes_on(s3: str, tmp_path: Path) -> None:
    """An object deleted between listing and reading, a prefix with nothing in it, a bucket
    that does not exist: each a reason-coded problem, never a crash."""
    import s3fs

    from screening.ingest.discovery import scan_files
    from screening.ingest.sources import SourceSpec, walk_source

    _, url = _upload_cohort(tmp_path, f"bad-{tmp_path.name}/images", n=1)
    files, problems = walk_source(SourceSpec(path=url, label=url, cohort="c"), None)
    assert len(files) > 3 and not problems
    gone = files[1].path
    s3fs.S3FileSystem().rm(gone.removeprefix("s3://"))
    records = scan_files([f.path for f in files])
    bad = [r for r in records if getattr(r, "reason", None) is not None]
    assert [(r.path, r.reason) for r in bad] == [(gone, "UNREADABLE_FILE")]
    for empty in (f"s3://{BUCKET}/nothing-here-{tmp_path.name}/", "s3://no-such-bucket-y/x"):
        files, problems = walk_source(SourceSpec(path=empty, label=empty, cohort="c"), None)
        assert files == [] and [p.reason for p in problems] == ["UNREADABLE_FILE"], problems


def test_wrong_credentials_are_a_clear_error_naming_no_secret(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a second S3 server process that checks credentials (moto with authentication
    on): a key it does not know is refused, and the error names the variables to check, not
    their values."""
    import subprocess
    import sys

    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the port, with a bound
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "moto did not start"
            time.sleep(0.1)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep the old endpoint
        with pytest.raises(StoreError, match="denied") as err:
            Location.of("s3://some-bucket/results").check_reachable()
        assert "AWS_ACCESS_KEY_ID" in str(err.value)
        assert "not-the-secret" not in str(err.value) and "AKIAWRONGKEY" not in str(err.value)
    finally:
        server.terminate()
        server.wait(timeout=30)
        s3fs.S3FileSystem.clear_instance_cache()


def test_the_commands_with_everything_in_the_bucket(
    s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's commands as a user types them, AWS_ENDPOINT_URL pointing at the server:
    ingest s3:// → run s3:// → stats → query, and a re-run adds nothing."""
    from screening.cli import main
    from screening.ingest import generate_key_file

    _, images = _upload_cohort(tmp_path, f"cli-{tmp_path.name}/cohort")
    key = tmp_path / "k.key"
    generate_key_file(key)
    store = f"s3://{BUCKET}/cli-{tmp_path.name}/store"
    results = f"s3://{BUCKET}/cli-{tmp_path.name}/results"
    common = ["--workers", "1", "--quiet"]
    assert main(["ingest", images, "--store", store, "--key-file", str(key), *common]) == 0
    run = ["run", store, "--out", results, "--model", "demo", "--no-overlays", *common]
    assert main(run) == 0
    assert "2 of 2 scan(s) finished (2 ok)" in capsys.readouterr().out
    assert main(["stats", results, "--out", str(tmp_path / "stats"), "--n-boot", "200"]) == 0
    assert main(run) == 0  # resumes: nothing to do
    assert "0 of 0 scan(s) finished" in capsys.readouterr().out
    sql = "select count(*) as n, count(distinct scan_id) as k from measurements"
    csv = tmp_path / "counts.csv"
    assert main(["query", results, sql, "--csv", str(csv)]) == 0
    assert csv.read_text().split() == ["n,k", "2,2"], "one row per scan"
    assert Location.of(results).glob("logs/run-*.log"), "the run log was copied into the bucket"


def test_analysts_read_the_bucket_with_duckdb_and_pyarrow(
    s3: str, s3_scheduler: str, tmp_path: Path
) -> None:
    """What docs/object-storage.md shows: DuckDB over s3:// through fsspec, and pyarrow
    through read_dataset, give the rows `screening query` gives."""
    import duckdb
    import s3fs
    from distributed import Client

    from screening.tables import visible_parts

    store = tmp_path / "store"
    ids = write_phantom_store(store, 3, seed=41)
    results = f"s3://{BUCKET}/analyst-{tmp_path.name}/results"
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver, overlays=False)
    with Client(s3_scheduler) as client:
        run_cohort(store, results, cfg, client)
    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem())
    glob = f"{results}/measurements/*/*.parquet"
    got = con.sql(f"select scan_id from read_parquet('{glob}', hive_partitioning=true)")
    assert sorted(r[0] for r in got.fetchall()) == sorted(ids)
    table = read_dataset(f"{results}/measurements", load_table_schema("measurements"))
    assert sorted(table["scan_id"].to_pylist()) == sorted(ids)
    assert all(p.startswith("s3://") for p in visible_parts(f"{results}/measurements"))
