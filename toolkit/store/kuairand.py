"""Read a KuaiRand interaction log (one tab-separated row per impression) as the canonical tables.

KuaiRand (kuairand.com) is a public log of the Kuaishou short-video app. The log this reader
takes has one row per video shown to a user, with the user's reactions: the like/hate subset in
``../shared/datasets/kuairand-27k-like-hate/`` (see :func:`kuairand_path`), or any KuaiRand log
with the same columns. :func:`read_kuairand` is the ``kuairand`` input format of
:func:`toolkit.store.io.import_dir`; every mapping rule is in ``docs/schema.md`` ("Importing a
KuaiRand log").

The file is read with DuckDB as lines of text numbered as in the file (header = line 1), so a
malformed row (wrong number of fields, a non-integer id, a flag that is not 0 or 1, a negative
time) is reported by its line number and column, and nothing is written.

Example
-------
>>> from toolkit.store.io import import_dir
>>> summary = import_dir("kuairand.duckdb", kuairand_path(), format="kuairand", progress=False)  # doctest: +SKIP
>>> summary["rows_added"]["impressions"], summary["notes"][0]  # doctest: +SKIP
(41828, 'no author ids: posts.author_id is null; author and viewer-author signals are null')
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from toolkit.errors import FeedlabError
from toolkit.store.io import EXAMPLES, StagedInput
from toolkit.store.schema import CONTENT_FLAGS

__all__ = ["KUAIRAND_ENV", "REQUIRED_COLUMNS", "check_log_file", "kuairand_path", "notes", "read_kuairand"]

#: The environment variable that points at another KuaiRand log than the shared one.
KUAIRAND_ENV = "FEEDLAB_KUAIRAND"
#: The shared log, relative to the project root (``/work/shared`` sits beside the checkout).
_DEFAULT = Path("..") / "shared" / "datasets" / "kuairand-27k-like-hate" / "log_like_hate_kcore15.tsv"

#: Columns the importer reads; the log's others (date, hourmin, is_click, comment_stay_time,
#: timestamp) are not needed and may be absent.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "user_id",
    "video_id",
    "time_ms",
    "is_follow",
    "is_comment",
    "is_forward",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "is_profile_enter",
    "label",
)
_IDS = ("user_id", "video_id")
_FLAGS = ("is_follow", "is_comment", "is_forward", "long_view", "is_profile_enter", "label")
_COUNTS = ("time_ms", "play_time_ms", "duration_ms")
# 9999-12-31 in epoch milliseconds: a later time_ms is no timestamp DuckDB can hold.
_MAX_MS = 253_402_300_799_999
# (column, the engagement action a 1 in it records)
_ENGAGEMENTS = (("label", "like"), ("is_comment", "comment"), ("is_forward", "share"))


def kuairand_path() -> Path:
    """The KuaiRand log to import: ``$FEEDLAB_KUAIRAND`` if set, else the shared like/hate log.

    The default is found from the project root (the package's own location), not the working
    directory: ``<root>/../shared/datasets/kuairand-27k-like-hate/log_like_hate_kcore15.tsv``.
    The path is returned whether or not the file exists.

    Example
    -------
    >>> kuairand_path().name  # doctest: +SKIP
    'log_like_hate_kcore15.tsv'
    """
    env = os.environ.get(KUAIRAND_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]
    return (root / _DEFAULT).resolve()


def notes(n_unknown_duration: int, n_duplicates: int) -> list[str]:
    """What a KuaiRand log lacks or how it was mapped, for the import summary.

    Example
    -------
    >>> notes(3, 0)[2]
    'no positions: position = 0 on every impression'
    >>> len(notes(3, 0)), len(notes(3, 2))
    (9, 10)
    """
    out = [
        "no author ids: posts.author_id is null; author and viewer-author signals are null",
        "no follow graph: follows is empty; is_follow stays a label only (no follow engagements: no target account)",
        "no positions: position = 0 on every impression",
        "no topics or audio ids: posts.topic and posts.audio_id are null (topic signals are null too)",
        "labels not logged: save, audio_page, entertaining, report (null)",
        f"duration unknown (duration_ms = 0) on {n_unknown_duration} impression(s): watch_complete is null there",
        "no upload or sign-up times: posts.created_at and users.created_at are the first time seen in the log",
        "not imported: is_click, play_time_ms, comment_stay_time (outcomes after the impression; "
        "play_time_ms only decides watch_complete)",
        "biased sample: every row carries an explicit like or hate, so rates are not population rates",
    ]
    if n_duplicates:
        out.append(
            f"{n_duplicates} row(s) repeat an earlier row's user, video and time: each is an impression, "
            "but a like, comment or share at the same instant is one engagement"
        )
    return out


def check_log_file(source: Path) -> None:
    """Raise :class:`~toolkit.errors.FeedlabError` unless ``source`` is a non-empty file (not a directory).

    Example
    -------
    >>> check_log_file(Path("no/such/log.tsv"))
    Traceback (most recent call last):
    ...
    toolkit.errors.FeedlabError: no/such/log.tsv: no such file (the kuairand format reads one tab-separated log file)
    """
    if not source.exists():
        raise FeedlabError(f"{source}: no such file (the kuairand format reads one tab-separated log file)")
    if source.is_dir():
        raise FeedlabError(
            f"{source}: is a directory; the kuairand format reads one tab-separated log file "
            "(log_like_hate_kcore15.tsv, say), not a directory of tables"
        )
    if not source.is_file():
        raise FeedlabError(f"{source}: not a regular file")
    if source.stat().st_size == 0:
        raise FeedlabError(f"{source}: the file is empty (expected a header line and one row per impression)")


def _int_text(expr: str, *, signed: bool) -> str:
    """SQL: ``expr`` is a whole number written in decimal digits that fits a BIGINT."""
    pattern = "[+-]?[0-9]+" if signed else "[0-9]+"
    return f"(regexp_full_match({expr}, '{pattern}') AND TRY_CAST({expr} AS BIGINT) IS NOT NULL)"


def _problems(con: duckdb.DuckDBPyConnection, name: str, n_fields: int) -> list[str]:
    """Every malformed row of the staged lines: one message per (column, kind of problem), with line numbers."""
    ok = f"len(f) = {n_fields}"
    # (what the message names, description, SQL predicate marking bad rows, SQL of the value quoted)
    checks: list[tuple[str, str, str, str]] = [
        ("rows", f"with a number of tab-separated fields other than the header's {n_fields}", f"NOT ({ok})", "len(f)")
    ]
    for c in _IDS:
        checks.append((f"column {c}", "with a value that is not an integer id", f"{ok} AND NOT {_int_text(c, signed=True)}", c))
    for c in _FLAGS:
        checks.append((f"column {c}", "with a value other than 0 or 1", f"{ok} AND {c} NOT IN ('0', '1')", c))
    for c in _COUNTS:
        checks.append(
            (f"column {c}", "with a value that is not a whole number >= 0 (milliseconds)", f"{ok} AND NOT {_int_text(c, signed=False)}", c)
        )
    checks.append(
        ("column time_ms", "after the year 9999", f"{ok} AND {_int_text('time_ms', signed=False)} AND time_ms::BIGINT > {_MAX_MS}", "time_ms")
    )
    counts = con.execute(f"SELECT {', '.join(f'count_if({p})' for _, _, p, _ in checks)} FROM {name}").fetchall()[0]
    problems = []
    for (what, description, predicate, value), n in zip(checks, counts):
        if not n:
            continue
        rows = con.execute(
            f"SELECT line_no, {value} FROM {name} WHERE {predicate} ORDER BY line_no LIMIT {EXAMPLES}"
        ).fetchall()
        if what == "rows":
            examples = "; ".join(f"line {line} has {v} field(s)" for line, v in rows)
        else:
            examples = "; ".join(f"line {line}: {v!r}" for line, v in rows)
        problems.append(f"{what}: {n} row(s) {description}; e.g. {examples}")
    return problems


def read_kuairand(con: duckdb.DuckDBPyConnection, source: Path) -> StagedInput:
    """Stage a KuaiRand log as the canonical tables (the ``kuairand`` input format).

    Checks the file (present, a file, not empty, a header with every column of
    :data:`REQUIRED_COLUMNS`) and raises :class:`~toolkit.errors.FeedlabError` when it is not
    usable. Malformed rows become ``problems`` naming their line and column, with no relations
    (nothing can be imported). Otherwise one relation per table, mapped as ``docs/schema.md``
    describes, and the summary ``notes``.

    Example
    -------
    >>> import duckdb
    >>> staged = read_kuairand(duckdb.connect(), kuairand_path())  # doctest: +SKIP
    >>> sorted(staged.relations)  # doctest: +SKIP
    ['engagements', 'follows', 'impressions', 'posts', 'users']
    """
    source = Path(source)
    check_log_file(source)
    try:
        # Lines as text, numbered as in the file: read_csv has no line numbers and refuses (or
        # silently drops) a row with the wrong number of fields, which must be reported instead.
        con.execute(
            "CREATE TEMP TABLE kr_lines AS "
            "WITH f AS (SELECT string_split(replace(content, chr(13) || chr(10), chr(10)), chr(10)) AS l FROM read_text(?)) "
            "SELECT generate_subscripts(l, 1)::BIGINT AS line_no, unnest(l) AS line FROM f",
            [str(source)],
        )
    except duckdb.Error as err:
        raise FeedlabError(f"{source}: cannot read as text ({str(err).strip().splitlines()[0]})") from None
    # A final newline leaves one empty last line: not a row.
    con.execute("DELETE FROM kr_lines WHERE line_no = (SELECT max(line_no) FROM kr_lines) AND line = ''")
    header = con.execute("SELECT line FROM kr_lines WHERE line_no = 1").fetchall()
    names = [h.strip().lstrip("\ufeff") for h in (header[0][0] if header else "").split("\t")]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise FeedlabError(
            f"{source}: not a KuaiRand log: the header (line 1) lacks {', '.join(missing)}; expected a "
            f"tab-separated header with {', '.join(REQUIRED_COLUMNS)} (other columns are ignored)"
        )
    fields = ", ".join(f"trim(f[{names.index(c) + 1}]) AS {c}" for c in REQUIRED_COLUMNS)
    con.execute(
        f"CREATE TEMP TABLE kr_fields AS SELECT line_no, f, {fields} "
        f"FROM (SELECT line_no, string_split(line, chr(9)) AS f FROM kr_lines WHERE line_no > 1)"
    )
    con.execute("DROP TABLE kr_lines")
    staged = StagedInput()
    problems = _problems(con, "kr_fields", len(names))
    if problems:
        staged.problems += problems
        return staged
    con.execute(
        "CREATE TEMP TABLE kr AS SELECT line_no - 1 AS impression_id, user_id::BIGINT AS user_id, "
        "video_id::BIGINT AS post_id, epoch_ms(time_ms::BIGINT) AS ts, "
        + ", ".join(f"{c} = '1' AS {c}" for c in _FLAGS)
        + ", play_time_ms::BIGINT AS play_time_ms, duration_ms::BIGINT AS duration_ms FROM kr_fields"
    )
    con.execute("DROP TABLE kr_fields")
    flags = ", ".join(f"false AS {f}" for f in CONTENT_FLAGS)
    staged.relations = {
        "users": con.sql(
            "SELECT user_id, min(ts) AS created_at, CAST(NULL AS BOOLEAN) AS is_inauthentic FROM kr GROUP BY user_id"
        ),
        "posts": con.sql(
            "SELECT post_id, CAST(NULL AS BIGINT) AS author_id, min(ts) AS created_at, 'reel' AS format, "
            "CASE WHEN max(duration_ms) > 0 THEN max(duration_ms) / 1000.0 END::DOUBLE AS duration_s, "
            "CAST(NULL AS INTEGER) AS topic, CAST(NULL AS BIGINT) AS audio_id, false AS has_location, "
            f"false AS is_reshare, {flags} FROM kr GROUP BY post_id"
        ),
        "impressions": con.sql(
            "SELECT impression_id, user_id, post_id, 'reels' AS surface, ts, 0::INTEGER AS position, "
            "CAST(NULL AS VARCHAR) AS device, long_view AS dwell, label AS \"like\", is_comment AS comment, "
            "is_forward AS share, CAST(NULL AS BOOLEAN) AS save, is_profile_enter AS profile_tap, "
            "is_follow AS follow, CASE WHEN duration_ms > 0 THEN play_time_ms >= duration_ms END AS watch_complete, "
            "CAST(NULL AS BOOLEAN) AS audio_page, CAST(NULL AS BOOLEAN) AS entertaining, NOT label AS not_interested, "
            "CAST(NULL AS BOOLEAN) AS report FROM kr"
        ),
        # The same actor, action, video and instant is one event (the engagements key).
        "engagements": con.sql(
            " UNION ".join(
                f"SELECT user_id, post_id, CAST(NULL AS BIGINT) AS target_user_id, '{action}' AS action, ts, "
                f"false AS via_third_party_app FROM kr WHERE {column}"
                for column, action in _ENGAGEMENTS
            )
        ),
    }
    staged.origins = {name: source.name for name in staged.relations}
    unknown, duplicates = con.execute(
        "SELECT count_if(duration_ms = 0), count(*) - (SELECT count(*) FROM (SELECT DISTINCT user_id, post_id, ts FROM kr)) FROM kr"
    ).fetchall()[0]
    staged.notes = notes(unknown, duplicates)
    return staged
