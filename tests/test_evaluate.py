"""Offline evaluation: metrics against hand-computed cases, logged sessions, policy scoring."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import FeedlabError
from toolkit.rank.evaluate import (
    _kendall_distinct,
    attention,
    biggest_movers,
    compare_orders,
    distinct_authors_at_k,
    expected_actions,
    gini,
    kendall_tau,
    logged_sessions,
    ndcg_at_k,
    policy_metrics,
    surface_attention,
    top_k_overlap,
)
from toolkit.store.schema import ACTIONS, schema_ddl

L2_3 = math.log2(3)


# --------------------------------------------------------------------------------------------
# NDCG: linear gain (negatives clipped to 0), discount log2(i + 2) for 0-based position i
# --------------------------------------------------------------------------------------------


def test_ndcg_textbook_case():
    # gains 3, 2, 3, 0, 1, 2 at positions 0..5; ideal order 3, 3, 2, 2, 1, 0
    dcg = 3 + 2 / L2_3 + 3 / 2 + 0 / math.log2(5) + 1 / math.log2(6) + 2 / math.log2(7)
    idcg = 3 + 3 / L2_3 + 2 / 2 + 2 / math.log2(5) + 1 / math.log2(6) + 0
    assert ndcg_at_k([3, 2, 3, 0, 1, 2], k=6) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([3, 2, 3, 0, 1, 2], k=6) == pytest.approx(0.9608, abs=1e-4)
    # k = 2: only the first two positions count
    assert ndcg_at_k([3, 2, 3, 0, 1, 2], k=2) == pytest.approx((3 + 2 / L2_3) / (3 + 3 / L2_3))


def test_ndcg_small_cases():
    assert ndcg_at_k([0.0, 1.0]) == pytest.approx(1 / L2_3)
    assert ndcg_at_k([1.0, 2.0], k=1) == pytest.approx(0.5)
    assert ndcg_at_k([5.0, 1.0, 0.0]) == 1.0


def test_ndcg_ties():
    # equal gains: either order is ideal
    assert ndcg_at_k([2, 2, 0]) == pytest.approx(1.0)
    assert ndcg_at_k([2, 0, 2]) == pytest.approx((2 + 2 / 2) / (2 + 2 / L2_3))
    assert ndcg_at_k([1, 1, 1, 1], k=2) == pytest.approx(1.0)


def test_ndcg_k_larger_than_list():
    assert ndcg_at_k([1, 0], k=100) == 1.0
    assert ndcg_at_k([0, 1], k=100) == pytest.approx(1 / L2_3)


def test_ndcg_undefined_is_nan():
    assert math.isnan(ndcg_at_k([0, 0, 0]))
    assert math.isnan(ndcg_at_k([]))
    assert math.isnan(ndcg_at_k([-1.0, -2.0]))  # all clipped to 0


def test_ndcg_negative_gains_clipped_to_zero():
    assert ndcg_at_k([-1.0, 1.0]) == pytest.approx(1 / L2_3)
    assert ndcg_at_k([1.0, -5.0, 2.0]) == pytest.approx((1 + 2 / 2) / (2 + 1 / L2_3))


def test_ndcg_with_ideal_gains():
    # the order left out an item of gain 2
    assert ndcg_at_k([1.0], [2.0, 1.0]) == pytest.approx(1 / (2 + 1 / L2_3))
    assert ndcg_at_k([1.0, 2.0], [2.0, 1.0]) == pytest.approx((1 + 2 / L2_3) / (2 + 1 / L2_3))
    assert math.isnan(ndcg_at_k([1.0], [0.0]))


def test_ndcg_bad_input():
    with pytest.raises(FeedlabError):
        ndcg_at_k([1, 2], k=0)
    with pytest.raises(FeedlabError):
        ndcg_at_k([1, float("nan")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12), st.integers(1, 15))
def test_ndcg_bounded_and_one_for_the_ideal_order(gains, k):
    value = ndcg_at_k(gains, k=k)
    if np.clip(gains, 0, None)[np.argsort(gains)[::-1][:k]].sum() > 0:
        assert -1e-12 <= value <= 1 + 1e-12
        assert ndcg_at_k(sorted(gains, reverse=True), k=k) == pytest.approx(1.0)
    else:
        assert math.isnan(value)


# --------------------------------------------------------------------------------------------
# Attention and expected actions
# --------------------------------------------------------------------------------------------


def test_attention_values():
    np.testing.assert_allclose(attention([0, 1, 3], tau=1.0, power=1.0), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(attention([0, 6, 18], tau=6.0, power=0.8), [1.0, 2**-0.8, 4**-0.8])
    np.testing.assert_allclose(attention([0, 5], tau=2.0, power=0.0), [1.0, 1.0])


def test_attention_bad_input():
    with pytest.raises(FeedlabError):
        attention([0], tau=0.0, power=1.0)
    with pytest.raises(FeedlabError):
        attention([0], tau=1.0, power=-1.0)
    with pytest.raises(FeedlabError):
        attention([-1], tau=1.0, power=1.0)


def test_surface_attention_matches_simulator():
    from toolkit.synth.truth import examination

    for surface in ("feed", "stories", "explore", "reels"):
        pos = np.arange(30.0)
        np.testing.assert_allclose(attention(pos, **surface_attention(surface)), examination(pos, surface))
    with pytest.raises(FeedlabError):
        surface_attention("home")


def test_expected_actions_by_hand():
    probs = np.array([[0.5, 0.1], [0.2, 0.4], [0.6, 0.3]])
    # attention at tau=1, power=1: 1, 1/2, 1/3
    np.testing.assert_allclose(
        expected_actions(probs, tau=1.0, power=1.0), [0.5 + 0.1 + 0.2, 0.1 + 0.2 + 0.1]
    )
    np.testing.assert_allclose(expected_actions(probs, tau=1.0, power=1.0, k=2), [0.6, 0.3])
    np.testing.assert_allclose(expected_actions(probs, tau=1.0, power=1.0, k=99), [0.8, 0.4])
    # NaN (impossible action) counts as 0
    np.testing.assert_allclose(expected_actions(np.array([[np.nan], [0.4]]), tau=1.0, power=1.0), [0.2])
    with pytest.raises(FeedlabError):
        expected_actions(np.array([0.1, 0.2]), tau=1.0, power=1.0)


# --------------------------------------------------------------------------------------------
# Gini, distinct authors, Kendall tau, overlap, movers
# --------------------------------------------------------------------------------------------


def test_gini_cases():
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 1]) == pytest.approx(0.75)
    # sum over ordered pairs of |xi - xj| = 8; 2 * n^2 * mean = 2 * 9 * 2 = 36
    assert gini([1, 2, 3]) == pytest.approx(8 / 36)
    assert gini([3, 1, 2]) == pytest.approx(8 / 36)
    assert gini([5]) == 0.0
    assert math.isnan(gini([]))
    assert math.isnan(gini([0, 0]))
    with pytest.raises(FeedlabError):
        gini([1, -1])


def test_distinct_authors_at_k():
    assert distinct_authors_at_k([1, 1, 2, 3, 3], k=3) == 2
    assert distinct_authors_at_k([1, 1, 2, 3, 3], k=10) == 3
    assert distinct_authors_at_k([], k=10) == 0


def test_kendall_tau_cases():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # 4 items, one swapped pair: (5 concordant - 1 discordant) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # only common items count: 1 and 3 in the same order
    assert kendall_tau([1, 2, 3], [1, 9, 3]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([1, 2], [2, 3]))
    assert math.isnan(kendall_tau([], []))
    with pytest.raises(FeedlabError):
        kendall_tau([1, 1], [1, 2])


def test_fast_kendall_equals_scipy():
    rng = np.random.default_rng(0)
    for _ in range(100):
        a = rng.permutation(30)[: rng.integers(0, 20)].tolist()
        b = rng.permutation(30)[: rng.integers(0, 20)].tolist()
        x, y = kendall_tau(a, b), _kendall_distinct(a, b)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


def test_top_k_overlap_cases():
    assert top_k_overlap([1, 2, 3, 4], [2, 1, 4, 3], k=2) == 1.0
    assert top_k_overlap([1, 2, 3, 4], [3, 2, 1, 4], k=2) == 0.5
    assert top_k_overlap([1, 2, 3, 4], [3, 4, 1, 2], k=2) == 0.0
    assert top_k_overlap([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], k=3) == pytest.approx(1 / 3)
    # lists shorter than k: divided by the longer list's length
    assert top_k_overlap([1, 2, 3], [1, 2, 3], k=10) == 1.0
    assert top_k_overlap([1, 2], [1, 2, 3, 4], k=10) == 0.5
    assert math.isnan(top_k_overlap([], [], k=5))


def test_biggest_movers_by_hand():
    movers = biggest_movers([10, 20, 30, 40, 50], [40, 20, 10, 30, 60], n=5)
    assert movers.columns == ["post_id", "position_a", "position_b", "moved"]
    # 40: 3 -> 0 (+3); 10: 0 -> 2 (-2); 30: 2 -> 3 (-1); 20 stays; 50 and 60 only in one list
    assert movers.rows() == [(40, 3, 0, 3), (10, 0, 2, -2), (30, 2, 3, -1)]
    assert biggest_movers([10, 20, 30, 40, 50], [40, 20, 10, 30, 60], n=1).rows() == [(40, 3, 0, 3)]
    # ties in |moved| by post_id
    assert biggest_movers([1, 2, 3], [3, 2, 1]).rows() == [(1, 0, 2, -2), (3, 2, 0, 2)]
    assert biggest_movers([1, 2, 3], [1, 2, 3]).height == 0


# --------------------------------------------------------------------------------------------
# Logged sessions on the small simulated world
# --------------------------------------------------------------------------------------------


def test_logged_sessions_are_viewer_hours(small_world):
    s = logged_sessions(small_world, "feed")
    assert s.columns[:7] == ["session_id", "impression_id", "user_id", "post_id", "author_id", "ts", "position"]
    assert [c for c in s.columns if c.startswith("q_")] == [f"q_{a}" for a in ACTIONS]
    assert s["session_id"].dtype == pl.Int64
    per = s.group_by("session_id").agg(
        pl.col("user_id").n_unique().alias("users"), pl.col("ts").dt.truncate("1h").n_unique().alias("hours")
    )
    assert per["users"].max() == 1 and per["hours"].max() == 1
    expected = small_world.execute(
        "select count(distinct (user_id, date_trunc('hour', ts))) from impressions where surface = 'feed'"
    ).fetchall()[0][0]
    assert s["session_id"].n_unique() == expected
    assert sorted(s["session_id"].unique().to_list()) == list(range(expected))
    # a post repeated within a viewer-hour is kept once
    assert not s.select(pl.struct("session_id", "post_id").is_duplicated().any()).item()
    distinct_posts = small_world.execute(
        "select count(distinct (user_id, date_trunc('hour', ts), post_id)) from impressions where surface = 'feed'"
    ).fetchall()[0][0]
    assert s.height == distinct_posts
    # author_id comes from posts
    posts = small_world.sql("select post_id, author_id as a2 from posts").pl()
    assert s.join(posts, on="post_id").select((pl.col("author_id") == pl.col("a2")).all()).item()


def test_logged_sessions_q_is_position_free_truth(small_world):
    s = logged_sessions(small_world, "reels")
    truth = small_world.sql(
        "select i.impression_id, s.examination, " + ", ".join(f"i.p_{a}" for a in ACTIONS) + " "
        "from impressions i join sim_impression_inputs s using (impression_id) where i.surface = 'reels'"
    ).pl()
    joined = s.join(truth, on="impression_id")
    assert joined.height == s.height
    for a in ACTIONS:
        q, p = joined[f"q_{a}"], joined[f"p_{a}"]
        assert (q.is_null() == p.is_null()).all()
        ok = q.drop_nulls()
        if ok.len():
            assert ok.min() >= 0.0 and ok.max() <= 1.0
        np.testing.assert_allclose(
            q.fill_null(-1).to_numpy(), (p / joined["examination"]).fill_null(-1).to_numpy(), rtol=1e-12
        )
    # position-free: the logged probability at a low position is much smaller than q there
    deep = joined.filter(pl.col("position") >= 10)
    assert (deep["q_like"] > deep["p_like"]).all()


def test_logged_sessions_sampling_is_seeded(small_world):
    full = logged_sessions(small_world, "feed")
    a = logged_sessions(small_world, "feed", viewers=15, seed=3)
    b = logged_sessions(small_world, "feed", viewers=15, seed=3)
    c = logged_sessions(small_world, "feed", viewers=15, seed=4)
    assert a.equals(b)
    assert a["user_id"].n_unique() == 15
    assert set(a["user_id"].unique()) != set(c["user_id"].unique())
    # a session keeps its id under sampling
    same = a.join(full, on="impression_id", suffix="_full")
    assert same.height == a.height
    assert (same["session_id"] == same["session_id_full"]).all()
    # more viewers than there are: everyone
    assert logged_sessions(small_world, "feed", viewers=10**6).equals(full)


def test_logged_sessions_time_window(small_world):
    lo, hi = small_world.execute("select min(ts), max(ts) from impressions where surface = 'stories'").fetchall()[0]
    start = lo + (hi - lo) / 3
    end = lo + 2 * (hi - lo) / 3
    s = logged_sessions(small_world, "stories", start=start, end=end)
    assert s.height > 0
    assert s["ts"].min() >= start and s["ts"].max() < end


def test_logged_sessions_errors(small_world):
    with pytest.raises(FeedlabError, match="unknown surface"):
        logged_sessions(small_world, "home")
    with pytest.raises(FeedlabError, match="viewers"):
        logged_sessions(small_world, "feed", viewers=0)


def test_logged_sessions_real_store_has_null_q():
    con = duckdb.connect()
    for stmt in schema_ddl():
        con.execute(stmt).fetchall()
    con.execute("insert into users values (1, '2026-01-01', null), (2, '2026-01-01', null)").fetchall()
    flags = ", ".join(["false"] * 9)
    con.execute(
        "insert into posts (post_id, author_id, created_at, format, has_location, is_reshare, misinformation, "
        "guideline_violation, sensitive, political, low_resolution, watermarked, muted_audio, has_borders, "
        f"mostly_text) values (5, 2, '2026-01-01', 'photo', false, false, {flags}), "
        f"(6, 2, '2026-01-01', 'photo', false, false, {flags})"
    ).fetchall()
    # a p_ column filled in, but no sim_impression_inputs: still null (no examination to divide by)
    con.execute(
        "insert into impressions (impression_id, user_id, post_id, surface, ts, position, p_like) values "
        "(1, 1, 5, 'feed', '2026-01-02 10:05', 0, 0.3), (2, 1, 6, 'feed', '2026-01-02 10:06', 1, 0.2), "
        "(3, 1, 6, 'feed', '2026-01-02 11:00', 0, 0.2)"
    ).fetchall()
    s = logged_sessions(con, "feed")
    assert s.select("session_id", "post_id", "position").rows() == [(0, 5, 0), (0, 6, 1), (1, 6, 0)]
    assert all(s[f"q_{a}"].null_count() == s.height for a in ACTIONS)
    con.close()


# --------------------------------------------------------------------------------------------
# policy_metrics on a hand-made frame
# --------------------------------------------------------------------------------------------

WEIGHTS = {"like": 1.0, "report": -10.0}


def _hand_frame() -> pl.DataFrame:
    # oracle value = q_like - 10 * q_report
    return pl.DataFrame(
        {
            "session_id": [1, 1, 1, 1, 2, 2],
            "post_id": [10, 11, 12, 13, 20, 21],
            "author_id": [1, 1, 1, 3, 2, 3],
            # session 2 has gaps (3, 7): only the order counts, it is ranks 0, 1
            "position": [0, 1, None, 2, 3, 7],
            "q_like": [0.2, 0.6, 0.5, 0.1, 0.3, 0.0],
            "q_report": [0.0, 0.0, 0.01, 0.02, 0.0, 0.0],
            "flagged": [False, None, True, True, False, True],
        }
    )  # values: .2, .6, .4 (removed), -.1 | .3, 0


def test_policy_metrics_by_hand():
    m = policy_metrics(_hand_frame(), weights=WEIGHTS, tau=1.0, power=1.0, k=2)
    # attention at ranks 0, 1, 2 (tau=1, power=1): 1, 1/2, 1/3
    ndcg_1 = (0.2 + 0.6 / L2_3) / (0.6 + 0.4 / L2_3)  # ideal includes the removed item (0.4)
    ndcg_2 = 0.3 / 0.3
    assert m["ndcg_at_k"] == pytest.approx((ndcg_1 + ndcg_2) / 2)
    assert m["ndcg_sessions"] == 2
    like_1, like_2 = 0.2 + 0.6 / 2 + 0.1 / 3, 0.3 + 0.0 / 2
    report_1, report_2 = 0.02 / 3, 0.0
    assert m["expected_actions_per_session"] == pytest.approx(
        {"like": (like_1 + like_2) / 2, "report": (report_1 + report_2) / 2}
    )
    value_1, value_2 = 0.2 + 0.6 / 2 - 0.1 / 3, 0.3
    assert m["expected_value_per_session"] == pytest.approx((value_1 + value_2) / 2)
    # top 2: session 1 authors {1}, session 2 authors {2, 3}
    assert m["distinct_authors_at_k"] == pytest.approx(1.5)
    # exposure: author 1 = 1 + 1/2, author 2 = 1, author 3 = 1/3 + 1/2; sorted 5/6, 1, 3/2
    # sum over ordered pairs |xi - xj| = 2 * (1/6 + 2/3 + 1/2) = 8/3; 2 n^2 mean = 2 * 9 * 10/9 = 20
    assert m["author_exposure_gini"] == pytest.approx((8 / 3) / 20)
    assert math.isnan(m["small_creator_exposure_share"])
    # top-2 slots: 10 (no), 11 (null = no), 20 (no), 21 (yes); 12 removed and 13 at rank 2 do not count
    assert m["flagged_share_at_k"] == pytest.approx(0.25)
    assert m["sessions"] == 2


def test_policy_metrics_small_creators():
    followers = pl.DataFrame({"author_id": [1, 2, 3, 99], "followers": [100, 5, 50, 0]})
    total = 1.5 + 1.0 + 5 / 6
    # default threshold: median followers of the shown authors (100, 5, 50) = 50; < 50 -> author 2
    m = policy_metrics(_hand_frame(), weights=WEIGHTS, tau=1.0, power=1.0, k=2, followers=followers)
    assert m["small_creator_threshold"] == 50.0
    assert m["small_creator_exposure_share"] == pytest.approx(1.0 / total)
    m = policy_metrics(
        _hand_frame(), weights=WEIGHTS, tau=1.0, power=1.0, k=2, followers=followers, small_creator_followers=60
    )
    assert m["small_creator_exposure_share"] == pytest.approx((1.0 + 5 / 6) / total)
    # an author missing from followers has 0: median(100, 5, 0) = 5, < 5 -> author 3
    m = policy_metrics(_hand_frame(), weights=WEIGHTS, tau=1.0, power=1.0, k=2, followers=followers.filter(pl.col("author_id") != 3))
    assert m["small_creator_threshold"] == 5.0
    assert m["small_creator_exposure_share"] == pytest.approx((5 / 6) / total)
    with pytest.raises(FeedlabError, match="followers"):
        policy_metrics(_hand_frame(), weights=WEIGHTS, tau=1.0, power=1.0, small_creator_followers=10)


def test_policy_metrics_edge_cases():
    frame = _hand_frame()
    # a session with nothing worth showing is left out of the NDCG mean, not of the others
    extra = pl.DataFrame(
        {"session_id": [3], "post_id": [30], "author_id": [4], "position": [0], "q_like": [0.0], "q_report": [0.1], "flagged": [None]},
        schema=frame.schema,
    )
    base = policy_metrics(frame, weights=WEIGHTS, tau=1.0, power=1.0, k=2)
    more = policy_metrics(pl.concat([frame, extra]), weights=WEIGHTS, tau=1.0, power=1.0, k=2)
    assert more["ndcg_at_k"] == pytest.approx(base["ndcg_at_k"])
    assert more["ndcg_sessions"] == 2 and more["sessions"] == 3
    assert more["expected_value_per_session"] == pytest.approx((2 * base["expected_value_per_session"] - 1.0) / 3)
    # row order does not matter
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    again = policy_metrics(shuffled, weights=WEIGHTS, tau=1.0, power=1.0, k=2)
    assert again["ndcg_at_k"] == pytest.approx(base["ndcg_at_k"])
    assert again["author_exposure_gini"] == pytest.approx(base["author_exposure_gini"])
    # no flagged column -> NaN
    assert math.isnan(policy_metrics(frame.drop("flagged"), weights=WEIGHTS, tau=1.0, power=1.0)["flagged_share_at_k"])
    with pytest.raises(FeedlabError, match="q_save"):
        policy_metrics(frame, weights={"save": 1.0}, tau=1.0, power=1.0)
    with pytest.raises(FeedlabError, match="more than once"):
        policy_metrics(pl.concat([frame, frame]), weights=WEIGHTS, tau=1.0, power=1.0)


def test_policy_metrics_agree_with_pure_functions(small_world):
    s = logged_sessions(small_world, "explore", viewers=25, seed=0)
    weights = {"like": 3.0, "save": 4.0, "not_interested": -20.0}
    tau_power = surface_attention("explore")
    m = policy_metrics(s, weights=weights, k=5, **tau_power)
    ndcgs, value, likes = [], [], []
    for part in s.with_row_index("_row").sort("session_id", "position", "_row").partition_by("session_id", maintain_order=True):
        v = sum(w * part[f"q_{a}"].fill_null(0.0) for a, w in weights.items()).to_numpy()
        ndcgs.append(ndcg_at_k(v, v, k=5))
        q = part.select([f"q_{a}" for a in ACTIONS]).to_numpy().astype(float)
        e = expected_actions(q, **tau_power)
        likes.append(e[ACTIONS.index("like")])
        value.append(sum(w * e[ACTIONS.index(a)] for a, w in weights.items()))
    assert m["sessions"] == len(ndcgs)
    assert m["ndcg_at_k"] == pytest.approx(np.nanmean(ndcgs))
    assert m["expected_actions_per_session"]["like"] == pytest.approx(np.mean(likes))
    assert m["expected_value_per_session"] == pytest.approx(np.mean(value))
    assert 0.0 < m["ndcg_at_k"] <= 1.0


# --------------------------------------------------------------------------------------------
# compare_orders
# --------------------------------------------------------------------------------------------


def _orders(rows: dict[int, list[int]], removed: dict[int, list[int]] | None = None) -> pl.DataFrame:
    out = []
    for sid, posts in rows.items():
        out += [(sid, p, i) for i, p in enumerate(posts)]
        out += [(sid, p, None) for p in (removed or {}).get(sid, [])]
    return pl.DataFrame(out, schema={"session_id": pl.Int64, "post_id": pl.Int64, "position": pl.Int64}, orient="row")


def test_compare_orders_identity():
    a = _orders({1: [1, 2, 3], 2: list(range(10, 25)), 3: [7]})
    c = compare_orders(a, a, k=10)
    assert c["kendall_tau"] == 1.0
    assert c["top_k_overlap"] == 1.0
    assert c["biggest_movers"] == []
    assert c["sessions"] == 3


def test_compare_orders_by_hand():
    a = _orders({1: [1, 2, 3], 2: [4, 5, 6, 7, 8], 3: [9, 10]})
    b = _orders({1: [3, 2, 1], 2: [4, 5, 7, 6]}, removed={2: [8]})
    c = compare_orders(a, b, k=2, n_movers=3)
    # session 1 reversed: tau -1, top-2 {1,2} vs {3,2}: 1/2
    # session 2 over common 4,5,6,7 with 6,7 swapped: (5 - 1) / 6; top-2 equal: 1
    assert c["kendall_tau"] == pytest.approx((-1 + 4 / 6) / 2)
    assert c["top_k_overlap"] == pytest.approx((0.5 + 1.0) / 2)
    assert c["sessions"] == 2  # session 3 is only in a
    assert c["biggest_movers"] == [
        {"session_id": 1, "post_id": 1, "position_a": 0, "position_b": 2, "moved": -2},
        {"session_id": 1, "post_id": 3, "position_a": 2, "position_b": 0, "moved": 2},
        {"session_id": 2, "post_id": 6, "position_a": 2, "position_b": 3, "moved": -1},
    ]


def test_compare_orders_on_logged_sessions(small_world):
    s = logged_sessions(small_world, "stories", viewers=20, seed=1)
    c = compare_orders(s, s)
    assert c["kendall_tau"] == 1.0 and c["top_k_overlap"] == 1.0 and c["biggest_movers"] == []
    by_like = s.with_columns(
        pl.col("q_like").fill_null(0.0).rank("ordinal", descending=True).over("session_id").alias("position")
    )
    c = compare_orders(s, by_like, k=5, n_movers=4)
    assert -1.0 <= c["kendall_tau"] < 1.0
    assert len(c["biggest_movers"]) == 4
    moved = [abs(m["moved"]) for m in c["biggest_movers"]]
    assert moved == sorted(moved, reverse=True)
