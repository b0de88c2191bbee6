"""Account-level integrity signals, point in time: what the receiving and the giving side of each account look like.

One row per account created before ``at``, computed from events strictly before ``at`` (DuckDB
aggregates with parameters, polars for the ratios). Receiving side (``recv_*``): the likes and
follows an account's posts and profile received. Giving side (``given_*``): the likes and
follows it gave, and how much it browsed. Plus the lockstep detector's view of both sides
(``lockstep_*``), reciprocity and account age. Every signal is described in :data:`SIGNALS`.

Follow/unfollow churn is not computed: the canonical ``follows`` table holds the follows that
exist, with no unfollow events, so churn cannot be seen in it.

Example
-------
>>> from toolkit.integrity import account_signals
>>> account_signals("data/feedlab.duckdb").select("user_id", "given_unexplained_share").head(2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import polars as pl

from toolkit.errors import FeedlabError
from toolkit.integrity._common import Store, resolve_at
from toolkit.store import open_store
from toolkit.integrity.lockstep import LockstepConfig, lockstep_scores

#: Windows of the growth signals (``recv_likes_1d``, ``recv_follows_7d``, ``given_likes_1d``, ...).
DEFAULT_WINDOWS: tuple[timedelta, ...] = (timedelta(days=1), timedelta(days=7))
#: A like this soon after its post was created counts toward like velocity.
FAST_LIKE = timedelta(minutes=30)
#: A giver younger than this when it liked counts as a young account.
YOUNG_ACCOUNT = timedelta(days=30)
#: A giver with fewer logged impressions than this (before ``at``) counts as low-activity.
LOW_ACTIVITY_IMPRESSIONS = 5

#: Receiving-side signals and what they measure.
RECEIVER_SIGNALS: dict[str, str] = {
    "recv_likes": "likes its posts received",
    "recv_likes_per_post": "likes received per post",
    "recv_fast_like_share": "share of received likes within 30 min of posting (like velocity)",
    "recv_fast_likes_per_post": "likes received within 30 min of posting, per post",
    "recv_like_peak_share": "share of received likes that fell in its busiest hour (like burst)",
    "recv_like_peak_hour": "most likes received in one hour",
    "recv_third_party_share": "share of received likes and follows sent via third-party apps",
    "recv_young_giver_share": "share of received likes from accounts under 30 days old",
    "recv_low_activity_share": "share of received likes from accounts that hardly browse",
    "recv_unexplained_share": "share of received likes that no impression of the giver explains",
    "recv_follows": "follows received",
    "recv_follow_peak_share": "share of received follows in its busiest hour (follower burst)",
    "recv_follow_unexplained_share": "share of received follows that no impression explains",
    "recv_follow_young_share": "share of received follows from accounts under 30 days old",
    "lockstep_recv_share": "share of received likes given in lockstep by a lockstep group",
}
#: Giving-side signals and what they measure.
GIVER_SIGNALS: dict[str, str] = {
    "given_likes": "likes given",
    "given_follows": "follows given",
    "impressions": "posts it was shown (browsing)",
    "given_likes_per_impression": "likes given per impression",
    "given_unexplained_share": "share of its likes on posts it was never shown (liking without browsing)",
    "given_follow_unexplained_share": "share of its follows that no impression explains",
    "given_third_party_share": "share of its likes and follows sent via third-party apps",
    "given_fast_like_share": "share of its likes within 30 min of the post's creation",
    "given_top_author_share": "share of its likes that went to its most-liked author",
    "lockstep_given_share": "share of its likes given in lockstep with its group",
    "lockstep_partners": "accounts it co-liked at least 3 posts with within minutes",
    "lockstep_group_size": "size of its lockstep group (0 when in none)",
}
#: Signals of the account itself.
ACCOUNT_SIGNALS: dict[str, str] = {
    "account_age_days": "days since the account was created",
    "followers": "accounts following it",
    "follow_reciprocity": "share of its followers it follows back",
}
#: Every signal of :func:`account_signals` (window columns excepted) and what it measures.
SIGNALS: dict[str, str] = {**ACCOUNT_SIGNALS, **RECEIVER_SIGNALS, **GIVER_SIGNALS}

_SQL = """
with acc as (select user_id, created_at from users where created_at < $1),
lk as (
    select e.user_id as giver, e.post_id, min(e.ts) as ts, bool_or(e.via_third_party_app) as via
    from engagements e where e.action = 'like' and e.post_id is not null and e.ts < $1 group by all
),
shown as (select distinct user_id, post_id from impressions where ts < $1),
browse as (select user_id, count(*) as impressions from impressions where ts < $1 group by 1),
likes as (
    select lk.*, p.author_id as receiver, p.created_at as posted,
        s.user_id is not null as explained,
        lk.ts - g.created_at < $2 as young,
        coalesce(b.impressions, 0) < $3 as low_activity,
        lk.ts - p.created_at <= $4 as fast
    from lk join posts p using (post_id)
    left join shown s on s.user_id = lk.giver and s.post_id = lk.post_id
    left join users g on g.user_id = lk.giver
    left join browse b on b.user_id = lk.giver
),
fw as (
    select e.user_id as giver, e.target_user_id as receiver, min(e.ts) as ts, bool_or(e.via_third_party_app) as via
    from engagements e where e.action = 'follow' and e.target_user_id is not null and e.ts < $1 group by all
),
followed_from as (
    select distinct i.user_id, p.author_id from impressions i join posts p using (post_id)
    where i.ts < $1 and i."follow" is true
),
follows_e as (
    select fw.*, ff.user_id is not null as explained, fw.ts - g.created_at < $2 as young
    from fw left join followed_from ff on ff.user_id = fw.giver and ff.author_id = fw.receiver
    left join users g on g.user_id = fw.giver
),
recv_l as (
    select receiver as user_id, count(*) as recv_likes, count_if(fast) as recv_fast, count_if(via) as recv_via,
        count_if(young) as recv_young, count_if(low_activity) as recv_low, count_if(not explained) as recv_unexplained
    from likes group by 1
),
recv_peak as (
    select user_id, max(n) as recv_like_peak_hour from (
        select receiver as user_id, date_trunc('hour', ts) as h, count(*) as n from likes group by all
    ) group by 1
),
recv_f as (
    select receiver as user_id, count(*) as recv_follows, count_if(via) as recv_f_via,
        count_if(not explained) as recv_f_unexplained, count_if(young) as recv_f_young
    from follows_e group by 1
),
recv_fpeak as (
    select user_id, max(n) as recv_follow_peak_hour from (
        select receiver as user_id, date_trunc('hour', ts) as h, count(*) as n from follows_e group by all
    ) group by 1
),
posts_n as (select author_id as user_id, count(*) as n_posts from posts where created_at < $1 group by 1),
given_l as (
    select giver as user_id, count(*) as given_likes, count_if(not explained) as given_unexplained,
        count_if(via) as given_via, count_if(fast) as given_fast
    from likes group by 1
),
given_top as (
    select user_id, max(n) as given_top_author from (
        select giver as user_id, receiver, count(*) as n from likes group by all
    ) group by 1
),
given_f as (
    select giver as user_id, count(*) as given_follows, count_if(not explained) as given_f_unexplained, count_if(via) as given_f_via
    from follows_e group by 1
),
graph as (select * from follows where created_at < $1),
followers as (select followee_id as user_id, count(*) as followers from graph group by 1),
recip as (
    select f.followee_id as user_id, count(*) as followed_back
    from graph f join graph b on b.follower_id = f.followee_id and b.followee_id = f.follower_id
    group by 1
)
select acc.user_id, acc.created_at,
    coalesce(posts_n.n_posts, 0) as n_posts,
    coalesce(followers.followers, 0) as followers, coalesce(recip.followed_back, 0) as followed_back,
    coalesce(recv_likes, 0) as recv_likes, coalesce(recv_fast, 0) as recv_fast, coalesce(recv_via, 0) as recv_via,
    coalesce(recv_young, 0) as recv_young, coalesce(recv_low, 0) as recv_low,
    coalesce(recv_unexplained, 0) as recv_unexplained, coalesce(recv_like_peak_hour, 0) as recv_like_peak_hour,
    coalesce(recv_follows, 0) as recv_follows, coalesce(recv_f_via, 0) as recv_f_via,
    coalesce(recv_f_unexplained, 0) as recv_f_unexplained, coalesce(recv_f_young, 0) as recv_f_young,
    coalesce(recv_follow_peak_hour, 0) as recv_follow_peak_hour,
    coalesce(given_likes, 0) as given_likes, coalesce(given_unexplained, 0) as given_unexplained,
    coalesce(given_via, 0) as given_via, coalesce(given_fast, 0) as given_fast,
    coalesce(given_top_author, 0) as given_top_author,
    coalesce(given_follows, 0) as given_follows, coalesce(given_f_unexplained, 0) as given_f_unexplained,
    coalesce(given_f_via, 0) as given_f_via,
    coalesce(browse.impressions, 0) as impressions
from acc
left join posts_n using (user_id) left join followers using (user_id) left join recip using (user_id)
left join recv_l using (user_id) left join recv_peak using (user_id) left join recv_f using (user_id)
left join recv_fpeak using (user_id) left join given_l using (user_id) left join given_top using (user_id)
left join given_f using (user_id) left join browse using (user_id)
order by acc.user_id
"""

_WINDOW_SQL = """
select user_id, sum(recv_l)::bigint as recv_l, sum(recv_f)::bigint as recv_f, sum(given_l)::bigint as given_l from (
    select p.author_id as user_id, 1 as recv_l, 0 as recv_f, 0 as given_l
    from engagements e join posts p using (post_id) where e.action = 'like' and e.ts >= $2 and e.ts < $1
    union all
    select target_user_id, 0, 1, 0 from engagements where action = 'follow' and target_user_id is not null and ts >= $2 and ts < $1
    union all
    select user_id, 0, 0, 1 from engagements where action = 'like' and ts >= $2 and ts < $1
) group by 1
"""


def _label(window: timedelta) -> str:
    """``1d``, ``12h``, ``30m``: a window's suffix in column names."""
    s = int(window.total_seconds())
    if s % 86_400 == 0:
        return f"{s // 86_400}d"
    if s % 3600 == 0:
        return f"{s // 3600}h"
    return f"{max(1, s // 60)}m"


def _ratio(num: str, den: str) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(0.0)


def account_signals(
    store: Store,
    *,
    at: str | date | datetime | None = None,
    windows: Sequence[timedelta] = DEFAULT_WINDOWS,
    lockstep: LockstepConfig = LockstepConfig(),
) -> pl.DataFrame:
    """Integrity signals of every account created before ``at``, from events strictly before ``at``.

    One row per ``user_id`` with the columns of :data:`SIGNALS` (floats; counts as counts,
    shares in [0, 1], 0 where there is nothing to divide) plus, per window ``w`` of ``windows``,
    ``recv_likes_<w>``, ``recv_follows_<w>`` and ``given_likes_<w>`` (events in ``[at - w, at)``:
    growth) and ``recv_like_growth_<w>``, their share of all likes received. ``at`` defaults to
    just after the last engagement. Raises a FeedlabError when there are no engagements.

    Example
    -------
    >>> s = account_signals("data/feedlab.duckdb", at="2026-01-12")  # doctest: +SKIP
    >>> s.sort("recv_fast_like_share", descending=True).select("user_id", "recv_fast_like_share").head(3)  # doctest: +SKIP
    """
    windows = list(windows)
    for w in windows:
        if not isinstance(w, timedelta) or w <= timedelta(0):
            raise FeedlabError(f"each window must be a positive timedelta (got {w!r})")
    if len({_label(w) for w in windows}) != len(windows):
        raise FeedlabError(f"windows must differ: {', '.join(_label(w) for w in windows)}")
    with open_store(store) as con:
        when = resolve_at(con, at)
        raw = con.sql(_SQL, params=[when, YOUNG_ACCOUNT, LOW_ACTIVITY_IMPRESSIONS, FAST_LIKE]).pl()
        per_window = {w: con.sql(_WINDOW_SQL, params=[when, when - w]).pl() for w in windows}
        ls = lockstep_scores(con, at=when, config=lockstep)

    frame = raw.with_columns(pl.exclude("user_id", "created_at").cast(pl.Float64)).with_columns(
        account_age_days=(pl.lit(when) - pl.col("created_at")).dt.total_seconds() / 86_400.0,
        follow_reciprocity=_ratio("followed_back", "followers"),
        recv_likes_per_post=_ratio("recv_likes", "n_posts"),
        recv_fast_like_share=_ratio("recv_fast", "recv_likes"),
        recv_fast_likes_per_post=_ratio("recv_fast", "n_posts"),
        recv_like_peak_share=_ratio("recv_like_peak_hour", "recv_likes"),
        recv_third_party_share=pl.when(pl.col("recv_likes") + pl.col("recv_follows") > 0)
        .then((pl.col("recv_via") + pl.col("recv_f_via")) / (pl.col("recv_likes") + pl.col("recv_follows")))
        .otherwise(0.0),
        recv_young_giver_share=_ratio("recv_young", "recv_likes"),
        recv_low_activity_share=_ratio("recv_low", "recv_likes"),
        recv_unexplained_share=_ratio("recv_unexplained", "recv_likes"),
        recv_follow_peak_share=_ratio("recv_follow_peak_hour", "recv_follows"),
        recv_follow_unexplained_share=_ratio("recv_f_unexplained", "recv_follows"),
        recv_follow_young_share=_ratio("recv_f_young", "recv_follows"),
        given_likes_per_impression=_ratio("given_likes", "impressions"),
        given_unexplained_share=_ratio("given_unexplained", "given_likes"),
        given_follow_unexplained_share=_ratio("given_f_unexplained", "given_follows"),
        given_third_party_share=pl.when(pl.col("given_likes") + pl.col("given_follows") > 0)
        .then((pl.col("given_via") + pl.col("given_f_via")) / (pl.col("given_likes") + pl.col("given_follows")))
        .otherwise(0.0),
        given_fast_like_share=_ratio("given_fast", "given_likes"),
        given_top_author_share=_ratio("given_top_author", "given_likes"),
    )  # fmt: skip
    lock = ls.select(
        "user_id",
        lockstep_recv_share=_ratio("lockstep_likes_received", "likes_received"),
        lockstep_given_share=_ratio("lockstep_likes_given", "likes_given"),
        lockstep_partners=pl.col("partners").cast(pl.Float64),
        lockstep_group_size=pl.col("group_size").fill_null(0).cast(pl.Float64),
    )
    frame = frame.join(lock, on="user_id", how="left")
    window_cols = []
    for w, counts in per_window.items():
        name = _label(w)
        counts = counts.select(
            "user_id",
            pl.col("recv_l").cast(pl.Float64).alias(f"recv_likes_{name}"),
            pl.col("recv_f").cast(pl.Float64).alias(f"recv_follows_{name}"),
            pl.col("given_l").cast(pl.Float64).alias(f"given_likes_{name}"),
        )
        frame = frame.join(counts, on="user_id", how="left").with_columns(
            pl.col(f"recv_likes_{name}", f"recv_follows_{name}", f"given_likes_{name}").fill_null(0.0)
        )
        frame = frame.with_columns(_ratio(f"recv_likes_{name}", "recv_likes").alias(f"recv_like_growth_{name}"))
        window_cols += [f"recv_likes_{name}", f"recv_follows_{name}", f"given_likes_{name}", f"recv_like_growth_{name}"]
    columns = ["user_id", *SIGNALS, *window_cols]
    return frame.with_columns(pl.col(c).fill_null(0.0) for c in columns[1:]).select(columns).sort("user_id")
