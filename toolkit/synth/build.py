"""Writing a simulated world into a store, atomically and chunk by chunk."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from toolkit import __version__
from toolkit.errors import FeedlabError
from toolkit.store import connect
from toolkit.store.schema import TABLES
from toolkit.synth.config import SynthConfig
from toolkit.synth.simulate import Chunk, simulate


WRITE_MEMORY_LIMIT = "1GB"


def build_world(
    db: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    chunk_days: int = 1,
    progress: bool = True,
) -> dict:
    """Simulate a world and write it into a new store at ``db``; returns a summary.

    The world is written ``chunk_days`` at a time (memory stays bounded for large worlds) into a
    temporary file beside ``db`` that replaces ``db`` only when everything is written, so an
    interrupted build never leaves a half-written database. Besides the canonical tables, the
    store gets the simulation's ground truth: ``sim_accounts`` (role and strategy of each
    account), ``sim_posts`` (latent quality of each post) and ``sim_config`` (the parameters).

    Example
    -------
    >>> import tempfile, os
    >>> from toolkit.synth import SynthConfig, build_world
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.duckdb")
    >>> summary = build_world(path, SynthConfig(n_users=200, days=1, seed=3), progress=False)
    >>> summary["rows"]["impressions"] > 0
    True
    """
    config = config or SynthConfig()
    _check_target(Path(db), overwrite)
    bar = tqdm(total=config.n_hours, unit="h", desc="simulating", disable=not progress, mininterval=0.5)
    counter = {"impressions": 0}

    def on_hour(n_impressions: int) -> None:
        counter["impressions"] += n_impressions
        bar.update(1)
        bar.set_postfix(impressions=f"{counter['impressions']:,}", refresh=False)

    try:
        return _write(db, config, simulate(config, chunk_days=chunk_days, on_hour=on_hour), overwrite=overwrite)
    finally:
        bar.close()


def write_world(
    db: str | os.PathLike, tables: dict[str, pl.DataFrame], config: SynthConfig, *, overwrite: bool = False
) -> dict:
    """Write a world already in memory (from :func:`~toolkit.synth.simulate_world`) into a new store."""
    return _write(db, config, [Chunk(tables, range(config.days))], overwrite=overwrite)


def _write(db, config: SynthConfig, chunks: Iterable[Chunk], *, overwrite: bool) -> dict:
    db = Path(db)
    _check_target(db, overwrite)
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.partial-{os.getpid()}")
    _remove(tmp)
    started = time.perf_counter()
    rows: dict[str, int] = {}
    con = connect(tmp)
    try:
        # Appending needs little memory; without a cap DuckDB keeps every written block cached
        # (up to 80% of RAM), which would make a 50M-impression build look like it holds the world.
        con.execute("set memory_limit = ?", [WRITE_MEMORY_LIMIT])
        con.execute("create table sim_config (key varchar, value varchar)")
        con.execute("insert into sim_config values ('config', ?), ('toolkit_version', ?)", [config.to_json(), __version__])
        for chunk in chunks:
            con.execute("begin transaction")
            for name, df in chunk.tables.items():
                if df.height == 0 and name in TABLES:
                    continue
                con.register("chunk_df", df)
                if name in TABLES:
                    con.execute(f'insert into "{name}" by name select * from chunk_df')
                elif name in rows:
                    con.execute(f'insert into "{name}" by name select * from chunk_df')
                else:
                    con.execute(f'create table "{name}" as select * from chunk_df')
                con.unregister("chunk_df")
                rows[name] = rows.get(name, 0) + df.height
            con.execute("commit")
        con.execute("checkpoint")
        con.close()
    except BaseException:
        con.close()
        _remove(tmp)
        raise
    os.replace(tmp, db)
    seconds = time.perf_counter() - started
    return {
        "database": str(db),
        "seed": config.seed,
        "users": config.n_users,
        "days": config.days,
        "history_days": config.history_days,
        "rows": {name: rows.get(name, 0) for name in [*TABLES, *sorted(set(rows) - set(TABLES))]},
        "seconds": round(seconds, 2),
        "impressions_per_second": round(rows.get("impressions", 0) / max(seconds, 1e-9)),
    }


def _check_target(db: Path, overwrite: bool) -> None:
    if db.exists() and not overwrite:
        raise FeedlabError(f"{db} already exists; choose another path, or replace it with --overwrite (overwrite=True)")
    if db.is_dir():
        raise FeedlabError(f"{db} is a directory; give the path of a database file")


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        if p.exists():
            p.unlink()
