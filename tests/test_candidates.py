"""Candidate sources: each on a hand-made store, point in time, the cap, recall, and a reference check."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
import math

import duckdb
import polars as pl
from polars.testing import assert_frame_equal
import pytest

from toolkit.errors import FeedlabError
from toolkit.rank.candidates import CANDIDATE_SCHEMA, GRAPH_EXCLUDED_TABLE, candidate_recall, candidates_for
from toolkit.rank.config import surface_config
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, RECOMMENDATION_SURFACES, SURFACES, schema_ddl

AT = datetime(2026, 1, 10)
V = 1  # the viewer in the hand-made stores


def ago(hours: float) -> datetime:
    return AT - timedelta(hours=hours)


class Store:
    """A tiny in-memory store, filled row by row."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        for stmt in schema_ddl():
            self.con.execute(stmt)
        self._impressions = 0

    def follow(self, follower: int, followee: int, at: datetime = AT - timedelta(days=30), *, muted: bool = False) -> Store:
        self.con.execute("insert into follows values (?, ?, ?, false, ?)", [follower, followee, at, muted])
        return self

    def post(self, post_id: int, author: int, created: datetime, fmt: str = "photo", audio: int | None = None) -> Store:
        flags = ", ".join("false" for _ in CONTENT_FLAGS)
        self.con.execute(
            f"insert into posts values (?, ?, ?, ?, null, null, ?, false, false, {flags})",
            [post_id, author, created, fmt, audio],
        )
        return self

    def engage(self, user: int, post: int, ts: datetime = AT - timedelta(hours=1), action: str = "like") -> Store:
        self.con.execute("insert into engagements values (?, ?, null, ?, ?, false)", [user, post, action, ts])
        return self

    def likes(self, post: int, users, ts: datetime = AT - timedelta(hours=1)) -> Store:
        for u in users:
            self.engage(u, post, ts)
        return self

    def impression(self, user: int, post: int, ts: datetime, surface: str = "feed", **labels: bool) -> Store:
        self._impressions += 1
        row = {"impression_id": self._impressions, "user_id": user, "post_id": post, "surface": surface, "ts": ts, "position": 0}
        row.update({a: labels.get(a, False) for a in ACTIONS if a in labels or a in ("dwell", "like")})
        cols = ", ".join(f'"{c}"' for c in row)
        self.con.execute(f"insert into impressions ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
        return self


def only(surface: str, *sources: str, **changes) -> object:
    """The surface's configuration with only ``sources`` (and other fields changed)."""
    cfg = surface_config(surface)
    options = {**cfg.options, **changes.pop("options", {})}
    return replace(cfg, candidate_sources=sources or cfg.candidate_sources, options=options, **changes)


def posts_of(frame: pl.DataFrame, user: int = V) -> list[int]:
    return frame.filter(pl.col("user_id") == user)["post_id"].to_list()


# --- followed sources --------------------------------------------------------------------------


def feed_store() -> Store:
    s = Store()
    s.follow(V, 2).follow(V, 3, muted=True).follow(V, 4, at=AT)  # 4 only followed at `at`
    s.post(20, 2, ago(1)).post(21, 2, ago(2), "reel").post(22, 2, ago(3), "story")
    s.post(23, 2, ago(73))  # older than the 72 h window
    s.post(24, 2, AT)  # created at `at`: not there yet
    s.post(25, 2, ago(71.9), "carousel")
    s.post(26, 2, ago(5))  # already shown to the viewer
    s.impression(V, 26, ago(4))
    s.post(30, 3, ago(1))  # muted
    s.post(40, 4, ago(1))  # followed too late
    s.post(10, V, ago(1))  # the viewer's own
    s.post(50, 5, ago(1)).likes(50, [6, 7, 8])  # not followed, however popular
    return s


def test_followed_recent_on_feed_newest_first_without_muted_stories_or_stale_posts():
    con = feed_store().con
    out = candidates_for(con, "feed", [V], at=AT)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA)
    assert posts_of(out) == [20, 21, 25]
    assert set(out["source"]) == {"followed_recent"}
    assert out["author_id"].to_list() == [2, 2, 2]
    # exclude_seen=False brings back post 26, in its place by recency
    assert posts_of(candidates_for(con, "feed", [V], at=AT, exclude_seen=False)) == [20, 21, 26, 25]


def test_followed_stories_24h_window_keeps_muted_accounts():
    s = Store().follow(V, 2).follow(V, 3, muted=True).follow(V, 4, at=AT + timedelta(hours=1))
    s.post(20, 2, ago(23), "story").post(21, 2, ago(25), "story").post(22, 2, ago(1), "photo")
    s.post(23, 2, ago(0.5), "story").post(30, 3, ago(2), "story").post(40, 4, ago(2), "story")
    s.post(24, 2, AT, "story").post(10, V, ago(1), "story").post(50, 5, ago(1), "story")
    out = candidates_for(s.con, "stories", [V], at=AT)
    assert posts_of(out) == [23, 30, 20]  # newest first; 21 is 25 h old; 30's author is muted but stays
    assert set(out["source"]) == {"followed_stories"}


# --- coengaged_accounts --------------------------------------------------------------------------

A, B, C, D, E = 20, 40, 30, 50, 60  # accounts; a post id is its author id * 10 + k


def coengagement_store() -> Store:
    """Viewer 1 likes a post of A. Users 3 and 4 like A and B; user 5 likes A and C; user 6 likes D only."""
    s = Store()
    for author in (A, B, C, D, E):
        s.post(author * 10, author, ago(5)).post(author * 10 + 1, author, ago(2), "reel")
    s.post(B * 10 + 2, B, ago(24 * 8))  # older than Explore's 7-day window
    s.post(B * 10 + 3, B, ago(3), "story")
    s.engage(V, A * 10, ago(24 * 3))
    s.likes(A * 10, [3, 4, 5]).likes(B * 10, [3, 4]).likes(C * 10, [5]).likes(D * 10, [6])
    return s


COENGAGED = only("explore", "coengaged_accounts")


def test_people_who_like_a_also_like_b():
    out = candidates_for(coengagement_store().con, "explore", [V], at=AT, config=COENGAGED)
    # B (2 users in common with A) before C (1); newer post first within an account; D shares
    # no one with A; A, the seed, is not its own co-engaged account; no stories; no old posts.
    assert posts_of(out) == [B * 10 + 1, B * 10, C * 10 + 1, C * 10]
    assert set(out["source"]) == {"coengaged_accounts"}
    assert out["author_id"].to_list() == [B, B, C, C]


def test_graph_excluded_accounts_stop_shaping_the_coengagement_graph_from_their_since():
    s = coengagement_store()
    s.con.execute(f"create table {GRAPH_EXCLUDED_TABLE} (user_id bigint, since timestamp)")
    # 3 and 4 are excluded only from after AT: the graph at AT still counts them (point in time)
    s.con.executemany(f"insert into {GRAPH_EXCLUDED_TABLE} values (?, ?)", [(3, AT + timedelta(hours=1)), (4, AT + timedelta(hours=1))])
    assert posts_of(candidates_for(s.con, "explore", [V], at=AT, config=COENGAGED)) == [B * 10 + 1, B * 10, C * 10 + 1, C * 10]
    # from before AT: B's only link to A went through 3 and 4, so B drops out; C (through 5) stays
    s.con.execute(f"update {GRAPH_EXCLUDED_TABLE} set since = ?", [AT - timedelta(days=30)])
    assert posts_of(candidates_for(s.con, "explore", [V], at=AT, config=COENGAGED)) == [C * 10 + 1, C * 10]
    # their likes still count as popularity: the popular source ranks by every engagement
    popular = only("explore", "popular_recent")
    with_table = candidates_for(s.con, "explore", [V], at=AT, config=popular)
    s.con.execute(f"drop table {GRAPH_EXCLUDED_TABLE}")
    assert with_table.equals(candidates_for(s.con, "explore", [V], at=AT, config=popular))


def test_coengaged_on_reels_takes_reels_only():
    cfg = only("reels", "coengaged_accounts")
    out = candidates_for(coengagement_store().con, "reels", [V], at=AT, config=cfg)
    assert posts_of(out) == [B * 10 + 1, C * 10 + 1]


def test_coengaged_keeps_top_accounts_per_seed_after_excluding_followed():
    s = coengagement_store()
    one = only("explore", "coengaged_accounts", options={"coengaged_accounts_per_seed": 1})
    assert {p // 10 for p in posts_of(candidates_for(s.con, "explore", [V], at=AT, config=one))} == {B}
    s.follow(V, B)  # B is followed: Explore leaves it out and C takes its place
    assert {p // 10 for p in posts_of(candidates_for(s.con, "explore", [V], at=AT, config=one))} == {C}
    assert {p // 10 for p in posts_of(candidates_for(s.con, "explore", [V], at=AT, config=COENGAGED))} == {C}


def test_coengagement_counts_other_users_not_the_viewer():
    # The viewer also likes C: seeds A and C. For seed A, C has one other user (5), not two, so B
    # (3 and 4) is A's top account; were the viewer counted, C would tie B and win on its lower id.
    # For seed C, A has one user in common (5).
    s = coengagement_store().engage(V, C * 10, ago(24 * 3))
    one = only("explore", "coengaged_accounts", options={"coengaged_accounts_per_seed": 1})
    out = candidates_for(s.con, "explore", [V], at=AT, config=one)
    assert posts_of(out) == [B * 10 + 1, B * 10, A * 10 + 1, A * 10]


def test_coengagement_lookback_and_viewer_exclusion():
    s = coengagement_store()
    s.likes(V * 10 + 0, [3, 4, 5]).post(V * 10, V, ago(5))  # everyone likes the viewer's own post too
    out = candidates_for(s.con, "explore", [V], at=AT, config=COENGAGED)
    assert V not in out["author_id"].to_list()
    # a seed engagement older than the 28-day lookback does not count
    s2 = Store()
    for author in (A, B):
        s2.post(author * 10, author, ago(5))
    s2.engage(V, A * 10, ago(24 * 29)).likes(A * 10, [3]).likes(B * 10, [3])
    assert candidates_for(s2.con, "explore", [V], at=AT, config=COENGAGED).height == 0
    short = only("explore", "coengaged_accounts", options={"coengagement_lookback_days": 1})
    assert candidates_for(coengagement_store().con, "explore", [V], at=AT, config=short).height == 0


# --- audio_coengaged ----------------------------------------------------------------------------


def audio_store() -> Store:
    s = Store().follow(V, 4)
    s.post(11, 2, ago(30), "reel", audio=7)  # the reel the viewer liked (and was shown)
    s.impression(V, 11, ago(29), "reels", like=True).engage(V, 11, ago(29))
    s.post(12, 3, ago(10), "reel", audio=7).likes(12, [5, 6, 8])
    s.post(13, 5, ago(5), "reel", audio=7).likes(13, [6])
    s.post(14, 6, ago(6), "reel", audio=7)  # no engagement: last
    s.post(15, 4, ago(5), "reel", audio=7)  # by a followed account
    s.post(16, V, ago(5), "reel", audio=7)  # the viewer's own
    s.post(17, 3, ago(24 * 8), "reel", audio=7)  # older than the window
    s.post(18, 3, ago(5), "reel", audio=8)  # another audio
    s.post(19, 3, ago(5), "video", audio=7)  # not a reel
    s.post(20, 3, AT, "reel", audio=7)  # created at `at`
    s.engage(9, 13, AT).engage(8, 13, AT + timedelta(hours=1))  # engagement at/after `at` is not counted
    return s


def test_audio_coengaged_reels_with_the_viewers_audio_by_engagement():
    out = candidates_for(audio_store().con, "reels", [V], at=AT, config=only("reels", "audio_coengaged"))
    assert posts_of(out) == [12, 13, 14]
    assert set(out["source"]) == {"audio_coengaged"}


# --- popular_recent -----------------------------------------------------------------------------


def popular_store() -> Store:
    s = Store().follow(V, 2)
    s.post(20, 2, ago(3)).likes(20, range(100, 110))  # most popular, by a followed account
    s.post(30, 3, ago(3), "reel").likes(30, range(100, 105))
    s.post(40, 4, ago(4)).likes(40, range(100, 104))
    s.post(41, 4, ago(2), "story").likes(41, range(100, 108))
    s.post(50, 5, ago(5)).likes(50, range(100, 103))
    s.post(51, 5, ago(24 * 8)).likes(51, range(100, 120))  # older than the window
    s.post(10, V, ago(2)).likes(10, range(100, 107))  # the viewer's own
    s.post(60, 6, ago(1)).likes(60, range(200, 240), ts=AT)  # its likes come at `at`
    s.post(70, 7, ago(1)).engage(100, 70, ago(0.5), "comment").engage(101, 70, ago(0.5), "follow")
    return s


def test_popular_recent_most_engaged_without_followed_own_or_stories():
    con = popular_store().con
    explore = candidates_for(con, "explore", [V], at=AT, config=only("explore", "popular_recent"))
    assert posts_of(explore) == [30, 40, 50, 70]  # 60: no likes before `at`; 70: one comment (follows do not count)
    reels = candidates_for(con, "reels", [V], at=AT, config=only("reels", "popular_recent"))
    assert posts_of(reels) == [30]
    # the pool is the surface's top `popular_posts` of everyone's, before removing the viewer's
    top3 = only("explore", "popular_recent", options={"popular_posts": 3})
    assert posts_of(candidates_for(con, "explore", [V], at=AT, config=top3)) == [30]  # the pool: 20, 10, 30
    assert posts_of(candidates_for(con, "explore", [2], at=AT, config=top3), 2) == [10, 30]


# --- surface-wide behaviour ---------------------------------------------------------------------


def test_explore_interleaves_sources_and_labels_the_first_source():
    s = coengagement_store()
    for post, n in ((70, 9), (80, 8), (90, 7)):
        s.post(post, post, ago(1)).likes(post, range(100, 100 + n))
    s.likes(B * 10, range(100, 110))  # B's photo is also the most popular post
    out = candidates_for(s.con, "explore", [V], at=AT)
    # coengaged: B1, B0, C1, C0; popular: B0 (12 likes), 70, 80, 90, A0 (4), C0, D0 (1 each). In
    # turns: B1, B0 (popular's first, labelled coengaged, the first source), 70, C1, 80, C0, 90, A0, D0.
    assert out.rows() == [
        (V, B * 10 + 1, B, "coengaged_accounts"),
        (V, B * 10, B, "coengaged_accounts"),
        (V, 70, 70, "popular_recent"),
        (V, C * 10 + 1, C, "coengaged_accounts"),
        (V, 80, 80, "popular_recent"),
        (V, C * 10, C, "coengaged_accounts"),
        (V, 90, 90, "popular_recent"),
        (V, A * 10, A, "popular_recent"),
        (V, D * 10, D, "popular_recent"),
    ]
    assert out.select("user_id", "post_id").is_unique().all()


def test_max_candidates_caps_each_viewer_keeping_the_best():
    s = feed_store().follow(7, 2)
    full = candidates_for(s.con, "feed", [V, 7], at=AT)
    capped = candidates_for(s.con, "feed", [V, 7], at=AT, config=replace(surface_config("feed"), max_candidates=2))
    assert capped.group_by("user_id").len().sort("user_id").rows() == [(V, 2), (7, 2)]
    assert_frame_equal(capped, full.group_by("user_id", maintain_order=True).head(2))
    explore = candidates_for(coengagement_store().con, "explore", [V], at=AT, config=replace(surface_config("explore"), max_candidates=1))
    assert explore.rows() == [(V, B * 10 + 1, B, "coengaged_accounts")]
    assert candidates_for(s.con, "feed", [V], at=AT, config=replace(surface_config("feed"), max_candidates=0)).height == 0


@pytest.mark.parametrize("surface", SURFACES)
def test_empty_user_list_gives_an_empty_frame(surface):
    out = candidates_for(feed_store().con, surface, [], at=AT)
    assert out.height == 0 and out.schema == pl.Schema(CANDIDATE_SCHEMA)
    r = candidate_recall(feed_store().con, surface, [], at=AT)
    assert math.isnan(r["recall"]) and r["positives"] == r["found"] == r["viewers"] == 0


def test_unknown_surface_is_a_feedlab_error():
    con = feed_store().con
    with pytest.raises(FeedlabError, match="unknown surface 'home'"):
        candidates_for(con, "home", [V], at=AT)
    with pytest.raises(FeedlabError, match="unknown surface"):
        candidates_for(con, "home", [V], at=AT, config=surface_config("feed"))
    with pytest.raises(FeedlabError, match="unknown surface"):
        candidate_recall(con, "home", [V], at=AT)
    with pytest.raises(FeedlabError, match="is not a date or time"):
        candidates_for(con, "feed", [V], at="next tuesday")


@pytest.mark.parametrize("surface", SURFACES)
def test_a_user_with_no_history_gets_only_popular_posts(surface):
    s = coengagement_store().follow(V, 2)
    s.post(22, 2, ago(2)).post(23, 2, ago(2), "story").post(24, 2, ago(2), "reel").likes(24, [3])
    newcomer = 999
    out = candidates_for(s.con, surface, [V, newcomer], at=AT)
    assert posts_of(out, V), "the active viewer has candidates on every surface"
    mine = out.filter(pl.col("user_id") == newcomer)
    if surface in RECOMMENDATION_SURFACES:
        assert mine.height > 0 and set(mine["source"]) == {"popular_recent"}
    else:
        assert mine.height == 0


def test_aware_at_is_read_as_utc():
    con = feed_store().con
    aware = (AT + timedelta(hours=1)).replace(tzinfo=timezone(timedelta(hours=1)))
    assert_frame_equal(candidates_for(con, "feed", [V], at=aware), candidates_for(con, "feed", [V], at=AT))


# --- point in time ------------------------------------------------------------------------------


def everything_store() -> Store:
    s = coengagement_store()
    for t, pid in ((ago(2), 901), (ago(20), 902)):  # followed account 2: a post, a story, a reel with audio
        s.post(pid, 2, t).post(pid + 10, 2, t, "story").post(pid + 20, 2, t, "reel", audio=77)
    s.follow(V, 2).engage(V, 921, ago(10))  # the viewer liked 2's reel with audio 77
    s.post(990, 9, ago(3), "reel", audio=77).likes(990, [3])
    s.post(995, 11, ago(3), "reel", audio=88).post(996, 12, ago(4), "reel", audio=88)  # audio 88: no one's yet
    return s


@pytest.mark.parametrize("surface", SURFACES)
def test_events_at_or_after_at_change_nothing(surface):
    s = everything_store()
    before = candidates_for(s.con, surface, [V, 3, 5], at=AT)
    assert before.height > 0
    for t in (AT, AT + timedelta(hours=2)):
        k = int((t - AT).total_seconds())  # distinct ids per time
        s.follow(V, 60 + k, at=t).post(600 + k, 60 + k, t - timedelta(microseconds=0))  # followed at/after at
        s.post(2000 + k, 2, t).post(2100 + k, 2, t, "story").post(2200 + k, 2, t, "reel", audio=77)  # posted at/after at
        s.engage(V, B * 10, t).engage(V, D * 10, t).engage(3, D * 10, t)  # new seeds and co-engagement
        s.engage(V, 996, t)  # the viewer's first reel with audio 88
        s.likes(C * 10, range(300, 340), ts=t).likes(990, range(300, 340), ts=t)  # new popularity
        for post in before.filter(pl.col("user_id") == V)["post_id"]:
            s.impression(V, post, t, surface)  # shown at/after at: not yet "seen"
    assert_frame_equal(candidates_for(s.con, surface, [V, 3, 5], at=AT), before)


def test_the_same_events_before_at_do_change_the_answer():
    s = everything_store()
    before = candidates_for(s.con, "explore", [V], at=AT)
    s.impression(V, posts_of(before)[0], ago(0.1), "explore")  # seen just before `at`
    after = candidates_for(s.con, "explore", [V], at=AT)
    assert posts_of(before)[0] not in posts_of(after)


# --- recall -------------------------------------------------------------------------------------


def test_recall_by_hand():
    s = feed_store().follow(7, 2)
    # viewer 1's Feed candidates at AT: 20, 21, 25. Later on Feed: likes 20 (twice), saves 21,
    # likes 26 (shown before AT: not a candidate), dwells on 25 only, comments on 20 after the horizon.
    later = AT + timedelta(hours=1)
    s.impression(V, 20, later, like=True).impression(V, 20, later + timedelta(hours=1), like=True)
    s.impression(V, 21, later, save=True).impression(V, 26, later, like=True).impression(V, 25, later, dwell=True)
    s.impression(V, 20, AT + timedelta(days=2), comment=True)
    s.impression(V, 30, later, "explore", like=True)  # another surface
    s.impression(7, 40, later, share=True)  # viewer 7: a post not among its candidates
    s.impression(8, 20, later, like=True)  # not asked about
    r = candidate_recall(s.con, "feed", [V, 7], at=AT)
    assert r == {"recall": 2 / 4, "positives": 4, "found": 2, "viewers": 2, "per_source": {"followed_recent": 2}}
    assert candidate_recall(s.con, "feed", [V, 7], at=AT, horizon=timedelta(days=3))["positives"] == 4  # the comment: 20 again
    assert candidate_recall(s.con, "feed", [V], at=AT, horizon=timedelta(minutes=30))["positives"] == 0
    # a given candidate frame is used as is
    given = pl.DataFrame({"user_id": [V], "post_id": [26], "source": ["followed_recent"]})
    assert candidate_recall(s.con, "feed", [V], at=AT, candidates=given)["found"] == 1
    with pytest.raises(FeedlabError, match="horizon"):
        candidate_recall(s.con, "feed", [V], at=AT, horizon=timedelta(0))
    with pytest.raises(FeedlabError, match="missing"):
        candidate_recall(s.con, "feed", [V], at=AT, candidates=given.drop("source"))


# --- the simulated world ------------------------------------------------------------------------


def _world_at(con) -> datetime:
    return con.sql("select max(ts) - interval 1 day from impressions").fetchall()[0][0]


def _active_viewers(con, at: datetime, surface: str, n: int = 20) -> list[int]:
    return [
        r[0]
        for r in con.sql(
            "select user_id from impressions where ts < ? and surface = ? group by 1 order by count(*) desc, 1 limit ?",
            params=[at, surface, n],
        ).fetchall()
    ]


@pytest.mark.parametrize("surface", SURFACES)
def test_small_world_smoke(small_world, surface):
    con, at = small_world, _world_at(small_world)
    viewers = _active_viewers(con, at, surface)
    cfg = surface_config(surface)
    out = candidates_for(con, surface, viewers, at=at)
    assert out.schema == pl.Schema(CANDIDATE_SCHEMA)
    per_viewer = out.group_by("user_id").len()
    assert per_viewer.height >= 0.75 * len(viewers), "most active viewers have candidates"
    assert per_viewer["len"].max() <= cfg.max_candidates
    assert out.select("user_id", "post_id").is_unique().all()
    assert set(out["source"]) <= set(cfg.candidate_sources)
    assert out["user_id"].is_sorted()
    posts = con.sql("select post_id, author_id as a, created_at, format from posts").pl()
    joined = out.join(posts, on="post_id", how="left")
    assert (joined["author_id"] == joined["a"]).all() and (joined["author_id"] != joined["user_id"]).all()
    assert (joined["created_at"] < at).all()
    assert ((joined["format"] == "story") == (surface == "stories")).all()
    if surface == "reels":
        assert (joined["format"] == "reel").all()
    seen = con.sql("select distinct user_id, post_id from impressions where ts < ?", params=[at]).pl()
    assert out.join(seen, on=["user_id", "post_id"]).height == 0
    follows = con.sql("select follower_id as user_id, followee_id as author_id, muted from follows where created_at < ?", params=[at]).pl()
    followed = out.join(follows, on=["user_id", "author_id"], how="left")
    if surface in RECOMMENDATION_SURFACES:
        assert followed["muted"].is_null().all()
    else:
        assert followed["muted"].is_not_null().all()
        if surface == "feed":
            assert not followed["muted"].any()
    r = candidate_recall(con, surface, viewers, at=at, candidates=out)
    assert r["viewers"] == len(viewers) and r["positives"] > 0
    assert 0.0 <= r["recall"] <= 1.0 and r["found"] == sum(r["per_source"].values())
    assert r == candidate_recall(con, surface, viewers, at=at)


# --- a brute-force reference of the pruned SQL ---------------------------------------------------


def _reference(con, surface: str, source: str, viewers: list[int], at: datetime, cfg) -> dict[int, list[int]]:
    """Each viewer's ranked post ids for one source, the slow obvious way (no pruning)."""
    start = at - timedelta(hours=cfg.candidate_window_hours)
    lookback = at - timedelta(days=cfg.options["coengagement_lookback_days"])
    posts = con.sql("select post_id, author_id, created_at, format, audio_id from posts").pl()
    eng = con.sql(
        "select user_id, post_id, ts from engagements where action in ('like', 'comment', 'share', 'save') and ts < ?",
        params=[at],
    ).pl().join(posts, on="post_id")
    seen = set(con.sql("select user_id, post_id from impressions where ts < ?", params=[at]).fetchall())
    followed = defaultdict(set)
    for u, a in con.sql("select follower_id, followee_id from follows where created_at < ?", params=[at]).fetchall():
        followed[u].add(a)
    engaged_count = Counter(eng["post_id"].to_list())
    fmt_ok = (lambda f: f == "reel") if surface == "reels" else (lambda f: f != "story")
    window = [p for p in posts.iter_rows(named=True) if start <= p["created_at"] < at]
    recent = eng.filter(pl.col("ts") >= lookback)
    authors_of, users_of = defaultdict(set), defaultdict(set)
    for u, a in recent.select("user_id", "author_id").iter_rows():
        authors_of[u].add(a)
        users_of[a].add(u)
    out = {}
    for v in viewers:
        strength: dict[int, float] = {}
        if source == "coengaged_accounts":
            seeds = authors_of[v]
            acc: Counter = Counter()
            for a in seeds:
                n = Counter(b for u in users_of[a] - {v} for b in authors_of[u] if b != a)
                ok = [b for b in n if b != v and b not in followed[v] and n[b] > 0]
                # ties: more users overall (counting the viewer), then the lower account id
                ok.sort(key=lambda b: (-n[b], -(n[b] + (b in seeds)), b))
                for b in ok[: cfg.options["coengaged_accounts_per_seed"]]:
                    acc[b] += n[b]
            strength = {p["post_id"]: acc[p["author_id"]] for p in window if p["author_id"] in acc and fmt_ok(p["format"])}
        elif source == "audio_coengaged":
            audios = set(recent.filter((pl.col("user_id") == v) & (pl.col("format") == "reel"))["audio_id"].drop_nulls())
            strength = {
                p["post_id"]: engaged_count[p["post_id"]]
                for p in window
                if p["format"] == "reel" and p["audio_id"] in audios and p["author_id"] not in followed[v]
            }
        by_id = {p["post_id"]: p for p in window}
        ranked = sorted(
            (pid for pid in strength if (v, pid) not in seen and by_id[pid]["author_id"] != v),
            key=lambda pid: (-strength[pid], -by_id[pid]["created_at"].timestamp(), pid),
        )
        out[v] = ranked[: cfg.max_candidates]
    return out


@pytest.mark.parametrize(
    "surface,source,per_seed,cap",
    [("explore", "coengaged_accounts", 3, 15), ("reels", "coengaged_accounts", 20, 500), ("reels", "audio_coengaged", 20, 4)],
)
def test_pruned_sql_equals_the_brute_force_reference(small_world, surface, source, per_seed, cap):
    con, at = small_world, _world_at(small_world)
    viewers = _active_viewers(con, at, surface, n=12)
    cfg = only(surface, source, max_candidates=cap, options={"coengaged_accounts_per_seed": per_seed})
    out = candidates_for(con, surface, viewers, at=at, config=cfg)
    expected = _reference(con, surface, source, viewers, at, cfg)
    assert sum(len(p) for p in expected.values()) > 0
    assert {v: posts_of(out, v) for v in viewers} == expected
