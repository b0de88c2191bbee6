"""population_metrics against hand-computed values on a tiny cache and against the audited ranking;
RankingCache.with_rules against caches built with those rules."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.predict import load_models
from toolkit.rank import RankingCache
from toolkit.rank.config import resolve_rules, surface_config
from toolkit.rank.evaluate import attention
from toolkit.rank.population import author_followers, compare_metrics, flatten_metrics, population_metrics
from toolkit.rank.rules import rule_factors
from toolkit.store import connect

NO_DIVERSITY = resolve_rules("explore", {"author_diversity": False})


def tiny_cache(rules=NO_DIVERSITY, *, permute: bool = False) -> RankingCache:
    """Two explore viewers, two actions (like, comment).

    Viewer 1: posts 10, 11, 12 by authors 1, 1, 2; p_like 0.5, 0.3, 0.1; p_comment 0, 0.1, 0.4;
    post 11 demoted x0.5. Viewer 2: posts 20, 21 by authors 3, 4; post 21 removed.
    """
    post_ids = np.array([[10, 11, 12], [20, 21, -1]], dtype=np.int64)
    author_ids = np.array([[1, 1, 2], [3, 4, -1]], dtype=np.int64)
    author_slot = np.array([[0, 0, 1], [0, 1, 0]], dtype=np.int32)
    probs = np.array(
        [[[0.5, 0.0], [0.3, 0.1], [0.1, 0.4]], [[0.2, 0.3], [0.6, 0.0], [0.0, 0.0]]], dtype=np.float32
    )
    factor = np.array([[1.0, 0.5, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    if permute:  # columns out of post id order: the metrics must not care (no ties here)
        cols = np.array([2, 0, 1])
        post_ids, author_ids, author_slot, probs, factor = (a[:, cols] for a in (post_ids, author_ids, author_slot, probs, factor))
    return RankingCache(
        surface="explore", at=datetime(2026, 1, 10), actions=["like", "comment"], config=surface_config("explore"),
        rules=rules, items=pl.DataFrame(), user_ids=np.array([1, 2], dtype=np.int64), post_ids=post_ids,
        author_ids=author_ids, author_slot=author_slot, probs=probs, factor=factor, _row_of={1: 0, 2: 1},
    )  # fmt: skip


LIKE_ONLY = {"like": 1.0, "comment": 0.0}
FOLLOWERS = pl.DataFrame({"author_id": [1, 2, 3, 4], "followers": [100, 5, 50, 1]})


def _att(i: int) -> float:
    return 1.0 / (1.0 + i / 10.0) ** 0.8  # explore: tau 10, power 0.8


def test_population_metrics_by_hand():
    cache = tiny_cache()
    # by like alone: viewer 1 sees 10 (0.5), 11 (0.3 x 0.5 = 0.15), 12 (0.1); viewer 2 sees 20 only (21 removed)
    assert cache.top_posts(LIKE_ONLY, k=3).tolist() == [[10, 11, 12], [20, -1, -1]]
    m = population_metrics(cache, LIKE_ONLY, k=2, session=3, followers=FOLLOWERS)
    a1, a2 = _att(1), _att(2)
    like = ((0.5 + a1 * 0.3 + a2 * 0.1) + 0.2) / 2
    comment = ((0.0 + a1 * 0.1 + a2 * 0.4) + 0.3) / 2
    assert m["expected_actions_per_session"]["like"] == pytest.approx(like, rel=1e-6)
    assert m["expected_actions_per_session"]["comment"] == pytest.approx(comment, rel=1e-6)
    assert m["expected_value_per_session"] == pytest.approx(like, rel=1e-6)  # 1 x like + 0 x comment
    # top 2: viewer 1 authors (1, 1) -> 1; viewer 2 author 3 -> 1
    assert m["distinct_authors_at_k"] == 1.0
    # filled top-2 slots: 10, 11 (demoted), 20 -> 1 of 3
    assert m["demoted_share_at_k"] == pytest.approx(1 / 3)
    # median followers of the cache's authors (100, 5, 50, 1) is 27.5: authors 2 and 4 are small;
    # only author 2 is shown, at viewer 1's third slot
    assert m["small_creator_threshold"] == 27.5
    assert m["small_creator_exposure_share"] == pytest.approx(a2 / (1 + a1 + a2 + 1), rel=1e-6)
    assert (m["viewers"], m["empty_viewers"]) == (2, 0)

    # a threshold given, and followers as a dict: author 4 (1 follower) is never shown, so at 2 none is small
    same = population_metrics(cache, LIKE_ONLY, k=2, session=3, followers={1: 100, 2: 5, 3: 50, 4: 1}, small_creator_followers=2)
    assert same["small_creator_exposure_share"] == 0.0 and same["small_creator_threshold"] == 2.0
    # the session cut: only the first slot counts
    first = population_metrics(cache, LIKE_ONLY, k=1, session=1)
    assert first["expected_actions_per_session"]["like"] == pytest.approx((0.5 + 0.2) / 2)
    assert math.isnan(first["small_creator_exposure_share"])  # no followers given


def test_population_metrics_follow_the_weights_and_the_column_order():
    by_comment = population_metrics(tiny_cache(), {"like": 0.0, "comment": 1.0}, k=2, session=3)
    # viewer 1 by comment: 12 (0.4), 11 (0.1 x 0.5 = 0.05), 10 (0): authors 2, 1 in the top 2
    assert by_comment["distinct_authors_at_k"] == pytest.approx((2 + 1) / 2)
    assert by_comment["demoted_share_at_k"] == pytest.approx(1 / 3)
    assert by_comment["expected_actions_per_session"]["comment"] == pytest.approx(((0.4 + _att(1) * 0.1) + 0.3) / 2, rel=1e-6)
    permuted = population_metrics(tiny_cache(permute=True), {"like": 0.0, "comment": 1.0}, k=2, session=3)
    assert flatten_metrics(permuted) == pytest.approx(flatten_metrics(by_comment), nan_ok=True)


def test_compare_metrics_flattens_expected_actions():
    a = population_metrics(tiny_cache(), LIKE_ONLY, k=2, session=3)
    b = population_metrics(tiny_cache(), {"like": 0.0, "comment": 1.0}, k=2, session=3)
    change = compare_metrics(a, b)
    assert change["distinct_authors_at_k"] == pytest.approx(0.5)
    assert change["expected_comment"] == pytest.approx(
        b["expected_actions_per_session"]["comment"] - a["expected_actions_per_session"]["comment"]
    )
    assert "expected_actions_per_session" not in change
    assert compare_metrics(a, a)["expected_like"] == 0.0


def test_population_metrics_bad_input():
    cache = tiny_cache()
    with pytest.raises(FeedlabError, match="k must be"):
        population_metrics(cache, k=0)
    with pytest.raises(FeedlabError, match="session must be"):
        population_metrics(cache, session=True)
    with pytest.raises(FeedlabError, match="does not weigh"):
        population_metrics(cache, {"nope": 1.0})
    with pytest.raises(FeedlabError, match="finite"):
        population_metrics(cache, {"like": float("nan")})
    with pytest.raises(FeedlabError, match="author_id, followers"):
        population_metrics(cache, followers=pl.DataFrame({"author": [1]}))
    with pytest.raises(FeedlabError, match="needs followers"):
        population_metrics(cache, small_creator_followers=3)


@pytest.fixture(scope="module")
def explore_cache(ranked_world):
    con = connect(ranked_world, read_only=True)
    try:
        users = [
            r[0]
            for r in con.sql(
                "select user_id from impressions where surface = 'explore' group by 1 order by count(*) desc, 1 limit 6"
            ).fetchall()
        ]
    finally:
        con.close()
    models = load_models(ranked_world, "explore")
    return RankingCache.build(ranked_world, "explore", users, models=models, chunk=3, progress=False), models


def test_population_metrics_match_the_audited_rankings(ranked_world, explore_cache):
    cache, _ = explore_cache
    weights = {"save": 8.0, "dwell": -0.2}  # the small world's explore models predict dwell, like, save, profile_tap
    session, k = 30, 10
    con = connect(ranked_world, read_only=True)
    try:
        authors = cache.items["author_id"].unique().to_list()
        followers = author_followers(con, authors, cache.at)
        one = authors[0]
        direct = con.sql(
            "select count(*) from follows where followee_id = ? and created_at < ?", params=[one, cache.at]
        ).fetchall()[0][0]
    finally:
        con.close()
    assert followers.height == len(authors) and followers.filter(pl.col("author_id") == one)["followers"].item() == direct
    m = population_metrics(cache, weights, k=k, session=session, followers=followers)
    att = attention(np.arange(session), tau=10.0, power=0.8)
    likes, saves, distinct, demoted, filled = [], [], [], 0, 0
    for user in cache.user_ids.tolist():
        top = cache.rank(user, weights, k=session)
        likes.append(float((att[: top.height] * top["p_like"].to_numpy()).sum()))
        saves.append(float((att[: top.height] * top["p_save"].to_numpy()).sum()))
        distinct.append(top.head(k)["author_id"].n_unique())
        for entries in top.head(k)["rules"].to_list():
            filled += 1
            demoted += any(e["factor"] < 1 for e in entries)
    assert m["expected_actions_per_session"]["like"] == pytest.approx(np.mean(likes), rel=1e-5)
    assert m["expected_actions_per_session"]["save"] == pytest.approx(np.mean(saves), rel=1e-5)
    assert m["distinct_authors_at_k"] == pytest.approx(np.mean(distinct))
    assert m["demoted_share_at_k"] == pytest.approx(demoted / filled)
    threshold = float(np.median(followers["followers"].to_numpy()))
    assert m["small_creator_threshold"] == threshold
    assert 0.0 <= m["small_creator_exposure_share"] <= 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"misinformation_demotion": False},
        {"not_interested_suppression": {"topic_factor": 0.1, "author_factor": 0.5}},
        {"recommendation_guidelines": False, "guideline_removal": False},
        {"close_friends_boost": True},
        {"author_diversity": {"mode": "decay"}},
    ],
)
def test_with_rules_equals_a_cache_built_with_them(explore_cache, change, monkeypatch):
    cache, _ = explore_cache
    from toolkit.rank import ranker as R

    monkeypatch.setattr(R, "predict_actions", lambda *a, **k: pytest.fail("with_rules ran XGBoost"))
    changed = cache.with_rules(change)
    # the reference: every item's rule factors recomputed, laid out as build lays them out
    specs = resolve_rules(surface_config("explore"), change)
    items = rule_factors(cache.items.drop("factor", "removed", "rules"), specs)
    reference = RankingCache._dense(cache.surface, cache.at, cache.actions, cache.config, specs, cache.user_ids.tolist(), items)
    assert changed.rules == reference.rules
    assert changed.items.equals(reference.items)
    np.testing.assert_array_equal(changed.factor, reference.factor)
    weights = {"like": 1.0, "save": 3.0, "dwell": -0.3}
    np.testing.assert_array_equal(changed.top_posts(weights, k=15), reference.top_posts(weights, k=15))
    assert cache.with_rules({}).rules == cache.rules  # and the original is untouched by all this
    assert cache.rules == resolve_rules("explore")


def test_with_rules_equals_build_and_stacks(ranked_world, explore_cache):
    cache, models = explore_cache
    change = {"misinformation_demotion": {"factor": 0.05}, "author_diversity": False}
    built = RankingCache.build(ranked_world, "explore", cache.user_ids.tolist(), at=cache.at, rules=change, models=models, progress=False)
    stepwise = cache.with_rules({"misinformation_demotion": {"factor": 0.05}}).with_rules({"author_diversity": False})
    assert stepwise.rules == built.rules
    assert stepwise.items.equals(built.items)
    np.testing.assert_array_equal(stepwise.factor, built.factor)
    assert stepwise.rerank(k=20).equals(built.rerank(k=20))
    # overrides resolve against the cache's rules, not the surface's defaults
    assert stepwise.rules["misinformation_demotion"].params["factor"] == 0.05
    with pytest.raises(FeedlabError, match="unknown rule"):
        cache.with_rules({"no_such_rule": False})
    with pytest.raises(FeedlabError, match="at least 1"):
        cache.with_rules({"author_diversity": {"max_in_row": 0}})


def test_a_viewer_with_nothing_to_show_counts_as_empty():
    base = tiny_cache()
    factor = base.factor.copy()
    factor[1] = 0.0  # every item of viewer 2 removed
    cache = replace(base, factor=factor)
    m = population_metrics(cache, LIKE_ONLY, k=2, session=3)
    assert (m["viewers"], m["empty_viewers"]) == (2, 1)
    assert m["expected_actions_per_session"]["like"] == pytest.approx((0.5 + _att(1) * 0.3 + _att(2) * 0.1) / 2, rel=1e-6)
    assert m["distinct_authors_at_k"] == pytest.approx(0.5)  # 1 author for viewer 1, none for viewer 2
    assert m["demoted_share_at_k"] == pytest.approx(1 / 2)
    # a cache without items (no candidates at all) changes rules without recomputing anything
    off = cache.with_rules({"misinformation_demotion": False})
    assert off.rules["misinformation_demotion"].enabled is False and off.factor is cache.factor
