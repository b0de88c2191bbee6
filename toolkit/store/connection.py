"""Opening the DuckDB interaction store, with clear messages for locked or foreign files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from toolkit.errors import FeedlabError, SchemaVersionError, StoreLockedError
from toolkit.store.schema import SCHEMA_VERSION, schema_ddl


def _is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "lock" in text and ("conflicting" in text or "could not set lock" in text)


def _locked_error(path: str | os.PathLike) -> StoreLockedError:
    """The error for a store file held read-write by another process (shared with the importer)."""
    return StoreLockedError(
        f"{path} is locked: another process has it open for writing "
        "(a notebook kernel, a running `feedlab` command). Close that process, or open "
        "the file with read_only=True (DuckDB allows many readers but only when no "
        "process holds it read-write)."
    )


def _open_error(path: str | os.PathLike, err: Exception) -> FeedlabError:
    """The feedlab error for a DuckDB error raised while opening (or attaching) ``path``."""
    if _is_lock_error(err):
        return _locked_error(path)
    text = str(err).lower()
    if "different configuration" in text or "file handle conflict" in text:
        # DuckDB keeps one database per file per process: a notebook's open connection blocks
        # opening the same file again with other settings (read_only, or an ATTACH).
        return FeedlabError(
            f"{path} is already open in this process (a connection made earlier, in this "
            "notebook say); close it with con.close() and try again."
        )
    return FeedlabError(f"{path}: cannot open as a DuckDB database ({err})")


def connect(path: str | os.PathLike, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the feedlab store at ``path``, creating the v1 schema when opened read-write.

    A read-only connection needs an existing file; a read-write one creates the file and the
    tables when they are missing. DuckDB lets one read-write process hold a file at a time; when
    another process holds it this raises :class:`~toolkit.errors.StoreLockedError` naming the
    file, instead of DuckDB's raw error.

    Example
    -------
    >>> import tempfile, os
    >>> from toolkit.store import connect
    >>> con = connect(os.path.join(tempfile.mkdtemp(), "demo.duckdb"))
    >>> con.sql("select count(*) from impressions").fetchall()
    [(0,)]
    >>> con.close()
    """
    path = Path(path)
    if read_only and not path.exists():
        raise FeedlabError(f"{path}: no such database (build one with `feedlab synth` or `feedlab import`)")
    if not read_only and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as err:
        raise _open_error(path, err) from None
    try:
        # DuckDB's own progress bar becomes stray widgets in notebooks; feedlab shows tqdm bars
        con.execute("set enable_progress_bar = false")
        _ensure_schema(con, read_only=read_only, path=path)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def open_store(store: str | os.PathLike | duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to ``store`` (a path) for a ``with`` block, or ``store`` itself when it is a connection.

    Functions that take "a path or a connection" use it, so a caller's open connection is
    neither reopened nor closed.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.duckdb")
    >>> connect(path).close()
    >>> with open_store(path) as con:
    ...     con.sql("select count(*) from posts").fetchall()
    [(0,)]
    """
    if isinstance(store, duckdb.DuckDBPyConnection):
        yield store
        return
    con = connect(store, read_only=True)
    try:
        yield con
    finally:
        con.close()


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store behind ``con`` has a table (or view) ``name`` (in its own catalog and schema).

    Example
    -------
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> has_table(con, "posts"), con.execute("create table posts (x int)").fetchall(), has_table(con, "posts")
    (False, [], True)
    """
    # a view counts: a Parquet dataset (toolkit.store.dataset) shows its tables as views
    n = con.execute(
        "select count(*) from (select table_name, database_name, schema_name from duckdb_tables() "
        "union all select view_name, database_name, schema_name from duckdb_views() where not internal) "
        "where table_name = ? and database_name = current_database() and schema_name = current_schema()",
        [name],
    ).fetchall()[0][0]
    return n > 0


def _ensure_schema(con: duckdb.DuckDBPyConnection, *, read_only: bool, path: Path) -> None:
    has_version = con.execute(
        "select count(*) from information_schema.tables where table_name = 'schema_version'"
    ).fetchall()[0][0]
    if has_version:
        rows = con.execute("select max(version) from schema_version").fetchall()
        version = rows[0][0]
        if version is not None and version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} holds schema version {version}; this toolkit reads version {SCHEMA_VERSION}."
            )
        if version is not None:
            return
    if read_only:
        raise FeedlabError(f"{path} is not a feedlab store (it has no schema_version table)")
    con.execute("begin transaction")
    for stmt in schema_ddl():
        con.execute(stmt)
    con.execute("insert into schema_version values (?, now()::timestamp)", [SCHEMA_VERSION])
    con.execute("commit")


def database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The file behind a connection, or None for an in-memory database."""
    rows = con.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchall()
    return Path(rows[0][0]) if rows and rows[0][0] else None


def store_file(store: str | os.PathLike | duckdb.DuckDBPyConnection, *, needs: str) -> Path:
    """The file of a store given as a path or a connection; ``needs`` says why, for the error on an in-memory one.

    Example
    -------
    >>> import duckdb
    >>> store_file("data/w.duckdb", needs="models are saved beside the store file").name
    'w.duckdb'
    >>> store_file(duckdb.connect(), needs="models are saved beside the store file")
    Traceback (most recent call last):
    ...
    toolkit.errors.FeedlabError: models are saved beside the store file; this connection is to an in-memory database
    """
    if isinstance(store, duckdb.DuckDBPyConnection):
        path = database_path(store)
        if path is None:
            raise FeedlabError(f"{needs}; this connection is to an in-memory database")
        return path
    return Path(store)


#: The environment variable that points notebooks and commands at another store than the default.
STORE_ENV = "FEEDLAB_DB"


def default_store(*, must_exist: bool = True) -> Path:
    """The default store's path: ``$FEEDLAB_DB`` if set, else ``data/feedlab.duckdb`` in the project root.

    The project root is found from the package's own location, not the working directory, so a
    notebook finds the data whichever folder its kernel started in (nbval starts it in
    ``notebooks/``). With ``must_exist`` a missing file is a clear error that says how to build it.

    Example
    -------
    >>> default_store(must_exist=False).name  # doctest: +SKIP
    'feedlab.duckdb'
    """
    env = os.environ.get(STORE_ENV)
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data" / "feedlab.duckdb"
    if must_exist and not path.exists():
        how = f"unset {STORE_ENV} or point it at a store" if env else "run `make data` in the project root"
        raise FeedlabError(f"{path}: the default store does not exist yet ({how})")
    return path
