"""A store as a day-partitioned Parquet dataset (toolkit.store.dataset): same tables, same features."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.errors import FeedlabError
from toolkit.signals import training_frame
from toolkit.store import connect, has_table, table_digests
from toolkit.store.dataset import MANIFEST, export_partitioned, open_dataset, open_source, read_manifest


@pytest.fixture(scope="module")
def dataset(small_world_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset") / "small"
    summary = export_partitioned(small_world_path, out)
    return out, summary


def test_layout_and_manifest(small_world_path, dataset):
    out, summary = dataset
    con = connect(small_world_path, read_only=True)
    try:
        days = [r[0] for r in con.sql("select distinct strftime(ts, '%Y-%m-%d') from impressions order by 1").fetchall()]
        n = con.sql("select count(*) from impressions").fetchall()[0][0]
    finally:
        con.close()
    assert sorted(p.name for p in (out / "impressions").iterdir()) == [f"day={d}" for d in days]
    manifest = read_manifest(out)
    assert manifest["partition_by"] == "day" and manifest["tables"]["impressions"] == {"rows": n, "partitioned": True}
    assert manifest["tables"]["users"]["partitioned"] is False and (out / "users" / "data_0.parquet").exists()
    assert summary["rows"]["impressions"] == n
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_the_dataset_reads_as_the_same_tables(small_world_path, dataset):
    out, _ = dataset
    a, b = connect(small_world_path, read_only=True), open_source(out)
    try:
        assert table_digests(a) == table_digests(b)
        columns = "select column_name, data_type from information_schema.columns where table_name = 'impressions' order by ordinal_position"
        assert a.sql(columns).fetchall() == b.sql(columns).fetchall()
        assert has_table(b, "impressions") and has_table(b, "sim_accounts") and not has_table(b, "integrity_scores")
    finally:
        a.close()
        b.close()


def test_features_from_the_dataset_equal_features_from_the_store(small_world_path, dataset):
    out, _ = dataset
    a, b = connect(small_world_path, read_only=True), open_dataset(out)
    try:
        assert training_frame(a, "explore").equals(training_frame(b, "explore"))
    finally:
        a.close()
        b.close()


def test_an_empty_table_and_a_replaced_dataset(tmp_path):
    db = tmp_path / "empty.duckdb"
    connect(db).close()
    out = tmp_path / "ds"
    export_partitioned(db, out)
    con = open_source(out)
    try:
        assert con.sql("select count(*) from impressions").fetchall() == [(0,)]
    finally:
        con.close()
    (out / "stale.txt").write_text("from the old dataset")
    export_partitioned(db, out)  # an existing dataset is replaced whole
    assert not (out / "stale.txt").exists() and (out / MANIFEST).exists()


def test_clear_errors(tmp_path, small_world_path):
    with pytest.raises(FeedlabError, match="unknown partitioning"):
        export_partitioned(small_world_path, tmp_path / "x", partition_by="hour")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FeedlabError, match="not a feedlab dataset: choose an empty or new folder"):
        export_partitioned(small_world_path, other)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(FeedlabError, match="no dataset.json"):
        open_source(other)
    with pytest.raises(FeedlabError, match="no such folder for the dataset"):
        export_partitioned(small_world_path, tmp_path / "missing" / "ds")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST).write_text(json.dumps({"format": "feedlab-dataset", "schema_version": 99, "tables": {}}))
    with pytest.raises(FeedlabError, match="schema version 99"):
        open_dataset(bad)


def test_cli_export_partition_by_day(small_world_path, tmp_path):
    out = tmp_path / "cli_ds"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "export", "--db", str(small_world_path), str(out), "--partition-by", "day", "--json"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partition_by"] == "day" and (out / MANIFEST).exists()
