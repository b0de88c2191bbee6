"""Which part of a store's log is history only: read by features, never trained or tested on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb

from toolkit.store.connection import has_table


def history_until(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The time before which the store's impressions are history only, or None when all are studied.

    A simulated world built with ``history_days`` (``feedlab synth --history-days N``) records
    it: its first N days give every viewer, post and author a past that features read, as a real
    log would, while training, early stopping and test rows all come from the days after. A store
    without that record (an import, an older world, ``history_days=0``) gives None.

    Example
    -------
    >>> import tempfile, os
    >>> from toolkit.store import connect
    >>> from toolkit.synth import SynthConfig, build_world
    >>> path = os.path.join(tempfile.mkdtemp(), "w.duckdb")
    >>> _ = build_world(path, SynthConfig(n_users=200, days=2, history_days=1, seed=3), progress=False)
    >>> history_until(connect(path, read_only=True))
    datetime.datetime(2026, 1, 6, 0, 0)
    """
    if not has_table(con, "sim_config"):
        return None
    rows = con.execute("select value from sim_config where key = 'config'").fetchall()
    if not rows:
        return None
    config = json.loads(rows[0][0])
    days = int(config.get("history_days") or 0)
    if days <= 0:
        return None
    return datetime.fromisoformat(config["start"]) + timedelta(days=days)
