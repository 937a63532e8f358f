"""`screening query`: DuckDB over the results with their contracts (real Parquet, real DuckDB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from screening.cli import main
from screening.errors import ConfigError
from screening.measure import MeasureConfig, measure_stores
from screening.query import EXAMPLE_QUERIES, run_query
from screening.reasons import Segmenter
from screening.schemas import load_table_schema
from screening.store.catalog import CATALOG_DIR
from screening.store.scan import StoreConfig, write_scan_store
from screening.store.volume import ScanVolume
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.tables import write_part

EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("query")
    store, results = root / "store", root / "results"
    scans = []
    for i, liver_hu in enumerate((25.0, 60.0, 30.0)):
        ph = make_phantom(PhantomSpec(liver_hu=liver_hu), ScanGeometry.preset("small"), seed=60 + i)
        vol = ScanVolume(ph.hu, ph.spacing_mm, ph.origin_mm, EYE, {"format": "synthetic"})
        attrs = {"scan_id": f"s{i}", "cohort": "c1" if i < 2 else "c2"}
        write_scan_store(store, f"s{i}", vol, attrs, StoreConfig(), ph.labels)
        maker = "GE" if i else "SIEMENS"
        scans.append({**attrs, "status": "ok", "manufacturer": maker, "engine_version": "0"})
    write_part(store / CATALOG_DIR, load_table_schema("scans"), scans)
    measure_stores(store, results, MeasureConfig(), segmenter=Segmenter.REFERENCE, overlays=False)
    return store, results


def test_query_counts_and_joins_the_scans_table(measured):
    store, results = measured
    t = run_query(results, "select cohort, count(*) n, sum(steatosis_roi::int) k from "
                  "measurements group by cohort order by cohort")  # fmt: skip
    assert t.to_pylist() == [{"cohort": "c1", "n": 2, "k": 1}, {"cohort": "c2", "n": 1, "k": 1}]
    joined = run_query(
        results,
        "select s.manufacturer, m.steatosis_roi from measurements m join scans s using (scan_id) "
        "order by m.scan_id",
        store=store,
    )
    assert joined.to_pylist()[0] == {"manufacturer": "SIEMENS", "steatosis_roi": True}
    # nothing written yet is an empty table with the contract's columns, not an error
    assert run_query(results, "select count(*) n, min(reason) r from failures").to_pylist() == [
        {"n": 0, "r": None}
    ]


def test_examples_run_and_errors_are_clear(measured):
    store, results = measured
    for sql in EXAMPLE_QUERIES.values():
        run_query(results, sql, store=store)
    with pytest.raises(ConfigError, match="query failed"):
        run_query(results, "select nope from measurements")
    with pytest.raises(ConfigError, match="no results folder"):
        run_query(results / "missing", "select 1")


def test_queries_are_sandboxed_to_the_results(measured, tmp_path):
    """`screening query` once read any file (the key file among them) and could write files."""
    store, results = measured
    secret = tmp_path / "demo.key"
    secret.write_text("not for queries")
    for sql in (
        f"select * from read_csv('{secret}')",
        f"select * from read_parquet('{results}/measurements/*/*.parquet')",
        f"copy (select 1) to '{tmp_path / 'out.csv'}'",
        "set enable_external_access = true",
        f"attach '{tmp_path / 'x.db'}'",
    ):
        with pytest.raises(ConfigError, match="query failed"):
            run_query(results, sql, store=store)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "x.db").exists()
    n = run_query(results, "select count(*) as n from measurements", store=store)
    assert n.to_pylist()[0]["n"] > 0  # the registered tables still answer


def test_cli_prints_and_writes_csv_with_list_columns(measured, tmp_path, capsys):
    store, results = measured
    sql = "select scan_id, qc_flags, roi_hu from measurements order by scan_id"
    assert main(["query", str(results), sql, "--store", str(store)]) == 0
    assert "s0" in capsys.readouterr().out
    out = tmp_path / "q.csv"
    assert main(["query", str(results), sql, "--csv", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "scan_id,qc_flags,roi_hu" and len(lines) == 4
    assert main(["query", str(results), "select nope from measurements"]) == 2
