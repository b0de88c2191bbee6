"""explain_post and explain_reach on a small world: they agree with rank() and RankingCache, and say why."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from toolkit.errors import FeedlabError
from toolkit.explain import explain_post, explain_reach
from toolkit.predict import feature_matrix, load_models
from toolkit.rank import RankingCache, rank
from toolkit.rank.ranker import as_time, viewer_devices
from toolkit.signals import FEATURES, compute_features
from toolkit.store import connect


@pytest.fixture(scope="session")
def explained_world(ranked_world):
    """The small world with saved feed and explore models (conftest's ``ranked_world``), and those models.

    The models are passed explicitly to every call, so what these tests compare cannot change
    behind their back.
    """
    return ranked_world, {surface: load_models(ranked_world, surface) for surface in ("feed", "explore")}


@pytest.fixture(scope="session")
def feed_cache(explained_world):
    """Every viewer's feed, predicted once: a place to find posts that rules acted on."""
    path, models = explained_world
    con = connect(path, read_only=True)
    try:
        users = [r[0] for r in con.sql("select user_id from users order by user_id").fetchall()]
    finally:
        con.close()
    return RankingCache.build(path, "feed", users, models=models["feed"], progress=False)


def _busiest_viewer(path, surface: str) -> int:
    con = connect(path, read_only=True)
    try:
        return con.sql(
            "select user_id from impressions where surface = ? group by user_id order by count(*) desc, user_id limit 1",
            params=[surface],
        ).fetchall()[0][0]
    finally:
        con.close()


def _query(path, sql: str, params=None):
    con = connect(path, read_only=True)
    try:
        return con.sql(sql, params=params).fetchall()
    finally:
        con.close()


def _touched(cache: RankingCache, rule: str) -> pl.DataFrame:
    """The cached items a rule acted on: user_id, post_id, author_id, factor of that rule."""
    return (
        cache.items.select("user_id", "post_id", "author_id", "removed", "rules")
        .explode("rules")
        .filter(pl.col("rules").struct.field("rule") == rule)
        .with_columns(pl.col("rules").struct.field("factor").alias("rule_factor"))
        .sort("user_id", "post_id")
    )


# ---------------------------------------------------------------------------------------------
# explain_post


def test_a_shown_post_has_the_position_and_score_rank_gives(explained_world):
    path, models = explained_world
    user = _busiest_viewer(path, "feed")
    top = rank(path, "feed", user, k=10, models=models["feed"])
    assert top.height == 10
    row = top.row(3, named=True)
    why = explain_post(path, "feed", user, row["post_id"], k=10, models=models["feed"])
    assert (why["position"], why["shown"], why["candidate"], why["removed"]) == (3, True, True, False)
    assert why["user_id"] == user and why["author_id"] == row["author_id"] and why["candidate_reason"] is None
    assert math.isclose(why["score"], row["score"], rel_tol=1e-12)
    assert math.isclose(why["base_score"], row["base_score"], rel_tol=1e-12)
    # contributions: weight x probability, the same probabilities as rank(), summing to base_score
    contributions = why["contributions"]
    assert {c["action"] for c in contributions} == {c.removeprefix("p_") for c in top.columns if c.startswith("p_")}
    for c in contributions:
        assert math.isclose(c["contribution"], c["weight"] * c["probability"], rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(c["probability"], row[f"p_{c['action']}"], rel_tol=1e-12)
    assert math.isclose(sum(c["contribution"] for c in contributions), why["base_score"], rel_tol=1e-9)
    assert [abs(c["contribution"]) for c in contributions] == sorted((abs(c["contribution"]) for c in contributions), reverse=True)
    assert why["rules"] == row["rules"]
    assert why["sentences"][0] == f"Shown at position 4 of 10 for user {user} on feed."
    first, second = (c["action"].replace("_", " ") for c in contributions[:2])
    assert f"comes mostly from the predicted {first} (" in why["sentences"][1]
    json.dumps(why, default=str, allow_nan=False)  # plain data


def test_shap_values_add_up_to_the_models_margin(explained_world):
    path, models = explained_world
    trained = models["feed"]
    user = _busiest_viewer(path, "feed")
    post = rank(path, "feed", user, k=5, models=trained)["post_id"][1]
    why = explain_post(path, "feed", user, post, k=5, models=trained, top_signals=len(trained.features))
    assert "log-odds" in why["signal_units"]
    # the two actions with the largest |contribution|
    assert list(why["signals"]) == [c["action"] for c in why["contributions"][:2]]
    # the feature row, computed independently, and each booster's margin on it
    con = connect(path, read_only=True)
    try:
        device = viewer_devices(con, [user], at=why["at"])["device"][0]
        request = pl.DataFrame({"user_id": [user], "post_id": [post], "ts": [why["at"]], "device": [device]})
        features = compute_features(con, request.with_columns(pl.col("ts").cast(pl.Datetime("us"))))
    finally:
        con.close()
    X = feature_matrix(features, trained.features)
    for action, listed in why["signals"].items():
        booster = trained.boosters[action]
        margin = float(
            booster.predict(
                xgb.DMatrix(X, feature_names=trained.features),
                output_margin=True,
                iteration_range=(0, trained.best_iteration[action] + 1),
            )[0]
        )
        bias = why["signal_margins"][action]["bias"]
        assert math.isclose(sum(s["shap"] for s in listed) + bias, margin, rel_tol=1e-4, abs_tol=1e-4)
        assert math.isclose(why["signal_margins"][action]["margin"], margin, rel_tol=1e-4, abs_tol=1e-4)
        assert why["signal_margins"][action]["rest"] == 0.0
        # and the margin is the probability the ranker used (its own batch prediction)
        probability = next(c["probability"] for c in why["contributions"] if c["action"] == action)
        assert math.isclose(1 / (1 + math.exp(-margin)), probability, rel_tol=1e-4)
        shaps = [abs(s["shap"]) for s in listed]
        assert shaps == sorted(shaps, reverse=True) and all(s > 0 for s in shaps)
        for s in listed:
            assert s["family"] == FEATURES[s["feature"]].family
    # a short list keeps the rest of the SHAP in "rest"
    short = explain_post(path, "feed", user, post, k=5, models=trained, top_signals=2)
    for action, listed in short["signals"].items():
        assert len(listed) <= 2
        m = short["signal_margins"][action]
        assert math.isclose(sum(s["shap"] for s in listed) + m["rest"] + m["bias"], m["margin"], rel_tol=1e-6, abs_tol=1e-6)
    assert any(s.startswith("The model expected") or s.startswith("The model's chance") for s in short["sentences"])


def test_a_rule_that_acted_is_named_with_its_effect(explained_world, feed_cache):
    path, models = explained_world
    boosted = _touched(feed_cache, "close_friends_boost").filter(~pl.col("removed"))
    assert boosted.height, "the small world has close friends among feed candidates"
    user, post = boosted.row(0, named=True)["user_id"], boosted.row(0, named=True)["post_id"]
    why = explain_post(path, "feed", user, post, k=500, models=models["feed"], rules={"close_friends_boost": {"factor": 3.0}})
    entries = [r for r in why["rules"] if r["rule"] == "close_friends_boost"]
    assert entries == [{"rule": "close_friends_boost", "effect": "boosted x3.00: one of your Close Friends", "factor": 3.0}]
    assert "The close_friends_boost rule boosted it x3.00: one of the viewer's Close Friends." in why["sentences"]
    if not any(r["rule"] == "author_diversity" for r in why["rules"]):
        assert math.isclose(why["score"], why["base_score"] * 3.0 if why["base_score"] >= 0 else why["base_score"] / 3.0)
    # the same post with the rule off: not named, and it scores no more
    off = explain_post(path, "feed", user, post, k=500, models=models["feed"], rules={"close_friends_boost": False})
    assert not any(r["rule"] == "close_friends_boost" for r in off["rules"])
    assert not any("close_friends_boost" in s for s in off["sentences"])
    assert math.isclose(off["base_score"], why["base_score"], rel_tol=1e-12)


def test_a_removed_post_is_explained(explained_world, feed_cache):
    path, models = explained_world
    removed = _touched(feed_cache, "guideline_removal").filter(pl.col("removed"))
    assert removed.height, "the small world has guideline violations among feed candidates"
    user, post = removed.row(0, named=True)["user_id"], removed.row(0, named=True)["post_id"]
    why = explain_post(path, "feed", user, post, models=models["feed"])
    assert (why["shown"], why["candidate"], why["removed"], why["position"], why["score"]) == (False, True, True, None, None)
    assert why["sentences"][0] == f"Not shown to user {user} on feed: removed by guideline_removal."
    assert "The guideline_removal rule removed it: goes against the Community Guidelines." in why["sentences"]
    assert math.isclose(sum(c["contribution"] for c in why["contributions"]), why["base_score"], rel_tol=1e-9)
    assert post not in rank(path, "feed", user, k=500, models=models["feed"])["post_id"].to_list()


def test_a_kept_post_below_the_top_k_is_not_shown(explained_world):
    path, models = explained_world
    user = _busiest_viewer(path, "feed")
    full = rank(path, "feed", user, k=500, models=models["feed"])
    assert full.height > 4
    post = full["post_id"][3]  # the first one past the top 3
    why = explain_post(path, "feed", user, post, k=3, models=models["feed"])
    assert (why["shown"], why["position"], why["kept_position"], why["kept"]) == (False, None, 3, full.height)
    assert why["sentences"][0].startswith(f"Not shown to user {user} on feed: it ranks 4th of {full.height}, below the top 3")
    assert explain_post(path, "feed", user, post, k=4, models=models["feed"])["position"] == 3


def test_a_post_that_is_not_a_candidate_says_why(explained_world):
    path, models = explained_world
    user = _busiest_viewer(path, "feed")
    con = connect(path, read_only=True)
    try:
        at = as_time(None, con)
    finally:
        con.close()
    followed = "select followee_id from follows where follower_id = ? and created_at < ?"
    story = _query(
        path,
        f"select post_id from posts where format = 'story' and author_id in ({followed}) and created_at < ? order by created_at desc limit 1",
        [user, at, at],
    )[0][0]
    stranger = _query(
        path,
        f"select post_id from posts where format = 'photo' and author_id <> ? and author_id not in ({followed}) "
        "and created_at < ? order by created_at desc limit 1",
        [user, user, at, at],
    )[0][0]
    friend = _query(
        path,
        f"select post_id from posts where format = 'photo' and author_id in ({followed}) and created_at < ? order by created_at desc limit 1",
        [user, at, at],
    )[0][0]
    cases = [
        ("feed", story, "it is a story"),
        ("feed", stranger, "the viewer does not follow the author"),
        ("explore", friend, "the viewer follows the author"),
    ]
    for surface, post, reason in cases:
        why = explain_post(path, surface, user, post, models=models[surface])
        assert (why["candidate"], why["shown"], why["position"]) == (False, False, None), (surface, post)
        assert reason in why["candidate_reason"]
        assert why["sentences"][0] == f"Not a candidate for user {user} on {surface}: {why['candidate_reason']}."
        # scored on its own, as a candidate would be
        assert math.isclose(sum(c["contribution"] for c in why["contributions"]), why["base_score"], rel_tol=1e-9)
        assert all(c["probability"] is not None and 0 <= c["probability"] <= 1 for c in why["contributions"])
        assert why["signals"]


def test_explain_post_refuses_bad_input(explained_world):
    path, models = explained_world
    user = _busiest_viewer(path, "feed")
    post, created = _query(path, "select post_id, created_at from posts order by created_at desc limit 1")[0]
    with pytest.raises(FeedlabError, match="no post 99999999"):
        explain_post(path, "feed", user, 99999999, models=models["feed"])
    with pytest.raises(FeedlabError, match="no user 999999"):
        explain_post(path, "feed", 999999, post, models=models["feed"])
    with pytest.raises(FeedlabError, match=f"post {post} was created at"):
        explain_post(path, "feed", user, post, at=created - timedelta(hours=1), models=models["feed"])
    with pytest.raises(FeedlabError, match="k must be"):
        explain_post(path, "feed", user, post, k=0, models=models["feed"])
    with pytest.raises(FeedlabError, match="top_signals must be"):
        explain_post(path, "feed", user, post, top_signals=-1, models=models["feed"])
    with pytest.raises(FeedlabError, match="not explore"):
        explain_post(path, "explore", user, post, models=models["feed"])


# ---------------------------------------------------------------------------------------------
# explain_reach


def _reach_of(cache: RankingCache, post: int, k: int, weights=None) -> int:
    top = cache.rerank(weights, k=k)
    return top.filter(pl.col("post_id") == post)["user_id"].n_unique()


def test_reach_is_a_direct_count_over_the_same_viewers(explained_world):
    path, models = explained_world
    post, author = _query(
        path,
        "select p.post_id, p.author_id from posts p join engagements e using (post_id) "
        "where p.format <> 'story' and p.created_at >= (select max(created_at) from posts) - interval 3 day "
        "group by all order by count(*) desc, p.post_id limit 1",
    )[0]
    out = explain_reach(path, "explore", post, k=10, max_viewers=30, models=models["explore"], weights={"save": 6.0})
    viewers = out["viewers"]
    assert out["audience"] == len(viewers) == 30 and out["sampled"] and out["eligible"] > 30
    followers = {r[0] for r in _query(path, "select follower_id from follows where followee_id = ? and created_at < ?", [author, out["at"]])}
    assert author not in viewers and not followers & set(viewers)
    # the same sample again for the same seed, another for another
    assert explain_reach(path, "explore", post, k=10, max_viewers=30, models=models["explore"])["viewers"] == viewers
    cache = RankingCache.build(path, "explore", viewers, at=out["at"], models=models["explore"], progress=False)
    assert out["reach"] == _reach_of(cache, post, 10, {"save": 6.0})
    assert out["candidate_in"] == cache.items.filter(pl.col("post_id") == post).height
    assert 0 < out["candidate_in"] and 0 <= out["reach"] <= out["candidate_in"]
    assert math.isclose(out["reach_share"], out["reach"] / 30)
    assert out["sentences"][0] == (
        f"Post {post} would reach {out['reach']} of 30 accounts that do not follow its author "
        f"({out['reach'] / 30:.0%}) in their top 10 on explore."
    )
    assert f"It was a candidate for {out['candidate_in']} of them" in out["sentences"][2]
    json.dumps(out, default=str, allow_nan=False)


def test_reach_without_each_rule_is_a_direct_count_too(explained_world):
    path, models = explained_world
    # a followed author's recent post on feed: the audience is the followers
    post, author = _query(
        path,
        "select p.post_id, p.author_id from posts p join follows f on f.followee_id = p.author_id "
        "where p.format <> 'story' and p.created_at >= (select max(created_at) from posts) - interval 1 day "
        "group by all order by count(*) desc, p.post_id limit 1",
    )[0]
    k = 3
    out = explain_reach(path, "feed", post, k=k, models=models["feed"])
    followers = [r[0] for r in _query(path, "select follower_id from follows where followee_id = ? and created_at < ? order by 1", [author, out["at"]])]
    assert out["viewers"] == followers and out["audience"] == len(followers) and not out["sampled"]
    for entry in out["by_rule"]:
        cache = RankingCache.build(path, "feed", followers, at=out["at"], rules={entry["rule"]: False}, models=models["feed"], progress=False)
        assert entry["reach_without"] == _reach_of(cache, post, k), entry
        assert entry["lost"] == entry["reach_without"] - out["reach"]
    assert [e["lost"] for e in out["by_rule"]] == sorted((e["lost"] for e in out["by_rule"]), reverse=True)
    assert {e["rule"] for e in out["by_rule"]} == {"author_diversity", "misinformation_demotion", "repeat_offender_demotion",
                                                   "guideline_removal", "close_friends_boost", "mute_removal",
                                                   "not_interested_suppression"}  # fmt: skip


def test_a_demotion_that_matters_shows_as_lost_reach(explained_world, feed_cache):
    """A misinformation post, among viewers for whom it is the only one: switching the demotion off can only help it."""
    path, models = explained_world
    labelled = feed_cache.items.filter(pl.col("misinformation"))
    alone = labelled.group_by("user_id").agg(pl.len().alias("n"), pl.first("post_id")).filter(pl.col("n") == 1)
    assert alone.height
    # the post that ranks highest for such a viewer without the demotion, and that k
    off = RankingCache.build(
        path, "feed", alone["user_id"].to_list(), at=feed_cache.at, rules={"misinformation_demotion": False},
        models=models["feed"], progress=False,
    )  # fmt: skip
    order = off.top_posts(k=off.post_ids.shape[1])
    post_of = dict(alone.select("user_id", "post_id").iter_rows())
    best = None
    for i, user in enumerate(off.user_ids.tolist()):
        hit = np.flatnonzero(order[i] == post_of[user])
        if hit.size and (best is None or (int(hit[0]), post_of[user]) < best):
            best = (int(hit[0]), post_of[user])
    assert best is not None
    k, post = best[0] + 1, best[1]
    viewers = alone.filter(pl.col("post_id") == post)["user_id"].to_list()
    out = explain_reach(
        path, "feed", post, viewers=viewers, k=k, rules={"misinformation_demotion": {"factor": 0.01}}, models=models["feed"]
    )
    rule = next(e for e in out["by_rule"] if e["rule"] == "misinformation_demotion")
    assert rule["lost"] > 0 and rule["reach_without"] > out["reach"]
    assert out["by_rule"][0] == rule  # the largest loss first
    assert out["reach_without_rules"] >= rule["reach_without"]
    assert "demoted x0.01: labelled misinformation by fact checkers" in out["effects"]
    viewers_word = "viewer" if rule["lost"] == 1 else "viewers"
    assert (
        f"Without misinformation_demotion it would reach {rule['reach_without']}: that rule cost it "
        f"{rule['lost']} {viewers_word} (labelled misinformation by fact checkers)."
    ) in out["sentences"]
    assert out["sentences"][0].startswith(f"Post {post} would reach {out['reach']} of {len(viewers)} given viewers")
    # a demotion or removal that acted on no other post of these viewers never lowers reach when off
    demotions = ("misinformation_demotion", "repeat_offender_demotion", "guideline_removal", "mute_removal", "not_interested_suppression")
    cache = RankingCache.build(path, "feed", viewers, at=out["at"], rules={"misinformation_demotion": {"factor": 0.01}}, models=models["feed"], progress=False)
    for entry in out["by_rule"]:
        others = _touched(cache, entry["rule"]).filter(pl.col("post_id") != post)
        if entry["rule"] in demotions and others.height == 0:
            assert entry["lost"] >= 0, entry


def test_rules_that_never_touched_a_post_move_it_only_through_the_others(explained_world, feed_cache):
    """A post no rule acted on: demoting other posts can only help it, boosting them only hurt it."""
    path, models = explained_world
    touched = set(feed_cache.items.explode("rules").drop_nulls("rules")["post_id"].to_list())
    # the untouched post in the most viewers' top 5
    top = feed_cache.top_posts(k=5).ravel()
    counts = pl.Series("post_id", top[top >= 0]).value_counts(sort=True).filter(~pl.col("post_id").is_in(list(touched)))
    post = int(counts["post_id"][0])
    out = explain_reach(path, "feed", post, k=5, models=models["feed"], rules={"author_diversity": False})
    assert out["effects"] == [] and out["reach"] > 0
    assert "author_diversity" not in {e["rule"] for e in out["by_rule"]}  # only enabled rules are tried
    for entry in out["by_rule"]:
        if entry["rule"] == "close_friends_boost":
            assert entry["lost"] >= 0, entry
            if entry["lost"] > 0:  # boosting others pushed it out somewhere
                assert any("close_friends_boost" in s and "(it raised other posts above this one)" in s for s in out["sentences"])
        else:
            assert entry["lost"] <= 0, entry
    if all(e["lost"] <= 0 for e in out["by_rule"]) and out["reach_without_rules"] <= out["reach"] < out["candidate_in"]:
        assert any(s.startswith("No rule reduced its reach: it ranks below other posts on predicted engagement") for s in out["sentences"])


def test_explain_reach_refuses_bad_input(explained_world):
    path, models = explained_world
    post, created = _query(path, "select post_id, created_at from posts order by created_at desc limit 1")[0]
    with pytest.raises(FeedlabError, match="no post 99999999"):
        explain_reach(path, "feed", 99999999, models=models["feed"])
    with pytest.raises(FeedlabError, match=f"post {post} was created at"):
        explain_reach(path, "feed", post, at=created - timedelta(minutes=1), models=models["feed"])
    with pytest.raises(FeedlabError, match="not in the store"):
        explain_reach(path, "feed", post, viewers=[999999], models=models["feed"])
    with pytest.raises(FeedlabError, match="max_viewers must be"):
        explain_reach(path, "feed", post, max_viewers=0, models=models["feed"])
    with pytest.raises(FeedlabError, match="does not weigh"):
        explain_reach(path, "feed", post, weights={"likes": 1.0}, models=models["feed"])


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_explain_json_round_trip_and_bad_input(explained_world, capsys):
    from toolkit.cli import main

    path, models = explained_world
    user = _busiest_viewer(path, "feed")
    top = rank(path, "feed", user, k=5)  # the saved models, as the command line uses them
    post = top["post_id"][2]
    argv = ["explain", "--db", str(path), "--surface", "feed", "--user", str(user), "--post", str(post), "--k", "5"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    direct = json.loads(json.dumps(explain_post(path, "feed", user, post, k=5), default=str))
    assert out == direct
    assert out["position"] == 2 and out["shown"] and out["post_id"] == post
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"Shown at position 3 of 5 for user {user} on feed." in text and "contribution" in text
    assert main(["explain", "--db", str(path), "--surface", "feed", "--post", str(post), "--reach", "--k", "3", "--json"]) == 0
    reach = json.loads(capsys.readouterr().out)
    assert reach["post_id"] == post and reach["k"] == 3 and reach["sentences"]
    # bad input: exit status 2 and a message
    assert main(["explain", "--db", str(path), "--surface", "feed", "--post", str(post)]) == 2
    assert "give --user" in capsys.readouterr().err
    assert main([*argv, "--reach"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*argv, "--weights", "like=abc"]) == 2
    assert "must be a number" in capsys.readouterr().err
    assert main(["explain", "--db", str(path), "--surface", "feed", "--user", str(user), "--post", "99999999"]) == 2
    assert "no post 99999999" in capsys.readouterr().err
