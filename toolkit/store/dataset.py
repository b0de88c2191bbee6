"""A store as a partitioned Parquet dataset: written from a DuckDB file, read back as the same tables.

When logs outgrow one file, or many machines must read them, ``feedlab export --partition-by
day`` writes every table of a store under one folder, ``impressions`` and ``engagements`` in
hive-style day partitions (``impressions/day=2026-01-05/data_0.parquet``), the other tables as
plain Parquet, with a ``dataset.json`` manifest. :func:`open_dataset` opens such a folder as an
in-memory DuckDB connection whose views carry the store's table names, columns and types, so
every stage that reads a store (signals, predictors, ranking) reads the dataset unchanged:
DuckDB scans only the files and row groups a query needs. :func:`open_source` opens either kind.

Example
-------
>>> from toolkit.store.dataset import export_partitioned, open_source
>>> export_partitioned("data/feedlab.duckdb", "data/feedlab_parquet")  # doctest: +SKIP
>>> con = open_source("data/feedlab_parquet")  # doctest: +SKIP
>>> con.sql("select count(*) from impressions").fetchall()  # doctest: +SKIP
[(1102534,)]
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from toolkit.errors import FeedlabError
from toolkit.store.connection import connect
from toolkit.store.schema import SCHEMA_VERSION, TABLE_ORDER, TABLES

#: The manifest that marks a folder as a feedlab dataset.
MANIFEST = "dataset.json"
#: Ways to partition; a table is partitioned on the day of this column.
PARTITIONS = {"day": "ts"}
#: Tables written in day partitions (the large, time-ordered ones).
PARTITIONED_TABLES = ("impressions", "engagements")


def _literal(path: Path) -> str:
    # COPY ... TO and read_parquet in a view take no bound parameters: the path becomes a SQL
    # string literal, quotes doubled (the only value that is not a parameter here)
    return "'" + str(path).replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The store's canonical tables in dependency order, then the simulator's ``sim_*`` tables."""
    present = {r[0] for r in con.sql("select table_name from duckdb_tables() where database_name = current_database()").fetchall()}
    return [t for t in TABLE_ORDER if t in present] + sorted(t for t in present if t.startswith("sim_"))


def export_partitioned(db: str | os.PathLike, directory: str | os.PathLike, *, partition_by: str = "day") -> dict:
    """Write a store's tables as a Parquet dataset in ``directory``, large ones partitioned by day.

    ``impressions`` and ``engagements`` go to hive partitions ``<table>/day=YYYY-MM-DD/``
    (the UTC day of ``ts``), rows ordered by time; ``users``, ``follows``, ``posts`` and the
    simulator's ``sim_*`` tables to ``<table>/data_0.parquet``. ``dataset.json`` records the
    schema version, the partitioning and the row count of every table. The dataset is written
    beside ``directory`` and renamed into place when complete; an existing dataset there is
    replaced whole, any other non-empty folder is refused.

    Returns ``{"database", "directory", "partition_by", "rows": {table: n}}``.

    Example
    -------
    >>> export_partitioned("data/feedlab.duckdb", "data/feedlab_parquet")["rows"]["impressions"]  # doctest: +SKIP
    1102534
    """
    if partition_by not in PARTITIONS:
        raise FeedlabError(f"unknown partitioning {partition_by!r}; choose one of {', '.join(PARTITIONS)}")
    db, directory = Path(db), Path(directory)
    if directory.exists() and not (directory / MANIFEST).exists() and any(directory.iterdir()):
        raise FeedlabError(f"{directory} exists and is not a feedlab dataset: choose an empty or new folder")
    if not directory.parent.exists():
        raise FeedlabError(f"{directory.parent}: no such folder for the dataset")
    partial = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    con = connect(db, read_only=True)
    rows: dict[str, int] = {}
    partitioned: dict[str, bool] = {}
    try:
        partial.mkdir()
        for table in _tables(con):
            n = con.sql(f"select count(*) from {_q(table)}").fetchall()[0][0]
            rows[table] = n
            target = partial / table
            column = PARTITIONS[partition_by]
            key = ", ".join(_q(c) for c in TABLES[table].key) if table in TABLES else "all"
            if table in PARTITIONED_TABLES and n > 0:
                partitioned[table] = True
                con.execute(
                    f"copy (select *, strftime({_q(column)}, '%Y-%m-%d') as day from {_q(table)} order by {_q(column)}, {key}) "
                    f"to {_literal(target)} (format parquet, partition_by (day), filename_pattern 'data_{{i}}')"
                )
            else:
                partitioned[table] = False
                target.mkdir()
                con.execute(f"copy (select * from {_q(table)} order by {key}) to {_literal(target / 'data_0.parquet')} (format parquet)")
        manifest = {
            "format": "feedlab-dataset",
            "format_version": 1,
            "schema_version": SCHEMA_VERSION,
            "partition_by": partition_by,
            "source": str(db),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tables": {t: {"rows": rows[t], "partitioned": partitioned[t]} for t in rows},
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(partial, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, directory)
    except duckdb.Error as err:
        raise FeedlabError(f"could not write the dataset {directory}: {err}") from None
    except OSError as err:
        raise FeedlabError(f"could not write the dataset {directory}: {err}") from None
    finally:
        con.close()
        shutil.rmtree(partial, ignore_errors=True)
    return {"database": str(db), "directory": str(directory), "partition_by": partition_by, "rows": rows}


def read_manifest(directory: str | os.PathLike) -> dict:
    """The ``dataset.json`` of a dataset folder, checked; a clear error for any other folder."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FeedlabError(f"{directory}: no such dataset folder")
    if not path.exists():
        raise FeedlabError(f"{directory} is not a feedlab dataset (no {MANIFEST}); write one with `feedlab export --partition-by day`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FeedlabError(f"{path}: unreadable manifest ({err})") from None
    if manifest.get("format") != "feedlab-dataset":
        raise FeedlabError(f"{path} is not a feedlab dataset manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise FeedlabError(f"{directory} holds schema version {manifest.get('schema_version')}; this toolkit reads {SCHEMA_VERSION}")
    return manifest


def open_dataset(directory: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose views read a Parquet dataset as the store's tables.

    Each table of the manifest is a view over its files with the store's column names and
    order (the partition column ``day`` is not among them), plus ``schema_version``. Writing
    goes nowhere: the views are read-only by nature.

    Example
    -------
    >>> con = open_dataset("data/feedlab_parquet")  # doctest: +SKIP
    >>> con.sql("select count(*) from engagements where ts >= '2026-01-10'").fetchall()  # doctest: +SKIP
    """
    directory = Path(directory).resolve()
    manifest = read_manifest(directory)
    con = duckdb.connect()
    try:
        con.execute("set enable_progress_bar = false")
        con.execute("set TimeZone = 'UTC'")
        for table, info in manifest["tables"].items():
            folder = directory / table
            if info.get("partitioned"):
                columns = ", ".join(_q(c) for c in TABLES[table].column_names)
                source = f"read_parquet({_literal(folder / '**' / '*.parquet')}, hive_partitioning = true)"
                con.execute(f"create view {_q(table)} as select {columns} from {source}")
            else:
                con.execute(f"create view {_q(table)} as select * from read_parquet({_literal(folder / '*.parquet')})")
        con.execute(f"create view schema_version as select {int(SCHEMA_VERSION)}::integer as version, now()::timestamp as applied_at")
    except duckdb.Error as err:
        con.close()
        raise FeedlabError(f"{directory}: cannot read the dataset ({err})") from None
    return con


def open_source(path: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """A read-only view of a store: a DuckDB file, or a dataset folder written by :func:`export_partitioned`.

    Example
    -------
    >>> con = open_source("data/feedlab.duckdb")  # doctest: +SKIP
    >>> con = open_source("data/feedlab_parquet")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        return open_dataset(path)
    return connect(path, read_only=True)
