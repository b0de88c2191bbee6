"""Content digests of a store: equal digests mean equal table contents, whatever the row order."""

from __future__ import annotations

import hashlib

import duckdb

from toolkit.store.schema import TABLE_ORDER


def table_digests(con: duckdb.DuckDBPyConnection, tables: list[str] | None = None) -> dict[str, str]:
    """SHA-256 of each table's rows, sorted on every column, as CSV text.

    Use it to check that two builds of a world (same seed, other chunking or machine) hold the
    same data. By default it covers the canonical tables and any ``sim_`` tables present.

    Example
    -------
    >>> import tempfile, os
    >>> from toolkit.store import connect
    >>> con = connect(os.path.join(tempfile.mkdtemp(), "d.duckdb"))
    >>> table_digests(con, ["users"]) == table_digests(con, ["users"])
    True
    """
    if tables is None:
        present = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        tables = [t for t in TABLE_ORDER if t in present] + sorted(t for t in present if t.startswith("sim_"))
    digests = {}
    for table in tables:
        df = con.sql(f'select * from "{table}" order by all').pl()
        digests[table] = hashlib.sha256(df.write_csv().encode()).hexdigest()
    return digests
