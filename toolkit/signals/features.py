"""Point-in-time features of requests (viewer, post, time, device): the signals of the seeds.

A *request* asks "what do we know about showing post p to viewer u at time t?". Training asks it
for every logged impression (:func:`training_frame`); scoring asks it for a viewer and a list of
candidates (:func:`scoring_frame`). Both go through :func:`compute_features`, so a feature has one
definition and there is no train/serve skew.

How point-in-time works: each event source (engagements, impressions, follows, posts) is
aggregated in DuckDB per key and timestamp, turned into running totals per key in polars, and
joined to the requests with a backward as-of join that does not allow exact matches. The total
found for a request at t is therefore the sum over events strictly before t, and a window
``[t - w, t)`` is the difference of two such totals. An impression's labels count as events at
the impression's own timestamp. Adding any event at or after t cannot change a feature at t
(a hypothesis test checks it).

Example
-------
>>> import tempfile, os
>>> from toolkit.synth import SynthConfig, build_world
>>> from toolkit.store import connect
>>> path = os.path.join(tempfile.mkdtemp(), "w.duckdb")
>>> _ = build_world(path, SynthConfig(n_users=200, days=1, seed=2), progress=False)
>>> con = connect(path, read_only=True)
>>> frame = training_frame(con, "feed")
>>> frame.select("post_likes_24h", "va_follows").dtypes
[Float64, Boolean]
>>> con.close()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import polars.selectors as cs
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError
from toolkit.signals.registry import (
    ENGAGEMENT_MIN_OBSERVATIONS,
    ENGAGEMENT_PRIOR_INFORMATION,
    FEATURES,
    POPULARITY_ACTIONS,
    POPULARITY_WINDOWS,
    RATE_SMOOTHING,
    TOPIC_LIFT_PSEUDOCOUNT,
    feature_names,
)
from toolkit.store.history import history_until
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, DEVICES, FORMATS, RECOMMENDATION_SURFACES, SURFACES

#: Features computed after the branches, from columns of two of them.
CROSS_BRANCH = ("va_topic_share", "va_topic_like_lift")
#: Keeps a lift finite for a viewer who has liked nothing yet.
LIFT_FLOOR = 0.01
#: Name under which the requests are registered for the event SQL to read.
REQUESTS_VIEW = "_feedlab_requests"
_DAY_S = 86_400
def _label_counts(alias: str = "") -> str:
    """SQL giving, per impression row and action, 1/0 for a positive label and 1/0 for an observable one.

    ``x is true`` and ``x is not null`` are never null, so a row whose labels are all null counts
    0 positives and 0 observations instead of poisoning every later total.
    """
    col = f"{alias}." if alias else ""
    return ", ".join(f'({col}"{a}" is true)::int as pos_{a}, ({col}"{a}" is not null)::int as obs_{a}' for a in ACTIONS)


@dataclass(frozen=True)
class EventQuery:
    """One event source: SQL giving one row per event (its keys, ``ts`` and 0/1 counts) before a time ``?``.

    The SQL may read the requests (registered as ``_feedlab_requests``: _row, user_id, post_id,
    ts) to fetch only the history of the keys asked about. ``windows_s`` lists the windows
    ``[t - w, t)`` any feature counts over these events; ``fixed_point`` the values that are not
    counts but real numbers in millionths.
    """

    sql: str
    by: tuple[str, ...]
    values: tuple[str, ...]
    windows_s: tuple[int, ...] = ()
    #: values that are real numbers held in millionths (``FIXED_POINT``): whole numbers, so that
    #: their sums are exact and the same in any order (DuckDB sums doubles in thread order)
    fixed_point: tuple[str, ...] = ()

    def individual_spans(self, requests_from: datetime, requests_to: datetime) -> list[tuple[datetime, datetime]]:
        """The time spans ``[a, b)`` whose events must stay apart for requests timed in ``[requests_from, requests_to]``.

        A request at t looks up totals strictly before t and, for each window w, before t - w.
        Events between two such lookup times can be summed into one row without changing any
        lookup, so only the spans the lookup times fall in keep their events one by one.

        Example
        -------
        >>> q = EventQuery("", ("user_id",), ("shown",), windows_s=(86_400,))
        >>> q.individual_spans(datetime(2026, 1, 10), datetime(2026, 1, 10, 6))
        [(datetime.datetime(2026, 1, 9, 0, 0), datetime.datetime(2026, 1, 9, 6, 0)), (datetime.datetime(2026, 1, 10, 0, 0), datetime.datetime(2026, 1, 10, 6, 0))]
        """
        spans = sorted(
            [(requests_from, requests_to)]
            + [(requests_from - timedelta(seconds=w), requests_to - timedelta(seconds=w)) for w in self.windows_s]
        )
        merged: list[tuple[datetime, datetime]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def fetch(self, requests_from: datetime, requests_to: datetime) -> tuple[str, list]:
        """SQL and parameters of the events requests in ``[requests_from, requests_to]`` can see, per key and ``ts``.

        Events inside :meth:`individual_spans` come one row per key and timestamp. Those between
        two spans (and before the first) come as one row per key and gap: their summed counts at
        the time of the last of them. Every running total, window and "time since the last
        event" at a request's lookup times is the same as from the events themselves, and a
        chunk of requests reads its own spans' events plus a few rows per key instead of the
        whole history.
        """
        spans = self.individual_spans(requests_from, requests_to)
        keys = ", ".join(self.by)
        sums = ", ".join(f"sum({v})::bigint as {v}" for v in self.values)
        inside = " or ".join("(ts >= ? and ts < ?)" for _ in spans)
        gap = " + ".join("(ts >= ?)::int" for _ in spans)  # how many spans began before: the gap's number
        sql = (
            f"with events as ({self.sql}), "
            f"tagged as (select *, ({inside}) as _individual, {gap} as _gap from events) "
            f"select {keys}, ts, {sums} from tagged where _individual group by {keys}, ts "
            f"union all by name "
            f"select {keys}, max(ts) as ts, {sums} from tagged where not _individual group by {keys}, _gap"
        )
        params = [requests_to, *(t for span in spans for t in span), *(a for a, _ in spans)]
        return sql, params


_AUTHORS = f"(select p.author_id from posts p where p.post_id in (select post_id from {REQUESTS_VIEW}))"
_PAIRS = f"(select r.user_id, p.author_id from {REQUESTS_VIEW} r join posts p using (post_id))"
_RATE_VALUES = ("shown", *(f"pos_{a}" for a in ACTIONS), *(f"obs_{a}" for a in ACTIONS))
_TOPIC_VALUES = (
    "topic_shown", "topic_likes", "topic_like_obs", "topic_dwells", "topic_dwell_obs", "topic_engaged", "topic_recommended",
)  # fmt: skip
#: An impression the viewer interacted with: liked, commented, shared or tapped through to the profile.
_INTERACTED = 'i."like" is true or i.comment is true or i.share is true or i.profile_tap is true'
_RECOMMENDED_SQL = ", ".join(f"'{s}'" for s in RECOMMENDATION_SURFACES)
_POPULARITY_VALUES = tuple(f"{a}s" for a in POPULARITY_ACTIONS)
#: Units per 1 of a fixed-point event value.
FIXED_POINT = 1_000_000

# An action's expected rate on a surface on a day: its positive share among that surface's
# labels on every earlier day, once there are enough of them (null on the first day). Days, not
# hours or positions: the table has a few rows per day, so reading it costs one pass over the
# impressions' labels (about 0.06 s on the default world), and position added nothing measurable.
_DAILY_LABELS = ", ".join(f'count_if("{a}") as p_{a}, count("{a}") as o_{a}' for a in ACTIONS)
_EXPECTED_RATES = ", ".join(
    f"case when sum(o_{a}) over w >= {ENGAGEMENT_MIN_OBSERVATIONS} then sum(p_{a}) over w / sum(o_{a}) over w end as g_{a}"
    for a in ACTIONS
)
_RESIDUAL = " + ".join(f'coalesce(i."{a}"::int - e.g_{a}, 0)' for a in ACTIONS)
_INFORMATION = " + ".join(f'coalesce((i."{a}" is not null)::int * e.g_{a} * (1 - e.g_{a}), 0)' for a in ACTIONS)
#: The viewer's impressions as rate events, and per impression its labels minus their expected
#: rates summed over the observable actions, with the information those labels carry (sum of
#: g (1 - g)): the score and the Fisher information of a logistic viewer effect at 0, in
#: millionths. The rates come from days before the impression's day, so an impression's terms use
#: only what was logged before it.
_VIEWER_IMPRESSIONS_SQL = f"""
    with daily as (
        select surface, date_trunc('day', ts) as day, {_DAILY_LABELS}
        from impressions where ts < (select max(ts) from {REQUESTS_VIEW}) group by surface, day
    ),
    expected as (
        select surface, day, {_EXPECTED_RATES} from daily
        window w as (partition by surface order by day rows between unbounded preceding and 1 preceding)
    )
    select i.user_id, i.ts, 1 as shown, {_label_counts('i')},
           coalesce(round(({_RESIDUAL}) * {FIXED_POINT}), 0)::bigint as engagement_residual,
           coalesce(round(({_INFORMATION}) * {FIXED_POINT}), 0)::bigint as engagement_information
    from impressions i left join expected e on e.surface = i.surface and e.day = date_trunc('day', i.ts)
    where i.user_id in (select user_id from {REQUESTS_VIEW}) and i.ts < ?
"""
_ENGAGEMENT_VALUES = ("engagement_residual", "engagement_information")

#: Every event source the features read, by name: the one place their SQL is written.
EVENT_QUERIES: dict[str, EventQuery] = {
    # popularity as a ranker sees it: every public engagement, bought ones included
    "post_engagements": EventQuery(
        "select post_id, ts, " + ", ".join(f"(action = '{a}')::int as {a}s" for a in POPULARITY_ACTIONS)
        + f" from engagements where post_id in (select post_id from {REQUESTS_VIEW}) and action != 'follow' and ts < ?",
        ("post_id",),
        _POPULARITY_VALUES,
        windows_s=tuple(seconds for _, seconds in POPULARITY_WINDOWS),
    ),
    "post_impressions": EventQuery(
        f"select post_id, ts, 1 as shown, {_label_counts()} from impressions "
        f"where post_id in (select post_id from {REQUESTS_VIEW}) and ts < ?",
        ("post_id",),
        _RATE_VALUES,
    ),
    "author_followers": EventQuery(
        f"select followee_id as author_id, created_at as ts, 1 as followers from follows "
        f"where followee_id in {_AUTHORS} and created_at < ?",
        ("author_id",),
        ("followers",),
    ),
    "author_engagements": EventQuery(
        f"select p.author_id, e.ts, 1 as received from engagements e join posts p using (post_id) "
        f"where p.author_id in {_AUTHORS} and e.action != 'follow' and e.ts < ?",
        ("author_id",),
        ("received",),
        windows_s=(28 * _DAY_S,),
    ),
    "author_posts": EventQuery(
        f"select author_id, created_at as ts, 1 as posted, (misinformation is true)::int as misinfo "
        f"from posts where author_id in {_AUTHORS} and created_at < ?",
        ("author_id",),
        ("posted", "misinfo"),
        windows_s=(7 * _DAY_S,),
    ),
    "author_impressions": EventQuery(
        f"select p.author_id, i.ts, 1 as shown, {_label_counts('i')} "
        f"from impressions i join posts p using (post_id) where p.author_id in {_AUTHORS} and i.ts < ?",
        ("author_id",),
        _RATE_VALUES,
    ),
    # the viewer's rates, and every earlier label against the rate expected of it (engagement level)
    "viewer_impressions": EventQuery(
        _VIEWER_IMPRESSIONS_SQL,
        ("user_id",),
        (*_RATE_VALUES, *_ENGAGEMENT_VALUES),
        fixed_point=_ENGAGEMENT_VALUES,
    ),
    # the same impressions for the windowed counts alone: a week of one narrow column instead of
    # a week of every label (the largest source a chunk reads)
    "viewer_recent": EventQuery(
        f"select user_id, ts, 1 as seen from impressions where user_id in (select user_id from {REQUESTS_VIEW}) and ts < ?",
        ("user_id",),
        ("seen",),
        windows_s=(_DAY_S, 7 * _DAY_S),
    ),
    "va_impressions": EventQuery(
        f"select i.user_id, p.author_id, i.ts, 1 as shown, (i.profile_tap is true)::int as taps, "
        f"({_INTERACTED})::int as interacted "
        f"from impressions i join posts p using (post_id) where (i.user_id, p.author_id) in {_PAIRS} and i.ts < ?",
        ("user_id", "author_id"),
        ("shown", "taps", "interacted"),
    ),
    "va_engagements": EventQuery(
        f"select e.user_id, p.author_id, e.ts, (e.action = 'like')::int as likes, "
        f"(e.action = 'comment')::int as comments, 1 as interactions "
        f"from engagements e join posts p using (post_id) "
        f"where e.action in ('like', 'comment', 'share', 'save') and (e.user_id, p.author_id) in {_PAIRS} "
        f"and e.ts < ?",
        ("user_id", "author_id"),
        ("likes", "comments", "interactions"),
    ),
    # the author's comments on the viewer's posts: keyed (commenter, post author)
    "va_mutual_comments": EventQuery(
        f"select e.user_id as commenter, p.author_id as post_author, e.ts, 1 as mutual "
        f"from engagements e join posts p using (post_id) "
        f"where e.action = 'comment' and (p.author_id, e.user_id) in {_PAIRS} and e.ts < ?",
        ("commenter", "post_author"),
        ("mutual",),
    ),
    # the author's impressions of the viewer's posts that the author interacted with
    "va_mutual_interactions": EventQuery(
        f"select i.user_id as interactor, p.author_id as post_author, i.ts, 1 as mutual_interactions "
        f"from impressions i join posts p using (post_id) "
        f"where ({_INTERACTED}) and (p.author_id, i.user_id) in {_PAIRS} and i.ts < ?",
        ("interactor", "post_author"),
        ("mutual_interactions",),
    ),
    "viewer_topics": EventQuery(
        f'select i.user_id, p.topic, i.ts, 1 as topic_shown, (i."like" is true)::int as topic_likes, '
        f'(i."like" is not null)::int as topic_like_obs, (i.dwell is true)::int as topic_dwells, (i.dwell is not null)::int as topic_dwell_obs, '
        f'(i."like" is true or i.comment is true or i.share is true or i.save is true)::int as topic_engaged, '
        f"(i.surface in ({_RECOMMENDED_SQL}))::int as topic_recommended "
        f"from impressions i join posts p using (post_id) "
        f"where i.user_id in (select user_id from {REQUESTS_VIEW}) and i.ts < ?",
        ("user_id", "topic"),
        _TOPIC_VALUES,
    ),
}

_FLAG_COLUMNS = ", ".join(f"p.{flag}" for flag in CONTENT_FLAGS)
#: Entity lookups (no time dimension): the requested posts, the viewers, the follow pairs.
POSTS_SQL = f"""
    select p.post_id, p.author_id, p.created_at as post_created_at, p.format, p.duration_s,
           p.topic, p.audio_id, p.has_location, p.is_reshare, {_FLAG_COLUMNS},
           a.created_at as author_created_at
    from posts p left join users a on a.user_id = p.author_id
    where p.post_id in (select post_id from {REQUESTS_VIEW})
"""
VIEWERS_SQL = f"select user_id, created_at as viewer_created_at from users where user_id in (select user_id from {REQUESTS_VIEW})"
FOLLOW_PAIRS_SQL = f"""
    select f.follower_id, f.followee_id, f.created_at as follow_created_at, f.close_friend, f.muted
    from follows f
    where (f.follower_id, f.followee_id) in (select user_id, author_id from {_PAIRS})
       or (f.followee_id, f.follower_id) in (select user_id, author_id from {_PAIRS})
"""


def _impressions_where(surfaces: Sequence[str], start: datetime | None, end: datetime | None) -> tuple[list[str], list]:
    """The conditions (and their parameters) selecting the surfaces' impressions with ``start <= ts < end``."""
    where, params = [f"surface in ({', '.join('?' for _ in surfaces)})"], list(surfaces)
    if start is not None:
        where.append("ts >= ?")
        params.append(start)
    if end is not None:
        where.append("ts < ?")
        params.append(end)
    return where, params


def _studied_from(con: duckdb.DuckDBPyConnection, start: datetime | None) -> datetime | None:
    """``start``, or by default the end of the store's history-only days (None when it has none)."""
    return history_until(con) if start is None else start


def _surfaces(surface: str | Sequence[str]) -> list[str]:
    surfaces = [surface] if isinstance(surface, str) else list(surface)
    unknown = [s for s in surfaces if s not in SURFACES]
    if unknown or not surfaces:
        raise FeedlabError(f"unknown surface {unknown[0] if unknown else None!r}; choose one of {', '.join(SURFACES)}")
    return surfaces


def training_frame(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: bool = False,
) -> pl.DataFrame:
    """Features and labels of every impression of a surface (with ``start <= ts < end``).

    ``start`` defaults to the store's :func:`~toolkit.store.history_until` (None: the first
    impression): impressions of a world's history-only days are not rows, though every feature
    still reads them. Pass an earlier ``start`` to include them.

    Columns: impression_id, user_id, post_id, ts, every feature of
    :func:`~toolkit.signals.registry.feature_names`, the twelve labels (null where not
    observable) and the ``p_<action>`` columns (null on real data).

    Example
    -------
    >>> frame = training_frame(con, "reels")  # doctest: +SKIP
    >>> frame.height  # doctest: +SKIP
    218173
    """
    return training_frames(con, [surface], start=start, end=end, progress=progress)[surface]


def training_frames(
    con: duckdb.DuckDBPyConnection,
    surfaces: Sequence[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: bool = False,
) -> dict[str, pl.DataFrame]:
    """:func:`training_frame` of several surfaces at once, each the same as on its own.

    The requests of every surface are featurized together, so each viewer's, post's and
    author's history is read once for all of them instead of once per surface.

    Example
    -------
    >>> frames = training_frames(con, ["feed", "reels"])  # doctest: +SKIP
    >>> frames["reels"].height  # doctest: +SKIP
    218173
    """
    surfaces = _surfaces(surfaces)
    where, params = _impressions_where(surfaces, _studied_from(con, start), end)
    labels = ", ".join(f'"{a}"' for a in ACTIONS) + ", " + ", ".join(f"p_{a}" for a in ACTIONS)
    impressions = con.sql(
        f"select surface, impression_id, user_id, post_id, ts, device, position, {labels} from impressions "
        f"where {' and '.join(where)} order by ts, impression_id",
        params=params,
    ).pl()
    requests = impressions.select("impression_id", "user_id", "post_id", "ts", "device", "position")
    label = f"features {', '.join(surfaces)}" if progress else False
    features = compute_features(con, requests, progress=label)
    frame = features.drop("device").hstack(impressions.select("surface", *ACTIONS, *(f"p_{a}" for a in ACTIONS)))
    # filtering keeps the (ts, impression_id) order, so each part equals its surface's own query
    return {s: frame.filter(pl.col("surface") == s).drop("surface") for s in surfaces}


def chunk_edges(
    con: duckdb.DuckDBPyConnection,
    surface: str | Sequence[str],
    *,
    chunk: timedelta = timedelta(days=1),
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[tuple[datetime, datetime]]:
    """The ``[a, b)`` time chunks that cover a surface's (or several surfaces') impressions, ``chunk`` long from the first one.

    Like :func:`training_frame`, ``start`` defaults to the end of the store's history-only days.

    Example
    -------
    >>> chunk_edges(con, "feed", chunk=timedelta(days=7))  # doctest: +SKIP
    [(datetime(2026, 1, 5, 0, 0, 3), datetime(2026, 1, 12, 0, 0, 3)), ...]
    """
    if chunk <= timedelta(0):
        raise FeedlabError("chunk must be a positive duration")
    where, params = _impressions_where(_surfaces(surface), _studied_from(con, start), end)
    [(lo, hi)] = con.execute(f"select min(ts), max(ts) from impressions where {' and '.join(where)}", params).fetchall()
    if lo is None:
        return []
    edges = []
    edge = lo
    while edge <= hi:
        edges.append(edge)
        edge += chunk
    edges.append(hi + timedelta(microseconds=1))
    return list(zip(edges[:-1], edges[1:]))


def iter_training_frames(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    *,
    chunk: timedelta = timedelta(days=1),
    start: datetime | None = None,
    end: datetime | None = None,
    progress: bool = False,
) -> Iterator[pl.DataFrame]:
    """:func:`training_frame` a time chunk at a time, for logs too large to featurize at once.

    Each chunk reads only the history of the posts, authors and viewers it contains, so memory
    follows the chunk, not the log. The concatenated chunks equal one :func:`training_frame`.

    Example
    -------
    >>> sum(f.height for f in iter_training_frames(con, "feed", chunk=timedelta(hours=12)))  # doctest: +SKIP
    513043
    """
    for frames in _chunked_frames(con, [surface], chunk=chunk, start=start, end=end, progress=progress):
        yield frames[surface]


def _chunked_frames(con, surfaces: list[str], *, chunk: timedelta, start=None, end=None, progress: bool) -> Iterator[dict[str, pl.DataFrame]]:
    """:func:`training_frames` of ``surfaces`` one time chunk at a time, with a progress bar over the chunks."""
    edges = chunk_edges(con, surfaces, chunk=chunk, start=start, end=end)
    for a, b in tqdm(edges, desc=f"features {', '.join(surfaces)}", unit="chunk", disable=not progress):
        yield training_frames(con, surfaces, start=a, end=b)


def write_training_frame(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    path: str | os.PathLike,
    *,
    chunk: timedelta = timedelta(days=1),
    progress: bool = True,
) -> int:
    """Write a surface's training rows to one Parquet file chunk by chunk; returns the row count.

    Memory stays at one chunk's worth (see :func:`iter_training_frames`); the file is written
    beside its target and renamed when complete.

    Example
    -------
    >>> write_training_frame(con, "reels", "reels_features.parquet")  # doctest: +SKIP
    218173
    """
    return _write_frames(con, {surface: Path(path)}, chunk=chunk, progress=progress)[surface]


def write_training_frames(
    con: duckdb.DuckDBPyConnection,
    folder: str | os.PathLike,
    *,
    surfaces: Sequence[str] | None = None,
    chunk: timedelta = timedelta(days=1),
    progress: bool = True,
) -> dict[str, int]:
    """Write every surface's training rows to ``folder/<surface>.parquet``, featurizing each chunk once for all of them.

    ``surfaces`` defaults to those with impressions in the store. Each file equals
    :func:`write_training_frame`'s for its surface; reading each chunk's history once for all
    surfaces makes the whole log about twice as fast to featurize. Returns rows per surface.

    Example
    -------
    >>> write_training_frames(con, "features/")  # doctest: +SKIP
    {'feed': 509213, 'stories': 199875, 'explore': 181528, 'reels': 215939}
    """
    if surfaces is None:
        present = {s for (s,) in con.execute("select distinct surface from impressions").fetchall()}
        surfaces = [s for s in SURFACES if s in present]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _write_frames(con, {s: folder / f"{s}.parquet" for s in _surfaces(surfaces)}, chunk=chunk, progress=progress)


def _write_frames(con, paths: dict[str, Path], *, chunk: timedelta, progress: bool) -> dict[str, int]:
    """Featurize the surfaces of ``paths`` chunk by chunk into their Parquet files, all renamed into place at the end."""
    import pyarrow.parquet as pq

    partial = {s: p.with_name(f".{p.name}.partial") for s, p in paths.items()}
    writers: dict[str, pq.ParquetWriter] = {}
    rows = dict.fromkeys(paths, 0)
    surfaces = list(paths)
    try:
        for frames in _chunked_frames(con, surfaces, chunk=chunk, progress=progress):
            for surface, frame in frames.items():
                if frame.height == 0:
                    continue
                table = frame.to_arrow()
                if surface not in writers:
                    writers[surface] = pq.ParquetWriter(partial[surface], table.schema)
                writers[surface].write_table(table)
                rows[surface] += frame.height
        empty = [s for s, n in rows.items() if n == 0]
        if empty:
            raise FeedlabError(f"no {', '.join(empty)} impressions in the store")
        for surface in surfaces:
            writers.pop(surface).close()
            os.replace(partial[surface], paths[surface])
    finally:
        for writer in writers.values():
            writer.close()
        for p in partial.values():
            p.unlink(missing_ok=True)
    return rows


def scoring_frame(
    con: duckdb.DuckDBPyConnection,
    user_id: int,
    post_ids: Sequence[int],
    at: datetime,
    *,
    device: str | None = None,
    position: int = 0,
) -> pl.DataFrame:
    """Features of showing each of ``post_ids`` to ``user_id`` at time ``at`` (in slot ``position``).

    Uses the same definitions as :func:`training_frame`: for an impression that was logged,
    both give the same values. The default position 0 asks "how likely if shown on top", which
    takes the logging policy's position bias out of a comparison between candidates.

    Example
    -------
    >>> scoring_frame(con, 17, [101, 205], datetime(2026, 1, 12, 20)).height  # doctest: +SKIP
    2
    """
    if device is not None and device not in DEVICES:
        raise FeedlabError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)} or None")
    requests = pl.DataFrame(
        {
            "user_id": pl.Series([user_id] * len(post_ids), dtype=pl.Int64),
            "post_id": pl.Series(list(post_ids), dtype=pl.Int64),
            "ts": pl.Series([at] * len(post_ids), dtype=pl.Datetime("us")),
            "device": pl.Series([device] * len(post_ids), dtype=pl.String),
            "position": pl.Series([position] * len(post_ids), dtype=pl.Int32),
        }
    )
    return compute_features(con, requests).drop("device")


def compute_features(
    con: duckdb.DuckDBPyConnection, requests: pl.DataFrame, *, progress: bool | str = False
) -> pl.DataFrame:
    """Every registered feature for each request (user_id, post_id, ts, device, position), in input order.

    ``progress`` shows a bar over the five signal families (a string is its label).

    ``position`` may be left out (then 0: the top slot). Extra columns of ``requests`` (an impression_id, say) are kept in front. A request for a
    post that does not exist, or that did not exist yet at its time, is a
    :class:`~toolkit.errors.FeedlabError`.
    """
    missing = {"user_id", "post_id", "ts", "device"} - set(requests.columns)
    if missing:
        raise FeedlabError(f"requests need columns user_id, post_id, ts, device; missing {sorted(missing)}")
    names = feature_names()
    if requests.height == 0:
        return requests.with_columns(pl.lit(None, dtype=pl.Float64).alias(n) for n in names)
    if "position" not in requests.columns:
        requests = requests.with_columns(pl.lit(0, dtype=pl.Int32).alias("position"))
    req = requests.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), pl.col("ts").cast(pl.Datetime("us")))
    con.register(REQUESTS_VIEW, req.select("_row", "user_id", "post_id", "ts"))
    try:
        posts = _posts_of_requests(con, req)
        min_ts, max_ts = req["ts"].min(), req["ts"].max()
        base = (
            req.select("_row", "user_id", "post_id", "ts", "device", "position")
            .join(posts, on="post_id", how="left", maintain_order="left")
            .sort("ts", "_row")
        )
        # One narrow branch per family, each keeping only its own columns, collected one after
        # another: each runs multi-threaded on its own, and collecting them together held every
        # branch's intermediate frames at once (1.6 GB more at peak for 1.1M requests).
        families = (_post_features, _author_features, _viewer_features, _viewer_author_features, _context_features)
        label = progress if isinstance(progress, str) else "features"
        frames = [
            family(con, base.lazy(), min_ts, max_ts)
            .select("_row", *_BRANCH_OUTPUTS[family.__name__])
            .sort("_row")  # back to input order while the frame is narrow
            # counts come out of DuckDB as integers; one float dtype keeps model matrices simple
            .with_columns((cs.integer() - cs.by_name("_row")).cast(pl.Float64))
            .collect()
            for family in tqdm(families, desc=label, unit="family", disable=not progress)
        ]
    finally:
        con.unregister(REQUESTS_VIEW)
    out = pl.concat([frames[0], *(f.drop("_row") for f in frames[1:])], how="horizontal")
    del frames
    # topic features relative to the viewer's overall behaviour (from the viewer branch)
    out = out.with_columns(
        (pl.col("_topic_shown") / (pl.col("viewer_impressions_total") + 1)).alias("va_topic_share"),
        (pl.col("va_topic_like_rate") / (pl.col("viewer_rate_like") + LIFT_FLOOR)).alias("va_topic_like_lift"),
    )
    # the request's position becomes the (float) context feature of the same name
    return pl.concat([requests.drop("position"), out.select(names)], how="horizontal")


# --------------------------------------------------------------------------------------------
# building blocks


def _posts_of_requests(con, req: pl.DataFrame) -> pl.DataFrame:
    posts = con.sql(POSTS_SQL).pl()
    unknown = req.join(posts.select("post_id"), on="post_id", how="anti")
    if unknown.height:
        ids = unknown["post_id"].unique().sort().head(5).to_list()
        raise FeedlabError(f"{unknown['post_id'].n_unique()} requested post(s) are not in the store, e.g. {ids}")
    early = req.join(posts.select("post_id", "post_created_at"), on="post_id").filter(pl.col("ts") < pl.col("post_created_at"))
    if early.height:
        row = early.row(0, named=True)
        raise FeedlabError(
            f"{early.height} request(s) for a post before it was created, e.g. post {row['post_id']} "
            f"created {row['post_created_at']} requested at {row['ts']}"
        )
    return posts


def _events(con, name: str, requests_from, requests_to, *, by: Sequence[str] | None = None) -> pl.LazyFrame:
    """The events of ``EVENT_QUERIES[name]`` that requests in a time range can see, as running totals per key.

    ``by`` sums over a coarser key than the query's own (a viewer's totals over all topics, say).
    """
    query = EVENT_QUERIES[name]
    sql, params = query.fetch(requests_from, requests_to)
    df = con.sql(sql, params=params).pl()
    return _running_totals(df, by=query.by if by is None else by, values=query.values, wide=query.fixed_point)


def _running_totals(df: pl.DataFrame, *, by: Sequence[str], values: Sequence[str], wide: Sequence[str] = ()) -> pl.LazyFrame:
    """Running totals of ``values`` per ``by`` in time order; ``wide`` ones (fixed point) as Int64, counts as Int32."""
    return (
        df.lazy()
        .sort("ts")
        # the SQL never yields a null count; were one to slip in, it must not zero later totals
        .with_columns(pl.col(v).fill_null(0).cast(pl.Int64 if v in wide else pl.Int32).cum_sum().over(by).alias(v) for v in values)
        .with_columns(pl.col("ts").alias("_event_ts"))
    )


def _totals_before(
    lf: pl.LazyFrame,
    events: pl.LazyFrame,
    *,
    left_by: Sequence[str],
    right_by: Sequence[str],
    values: Sequence[str],
    shift_s: int = 0,
    suffix: str,
    keep_last_ts: bool = False,
) -> pl.LazyFrame:
    """Join, to each request at t, the running totals of events strictly before ``t - shift_s``."""
    key = f"_at{suffix}"
    right = events.select(*right_by, pl.col("ts").alias(key), *(pl.col(v).alias(f"{v}{suffix}") for v in values), *(["_event_ts"] if keep_last_ts else []))
    left = lf.with_columns((pl.col("ts") - pl.duration(seconds=shift_s)).alias(key))
    joined = left.join_asof(
        right,
        on=key,
        by_left=list(left_by),
        by_right=list(right_by),
        strategy="backward",
        allow_exact_matches=False,  # strictly before: an event at t is not known at t
        check_sortedness=False,  # both sides are sorted by time; the by-groups make the check noisy
    )
    return joined.drop(key).with_columns(pl.col(f"{v}{suffix}").fill_null(0) for v in values)


def _window_counts(lf, events, *, left_by, right_by, values, windows, prefix, windowed=None):
    """Totals before t of ``values`` (``<v>_total``) and, for ``windowed`` ones (default all),
    counts of events in ``[t - w, t)`` for each window (``<prefix><v>_<window>``)."""
    windowed = list(values if windowed is None else windowed)
    lf = _totals_before(lf, events, left_by=left_by, right_by=right_by, values=values, suffix="_total")
    for name, seconds in windows:
        lf = _totals_before(lf, events, left_by=left_by, right_by=right_by, values=windowed, shift_s=seconds, suffix=f"_before_{name}")
        lf = lf.with_columns(
            (pl.col(f"{v}_total") - pl.col(f"{v}_before_{name}")).alias(f"{prefix}{v}_{name}") for v in windowed
        ).drop(f"{v}_before_{name}" for v in windowed)
    return lf


def _rate(pos: str, obs: str) -> pl.Expr:
    return pl.col(pos) / (pl.col(obs) + RATE_SMOOTHING)


def _hours(a: str, b: str) -> pl.Expr:
    return (pl.col(a) - pl.col(b)).dt.total_microseconds() / 3.6e9


# --------------------------------------------------------------------------------------------
# the four families


def _post_features(con, lf: pl.LazyFrame, min_ts, max_ts) -> pl.LazyFrame:
    lf = lf.with_columns(
        _hours("ts", "post_created_at").alias("post_age_h"),
        *(
            (pl.col("format") == fmt).alias(f"post_format_{fmt}")
            for fmt in FORMATS
        ),
        pl.col("duration_s").alias("post_duration_s"),
        pl.col("has_location").alias("post_has_location"),
        pl.col("is_reshare").alias("post_is_reshare"),
        pl.col("topic").alias("post_topic"),
        pl.col("audio_id").is_not_null().alias("post_has_audio"),
        *(pl.col(flag).alias(f"post_flag_{flag}") for flag in CONTENT_FLAGS),
    )
    eng = _events(con, "post_engagements", min_ts, max_ts)
    values = _POPULARITY_VALUES
    lf = _window_counts(lf, eng, left_by=["post_id"], right_by=["post_id"], values=values, windows=POPULARITY_WINDOWS, prefix="post_")
    lf = lf.rename({f"{v}_total": f"post_{v}_total" for v in values})
    imp = _events(con, "post_impressions", min_ts, max_ts)
    lf = _totals_before(
        lf, imp, left_by=["post_id"], right_by=["post_id"],
        values=_RATE_VALUES, suffix="_p",
    )  # fmt: skip
    return lf.with_columns(
        (pl.col("post_likes_total") / pl.max_horizontal(pl.col("post_age_h"), pl.lit(1.0))).alias("post_likes_per_hour"),
        pl.col("shown_p").cast(pl.Float64).alias("post_impressions"),
        (pl.col("post_likes_total") / (pl.col("shown_p") + 1)).alias("post_likes_per_impression"),
        *(_rate(f"pos_{a}_p", f"obs_{a}_p").alias(f"post_rate_{a}") for a in ACTIONS),
    )


def _author_features(con, lf: pl.LazyFrame, min_ts, max_ts) -> pl.LazyFrame:
    followers = _events(con, "author_followers", min_ts, max_ts)
    lf = _totals_before(lf, followers, left_by=["author_id"], right_by=["author_id"], values=["followers"], suffix="_a")
    received = _events(con, "author_engagements", min_ts, max_ts)
    lf = _window_counts(lf, received, left_by=["author_id"], right_by=["author_id"], values=["received"], windows=[("28d", 28 * _DAY_S)], prefix="author_")
    posted = _events(con, "author_posts", min_ts, max_ts)
    lf = _window_counts(
        lf, posted, left_by=["author_id"], right_by=["author_id"], values=["posted", "misinfo"],
        windows=[("7d", 7 * _DAY_S)], prefix="author_", windowed=["posted"],
    )  # fmt: skip
    rate_values = _RATE_VALUES
    shown = _events(con, "author_impressions", min_ts, max_ts)
    lf = _totals_before(lf, shown, left_by=["author_id"], right_by=["author_id"], values=rate_values, suffix="_ar")
    lf = lf.with_columns(
        pl.col("shown_ar").cast(pl.Float64).alias("author_impressions"),
        *(_rate(f"pos_{a}_ar", f"obs_{a}_ar").alias(f"author_rate_{a}") for a in ACTIONS),
        pl.col("followers_a").cast(pl.Float64).alias("author_followers"),
        pl.col("author_received_28d").cast(pl.Float64).alias("author_interactions_28d"),
        pl.col("author_posted_7d").cast(pl.Float64).alias("author_posts_7d"),
        pl.col("misinfo_total").cast(pl.Float64).alias("author_misinfo_posts"),
        (_hours("ts", "author_created_at") / 24).alias("author_account_age_d"),
    )
    return _unknown_where_null(lf, "author_id", _BRANCH_OUTPUTS["_author_features"])


def _viewer_features(con, lf: pl.LazyFrame, min_ts, max_ts) -> pl.LazyFrame:
    imp = _events(con, "viewer_impressions", min_ts, max_ts)
    lf = _totals_before(lf, imp, left_by=["user_id"], right_by=["user_id"], values=[*_RATE_VALUES, *_ENGAGEMENT_VALUES], suffix="_total")
    recent = _events(con, "viewer_recent", min_ts, max_ts)
    lf = _window_counts(
        lf, recent, left_by=["user_id"], right_by=["user_id"], values=["seen"],
        windows=[("24h", _DAY_S), ("7d", 7 * _DAY_S)], prefix="viewer_",
    )  # fmt: skip
    viewers = con.sql(VIEWERS_SQL).pl()
    lf = lf.join(viewers.lazy(), on="user_id", how="left", maintain_order="left")
    return lf.with_columns(
        (
            (pl.col("engagement_residual_total") / FIXED_POINT)
            / (pl.col("engagement_information_total") / FIXED_POINT + ENGAGEMENT_PRIOR_INFORMATION)
        ).alias("viewer_engagement_level"),
        pl.col("viewer_seen_24h").cast(pl.Float64).alias("viewer_impressions_24h"),
        pl.col("viewer_seen_7d").cast(pl.Float64).alias("viewer_impressions_7d"),
        pl.col("shown_total").cast(pl.Float64).alias("viewer_impressions_total"),
        *(_rate(f"pos_{a}_total", f"obs_{a}_total").alias(f"viewer_rate_{a}") for a in ACTIONS),
        *((pl.col("device") == d).fill_null(False).alias(f"viewer_device_{d}") for d in DEVICES),
        (_hours("ts", "viewer_created_at") / 24).alias("viewer_account_age_d"),
    )


def _viewer_author_features(con, lf: pl.LazyFrame, min_ts, max_ts) -> pl.LazyFrame:
    follows = con.sql(FOLLOW_PAIRS_SQL).pl()
    forward = follows.rename({"follower_id": "user_id", "followee_id": "author_id"})
    backward = follows.select(
        pl.col("followee_id").alias("user_id"), pl.col("follower_id").alias("author_id"),
        pl.col("follow_created_at").alias("back_created_at"),
    )  # fmt: skip
    lf = lf.join(forward.lazy(), on=["user_id", "author_id"], how="left", maintain_order="left")
    lf = lf.join(backward.lazy(), on=["user_id", "author_id"], how="left", maintain_order="left")
    follows_now = (pl.col("follow_created_at") < pl.col("ts")).fill_null(False)
    lf = lf.with_columns(
        follows_now.alias("va_follows"),
        (pl.col("back_created_at") < pl.col("ts")).fill_null(False).alias("va_followed_back"),
        (follows_now & pl.col("close_friend")).fill_null(False).alias("va_close_friend"),
        (follows_now & pl.col("muted")).fill_null(False).alias("va_muted"),
    )
    shown = _events(con, "va_impressions", min_ts, max_ts)
    lf = _totals_before(lf, shown, left_by=["user_id", "author_id"], right_by=["user_id", "author_id"], values=["shown", "taps", "interacted"], suffix="_va")
    engaged = _events(con, "va_engagements", min_ts, max_ts)
    lf = _totals_before(
        lf, engaged, left_by=["user_id", "author_id"], right_by=["user_id", "author_id"],
        values=["likes", "comments", "interactions"], suffix="_va", keep_last_ts=True,
    )  # fmt: skip
    mutual = _events(con, "va_mutual_comments", min_ts, max_ts)
    lf = _totals_before(lf, mutual, left_by=["author_id", "user_id"], right_by=["commenter", "post_author"], values=["mutual"], suffix="_va")
    interacted_back = _events(con, "va_mutual_interactions", min_ts, max_ts)
    lf = _totals_before(
        lf, interacted_back, left_by=["author_id", "user_id"], right_by=["interactor", "post_author"],
        values=["mutual_interactions"], suffix="_va",
    )  # fmt: skip
    sql, params = EVENT_QUERIES["viewer_topics"].fetch(min_ts, max_ts)
    topic_events = con.sql(sql, params=params).pl()
    for by, suffix in ((["user_id", "topic"], "_t"), (["user_id"], "_u")):  # per topic, and over all topics
        totals = _running_totals(topic_events, by=by, values=_TOPIC_VALUES)
        lf = _totals_before(lf, totals, left_by=by, right_by=by, values=_TOPIC_VALUES, suffix=suffix)
    lf = lf.with_columns(
        pl.col("shown_va").cast(pl.Float64).alias("va_impressions"),
        pl.col("likes_va").cast(pl.Float64).alias("va_likes"),
        pl.col("comments_va").cast(pl.Float64).alias("va_comments"),
        pl.col("taps_va").cast(pl.Float64).alias("va_profile_taps"),
        pl.col("mutual_va").cast(pl.Float64).alias("va_mutual_comments"),
        pl.col("interacted_va").cast(pl.Float64).alias("va_interactions"),
        pl.col("mutual_interactions_va").cast(pl.Float64).alias("va_mutual_interactions"),
        (_hours("ts", "_event_ts") / 24).alias("va_days_since_interaction"),
        _rate("topic_likes_t", "topic_like_obs_t").alias("va_topic_like_rate"),
        _rate("topic_dwells_t", "topic_dwell_obs_t").alias("va_topic_dwell_rate"),
        _rate("topic_engaged_t", "topic_shown_t").alias("va_topic_engagement_rate"),
        pl.col("topic_shown_t").alias("_topic_shown"),  # va_topic_share needs the viewer's total
        *(
            (pl.col(f"topic_{v}_t") / (pl.col(f"topic_{v}_u") + 1)).alias(f"va_topic_{name}_share")
            for v, name in (("recommended", "recommended"), ("dwells", "dwell"), ("engaged", "engaged"))
        ),
        _lift("topic_dwells", "topic_dwell_obs").alias("va_topic_dwell_lift"),
        _lift("topic_engaged", "topic_shown").alias("va_topic_engagement_lift"),
    )
    outputs = _BRANCH_OUTPUTS["_viewer_author_features"]
    by_topic = [n for n in outputs if n.startswith(("va_topic_", "_topic_"))]
    lf = _unknown_where_null(lf, "author_id", [n for n in outputs if n not in by_topic])
    return _unknown_where_null(lf, "topic", by_topic)


def _unknown_where_null(lf: pl.LazyFrame, key: str, names: Sequence[str]) -> pl.LazyFrame:
    """Features of a post whose author (or topic) the source does not give are unknown: null, not 0.

    A null key matches no event (SQL ``in`` and polars joins never match null), so the totals
    would read 0 and the flags false, as if the author were known and new.
    """
    return lf.with_columns(pl.when(pl.col(key).is_not_null()).then(pl.col(n)).alias(n) for n in names)


def _lift(pos: str, obs: str) -> pl.Expr:
    """The viewer's rate on the topic over their rate on every topic, shrunk towards 1 when the topic is rarely seen."""
    overall = (pl.col(f"{pos}_u") + 1) / (pl.col(f"{obs}_u") + 2)
    return (pl.col(f"{pos}_t") + TOPIC_LIFT_PSEUDOCOUNT * overall) / (pl.col(f"{obs}_t") + TOPIC_LIFT_PSEUDOCOUNT) / overall


def _context_features(con, lf: pl.LazyFrame, min_ts, max_ts) -> pl.LazyFrame:
    return lf.with_columns(pl.col("position").cast(pl.Float64).alias("position"))


def _family_outputs() -> dict[str, list[str]]:
    out = {
        f"_{family}_features": [f.name for f in FEATURES.values() if f.family == family]
        for family in ("post", "author", "viewer", "context")
    }
    out["_viewer_author_features"] = [
        f.name for f in FEATURES.values() if f.family == "viewer_author" and f.name not in CROSS_BRANCH
    ] + ["_topic_shown"]
    return out


_BRANCH_OUTPUTS = _family_outputs()
