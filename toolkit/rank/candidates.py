"""Stage 1 of the pipeline: each surface's candidate set, the posts its ranker may show a viewer.

A surface names its candidate sources in ``surfaces.toml`` (``candidate_sources``), with the
window they look back over (``candidate_window_hours``), the most candidates a viewer gets
(``max_candidates``) and further parameters (``coengagement_lookback_days``,
``coengaged_accounts_per_seed``, ``popular_posts``). Each source ranks what it finds; a viewer's
candidates take the sources in turn, in that order, so that each has its share of the cap:

``followed_recent``
    Feed: recent posts (no stories) of accounts the viewer follows and has not muted.
``followed_stories``
    Stories: stories of followed accounts, muted ones included (the mute rule removes them later).
``coengaged_accounts``
    Explore, Reels: "people who like @a also like @b". The seeds are the authors the viewer
    engaged with; an account's strength for a seed is the number of other users who engaged
    with both; the strongest few per seed give their recent posts. Accounts listed in an
    optional ``graph_excluded_accounts`` table (flagged by enforcement) are left out of the graph
    from their ``since`` on.
``audio_coengaged``
    Reels: recent reels that use the audio of a reel the viewer engaged with.
``popular_recent``
    Explore, Reels: the recent posts with the most engagements.

Everything is point in time: only posts, follows, engagements and impressions strictly before
``at`` count. A viewer never gets their own posts nor, by default, a post they were already
shown; Explore and Reels never get accounts the viewer follows.

Example
-------
>>> from datetime import datetime
>>> con = _example_store()  # viewer 1 follows 2; users 3 and 4 like both 2 and 5
>>> candidates_for(con, "feed", [1], at=datetime(2026, 1, 2)).rows()
[(1, 21, 2, 'followed_recent'), (1, 20, 2, 'followed_recent')]
>>> candidates_for(con, "explore", [1], at=datetime(2026, 1, 2)).rows()
[(1, 50, 5, 'coengaged_accounts'), (1, 60, 6, 'popular_recent')]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.train import parse_time
from toolkit.rank.config import CANDIDATE_SOURCES, SurfaceConfig, surface_config
from toolkit.store import has_table
from toolkit.store.schema import CONTENT_FLAGS, RECOMMENDATION_SURFACES, SURFACES, schema_ddl

#: The columns (and dtypes) of a candidate frame.
CANDIDATE_SCHEMA: dict[str, Any] = {
    "user_id": pl.Int64,
    "post_id": pl.Int64,
    "author_id": pl.Int64,
    "source": pl.String,
}
#: Engagement actions that make an account a seed, a co-engagement, or a post popular.
POSITIVE_ACTIONS: tuple[str, ...] = ("like", "comment", "share", "save")
#: Parameters a surface's ``options`` may set, with the values used when it does not.
OPTION_DEFAULTS: dict[str, int | float] = {
    "coengagement_lookback_days": 28,
    "coengaged_accounts_per_seed": 20,
    "popular_posts": 200,
}

_VIEWERS = "_feedlab_candidate_viewers"
#: Optional table (``user_id``, ``since``) of accounts that no longer shape the co-engagement graph
#: from ``since`` on: :func:`toolkit.integrity.enforce` writes it for the accounts it flags.
GRAPH_EXCLUDED_TABLE = "graph_excluded_accounts"
_NO_EXCLUDED = "(select null::bigint as user_id, null::timestamp as since where false)"
_ACTIONS_SQL = "('like', 'comment', 'share', 'save')"  # = POSITIVE_ACTIONS (a constant, not a value)

# Common table expressions every source starts from: the requested viewers, whom they follow, what they saw.
_COMMON = f"""
viewers as (select distinct user_id from {_VIEWERS}),
followed as materialized (
    select f.follower_id as user_id, f.followee_id as author_id, f.muted
    from follows f join viewers v on f.follower_id = v.user_id
    where f.created_at < $at
),
seen as materialized (  -- what each viewer was shown before at
    select distinct i.user_id, i.post_id
    from impressions i semi join viewers v on i.user_id = v.user_id
    where i.ts < $at
)"""

# Each source yields ``found``: user_id, post_id, author_id, created_at, strength (higher = better).
# Recency is the negative age in hours. Format filters ({fmt}) are constant SQL chosen by surface.
_SOURCES: dict[str, str] = {
    "followed_recent": """
found as (
    select f.user_id, p.post_id, p.author_id, p.created_at,
           -(epoch($at) - epoch(p.created_at)) / 3600.0 as strength
    from followed f join posts p on p.author_id = f.author_id
    where not f.muted and p.format <> 'story' and p.created_at >= $start and p.created_at < $at
)""",
    "followed_stories": """
found as (
    select f.user_id, p.post_id, p.author_id, p.created_at,
           -(epoch($at) - epoch(p.created_at)) / 3600.0 as strength
    from followed f join posts p on p.author_id = f.author_id
    where p.format = 'story' and p.created_at >= $start and p.created_at < $at
)""",
    "coengaged_accounts": f"""
eng as materialized (  -- who engaged with whom in the lookback, once per (user, author)
    select distinct e.user_id, p.author_id
    from engagements e join posts p on p.post_id = e.post_id
    where e.action in {_ACTIONS_SQL} and e.ts >= $lookback_start and e.ts < $at
      and not exists (select 1 from {{excluded}} x where x.user_id = e.user_id and x.since <= $at)
),
seeds as materialized (select distinct e.user_id, e.author_id as seed from eng e join viewers v on e.user_id = v.user_id),
seed_ids as (select distinct seed from seeds),
pairs as materialized (  -- per seed a, each account b <> a by the number of users who engaged with both
    select seed, account, n, row_number() over (partition by seed order by n desc, account) as r
    from (
        select a.author_id as seed, b.author_id as account, count(*) as n
        from eng a
        join seed_ids s on a.author_id = s.seed
        join eng b on b.user_id = a.user_id and b.author_id <> a.author_id
        group by all
    )
),
-- Per viewer an account loses the viewer's own engagement (n - 1 when the viewer engaged with it,
-- that is, when it is one of the viewer's seeds) and is dropped when followed or the viewer. Only
-- those "bad" accounts can move, and only down, so the viewer's top K for seed a lies within the
-- first K + (bad accounts in a's list) of the global order: no need to score the rest.
bad as (
    select user_id, author_id as account from followed
    union select user_id, user_id from viewers
    union select user_id, seed from seeds
),
limits as (
    select s.user_id, s.seed, $per_seed + count(pr.account) as lim
    from seeds s
    left join bad x on x.user_id = s.user_id
    left join pairs pr on pr.seed = s.seed and pr.account = x.account
    group by all
),
scored as (
    select l.user_id, l.seed, pr.account, pr.n - (d.seed is not null)::bigint as n, pr.r
    from limits l
    join pairs pr on pr.seed = l.seed and pr.r <= l.lim
    left join seeds d on d.user_id = l.user_id and d.seed = pr.account
    where pr.account <> l.user_id
      and not exists (select 1 from followed f where f.user_id = l.user_id and f.author_id = pr.account)
),
-- The top K accounts per (viewer, seed) by n, ties to the earlier in the seed's global order;
-- the key n * 2^32 - r orders both at once (r < 2^32) and gives n back.
top_accounts as (
    select user_id, account, sum((key + 4294967295) // 4294967296) as strength
    from (
        select user_id, unnest(arg_max(account, key, $per_seed)) as account, unnest(max(key, $per_seed)) as key
        from (select user_id, seed, account, n * 4294967296 - r as key from scored where n > 0)
        group by user_id, seed
    )
    group by all
),
window_posts as materialized (
    select p.post_id, p.author_id, p.created_at
    from posts p
    where {{fmt}} and p.created_at >= $start and p.created_at < $at
      and p.author_id in (select account from top_accounts)
),
-- A viewer's posts rank by account strength first, so only the strongest accounts can fill the
-- cap: an account is needed only while its stronger accounts have fewer than max + (posts the
-- viewer saw, which may drop out) posts.
kept_accounts as (
    select k.user_id, k.account, k.strength
    from (
        select t.user_id, t.account, t.strength,
               sum(a.n) over (partition by t.user_id order by t.strength desc)
               - sum(a.n) over (partition by t.user_id, t.strength) as stronger_posts
        from top_accounts t
        join (select author_id, count(*) as n from window_posts group by all) a on a.author_id = t.account
    ) k
    left join (
        select s.user_id, count(*) as n from seen s join window_posts w on w.post_id = s.post_id group by all
    ) sn on sn.user_id = k.user_id
    where k.stronger_posts < $max + coalesce(sn.n, 0)
),
found as (
    select t.user_id, p.post_id, p.author_id, p.created_at, t.strength::double as strength
    from kept_accounts t join window_posts p on p.author_id = t.account
)""",
    "audio_coengaged": f"""
audios as (
    select distinct e.user_id, p.audio_id
    from engagements e
    join viewers v on e.user_id = v.user_id
    join posts p on p.post_id = e.post_id
    where e.action in {_ACTIONS_SQL} and e.ts >= $lookback_start and e.ts < $at
      and p.format = 'reel' and p.audio_id is not null
),
window_reels as materialized (  -- each audio's recent reels, most engaged first
    select p.post_id, p.author_id, p.created_at, p.audio_id, coalesce(c.n, 0) as n,
           row_number() over (partition by p.audio_id order by coalesce(c.n, 0) desc, p.created_at desc, p.post_id) as r
    from posts p
    left join (
        select e.post_id, count(*) as n
        from engagements e
        where e.action in {_ACTIONS_SQL} and e.ts < $at and e.ts >= $start
        group by all
    ) c on c.post_id = p.post_id
    where p.format = 'reel' and p.created_at >= $start and p.created_at < $at
      and p.audio_id in (select audio_id from audios)
),
-- Reels a viewer cannot get (seen, by a followed account, their own): a viewer's top max reels
-- of an audio lie within its first max + (those reels) in the global order.
blocked as (
    select user_id, count(*) as n
    from (
        select s.user_id, s.post_id from seen s join window_reels w on w.post_id = s.post_id
        union select f.user_id, w.post_id from followed f join window_reels w on w.author_id = f.author_id
        union select v.user_id, w.post_id from viewers v join window_reels w on w.author_id = v.user_id
    )
    group by all
),
found as (
    select a.user_id, r.post_id, r.author_id, r.created_at, r.n::double as strength
    from audios a
    left join blocked b on b.user_id = a.user_id
    join window_reels r on r.audio_id = a.audio_id and r.r <= $max + coalesce(b.n, 0)
)""",
    "popular_recent": f"""
pool as (
    select p.post_id, p.author_id, p.created_at, count(*) as n
    from posts p join engagements e on e.post_id = p.post_id
    where {{fmt}} and p.created_at >= $start and p.created_at < $at
      and e.action in {_ACTIONS_SQL} and e.ts < $at
    group by all
    order by n desc, p.created_at desc, p.post_id
    limit $popular
),
found as (
    select v.user_id, pool.post_id, pool.author_id, pool.created_at, pool.n::double as strength
    from viewers v cross join pool
)""",
}
#: Sources that only ever recommend accounts the viewer does not follow (on any surface).
_UNFOLLOWED_SOURCES = ("coengaged_accounts", "audio_coengaged", "popular_recent")
_PARAMS: dict[str, tuple[str, ...]] = {  # the named parameters each source's SQL uses
    "followed_recent": ("max", "at", "start"),
    "followed_stories": ("max", "at", "start"),
    "coengaged_accounts": ("max", "at", "start", "lookback_start", "per_seed"),
    "audio_coengaged": ("max", "at", "start", "lookback_start"),
    "popular_recent": ("max", "at", "start", "popular"),
}
assert set(_SOURCES) == set(CANDIDATE_SOURCES) == set(_PARAMS), "every configurable source is implemented"


def candidates_for(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    user_ids: Sequence[int],
    *,
    at: datetime,
    config: SurfaceConfig | None = None,
    exclude_seen: bool = True,
) -> pl.DataFrame:
    """The candidate posts of ``surface`` for each viewer in ``user_ids`` at time ``at``.

    Returns one row per (viewer, post): ``user_id``, ``post_id``, ``author_id`` and ``source``,
    the candidate source that found it (the first in the surface's ``candidate_sources`` order
    when several did). Each source ranks its posts by its strength, best first: recency for the
    followed sources; for ``coengaged_accounts`` the account's co-engagement (summed over the
    seeds that led to it); engagements before ``at`` for ``audio_coengaged`` and
    ``popular_recent``; ties go to the newer post, then the lower post id. A viewer's rows take
    the sources in turn (each source's best in ``candidate_sources`` order, then each one's second
    best, ...; a post found twice keeps its earlier place), so every source has its share of the
    ``config.max_candidates`` a viewer gets at most. Rows are sorted by ``user_id``, then that
    order; within one source, by its strength.

    Only what happened strictly before ``at`` counts. A viewer never gets their own posts, nor,
    with ``exclude_seen`` (the default), a post they had an impression of (on any surface) before
    ``at``. A viewer with no follows and no history simply gets no rows from the sources that
    need them. ``config`` defaults to the surface's configuration in ``surfaces.toml``; an
    unknown surface is a :class:`~toolkit.errors.FeedlabError`.

    Each source is one SQL query over all viewers at once.

    Example
    -------
    >>> from datetime import datetime
    >>> con = _example_store()
    >>> cands = candidates_for(con, "explore", [1, 7], at=datetime(2026, 1, 2))
    >>> cands.filter(user_id=1).rows()
    [(1, 50, 5, 'coengaged_accounts'), (1, 60, 6, 'popular_recent')]
    >>> cands.filter(user_id=7)["post_id"].to_list()
    [20, 60, 50, 21]

    Viewer 1 follows account 2, so Explore leaves out 2's posts although they are the most
    engaged; post 50, found by both sources, counts for the first. Viewer 7 has no history, so
    only the popular posts reach them, most engaged first.
    """
    cfg = _config(surface, config)
    at = parse_time(at)
    viewers = _viewer_frame(user_ids)
    params = _source_params(cfg, at)
    if viewers.height == 0 or cfg.max_candidates <= 0:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    frames = []
    graph_excluded = has_table(con, GRAPH_EXCLUDED_TABLE)
    con.register(_VIEWERS, viewers)
    try:
        for rank, source in enumerate(cfg.candidate_sources):
            if source == "coengaged_accounts" and params["per_seed"] == 0:
                continue
            sql = _source_sql(surface, source, exclude_seen=exclude_seen, graph_excluded=graph_excluded)
            frame = con.sql(sql, params={k: params[k] for k in _PARAMS[source]}).pl()
            frames.append(frame.with_columns(pl.lit(rank, dtype=pl.Int32).alias("_rank")))
    finally:
        con.unregister(_VIEWERS)
    if not frames:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    names = dict(enumerate(cfg.candidate_sources))
    out = (
        pl.concat([f.cast({"user_id": pl.Int64, "post_id": pl.Int64, "author_id": pl.Int64, "strength": pl.Float64}) for f in frames])
        .sort(
            ["user_id", "_rank", "strength", "created_at", "post_id"],
            descending=[False, False, True, True, False],
        )
        .with_columns(
            pl.int_range(pl.len()).over("user_id", "_rank").alias("_pos"),  # rank within its source
            pl.col("_rank").min().over("user_id", "post_id").alias("_first"),  # the first source that found it
        )
        # round robin: every source's best, then every source's second best, ...
        .sort(["user_id", "_pos", "_rank"])
        .unique(subset=["user_id", "post_id"], keep="first", maintain_order=True)
        .filter(pl.int_range(pl.len()).over("user_id") < cfg.max_candidates)
        .with_columns(pl.col("_first").replace_strict(names, return_dtype=pl.String).alias("source"))
        .select(list(CANDIDATE_SCHEMA))
    )
    return out.cast(CANDIDATE_SCHEMA)


def candidate_recall(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    user_ids: Sequence[int],
    *,
    at: datetime,
    horizon: timedelta = timedelta(days=1),
    config: SurfaceConfig | None = None,
    candidates: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The share of the viewers' later positive engagements on ``surface`` that their candidates held.

    A later positive engagement is a (viewer, post) pair with an impression on ``surface`` in
    ``[at, at + horizon)`` whose ``like``, ``comment``, ``share`` or ``save`` label is true (a
    post engaged with on several impressions counts once). It was found when the post is among
    the viewer's candidates at ``at``: ``candidates`` when given (a frame from
    :func:`candidates_for`), otherwise ``candidates_for(con, surface, user_ids, at=at,
    config=config)``.

    Returns ``{"recall": found / positives (NaN when there are no positives), "positives": int,
    "found": int, "viewers": number of distinct viewers asked about, "per_source": {source:
    found}}``, ``per_source`` listing every source of the surface (0 when it found none).

    Example
    -------
    >>> from datetime import datetime
    >>> con = _example_store()  # the next day viewer 1 likes 50 and 21 (followed 2's) on Explore
    >>> candidate_recall(con, "explore", [1], at=datetime(2026, 1, 2))
    {'recall': 0.5, 'positives': 2, 'found': 1, 'viewers': 1, 'per_source': {'coengaged_accounts': 1, 'popular_recent': 0}}
    """
    cfg = _config(surface, config)
    at = parse_time(at)
    if not isinstance(horizon, timedelta) or horizon <= timedelta(0):
        raise FeedlabError(f"horizon must be a positive timedelta (got {horizon!r})")
    viewers = _viewer_frame(user_ids)
    if candidates is None:
        candidates = candidates_for(con, surface, viewers["user_id"].to_list(), at=at, config=cfg)
    else:
        missing = {"user_id", "post_id", "source"} - set(candidates.columns)
        if missing:
            raise FeedlabError(f"candidates need columns user_id, post_id, source; missing {sorted(missing)}")
    sources = {s: 0 for s in cfg.candidate_sources}
    if viewers.height == 0:
        return {"recall": float("nan"), "positives": 0, "found": 0, "viewers": 0, "per_source": sources}
    con.register(_VIEWERS, viewers)
    try:
        positives = con.sql(
            f"""
            select distinct i.user_id, i.post_id
            from impressions i join (select distinct user_id from {_VIEWERS}) v on i.user_id = v.user_id
            where i.surface = $surface and i.ts >= $at and i.ts < $until
              and (i."like" is true or i.comment is true or i.share is true or i.save is true)
            """,
            params={"surface": surface, "at": at, "until": at + horizon},
        ).pl()
    finally:
        con.unregister(_VIEWERS)
    cands = (
        candidates.select(
            pl.col("user_id").cast(pl.Int64), pl.col("post_id").cast(pl.Int64), pl.col("source").cast(pl.String)
        )
        .unique(subset=["user_id", "post_id"], keep="first", maintain_order=True)
    )
    hits = positives.cast({"user_id": pl.Int64, "post_id": pl.Int64}).join(cands, on=["user_id", "post_id"], how="inner")
    for source, n in hits.group_by("source").len().iter_rows():
        sources[source] = sources.get(source, 0) + int(n)
    n_pos, n_found = positives.height, hits.height
    return {
        "recall": n_found / n_pos if n_pos else float("nan"),
        "positives": n_pos,
        "found": n_found,
        "viewers": viewers.height,
        "per_source": sources,
    }


def _config(surface: str, config: SurfaceConfig | None) -> SurfaceConfig:
    if config is None:
        return surface_config(surface)  # raises FeedlabError for an unknown surface
    if surface not in SURFACES:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    return config


def _viewer_frame(user_ids: Sequence[int]) -> pl.DataFrame:
    try:
        ids = pl.Series("user_id", user_ids, dtype=pl.Int64, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise FeedlabError(f"user_ids must be whole numbers: {exc}") from None
    return pl.DataFrame({"user_id": ids.drop_nulls().unique().sort()})


def _option(cfg: SurfaceConfig, name: str) -> Any:
    value = cfg.options.get(name, OPTION_DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FeedlabError(f"[{cfg.name}] {name} must be a number >= 0 (got {value!r})")
    return value


def _source_params(cfg: SurfaceConfig, at: datetime) -> dict[str, Any]:
    return {
        "max": cfg.max_candidates,
        "at": at,
        "start": at - timedelta(hours=cfg.candidate_window_hours),
        "lookback_start": at - timedelta(days=_option(cfg, "coengagement_lookback_days")),
        "per_seed": int(_option(cfg, "coengaged_accounts_per_seed")),
        "popular": int(_option(cfg, "popular_posts")),
    }


def _source_sql(surface: str, source: str, *, exclude_seen: bool, graph_excluded: bool = False) -> str:
    """The query of one source on one surface: constant SQL only, every value is a parameter.

    ``graph_excluded``: the store has a :data:`GRAPH_EXCLUDED_TABLE`, whose accounts' engagements
    the co-engagement graph leaves out from their ``since`` on.
    """
    excluded = GRAPH_EXCLUDED_TABLE if graph_excluded else _NO_EXCLUDED
    fmt = "p.format = 'reel'" if surface == "reels" else "p.format <> 'story'"
    # is distinct from: a post of unknown author (null, a log without author ids) is not the viewer's own
    conditions = ["c.author_id is distinct from c.user_id"]
    if exclude_seen:
        conditions.append(
            "not exists (select 1 from seen s where s.user_id = c.user_id and s.post_id = c.post_id)"
        )
    if surface in RECOMMENDATION_SURFACES or source in _UNFOLLOWED_SOURCES:
        conditions.append("not exists (select 1 from followed f where f.user_id = c.user_id and f.author_id = c.author_id)")
    where = "\n  and ".join(conditions)
    # A source never needs more than max_candidates per viewer: each of its rows past that has
    # max_candidates other posts ahead of it however the sources are merged.
    return (
        f"with {_COMMON},{_SOURCES[source].format(fmt=fmt, excluded=excluded)}\n"
        f"select c.user_id, c.post_id, c.author_id, c.created_at, c.strength\nfrom found c\nwhere {where}\n"
        "qualify row_number() over (partition by c.user_id order by c.strength desc, c.created_at desc, c.post_id) <= $max"
    )


def _example_store() -> duckdb.DuckDBPyConnection:
    """A tiny in-memory store for the examples: viewer 1 follows 2; users 3 and 4 like both 2 and 5.

    Posts (all on 2026-01-01): 20 (02:00) and 21 (03:00) by 2, 50 (04:00) by 5, 60 (05:00) by 6;
    likes at 12:00. The next day at 02:00 viewer 1 likes 50 and 21 on Explore and sees 20 on Feed.
    """
    con = duckdb.connect()
    for stmt in schema_ddl():
        con.execute(stmt)
    day = datetime(2026, 1, 1)
    con.executemany("insert into users values (?, ?, ?)", [(u, day - timedelta(days=30), False) for u in (1, 2, 3, 4, 5, 6, 7)])
    con.execute("insert into follows values (1, 2, ?, false, false)", [day - timedelta(days=1)])
    flags = ", ".join("false" for _ in CONTENT_FLAGS)
    for post, author, hour in ((20, 2, 2), (21, 2, 3), (50, 5, 4), (60, 6, 5)):
        con.execute(
            f"insert into posts values (?, ?, ?, 'photo', null, null, null, false, false, {flags})",
            [post, author, day + timedelta(hours=hour)],
        )
    likes = [(1, 20), (3, 20), (3, 50), (4, 20), (4, 50), (4, 21), (5, 60), (2, 60)]
    con.executemany(
        "insert into engagements values (?, ?, null, 'like', ?, false)",
        [(u, p, day + timedelta(hours=12)) for u, p in likes],
    )
    next_day = day + timedelta(days=1)
    for iid, post, surface, liked in ((1, 50, "explore", True), (2, 21, "explore", True), (3, 20, "feed", False)):
        con.execute(
            'insert into impressions (impression_id, user_id, post_id, surface, ts, position, "like") values (?, 1, ?, ?, ?, 0, ?)',
            [iid, post, surface, next_day + timedelta(hours=2), liked],
        )
    return con
