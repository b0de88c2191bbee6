"""The unsupervised lockstep detector: accounts that like the same posts within minutes, again and again.

In the spirit of CopyCatch and SynchroTrap, and needing no labels:

1. **pairs**: two accounts are linked when they liked at least ``min_co_posts`` distinct posts
   within ``window_minutes`` of each other (an organic pair of fans does that by chance only a
   few times; a ring or a bot pool does it on every post it serves);
2. **groups**: connected components of the links; a component of at least ``min_group``
   accounts is a lockstep group;
3. **likes**: a like is *in lockstep* when another member of the giver's group liked the same
   post within ``window_minutes``;
4. **scores**: a giver's score is the share of its likes in lockstep, scaled down while it has
   fewer than ``saturation`` of them; a receiver's is the same for the likes its posts received.
   An account's score is the larger of the two.

Example
-------
>>> from toolkit.integrity import lockstep_scores
>>> lockstep_scores("data/feedlab.duckdb").filter("flagged").height  # doctest: +SKIP
244
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.integrity._common import Store, resolve_at
from toolkit.store import open_store


@dataclass(frozen=True)
class LockstepConfig:
    """Parameters of the lockstep detector (see the module docstring for what each one does).

    Example
    -------
    >>> LockstepConfig(window_minutes=10).window_minutes
    10.0
    """

    window_minutes: float = 5.0
    min_co_posts: int = 3
    min_group: int = 3
    saturation: int = 10
    flag_at: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_minutes", float(self.window_minutes))
        if not self.window_minutes > 0:
            raise FeedlabError(f"window_minutes must be above 0 (got {self.window_minutes})")
        for name in ("min_co_posts", "min_group", "saturation"):
            if int(getattr(self, name)) < 1:
                raise FeedlabError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.flag_at <= 1:
            raise FeedlabError(f"flag_at must be in (0, 1] (got {self.flag_at})")


#: Columns of :func:`lockstep_scores`.
LOCKSTEP_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64,
    "group_id": pl.Int64,
    "group_size": pl.Int64,
    "partners": pl.Int64,
    "likes_given": pl.Int64,
    "lockstep_likes_given": pl.Int64,
    "likes_received": pl.Int64,
    "lockstep_likes_received": pl.Int64,
    "giver_score": pl.Float64,
    "receiver_score": pl.Float64,
    "score": pl.Float64,
    "role": pl.String,
    "flagged": pl.Boolean,
    "reason": pl.String,
}

# Likes before ``$1``; one per giver and post (the first), since liking twice is not two signals.
_LIKES = """
    select user_id, post_id, min(ts) as ts from engagements
    where action = 'like' and post_id is not null and ts < $1 group by all
"""


def lockstep_pairs(
    store: Store, *, at: str | date | datetime | None = None, config: LockstepConfig = LockstepConfig()
) -> pl.DataFrame:
    """Pairs of accounts that liked at least ``min_co_posts`` of the same posts within minutes of each other.

    Returns ``u < v`` and ``co_posts`` (distinct posts both liked within ``window_minutes``).

    Example
    -------
    >>> lockstep_pairs("data/feedlab.duckdb").sort("co_posts").tail(1)  # doctest: +SKIP
    """
    with open_store(store) as con:
        when = resolve_at(con, at)
        return _pairs(con, when, config)


def _pairs(con: duckdb.DuckDBPyConnection, when: datetime, config: LockstepConfig) -> pl.DataFrame:
    window_us = int(round(config.window_minutes * 60_000_000))
    sql = f"""
        with lk as ({_LIKES})
        select a.user_id as u, b.user_id as v, count(distinct a.post_id)::bigint as co_posts
        from lk a join lk b on a.post_id = b.post_id and a.user_id < b.user_id
            and b.ts between a.ts - to_microseconds($2) and a.ts + to_microseconds($2)
        group by all having count(distinct a.post_id) >= $3
        order by u, v
    """
    return con.sql(sql, params=[when, window_us, int(config.min_co_posts)]).pl()


def _components(pairs: pl.DataFrame) -> pl.DataFrame:
    """Connected components of the pair graph: user_id, group_id (the smallest member's id), group_size."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression keeps later finds short
            parent[x], x = root, parent[x]
        return root

    for u, v in pairs.select("u", "v").iter_rows():
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    members = sorted(set(pairs["u"].to_list()) | set(pairs["v"].to_list()))
    frame = pl.DataFrame({"user_id": members, "group_id": [find(m) for m in members]}, schema={"user_id": pl.Int64, "group_id": pl.Int64})
    return frame.with_columns(pl.len().over("group_id").cast(pl.Int64).alias("group_size"))


def lockstep_scores(
    store: Store, *, at: str | date | datetime | None = None, config: LockstepConfig = LockstepConfig()
) -> pl.DataFrame:
    """Lockstep score of every account (created before ``at``) as a giver and as a receiver of likes, without labels.

    One row per account (see :data:`LOCKSTEP_SCHEMA`): its group (null when in none), the
    likes it gave and received and how many of them were in lockstep, ``giver_score`` and
    ``receiver_score`` in [0, 1], ``score`` (their maximum), ``role`` (``giver`` or ``receiver``:
    the side with the larger score; ``account`` when both are 0), ``flagged`` (score >=
    ``flag_at``) and a one-line ``reason``.

    Example
    -------
    >>> s = lockstep_scores("data/feedlab.duckdb", config=LockstepConfig(window_minutes=5))  # doctest: +SKIP
    >>> s.filter("flagged").select("user_id", "role", "score", "reason").head()  # doctest: +SKIP
    """
    with open_store(store) as con:
        when = resolve_at(con, at)
        pairs = _pairs(con, when, config)
        groups = _components(pairs).filter(pl.col("group_size") >= config.min_group)
        partners = pl.concat([pairs.select(user_id="u"), pairs.select(user_id="v")]).group_by("user_id").agg(
            partners=pl.len().cast(pl.Int64)
        )
        con.register("_feedlab_lockstep_groups", groups.to_arrow())
        try:
            window_us = int(round(config.window_minutes * 60_000_000))
            # a like in lockstep: another member of the same group liked the same post within the window
            sql = f"""
                with lk as ({_LIKES}),
                g as (select lk.*, grp.group_id from lk join _feedlab_lockstep_groups grp using (user_id)),
                ls as (
                    select distinct a.user_id, a.post_id from g a join g b
                    on a.post_id = b.post_id and a.group_id = b.group_id and a.user_id != b.user_id
                    and b.ts between a.ts - to_microseconds($2) and a.ts + to_microseconds($2)
                ),
                marked as (
                    select lk.user_id as giver, p.author_id as receiver, ls.user_id is not null as lockstep
                    from lk join posts p using (post_id)
                    left join ls on ls.user_id = lk.user_id and ls.post_id = lk.post_id
                ),
                given as (select giver as user_id, count(*) as likes_given, count_if(lockstep) as lockstep_likes_given from marked group by 1),
                received as (select receiver as user_id, count(*) as likes_received, count_if(lockstep) as lockstep_likes_received from marked group by 1)
                select u.user_id,
                    coalesce(given.likes_given, 0)::bigint as likes_given,
                    coalesce(given.lockstep_likes_given, 0)::bigint as lockstep_likes_given,
                    coalesce(received.likes_received, 0)::bigint as likes_received,
                    coalesce(received.lockstep_likes_received, 0)::bigint as lockstep_likes_received
                from users u left join given using (user_id) left join received using (user_id)
                where u.created_at < $1
                order by u.user_id
            """
            counts = con.sql(sql, params=[when, window_us]).pl()
        finally:
            con.unregister("_feedlab_lockstep_groups")

    sat = float(config.saturation)

    def side(n: str, k: str) -> pl.Expr:
        share = pl.when(pl.col(n) > 0).then(pl.col(k) / pl.col(n)).otherwise(0.0)
        return share * pl.min_horizontal(pl.lit(1.0), pl.col(k) / sat)

    out = (
        counts.join(groups, on="user_id", how="left")
        .join(partners, on="user_id", how="left")
        .with_columns(pl.col("partners").fill_null(0))
        .with_columns(giver_score=side("likes_given", "lockstep_likes_given"), receiver_score=side("likes_received", "lockstep_likes_received"))
        .with_columns(score=pl.max_horizontal("giver_score", "receiver_score"))
        .with_columns(
            role=pl.when(pl.col("score") == 0).then(pl.lit("account"))
            .when(pl.col("giver_score") >= pl.col("receiver_score")).then(pl.lit("giver"))
            .otherwise(pl.lit("receiver")),
            flagged=pl.col("score") >= config.flag_at,
        )
    )  # fmt: skip
    minutes = f"{config.window_minutes:g} min"
    reason = (
        pl.when(pl.col("role") == "giver")
        .then(pl.format(f"in a lockstep group of {{}} accounts; {{}} of {{}} likes given within {minutes} of group members",
                        "group_size", "lockstep_likes_given", "likes_given"))
        .when(pl.col("role") == "receiver")
        .then(pl.format(f"{{}} of {{}} likes received came from a lockstep group within {minutes}", "lockstep_likes_received", "likes_received"))
        .otherwise(pl.lit("no lockstep likes"))
    )  # fmt: skip
    return out.with_columns(reason=reason).select(list(LOCKSTEP_SCHEMA)).cast(LOCKSTEP_SCHEMA)
