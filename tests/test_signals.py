"""Signals: hand-computed values per family, point-in-time correctness, train/serve equality."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl
from polars.testing import assert_frame_equal
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolkit.errors import FeedlabError
from toolkit.signals import (
    FEATURES,
    compute_features,
    feature_names,
    iter_training_frames,
    scoring_frame,
    training_frame,
    write_training_frame,
    write_training_frames,
)
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, SURFACES, schema_ddl

T0 = datetime(2026, 1, 1)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _store() -> duckdb.DuckDBPyConnection:
    """A tiny store whose every feature value for viewer 1 / post 10 at 03:00 is worked out by hand."""
    con = duckdb.connect()
    for stmt in schema_ddl():
        con.execute(stmt)
    con.executemany("insert into users values (?, ?, ?)", [(u, T0 - timedelta(days=10 * u), False) for u in (1, 2, 3, 4)])
    con.executemany(
        "insert into follows values (?, ?, ?, ?, ?)",
        [(1, 2, T0 - timedelta(days=1), True, False), (2, 1, h(5), False, False), (3, 2, h(2.5), False, False)],
    )
    flags = {f: False for f in CONTENT_FLAGS}
    posts = [
        dict(post_id=10, author_id=2, created_at=h(0), format="photo", duration_s=None, topic=3, audio_id=None),
        dict(post_id=11, author_id=2, created_at=h(1), format="reel", duration_s=12.0, topic=5, audio_id=7),
        dict(post_id=12, author_id=1, created_at=h(0), format="photo", duration_s=None, topic=3, audio_id=None),
    ]
    for p in posts:
        row = {**p, "has_location": p["post_id"] == 10, "is_reshare": False, **flags, "misinformation": p["post_id"] == 11, "low_resolution": p["post_id"] == 10}
        cols = ", ".join(f'"{k}"' for k in row)
        con.execute(f"insert into posts ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
    impressions = [
        # id, user, post, surface, ts, labels
        (1, 1, 10, "explore", h(10 / 60), dict(dwell=True, like=False)),
        (2, 3, 10, "feed", h(20 / 60), dict(like=True)),
        (3, 1, 11, "reels", h(2), dict(like=True, profile_tap=True)),
        (4, 2, 12, "feed", h(1), dict(comment=True)),  # the author comments on the viewer's post
    ]
    for iid, user, post, surface, ts, labels in impressions:
        row = {"impression_id": iid, "user_id": user, "post_id": post, "surface": surface, "ts": ts, "position": 0, "device": "ios"}
        row.update({a: labels.get(a, False if a in ("dwell", "like", "profile_tap") else None) for a in ACTIONS})
        cols = ", ".join(f'"{k}"' for k in row)
        con.execute(f"insert into impressions ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
    con.executemany(
        "insert into engagements values (?, ?, ?, ?, ?, ?)",
        [
            (3, 10, None, "like", h(0.5), False),
            (4, 10, None, "like", h(2.5), True),
            (1, 11, None, "like", h(2.0), False),
            (2, 12, None, "comment", h(1.0), False),  # the author comments on the viewer's post
            (3, None, 2, "follow", h(2.5), False),  # follows are not post engagement
            (1, 10, None, "like", h(3.0), False),  # exactly at t: not yet known at t
        ],
    )
    return con


def _request(user=1, post=10, at=h(3), device="ios") -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [user], "post_id": [post], "ts": [at], "device": [device]},
        schema={"user_id": pl.Int64, "post_id": pl.Int64, "ts": pl.Datetime("us"), "device": pl.String},
    )


EXPECTED = {
    # post
    "post_age_h": 3.0,
    "post_format_photo": True,
    "post_format_reel": False,
    "post_duration_s": None,
    "post_has_location": True,
    "post_topic": 3.0,
    "post_has_audio": False,
    "post_flag_low_resolution": True,
    "post_flag_misinformation": False,  # post 11 is
    "post_likes_1h": 1.0,  # the like at 02:30; the one at 03:00 is not before t
    "post_likes_24h": 2.0,  # 00:30 and 02:30
    "post_likes_total": 2.0,
    "post_comments_24h": 0.0,
    "post_likes_per_hour": 2 / 3,
    "post_impressions": 2.0,  # 00:10 and 00:20
    "post_likes_per_impression": 2 / 3,
    "post_rate_like": 1 / 7,  # one like in two observable impressions, smoothed by 5
    "post_rate_dwell": 1 / 7,  # one dwell among two observable dwell labels
    "post_rate_comment": 0.0,  # no observable comment label at all: 0 / (0 + 5)
    # author
    "author_followers": 2.0,  # 1 -> 2 (a day before) and 3 -> 2 (02:30)
    "author_interactions_28d": 3.0,  # likes at 00:30, 02:00, 02:30 on the author's posts
    "author_posts_7d": 2.0,
    "author_misinfo_posts": 1.0,
    "author_account_age_d": 20 + 3 / 24,
    # viewer
    "viewer_impressions_24h": 2.0,
    "viewer_impressions_total": 2.0,
    "viewer_rate_like": 1 / 7,
    "viewer_rate_profile_tap": 1 / 7,
    "viewer_rate_comment": 0.0,
    "viewer_device_ios": True,
    "viewer_device_web": False,
    "viewer_account_age_d": 10 + 3 / 24,
    # viewer x author
    "va_follows": True,
    "va_close_friend": True,
    "va_muted": False,
    "va_followed_back": False,  # 2 -> 1 only at 05:00
    "va_impressions": 2.0,
    "va_likes": 1.0,
    "va_comments": 0.0,
    "va_profile_taps": 1.0,
    "va_mutual_comments": 1.0,
    "va_interactions": 1.0,  # the Reels impression at 02:00 (like, tap); the Explore one only dwelled
    "va_mutual_interactions": 1.0,  # the author's Feed impression of the viewer's post (comment)
    "va_days_since_interaction": 1 / 24,  # the like at 02:00
    "va_topic_like_rate": 0.0,  # one earlier impression of topic 3, not liked
    "va_topic_share": 1 / 3,  # 1 of 2 earlier impressions, +1 smoothing
    "va_topic_dwell_rate": 1 / 6,  # the one earlier topic-3 impression was dwelled on
    "va_topic_engagement_rate": 0.0,  # ... but not liked, commented, shared or saved
    "va_topic_like_lift": 0.0,  # a topic like rate of 0 over an overall like rate of 1/7
    # viewer 1's two earlier impressions: topic 3 on Explore (dwell), topic 5 on Reels (like, tap)
    "va_topic_recommended_share": 1 / 3,  # 1 of 2 Explore/Reels impressions, +1 smoothing
    "va_topic_dwell_share": 1 / 2,  # the viewer's only dwell, +1 smoothing
    "va_topic_engaged_share": 0.0,  # the viewer's one engaged impression was on topic 5
    # overall dwell rate (1 + 1) / (2 + 2) = 1/2; on topic 3: (1 + 10 * 1/2) / (1 + 10)
    "va_topic_dwell_lift": (6 / 11) / (1 / 2),
    # overall engagement rate (1 + 1) / (2 + 2) = 1/2; on topic 3: (0 + 10 * 1/2) / (1 + 10)
    "va_topic_engagement_lift": (5 / 11) / (1 / 2),
    # author rates: impressions of author 2's posts before t: 00:10 (dwell), 00:20 (like), 02:00 (like, tap)
    "author_impressions": 3.0,
    "author_rate_like": 2 / 8,
    "author_rate_profile_tap": 1 / 8,
    # context
    "position": 0.0,
}


def test_every_family_matches_hand_computed_values():
    row = compute_features(_store(), _request()).row(0, named=True)
    for name, expected in EXPECTED.items():
        if expected is None:
            assert row[name] is None, name
        else:
            assert row[name] == pytest.approx(expected), (name, row[name], expected)


def test_interactions_count_impressions_with_a_like_comment_share_or_tap_once():
    con = _store()
    more = [
        (5, 1, 10, "feed", h(2.2), dict(share=True)),  # the viewer shares the author's post: counts
        (6, 1, 10, "feed", h(2.3), dict(save=True, dwell=True)),  # a save or a dwell is not an interaction
        (7, 2, 12, "feed", h(1.5), dict(like=True, comment=True)),  # the author likes and comments: counts once
        (8, 2, 12, "feed", h(1.6), dict(save=True)),
        (9, 1, 10, "feed", h(3), dict(like=True)),  # at t: not yet known
    ]
    for iid, user, post, surface, ts, labels in more:
        row = {"impression_id": iid, "user_id": user, "post_id": post, "surface": surface, "ts": ts, "position": 0}
        row.update({a: labels.get(a, False) for a in ACTIONS})
        cols = ", ".join(f'"{k}"' for k in row)
        con.execute(f"insert into impressions ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
    row = compute_features(con, _request()).row(0, named=True)
    assert (row["va_interactions"], row["va_mutual_interactions"], row["va_profile_taps"]) == (2.0, 2.0, 1.0)


def test_unobservable_labels_do_not_reset_rates():
    """An earlier impression whose label is null (watch_complete on a photo) counts as not observable."""
    con = _store()
    cols = ", ".join(f'"{a}"' for a in ACTIONS)
    for iid, post, ts, watched in [(20, 11, h(1.5), True), (21, 10, h(2.8), None)]:
        labels = [watched if a == "watch_complete" else False for a in ACTIONS]
        con.execute(
            f"insert into impressions (impression_id, user_id, post_id, surface, ts, position, device, {cols}) "
            f"values (?, 1, ?, 'feed', ?, 0, 'ios', {', '.join('?' * len(ACTIONS))})",
            [iid, post, ts, *labels],
        )
    row = compute_features(con, _request()).row(0, named=True)
    # one observable watch_complete label (true) among the viewer's four earlier impressions
    assert row["viewer_rate_watch_complete"] == pytest.approx(1 / 6)
    assert row["author_rate_watch_complete"] == pytest.approx(1 / 6)


def test_every_registered_feature_is_computed_with_its_family():
    frame = compute_features(_store(), _request())
    assert frame.columns == ["user_id", "post_id", "ts", "device", *feature_names()]
    assert {f.family for f in FEATURES.values()} == {"post", "author", "viewer", "viewer_author", "context"}
    assert all(dtype in (pl.Float64, pl.Boolean) for dtype in frame.select(feature_names()).dtypes)


def test_collapsed_old_history_gives_the_same_features():
    """A request 30 days on reads old events as one opening row per key: same values as in full."""
    late = _request(at=h(3) + timedelta(days=30))
    alone = compute_features(_store(), late)  # every event is older than the lookbacks
    with_early = compute_features(_store(), pl.concat([_request(at=h(0.1)), late])).tail(1)  # nothing collapsed
    assert_frame_equal(alone, with_early, check_exact=False, rel_tol=1e-12, abs_tol=0)
    row = alone.row(0, named=True)
    assert row["post_likes_total"] == 3 and row["post_likes_7d"] == 0
    assert row["va_days_since_interaction"] == pytest.approx(30.0)  # the like at 03:00 of day 0


def test_nothing_is_known_before_anything_happened():
    row = compute_features(_store(), _request(at=h(0) + timedelta(microseconds=1))).row(0, named=True)
    assert row["post_likes_total"] == 0 and row["post_impressions"] == 0 and row["va_likes"] == 0
    assert row["va_days_since_interaction"] is None and row["viewer_impressions_total"] == 0


def test_bad_requests_are_clear_errors():
    con = _store()
    with pytest.raises(FeedlabError, match="not in the store"):
        compute_features(con, _request(post=999))
    with pytest.raises(FeedlabError, match="before it was created"):
        compute_features(con, _request(post=11, at=h(0.5)))
    with pytest.raises(FeedlabError, match="unknown surface"):
        training_frame(con, "timeline")
    with pytest.raises(FeedlabError, match="unknown device"):
        scoring_frame(con, 1, [10], h(3), device="fax")


# --- point in time -------------------------------------------------------------------------------

_later_event = st.tuples(
    st.sampled_from(["like", "comment", "share", "save", "follow", "impression", "post"]),
    st.integers(1, 4),  # user
    st.sampled_from([10, 11, 12]),  # post
    st.integers(0, 3 * 86_400),  # seconds at or after t
    st.booleans(),
)


def _add_later_events(con, events, at) -> None:
    """Insert hypothesis' events (kind, user, post, seconds after ``at``, flag) into a store."""
    next_id = 100
    for kind, user, post, seconds, flag in events:
        ts = at + timedelta(seconds=seconds)
        next_id += 1
        if kind == "impression":
            labels = {a: flag for a in ACTIONS}
            cols = ", ".join(f'"{a}"' for a in labels)
            con.execute(
                f"insert into impressions (impression_id, user_id, post_id, surface, ts, position, device, {cols}) "
                f"values (?, ?, ?, 'feed', ?, 0, 'web', {', '.join('?' * len(labels))})",
                [next_id, user, post, ts, *labels.values()],
            )
        elif kind == "post":
            cols = ", ".join(CONTENT_FLAGS)
            con.execute(
                f"insert into posts (post_id, author_id, created_at, format, topic, has_location, is_reshare, {cols}) "
                f"values (?, ?, ?, 'photo', 3, false, false, {', '.join(['?'] * len(CONTENT_FLAGS))})",
                [next_id, user, ts, *([flag] * len(CONTENT_FLAGS))],
            )
        elif kind == "follow":
            target = 2 if user != 2 else 1
            con.execute("insert into engagements values (?, null, ?, 'follow', ?, ?)", [user, target, ts, flag])
            if not con.execute(
                "select count(*) from follows where follower_id = ? and followee_id = ?", [user, target]
            ).fetchall()[0][0]:
                con.execute("insert into follows values (?, ?, ?, ?, ?)", [user, target, ts, flag, not flag])
        else:
            con.execute("insert into engagements values (?, ?, null, ?, ?, ?)", [user, post, kind, ts, flag])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_later_event, min_size=1, max_size=12))
def test_events_at_or_after_t_never_change_features_at_t(events):
    at = h(3)
    requests = pl.concat([_request(u, p, at) for u, p in [(1, 10), (3, 11), (4, 12), (2, 10)]])
    con = _store()
    before = compute_features(con, requests)
    _add_later_events(con, events, at)
    after = compute_features(con, requests)
    assert after.equals(before, null_equal=True)


# --- train / serve -------------------------------------------------------------------------------


def test_scoring_path_equals_training_path(small_world):
    train = training_frame(small_world, "explore")
    sample = train.sample(n=25, seed=3)
    names = feature_names()
    for row in sample.iter_rows(named=True):
        [(device, position)] = small_world.execute(
            "select device, position from impressions where impression_id = ?", [row["impression_id"]]
        ).fetchall()
        served = scoring_frame(small_world, row["user_id"], [row["post_id"]], row["ts"], device=device, position=position)
        expected = pl.DataFrame([{n: row[n] for n in names}], schema={n: train.schema[n] for n in names})
        # equal up to the last bits of a float division (polars vectorises 1 row and 1M rows differently)
        assert_frame_equal(served.select(names), expected, check_exact=False, rel_tol=1e-12, abs_tol=0)


def test_training_frame_has_labels_and_truth(small_world):
    frame = training_frame(small_world, "reels")
    [(n,)] = small_world.execute("select count(*) from impressions where surface = 'reels'").fetchall()
    assert frame.height == n and frame["impression_id"].is_unique().all()
    assert frame["ts"].is_sorted()
    for action in ACTIONS:
        assert frame[action].dtype == pl.Boolean and frame[f"p_{action}"].dtype == pl.Float64
    # popularity really reaches the features: popular posts were liked more by the truth
    corr = frame.select(pl.corr("post_likes_total", "p_like", method="spearman")).item()
    assert corr > 0.05


def test_chunked_features_equal_one_pass(small_world, tmp_path):
    whole = training_frame(small_world, "feed")
    chunks = list(iter_training_frames(small_world, "feed", chunk=timedelta(hours=7)))
    assert len(chunks) > 5
    assert_frame_equal(pl.concat(chunks), whole, check_exact=False, rel_tol=1e-12, abs_tol=0)
    rows = write_training_frame(small_world, "feed", tmp_path / "feed.parquet", chunk=timedelta(hours=13), progress=False)
    assert rows == whole.height
    assert_frame_equal(pl.read_parquet(tmp_path / "feed.parquet"), whole, check_exact=False, rel_tol=1e-12, abs_tol=0)


def test_surfaces_featurized_together_equal_each_on_its_own(small_world, tmp_path):
    rows = write_training_frames(small_world, tmp_path / "all", chunk=timedelta(hours=11), progress=False)
    assert set(rows) == set(SURFACES)
    for surface in SURFACES:
        alone = training_frame(small_world, surface)
        assert rows[surface] == alone.height > 0
        assert_frame_equal(pl.read_parquet(tmp_path / "all" / f"{surface}.parquet"), alone, check_exact=False, rel_tol=1e-12, abs_tol=0)
    assert not list((tmp_path / "all").glob(".*partial"))
    with pytest.raises(FeedlabError, match="unknown surface 'tv'"):
        write_training_frames(small_world, tmp_path / "bad", surfaces=["feed", "tv"], progress=False)


def test_engagement_level_by_hand():
    """Labels minus the rate expected on their surface from earlier days, one logistic step from 0."""
    from toolkit.signals.registry import ENGAGEMENT_MIN_OBSERVATIONS, ENGAGEMENT_PRIOR_INFORMATION

    con = duckdb.connect()
    for stmt in schema_ddl():
        con.execute(stmt)
    con.executemany("insert into users values (?, ?, ?)", [(u, T0 - timedelta(days=5), False) for u in range(1, 22)])
    flags = {f: False for f in CONTENT_FLAGS}
    row = dict(post_id=10, author_id=21, created_at=T0 - timedelta(days=2), format="photo", duration_s=None, topic=1, audio_id=None, has_location=False, is_reshare=False, **flags)
    con.execute(f"insert into posts ({', '.join(row)}) values ({', '.join('?' * len(row))})", list(row.values()))
    ids = iter(range(1, 1000))

    def show(user, ts, surface, like):
        labels = {a: None for a in ACTIONS} | {"like": like}  # only likes are observable here
        r = {"impression_id": next(ids), "user_id": user, "post_id": 10, "surface": surface, "ts": ts, "position": 3, "device": "ios", **labels}
        cols = ", ".join(f'"{k}"' for k in r)
        con.execute(f"insert into impressions ({cols}) values ({', '.join('?' * len(r))})", list(r.values()))

    # the day before: 20 feed labels, five likes (users 2-6); viewer 1 does not like, but nothing
    # was expected on that first day, so that label tells nothing. Explore has one label too few.
    for u in range(1, 21):
        show(u, h(-12 + u / 60), "feed", 2 <= u <= 6)
    for u in range(1, ENGAGEMENT_MIN_OBSERVATIONS):
        show(u, h(-11 + u / 60), "explore", True)
    # today: viewer 1 likes on feed (expected 5 / 20) and on explore (no rate: not counted)
    show(1, h(1), "feed", True)
    show(1, h(1.5), "explore", True)
    show(1, h(2), "feed", True)  # at the request's time: not yet known
    frame = compute_features(con, _request(user=1, post=10, at=h(2)))
    g = 5 / 20
    assert frame["viewer_engagement_level"][0] == pytest.approx((1 - g) / (g * (1 - g) + ENGAGEMENT_PRIOR_INFORMATION))
    # a viewer with labels only from before any rate was known stays at 0, an average viewer
    assert compute_features(con, _request(user=3, post=10, at=h(2)))["viewer_engagement_level"][0] == 0.0
    # the same from the training path, which reads the history in one pass for many requests
    train = training_frame(con, "feed").filter(pl.col("ts") == h(2))
    assert train["viewer_engagement_level"][0] == frame["viewer_engagement_level"][0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_later_event, min_size=1, max_size=12))
def test_events_at_or_after_t_never_change_the_engagement_level(events):
    """As above, for a request whose viewers have labels on two days, so that rates are expected."""
    con = _store()
    cols = ", ".join(f'"{a}"' for a in ACTIONS)
    for iid, user, post, ts in [(50, 1, 10, h(25)), (51, 3, 10, h(25.5)), (52, 4, 12, h(26)), (53, 2, 11, h(26.5))]:
        con.execute(
            f"insert into impressions (impression_id, user_id, post_id, surface, ts, position, device, {cols}) "
            f"values (?, ?, ?, 'feed', ?, 0, 'ios', {', '.join('?' * len(ACTIONS))})",
            [iid, user, post, ts, *(iid % 2 == 0 if a in ("like", "dwell") else None for a in ACTIONS)],
        )
    for iid in range(60, 85):  # enough feed labels on day 0 for day 1 to expect a like rate
        con.execute(
            f"insert into impressions (impression_id, user_id, post_id, surface, ts, position, device, {cols}) "
            f"values (?, 4, 11, 'feed', ?, 0, 'ios', {', '.join('?' * len(ACTIONS))})",
            [iid, h(2 + iid / 100), *(iid % 3 == 0 if a in ("like", "dwell") else None for a in ACTIONS)],
        )
    at = h(27)
    requests = pl.concat([_request(u, p, at) for u, p in [(1, 10), (3, 11), (4, 12), (2, 10)]])
    before = compute_features(con, requests)["viewer_engagement_level"]
    assert (before != 0).sum() >= 3  # the level is at work here
    _add_later_events(con, events, at)
    assert compute_features(con, requests)["viewer_engagement_level"].equals(before)


def test_docs_list_every_feature():
    from pathlib import Path

    from toolkit.signals.registry import features_markdown

    text = (Path(__file__).resolve().parents[1] / "docs" / "signals.md").read_text()
    assert features_markdown() in text, "regenerate the tables of docs/signals.md with features_markdown()"
    assert all(f"`{name}`" in text for name in FEATURES)


def test_progress_bar_counts_the_signal_families(capsys):
    compute_features(_store(), _request(), progress="features feed")
    err = capsys.readouterr().err
    assert "features feed" in err and "5/5" in err
    compute_features(_store(), _request())
    assert capsys.readouterr().err == ""



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3000)), min_size=10, max_size=60),
    requests=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3000)), min_size=1, max_size=12),
    windows=st.lists(st.sampled_from([1, 60, 150, 600, 1440, 2900]), max_size=3, unique=True),
)
@example(events=[(0, 0), (0, 100)], requests=[(0, 200)], windows=[150])
def test_collapsed_event_gaps_keep_every_total_and_window(events, requests, windows):
    """Events summed between lookup times give the totals, windows and last-event times of the events one by one."""
    from toolkit.signals.features import EventQuery, _running_totals

    base = datetime(2026, 1, 1)
    con = duckdb.connect()
    con.execute("create table ev (k integer, ts timestamp)")
    con.executemany("insert into ev values (?, ?)", [(k, base + timedelta(minutes=m)) for k, m in events])
    query = EventQuery("select k, ts, 1 as n from ev where ts < ?", ("k",), ("n",), windows_s=tuple(60 * w for w in windows))
    times = [base + timedelta(minutes=m) for _, m in requests]
    sql, params = query.fetch(min(times), max(times))
    fetched = con.sql(sql, params=params).pl()
    totals = _running_totals(fetched, by=["k"], values=["n"]).collect().sort("ts").rows(named=True)
    every = [(k, base + timedelta(minutes=m)) for k, m in events]
    for (k, _), t in zip(requests, times):
        for lookup in [t, *(t - timedelta(minutes=w) for w in windows)]:
            seen = [ts for key, ts in every if key == k and ts < lookup]
            rows = [r for r in totals if r["k"] == k and r["ts"] < lookup]
            assert (rows[-1]["n"] if rows else 0) == len(seen)
            if lookup == t:
                assert (rows[-1]["_event_ts"] if rows else None) == (max(seen) if seen else None)
    # the point of it: no more rows than events, and fewer when there are gaps to sum
    assert fetched.height <= len(set(every))
