"""Import a directory of tables (or a log file) into the store after validating all of it, export it back, summarise it.

The importer never writes a partly valid input: it reads the whole input into a separate in-memory
DuckDB database, checks it against the canonical schema and against what the store already
holds (attached read-only), and only when nothing is wrong opens the store read-write and
inserts every table in one transaction. Each check is a :class:`RowRule` (a SQL predicate
marking bad rows) evaluated by one function, so adding a check means adding a row of data.
Input formats (:data:`INPUT_FORMATS`) turn a source into raw tables: ``canonical`` reads a
directory of table files, ``kuairand`` a KuaiRand log file (:mod:`toolkit.store.kuairand`).

Example
-------
>>> import tempfile, pathlib, polars as pl
>>> from toolkit.store.io import import_dir, export_dir, store_info
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> pl.DataFrame({"user_id": [1], "created_at": ["2024-05-01 00:00:00"], "is_inauthentic": [None]}).write_csv(d / "users.csv")
>>> pl.DataFrame({"post_id": [10], "author_id": [1], "created_at": ["2024-05-01 01:00:00"], "format": ["photo"],
...     "duration_s": [None], "topic": [3], "audio_id": [None], "has_location": [False], "is_reshare": [False],
...     **{f: [False] for f in ["misinformation", "guideline_violation", "sensitive", "political",
...        "low_resolution", "watermarked", "muted_audio", "has_borders", "mostly_text"]}}).write_csv(d / "posts.csv")
>>> from toolkit.store.schema import ACTIONS
>>> pl.DataFrame({"impression_id": [100], "user_id": [1], "post_id": [10], "surface": ["feed"],
...     "ts": ["2024-05-01 02:00:00"], "position": [0], "device": ["ios"], **{a: [None] for a in ACTIONS}}).write_csv(d / "impressions.csv")
>>> summary = import_dir(d / "store.duckdb", d, progress=False)
>>> summary["rows_added"]["impressions"]
1
>>> import_dir(d / "store.duckdb", d, progress=False)["rows_already_present"]["users"]
1
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError, ValidationError
from toolkit.store.connection import _ensure_schema, _open_error, connect, database_path
from toolkit.store.schema import (
    ACTIONS,
    ENGAGEMENT_ACTIONS,
    SURFACES,
    TABLE_ORDER,
    TABLES,
    Table,
)

__all__ = [
    "INPUT_FORMATS",
    "InputFormat",
    "ROW_RULES",
    "RowRule",
    "StagedInput",
    "check_rules",
    "export_dir",
    "import_dir",
    "schema_rules",
    "store_info",
]

#: Tables an input may leave out (read as empty): a dataset without a social graph or without a
#: public event log is still useful.
OPTIONAL_TABLES: tuple[str, ...] = ("follows", "engagements")
#: How many offending rows a problem message quotes.
EXAMPLES = 3
_FOLLOW = "follow"
_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"})
# Name of the read-only attachment of the existing store inside the validation database.
_STORE = "store"
# Rows per Arrow batch when handing validated rows to the store connection.
_BATCH_ROWS = 100_000


# --------------------------------------------------------------------------------------------
# Input formats: each turns a source into one raw relation per table
# --------------------------------------------------------------------------------------------


@dataclass
class StagedInput:
    """What an input format hands to validation: one raw relation per table it found.

    A relation's columns carry canonical column names; their types may be anything that casts
    to the canonical type (CSV is read as all text so that bad values can be reported, not
    fail the read). ``origins`` names where each table came from, for messages; ``problems``
    holds file-level problems (a table missing, given twice, unreadable, a malformed row of a
    log); ``notes`` says what the source lacks or how it was mapped (the import summary lists them).

    Example
    -------
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> staged = StagedInput()
    >>> staged.relations["users"] = con.sql("select 1 as user_id")
    >>> sorted(staged.relations)
    ['users']
    """

    relations: dict[str, duckdb.DuckDBPyRelation] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_directory(source: Path) -> None:
    """A canonical source must be a directory that holds something."""
    if not source.exists():
        raise FeedlabError(f"{source}: no such directory")
    if not source.is_dir():
        raise FeedlabError(f"{source}: not a directory (give the directory that holds the table files)")
    if not any(source.iterdir()):
        raise FeedlabError(f"{source}: the directory is empty")


def _read_canonical(con: duckdb.DuckDBPyConnection, source: Path) -> StagedInput:
    """Stage ``source/<table>.{parquet,csv}`` for each canonical table."""
    staged = StagedInput()
    found_any = False
    for table in TABLE_ORDER:
        candidates = [source / f"{table}.{ext}" for ext in ("parquet", "csv")]
        present = [p for p in candidates if p.is_file()]
        found_any = found_any or bool(present)
        if len(present) > 1:
            staged.problems.append(
                f"{table}: given twice ({present[0].name} and {present[1].name}); keep only one"
            )
            continue
        if not present:
            if table not in OPTIONAL_TABLES:
                staged.problems.append(f"{table}: missing ({table}.parquet or {table}.csv is required)")
            continue
        path = present[0]
        try:
            if path.suffix == ".parquet":
                rel = con.read_parquet(str(path))
            else:
                # all_varchar: a bad value must become a reported problem, not a failed read.
                rel = con.read_csv(str(path), header=True, all_varchar=True)
        except duckdb.Error as err:
            staged.problems.append(f"{table}: cannot read {path.name} ({_first_line(err)})")
            continue
        staged.relations[table] = rel
        staged.origins[table] = path.name
    if not found_any:
        raise FeedlabError(
            f"{source}: none of the canonical table files found; expected "
            "users, posts and impressions (and optionally follows, engagements) as .parquet or .csv"
        )
    return staged


def _check_kuairand(source: Path) -> None:
    from toolkit.store.kuairand import check_log_file  # imported late: that module imports this one

    check_log_file(source)


def _read_kuairand(con: duckdb.DuckDBPyConnection, source: Path) -> StagedInput:
    from toolkit.store.kuairand import read_kuairand

    return read_kuairand(con, source)


@dataclass(frozen=True)
class InputFormat:
    """An input format: its source check, its reader, and what its source is (for help and messages).

    ``check`` raises :class:`~toolkit.errors.FeedlabError` for a source that cannot be this
    format's (missing, a file where a directory is needed, empty); it runs before the store is
    touched. ``read`` stages the source's tables for validation.

    Example
    -------
    >>> INPUT_FORMATS["kuairand"].source
    'file'
    """

    check: Callable[[Path], None]
    read: Callable[[duckdb.DuckDBPyConnection, Path], StagedInput]
    source: str  # "directory" or "file"
    help: str


#: Input formats by name (``import_dir(..., format=name)``, ``feedlab import --format name``).
INPUT_FORMATS: dict[str, InputFormat] = {
    "canonical": InputFormat(
        _check_directory,
        _read_canonical,
        "directory",
        "a directory with {users,follows,posts,impressions,engagements}.{parquet,csv}",
    ),
    "kuairand": InputFormat(
        _check_kuairand,
        _read_kuairand,
        "file",
        "a KuaiRand log file (tab-separated, one row per impression, see docs/schema.md)",
    ),
}


# --------------------------------------------------------------------------------------------
# Validation rules as data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowRule:
    """One check: a SQL predicate over alias ``t`` that marks the bad rows of a table.

    ``stage`` says which rows it reads: ``"raw"`` is the input as read (before casting, so a
    value that does not parse can be quoted), ``"typed"`` is the input cast to the schema types,
    where the predicate may also read ``in_<table>`` (the typed input), ``existing_<table>``
    (the store's rows) and ``all_<table>`` (both). ``needs`` lists other (table, column) the
    predicate reads; a rule is skipped when one of its columns or needs is missing from the
    input, since that problem is already reported. ``params`` are bound to the predicate's
    ``?`` placeholders; ``show`` adds (label, SQL expression) pairs to the quoted examples.

    Example
    -------
    >>> rule = RowRule("impressions", ("position",), "with a negative position", 't."position" < 0')
    >>> rule.header()
    'impressions.position'
    """

    table: str
    columns: tuple[str, ...]
    description: str
    predicate: str
    stage: str = "typed"
    needs: tuple[tuple[str, str], ...] = ()
    params: tuple[Any, ...] = ()
    show: tuple[tuple[str, str], ...] = ()

    def header(self) -> str:
        """The ``table.column`` (or ``table.col1,col2``) a problem message starts with."""
        return f"{self.table}.{','.join(self.columns)}"


def _q(name: str) -> str:
    """Quote an identifier taken from the schema constants."""
    return '"' + name.replace('"', '""') + '"'


def _rel(prefix: str, table: str) -> str:
    return _q(f"{prefix}_{table}")


def _cast(expr: str, type_: str) -> str:
    """SQL casting ``expr`` to ``type_``, NULL when the value does not fit the type exactly."""
    if type_ == "TIMESTAMP":
        # Going through TIMESTAMPTZ (session time zone UTC) honours an explicit offset such as
        # '+02:00'; a direct cast would silently drop it. Naive values are taken as UTC.
        return f"TRY_CAST(TRY_CAST({expr} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if type_ in _INTEGER_TYPES:
        # TRY_CAST rounds 1.5 to 2; an id or a position with a fraction is a wrong value.
        return (
            f"CASE WHEN TRY_CAST({expr} AS DOUBLE) = TRY_CAST({expr} AS {type_}) "
            f"THEN TRY_CAST({expr} AS {type_}) END"
        )
    return f"TRY_CAST({expr} AS {type_})"


def _same(columns: Iterable[str], left: str, right: str) -> str:
    # IS NOT DISTINCT FROM: the engagements key has nullable columns, and null equals null there.
    return " AND ".join(f"{left}.{_q(c)} IS NOT DISTINCT FROM {right}.{_q(c)}" for c in columns)


def schema_rules(table: Table) -> list[RowRule]:
    """The checks that follow from a table's schema: types, nulls, enums, keys, references.

    Example
    -------
    >>> from toolkit.store.schema import TABLES
    >>> [r.description for r in schema_rules(TABLES["users"]) if r.columns == ("is_inauthentic",)]
    ['with a value that is not a valid BOOLEAN']
    """
    t = table.name
    rules: list[RowRule] = []
    for c in table.columns:
        col = f"t.{_q(c.name)}"
        example = " (expected like 2024-05-01 13:45:00, in UTC)" if c.type == "TIMESTAMP" else ""
        rules.append(
            RowRule(
                t,
                (c.name,),
                f"with a value that is not a valid {c.type}{example}",
                f"{col} IS NOT NULL AND {_cast(col, c.type)} IS NULL",
                stage="raw",
            )
        )
        if not c.nullable:
            rules.append(RowRule(t, (c.name,), "with a null (the column is required)", f"{col} IS NULL", stage="raw"))
    for c in table.columns:
        if c.values:
            col = f"t.{_q(c.name)}"
            rules.append(
                RowRule(
                    t,
                    (c.name,),
                    f"with a value outside {{{', '.join(c.values)}}}",
                    f"{col} IS NOT NULL AND NOT list_contains(?, {col})",
                    params=(list(c.values),),
                )
            )
    key = table.key
    rules.append(
        RowRule(
            t,
            key,
            "whose key appears more than once in the input",
            f"EXISTS (SELECT 1 FROM (SELECT {', '.join(map(_q, key))} FROM {_rel('in', t)} "
            f"GROUP BY ALL HAVING count(*) > 1) AS d WHERE {_same(key, 'd', 't')})",
        )
    )
    cols = table.column_names
    differs = ", ".join(f"CASE WHEN e.{_q(c)} IS DISTINCT FROM t.{_q(c)} THEN '{c}' END" for c in cols)
    rules.append(
        RowRule(
            t,
            key,
            "whose key is already in the store with different values",
            f"EXISTS (SELECT 1 FROM {_rel('existing', t)} AS e WHERE {_same(key, 'e', 't')} AND "
            f"ROW({', '.join('e.' + _q(c) for c in cols)}) IS DISTINCT FROM "
            f"ROW({', '.join('t.' + _q(c) for c in cols)}))",
            needs=tuple((t, c) for c in cols),
            show=(
                (
                    "differs in",
                    f"(SELECT list_filter([{differs}], lambda x: x IS NOT NULL) "
                    f"FROM {_rel('existing', t)} AS e WHERE {_same(key, 'e', 't')} LIMIT 1)",
                ),
            ),
        )
    )
    for col, (ref_table, ref_col) in table.references.items():
        rules.append(
            RowRule(
                t,
                (col,),
                f"whose {col} is not a {ref_table}.{ref_col} in the input or the store",
                f"t.{_q(col)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {_rel('all', ref_table)} AS r "
                f"WHERE r.{_q(ref_col)} = t.{_q(col)})",
                needs=((ref_table, ref_col),),
            )
        )
    return rules


def _before_post_created(table: str) -> RowRule:
    match = 'p."post_id" = t."post_id"'
    return RowRule(
        table,
        ("ts", "post_id"),
        "dated before their post was created (ts < posts.created_at)",
        f'EXISTS (SELECT 1 FROM {_rel("all", "posts")} AS p WHERE {match} AND t."ts" < p."created_at")',
        needs=(("posts", "post_id"), ("posts", "created_at")),
        show=(("posts.created_at", f'(SELECT min(p."created_at") FROM {_rel("all", "posts")} AS p WHERE {match})'),),
    )


#: Table-specific checks beyond what the schema says.
ROW_RULES: tuple[RowRule, ...] = (
    RowRule(
        "follows",
        ("follower_id", "followee_id"),
        "that follow themselves (follower_id = followee_id)",
        't."follower_id" = t."followee_id"',
    ),
    RowRule(
        "posts",
        ("duration_s",),
        "with a negative or non-finite duration",
        'NOT isfinite(t."duration_s") OR t."duration_s" < 0',
    ),
    RowRule("impressions", ("position",), "with a negative position (positions are 0-based)", 't."position" < 0'),
    _before_post_created("impressions"),
    *(
        RowRule(
            "impressions",
            (f"p_{a}",),
            "with a probability outside [0, 1]",
            f'NOT (t."p_{a}" BETWEEN 0 AND 1)',
        )
        for a in ACTIONS
    ),
    _before_post_created("engagements"),
    RowRule(
        "engagements",
        ("action", "target_user_id", "post_id"),
        "with action 'follow' but no target_user_id, or with a post_id",
        't."action" = ? AND (t."target_user_id" IS NULL OR t."post_id" IS NOT NULL)',
        params=(_FOLLOW,),
    ),
    RowRule(
        "engagements",
        ("action", "post_id"),
        f"with a post action ({', '.join(a for a in ENGAGEMENT_ACTIONS if a != _FOLLOW)}) but no post_id",
        't."action" <> ? AND t."post_id" IS NULL',
        params=(_FOLLOW,),
    ),
)


def _all_rules() -> list[RowRule]:
    rules = [r for t in TABLE_ORDER for r in schema_rules(TABLES[t])]
    rules += ROW_RULES
    order = {t: i for i, t in enumerate(TABLE_ORDER)}
    # Stable sort: problems come out table by table, raw checks first, in rule order.
    return sorted(rules, key=lambda r: (order[r.table], r.stage != "raw"))


def _fmt(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def check_rules(
    con: duckdb.DuckDBPyConnection, rules: list[RowRule], relation: str, columns: set[str]
) -> list[str]:
    """Evaluate rules over ``relation`` (aliased ``t``); one problem message per rule that fails.

    ``columns`` are the columns ``relation`` has (a raw input may lack some); only those are
    quoted in the examples.

    Example
    -------
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = con.execute("create table r as select * from (values (1, -2), (2, 0)) v(impression_id, position)")
    >>> rule = RowRule("impressions", ("position",), "with a negative position", 't."position" < 0')
    >>> check_rules(con, [rule], "r", {"impression_id", "position"})
    ['impressions.position: 1 row(s) with a negative position; e.g. impression_id=1, position=-2']
    """
    if not rules:
        return []
    # One scan counts the bad rows of every rule; only failing rules pay for quoting examples.
    counts = con.execute(
        f"SELECT {', '.join(f'count_if(({r.predicate}))' for r in rules)} FROM {_q(relation)} AS t",
        [p for r in rules for p in r.params],
    ).fetchall()[0]
    problems = []
    for rule, n in zip(rules, counts):
        if n:
            problem = _describe(con, rule, relation, columns)
            if problem:
                problems.append(problem)
    return problems


def _describe(con: duckdb.DuckDBPyConnection, rule: RowRule, relation: str, columns: set[str]) -> str | None:
    """The problem message of one rule over ``relation``, or None when no row is bad."""
    table = TABLES[rule.table]
    shown = [c for c in dict.fromkeys([*table.key, *rule.columns]) if c in columns]
    exprs = []
    for c in shown:
        expr = f"t.{_q(c)}"
        if rule.stage == "raw" and c not in rule.columns:
            # Quote context columns as their typed values (5, not '5'); the culprit stays raw.
            expr = _cast(expr, table.column(c).type)
        exprs.append((c, expr))
    exprs += list(rule.show)
    select = ", ".join(f"{e} AS {_q(label)}" for label, e in exprs)
    order = ", ".join(_q(label) for label, _ in exprs[: len(shown)]) or "1"
    sql = (
        f"SELECT count(*) OVER () AS _n, {select} FROM {_q(relation)} AS t "
        f"WHERE {rule.predicate} ORDER BY {order} LIMIT ?"
    )
    rows = con.execute(sql, [*rule.params, EXAMPLES]).fetchall()
    if not rows:
        return None
    labels = [label for label, _ in exprs]
    examples = "; ".join(", ".join(f"{label}={_fmt(v)}" for label, v in zip(labels, row[1:])) for row in rows)
    return f"{rule.header()}: {rows[0][0]} row(s) {rule.description}; e.g. {examples}"


# --------------------------------------------------------------------------------------------
# Staging and validation (in-memory database; the store only attached read-only)
# --------------------------------------------------------------------------------------------


def _typed_select(table: Table, present: Iterable[str], cast: bool) -> str:
    present = set(present)
    parts = []
    for c in table.columns:
        if c.name in present:
            src = f"t.{_q(c.name)}"
            parts.append(f"{_cast(src, c.type) if cast else src} AS {_q(c.name)}")
        else:
            parts.append(f"CAST(NULL AS {c.type}) AS {_q(c.name)}")
    return ", ".join(parts)


def _attach_existing(con: duckdb.DuckDBPyConnection, db: Path) -> bool:
    """Create ``existing_<table>`` relations: the store's rows, or empty when there is no store."""
    have: set[str] = set()
    attached = False
    if db.exists():
        try:
            con.execute(f"ATTACH ? AS {_STORE} (READ_ONLY)", [str(db)])
        except duckdb.Error as err:
            raise _open_error(db, err) from None
        attached = True
        have = {
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = 'main'",
                [_STORE],
            ).fetchall()
        }
        if "schema_version" in have:
            # Same version check (and message) as a connection to the store would make.
            con.execute(f"USE {_STORE}")
            try:
                _ensure_schema(con, read_only=True, path=db)
            finally:
                con.execute("USE memory")
        elif have & set(TABLES):
            raise FeedlabError(f"{db} is not a feedlab store (it has no schema_version table)")
    for name in TABLE_ORDER:
        table = TABLES[name]
        if name in have:
            body = f"SELECT {_typed_select(table, table.column_names, cast=False)} FROM {_STORE}.main.{_q(name)} AS t"
        else:
            body = f"SELECT {_typed_select(table, (), cast=False)} LIMIT 0"
        con.execute(f"CREATE VIEW {_rel('existing', name)} AS {body}")
    return attached


def _bar(tables: Iterable[str], desc: str, progress: bool) -> Iterable[str]:
    # leave=False: once done, the bars make way for the summary the caller prints.
    return tqdm(tables, desc=desc, unit="table", leave=False, disable=not progress)


def _validate(con: duckdb.DuckDBPyConnection, staged: StagedInput, progress: bool) -> list[str]:
    """Stage every table as ``in_<table>`` (typed) and return every problem found."""
    problems = list(staged.problems)
    # (table, column) pairs the input provides; rules reading anything else are skipped.
    available: set[tuple[str, str]] = set()
    raw_columns: dict[str, set[str]] = {}
    rules = _all_rules()
    for name in _bar(TABLE_ORDER, "reading", progress):
        table = TABLES[name]
        rel = staged.relations.get(name)
        present: set[str] = set()
        if rel is not None:
            origin = staged.origins.get(name, name)
            columns = list(rel.columns)
            for c in table.columns:
                if c.name not in columns and not c.optional:
                    problems.append(f"{name}.{c.name}: required column missing from {origin}")
            for c in columns:
                if c not in table.column_names:
                    problems.append(f"{name}.{c}: unknown column in {origin} (not in the canonical schema, see docs/schema.md)")
            try:
                # Materialised once: every rule scans it, and a CSV cannot be re-read by column.
                rel.create(f"raw_{name}")
            except duckdb.Error as err:
                problems.append(f"{name}: cannot read {origin} ({_first_line(err)})")
                rel = None
            else:
                present = set(columns) & set(table.column_names)
                raw_columns[name] = set(columns)
        if rel is not None:
            available |= {(name, c.name) for c in table.columns if c.name in present or c.optional}
            raw_rules = [r for r in rules if r.table == name and r.stage == "raw" and set(r.columns) <= present]
            problems += check_rules(con, raw_rules, f"raw_{name}", raw_columns[name])
            con.execute(
                f"CREATE TABLE {_rel('in', name)} AS SELECT {_typed_select(table, present, cast=True)} "
                f"FROM {_q(f'raw_{name}')} AS t"
            )
            con.execute(f"DROP TABLE {_q(f'raw_{name}')}")
        else:
            if name in OPTIONAL_TABLES and name not in staged.origins:
                # Left out on purpose: an empty table, with every column there.
                available |= {(name, c.name) for c in table.columns}
            con.execute(f"CREATE TABLE {_rel('in', name)} AS SELECT {_typed_select(table, (), cast=False)} LIMIT 0")
        cols = ", ".join(map(_q, table.column_names))
        con.execute(
            f"CREATE VIEW {_rel('all', name)} AS SELECT {cols} FROM {_rel('in', name)} "
            f"UNION ALL SELECT {cols} FROM {_rel('existing', name)}"
        )
    # Typed rules run once every table is staged: references and dates look across tables.
    for name in _bar(TABLE_ORDER, "checking", progress):
        if name not in staged.relations:
            continue
        typed_rules = [
            r
            for r in rules
            if r.table == name
            and r.stage == "typed"
            and {(name, c) for c in r.columns} | set(r.needs) <= available
        ]
        problems += check_rules(con, typed_rules, f"in_{name}", set(TABLES[name].column_names))
    return problems


def _insert(con: duckdb.DuckDBPyConnection, db: Path, progress: bool) -> tuple[dict[str, int], dict[str, int]]:
    """Insert the staged rows the store lacks, in one transaction; (rows added, rows staged)."""
    existed = db.exists()
    store = connect(db)
    added: dict[str, int] = {}
    staged: dict[str, int] = {}
    try:
        store.execute("BEGIN TRANSACTION")
        for name in _bar(TABLE_ORDER, "importing", progress):
            table = TABLES[name]
            cols = ", ".join(map(_q, table.column_names))
            staged[name] = con.execute(f"SELECT count(*) FROM {_rel('in', name)}").fetchall()[0][0]
            # Arrow streams the typed rows across databases without a copy of the whole input.
            reader = con.sql(f"SELECT {cols} FROM {_rel('in', name)}").to_arrow_reader(_BATCH_ROWS)
            store.register("_feedlab_incoming", reader)
            try:
                added[name] = store.execute(
                    f"INSERT INTO {_q(name)} ({cols}) SELECT {cols} FROM _feedlab_incoming AS s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {_q(name)} AS e WHERE {_same(table.key, 'e', 's')})"
                ).fetchall()[0][0]
            finally:
                store.unregister("_feedlab_incoming")
        store.execute("COMMIT")
    except BaseException:
        try:
            store.execute("ROLLBACK")
        except duckdb.Error:
            pass
        store.close()
        if not existed:
            # Nothing of ours may remain: a store file that did not exist before is removed.
            for leftover in (db, db.with_name(db.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    store.close()
    return added, staged


def import_dir(
    db: str | os.PathLike,
    source: str | os.PathLike,
    *,
    format: str = "canonical",
    progress: bool = True,
) -> dict:
    """Validate a directory of tables (or a log file) and add its rows to the store, all or nothing.

    With the ``canonical`` format, ``source`` is a directory holding ``users``, ``posts``,
    ``impressions`` and optionally ``follows`` and ``engagements``, each as ``.parquet`` or
    ``.csv`` (see ``docs/schema.md``); with ``kuairand`` it is a KuaiRand log file, mapped onto
    the canonical tables as ``docs/schema.md`` ("Importing a KuaiRand log") says. Every problem
    in the input is collected and raised together as a :class:`~toolkit.errors.ValidationError`;
    the store file is then left exactly as it was (or not created). Rows identical to ones
    already in the store are skipped, so importing the same data twice adds nothing. A store
    held by another process raises :class:`~toolkit.errors.StoreLockedError`.

    Returns ``{"database", "source", "rows_added": {table: n}, "rows_already_present": {table: n}}``,
    plus ``"notes"`` (a list of what the source lacks, how it was mapped) for a format that has
    any, such as ``kuairand``.

    Example
    -------
    >>> summary = import_dir("feed.duckdb", "exported/", progress=False)  # doctest: +SKIP
    >>> summary["rows_added"]["impressions"]  # doctest: +SKIP
    120000
    >>> import_dir("k.duckdb", "log.tsv", format="kuairand", progress=False)["notes"][2]  # doctest: +SKIP
    'no positions: position = 0 on every impression'
    """
    db = Path(db)
    source = Path(source)
    input_format = INPUT_FORMATS.get(format)
    if input_format is None:
        raise FeedlabError(f"unknown format {format!r}; known: {', '.join(INPUT_FORMATS)}")
    input_format.check(source)
    with tempfile.TemporaryDirectory(prefix="feedlab-import-") as spill:
        # A private spill directory: a large input must not leave a .tmp folder in the cwd.
        con = duckdb.connect(":memory:", config={"temp_directory": spill})
        try:
            con.execute("SET TimeZone = 'UTC'")
            attached = _attach_existing(con, db)
            staged = input_format.read(con, source)
            problems = _validate(con, staged, progress)
            if problems:
                raise ValidationError(problems, source=str(source))
            if attached:
                # One process may not hold the file twice; the write connection opens it next.
                con.execute(f"DETACH {_STORE}")
            added, total = _insert(con, db, progress)
        finally:
            con.close()
    summary = {
        "database": str(db),
        "source": str(source),
        "rows_added": added,
        "rows_already_present": {t: total[t] - added[t] for t in TABLE_ORDER},
    }
    if staged.notes:
        summary["notes"] = list(staged.notes)
    return summary


# --------------------------------------------------------------------------------------------
# Export and summary
# --------------------------------------------------------------------------------------------


def export_dir(db: str | os.PathLike, directory: str | os.PathLike) -> dict:
    """Write each canonical table of the store as ``directory/<table>.parquet``.

    Rows are ordered by the table key, so the same store always gives the same files, and
    :func:`import_dir` of the directory into a new store reproduces the store exactly. Tables
    outside the canonical schema (the simulator's ``sim_*``) are not exported.

    Example
    -------
    >>> export_dir("feed.duckdb", "exported/")["rows"]["users"]  # doctest: +SKIP
    5000
    """
    db = Path(db)
    directory = Path(directory)
    con = connect(db, read_only=True)
    rows: dict[str, int] = {}
    try:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FeedlabError(f"{directory}: cannot create the export directory ({err.strerror})") from None
        for name in TABLE_ORDER:
            table = TABLES[name]
            cols = ", ".join(map(_q, table.column_names))
            target = directory / f"{name}.parquet"
            partial = directory / f".{name}.parquet.partial"
            # Written aside and renamed: an interrupted export never leaves a truncated table.
            con.sql(f"SELECT {cols} FROM {_q(name)} ORDER BY {', '.join(map(_q, table.key))}").write_parquet(
                str(partial)
            )
            os.replace(partial, target)
            rows[name] = con.execute(f"SELECT count(*) FROM {_q(name)}").fetchall()[0][0]
    finally:
        con.close()
    return {"database": str(db), "directory": str(directory), "rows": rows}


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def store_info(con: duckdb.DuckDBPyConnection) -> dict:
    """Row counts, schema version, time span, impressions per surface and extra tables of a store.

    The result is JSON-serialisable: timestamps are ISO strings (None for an empty table).

    Example
    -------
    >>> import tempfile, os
    >>> from toolkit.store import connect
    >>> con = connect(os.path.join(tempfile.mkdtemp(), "demo.duckdb"))
    >>> info = store_info(con)
    >>> info["rows"]["impressions"], info["schema_version"], info["extra_tables"]
    (0, 1, [])
    >>> con.close()
    """
    path = database_path(con)
    rows = {t: con.execute(f"SELECT count(*) FROM {_q(t)}").fetchall()[0][0] for t in TABLE_ORDER}
    version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    span = {}
    for table, column in (("posts", "created_at"), ("impressions", "ts"), ("engagements", "ts")):
        lo, hi = con.execute(f"SELECT min({_q(column)}), max({_q(column)}) FROM {_q(table)}").fetchall()[0]
        span[f"{table}.{column}"] = {"min": _iso(lo), "max": _iso(hi)}
    per_surface = {s: 0 for s in SURFACES}
    for surface, n in con.execute("SELECT surface, count(*) FROM impressions GROUP BY surface ORDER BY surface").fetchall():
        per_surface[surface] = n
    canonical = set(TABLES) | {"schema_version"}
    extra = [
        name
        for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name"
        ).fetchall()
        if name not in canonical
    ]
    return {
        "database": str(path) if path else None,
        "schema_version": version,
        "rows": rows,
        "time_span": span,
        "impressions_per_surface": per_surface,
        "extra_tables": extra,
    }
