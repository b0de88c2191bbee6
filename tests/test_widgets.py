"""WeightTuner and SignalImportance driven from Python, as a notebook's kernel would drive them (no browser).

The small world's Explore models predict only dwell, like, save and profile tap (the other
actions are too rare there to train), so the weight tests that need comment and not interested
run on Feed, with those two predictions made to vary (:func:`sharper`); Explore covers the
tuner built from a store, the background chart and SignalImportance.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.predict import load_models
from toolkit.rank import RankingCache, candidates_for
from toolkit.rank.config import surface_config
from toolkit.rank.population import author_followers, flatten_metrics, population_metrics
from toolkit.rank.ranker import as_time
from toolkit.store import connect
from toolkit.widgets import SignalImportance, WeightTuner, most_active_viewers

VEGALITE = "application/vnd.vegalite.v5+json"


def sharper(cache: RankingCache, seed: int = 0) -> RankingCache:
    """``cache`` with p_comment and p_not_interested drawn at random (seeded).

    The small world's models of these rare actions predict one constant (too few positives
    in three days), which no weight can reorder; the widget's logic needs predictions that differ.
    """
    rng = np.random.default_rng(seed)
    n = cache.items.height
    items = cache.items.with_columns(
        pl.Series("p_comment", rng.uniform(0.0, 0.2, n)), pl.Series("p_not_interested", rng.uniform(0.0, 0.05, n))
    )
    return RankingCache._dense(cache.surface, cache.at, cache.actions, cache.config, cache.rules, cache.user_ids.tolist(), items)


@pytest.fixture(scope="module")
def feed_world(ranked_world):
    """A Feed tuner over the 5 busiest Feed viewers and one viewer without Feed candidates."""
    con = connect(ranked_world, read_only=True)
    try:
        busy = most_active_viewers(con, "feed", 5)
        users = [r[0] for r in con.sql("select user_id from users order by user_id").fetchall()]
        have = set(candidates_for(con, "feed", users, at=as_time(None, con))["user_id"].to_list())
        lonely = next(u for u in users if u not in have)
        cache = sharper(RankingCache.build(con, "feed", [*busy, lonely], progress=False))
        followers = author_followers(con, cache.items["author_id"].unique().to_list(), cache.at)
    finally:
        con.close()
    tuner = WeightTuner.from_cache(cache, followers=followers, k=10, background_chart=False)
    return tuner, busy, lonely


@pytest.fixture
def tuner(feed_world):
    t, busy, _ = feed_world
    t.reset()
    t.viewer.value = busy[0]
    assert t.message.value == ""
    return t


def _state(t: WeightTuner):
    return t.weights, t.rules, t.ranking["post_id"].to_list(), flatten_metrics(t.metrics)


def _same_state(a, b) -> bool:
    return a[:3] == b[:3] and a[3] == pytest.approx(b[3], nan_ok=True)


def test_controls_follow_the_surface_config(tuner):
    cfg = surface_config("feed")
    assert set(tuner.sliders) == set(tuner.cache.actions)
    for action, slider in tuner.sliders.items():
        w = cfg.weights[action].weight
        assert slider.value == w and slider.min <= w <= slider.max
        assert slider.tooltip == cfg.weights[action].reason and slider.description == action
        assert not slider.continuous_update
    ni = tuner.sliders["not_interested"]
    assert (ni.min, ni.max) == (-100.0, 100.0)  # 5 x |-20| either side
    assert set(tuner.rule_controls) >= set(cfg.rules)
    diversity = tuner.rule_controls["author_diversity"]
    assert diversity.enabled.value and set(diversity.params) == {"mode", "decay", "floor", "max_in_row"}
    assert diversity.params["mode"].value == "decay" and diversity.params["max_in_row"].value == 2
    assert tuner.rule_controls["close_friends_boost"].params["factor"].value == 1.5
    assert not tuner.rule_controls["reels_quality_filters"].enabled.value  # not a Feed rule: off, no flag control
    assert tuner.rule_controls["reels_quality_filters"].params == {}
    assert [v for _, v in tuner.viewer.options] == tuner.cache.user_ids.tolist()


def test_raising_the_comment_weight_raises_expected_comments(tuner):
    before = tuner.metrics["expected_actions_per_session"]["comment"]
    slider = tuner.sliders["comment"]
    slider.value = slider.max  # 30: returns only after the re-rank
    assert tuner.weights["comment"] == 30.0 and tuner.weights["like"] == 2.0
    after = tuner.metrics["expected_actions_per_session"]["comment"]
    assert after > before
    assert tuner.changes["expected_comment"] == pytest.approx(after - before)
    direct = population_metrics(tuner.cache, {"comment": 30.0}, k=10, session=50)
    assert after == pytest.approx(direct["expected_actions_per_session"]["comment"])
    assert tuner.ranking["contribution_comment"].to_list() == pytest.approx((30.0 * tuner.ranking["p_comment"]).to_list())
    assert tuner.message.value == ""


def test_a_strongly_negative_weight_changes_rankings(tuner, feed_world):
    _, busy, _ = feed_world

    def rankings():
        out = {}
        for user in busy:
            tuner.viewer.value = user
            out[user] = tuner.ranking["post_id"].to_list()
        return out

    before, metric = rankings(), tuner.metrics["expected_actions_per_session"]["not_interested"]
    slider = tuner.sliders["not_interested"]
    slider.value = slider.min  # -100
    assert tuner.weights["not_interested"] == -100.0
    after = rankings()
    assert before != after
    assert tuner.metrics["expected_actions_per_session"]["not_interested"] < metric
    assert tuner.ranking["contribution_not_interested"].to_list() == pytest.approx((-100.0 * tuner.ranking["p_not_interested"]).to_list())


def test_toggling_a_rule_changes_its_rules_column(tuner, feed_world):
    _, busy, _ = feed_world
    viewer = None
    for user in busy:
        tuner.viewer.value = user
        if tuner.ranking["rules_text"].str.contains("author_diversity: demoted").any():
            viewer = user
            break
    assert viewer is not None, "no busy viewer has two posts of one author in the top 10"
    kept = tuner.ranking
    tuner.rule_controls["author_diversity"].enabled.value = False
    assert tuner.rules["author_diversity"]["enabled"] is False
    assert not tuner.ranking["rules_text"].str.contains("author_diversity").any()
    assert tuner.ranking["post_id"].to_list() != kept["post_id"].to_list() or tuner.ranking["score"].to_list() != kept["score"].to_list()
    # a parameter: a decay of 1 (with floor 1) discounts nothing, so the rule leaves no entry
    tuner.rule_controls["author_diversity"].enabled.value = True
    assert tuner.ranking["rules_text"].str.contains("author_diversity: demoted").any()
    tuner.rule_controls["author_diversity"].params["floor"].value = 1.0
    assert tuner.rules["author_diversity"]["floor"] == 1.0
    assert not tuner.ranking["rules_text"].str.contains("author_diversity").any()
    assert tuner.metrics["distinct_authors_at_k"] <= tuner._default_metrics["distinct_authors_at_k"]


def test_reset_restores_the_default_ranking(tuner):
    initial, initial_metrics, initial_rules = tuner.ranking, flatten_metrics(tuner.metrics), tuner.rules
    tuner.sliders["like"].value = -8.0
    tuner.sliders["dwell"].value = 4.0
    tuner.rule_controls["author_diversity"].enabled.value = False
    tuner.rule_controls["close_friends_boost"].params["factor"].value = 4.0
    assert tuner.ranking["post_id"].to_list() != initial["post_id"].to_list()
    tuner.reset_button.click()
    assert tuner.ranking.equals(initial)
    defaults = {a: w for a, w in surface_config("feed").default_weights().items() if a in tuner.cache.actions}
    assert tuner.weights == defaults
    assert {a: s.value for a, s in tuner.sliders.items()} == tuner.weights
    assert tuner.rules == initial_rules and tuner.rule_controls["author_diversity"].enabled.value
    assert tuner.rule_controls["close_friends_boost"].params["factor"].value == 1.5
    assert flatten_metrics(tuner.metrics) == pytest.approx(initial_metrics, nan_ok=True)
    assert all(v == 0 for v in tuner.changes.values() if not math.isnan(v))


def test_export_and_import_round_trip(tuner, tmp_path):
    tuner.set_weights({"comment": 12.5, "like": 0.5})
    tuner.set_rules({"misinformation_demotion": {"factor": 0.1}, "author_diversity": False})
    path = tmp_path / "policy.json"
    text = tuner.export_policy(path)
    policy = json.loads(path.read_text())
    assert policy == json.loads(text) == tuner.policy
    assert policy["surface"] == "feed" and policy["weights"]["comment"] == 12.5
    assert policy["rules"]["misinformation_demotion"] == {"enabled": True, "factor": 0.1}
    assert policy["rules"]["author_diversity"]["enabled"] is False
    tuned = tuner.ranking
    tuner.reset()
    assert tuner.weights["comment"] == 6.0 and tuner.rules["author_diversity"]["enabled"]
    tuner.import_policy(path)
    assert tuner.policy == policy and tuner.ranking.equals(tuned)
    assert tuner.sliders["comment"].value == 12.5 and not tuner.rule_controls["author_diversity"].enabled.value
    # through the widgets: the text box and its buttons
    tuner.reset()
    tuner.policy_text.value = text
    tuner.import_button.click()
    assert tuner.policy == policy and tuner.message.value == ""
    tuner.policy_text.value = ""
    tuner.export_button.click()
    assert json.loads(tuner.policy_text.value) == policy


def test_bad_values_are_refused_with_a_message_and_change_nothing(tuner):
    tuner.set_weights({"comment": 9.0})
    state = _state(tuner)
    slider = tuner.sliders["comment"]
    for bad in (float("nan"), slider.max + 1, float("-inf")):
        tuner.message.value = ""
        slider.value = bad  # no exception: the slider refuses it and says why
        assert slider.value == 9.0 and "refused" in tuner.message.value
        assert _same_state(_state(tuner), state)
    for weights, why in (
        ({"comment": float("inf")}, "finite"),
        ({"comment": 1e6}, "must lie in"),
        ({"comment": "3"}, "must be a number"),
        ({"entertaining": 1.0}, "no predicted action"),
    ):
        with pytest.raises(FeedlabError, match=why):
            tuner.set_weights(weights)
        assert why in tuner.message.value
    for text, why in (
        ('{"surface": "feed", "weights": {"comment": NaN}}', "finite"),
        ('{"surface": "explore", "weights": {}}', "this tuner ranks feed"),
        ('{"surface": "feed", "rules": {"author_diversity": {"max_in_row": 0}}}', "at least 1"),
        ('{"surface": "feed", "rules": {"no_such_rule": true}}', "unknown rule"),
        ('{"surface": "feed", "rules": {"close_friends_boost": {"factor": 50.0}}}', "must lie in"),
        ('{"surface": "feed", "weights": [1, 2]}', "JSON object"),
        ("{not json", "not valid JSON"),
        ("no/such/file.json", "neither"),
    ):
        with pytest.raises(FeedlabError, match=why):
            tuner.import_policy(text)
    assert _same_state(_state(tuner), state)
    # through the import button: the message, never an exception
    tuner.policy_text.value = "{not json"
    tuner.import_button.click()
    assert "not valid JSON" in tuner.message.value
    # rule controls: a value the rule refuses is put back, one outside the control's range never lands
    cap = tuner.rule_controls["author_diversity"].params["max_in_row"]
    cap.value = 0
    assert cap.value == 2 and "at least 1" in tuner.message.value
    factor = tuner.rule_controls["misinformation_demotion"].params["factor"]
    factor.value = 5.0
    assert factor.value == 0.3 and "refused" in tuner.message.value
    assert _same_state(_state(tuner), state)


def test_a_viewer_without_candidates_gets_a_message(tuner, feed_world):
    _, busy, lonely = feed_world
    tuner.viewer.value = lonely
    assert tuner.ranking.height == 0
    assert f"viewer {lonely} has no candidates" in tuner.message.value
    assert tuner.table.value == "" and tuner.chart.outputs == ()
    tuner.sliders["like"].value = 3.0  # still tunable: the population updates
    assert tuner.weights["like"] == 3.0 and "no candidates" in tuner.message.value
    tuner.viewer.value = busy[1]
    assert tuner.message.value == "" and tuner.ranking.height == 10 and "<table" in tuner.table.value


def test_the_viewer_picker_changes_the_ranking(tuner, feed_world):
    _, busy, _ = feed_world
    first = tuner.ranking
    assert f"viewer {busy[0]}" in tuner.table.value
    tuner.viewer.value = busy[1]
    assert tuner.ranking["post_id"].to_list() != first["post_id"].to_list()
    direct = tuner.cache.rank(busy[1], tuner.weights, k=10)
    assert tuner.ranking.select(direct.columns).equals(direct)  # the audited ranking, from the cached rule factors
    for rules in ({"author_diversity": False}, {"author_diversity": {"mode": "max_in_row"}, "close_friends_boost": {"factor": 3.0}}):
        tuner.set_rules(rules)
        tuner.sliders["like"].value = -4.0  # negative scores too: the factors act sign-aware
        direct = tuner.cache.rank(busy[1], tuner.weights, k=10)
        assert tuner.ranking.select(direct.columns).equals(direct), rules
    assert set(tuner.ranking.columns) >= {"position", "post_id", "author_id", "format", "score", "rules_text"}
    assert f"viewer {busy[1]}" in tuner.table.value and str(direct["post_id"][0]) in tuner.table.value
    spec = tuner.chart.outputs[0]["data"][VEGALITE]
    assert spec["$schema"].endswith("v5.json") and "datasets" in spec


def test_explore_tuner_draws_its_chart_in_the_background(ranked_world):
    models = load_models(ranked_world, "explore")
    viewers = most_active_viewers(ranked_world, "explore", 3, seed=1)
    assert viewers == most_active_viewers(ranked_world, "explore", 3, seed=1)
    tuner = WeightTuner(ranked_world, "explore", n_users=3, seed=1, models=models, k=5, progress=False)
    assert tuner.cache.user_ids.tolist() == viewers
    assert set(tuner.sliders) == set(models.actions)  # only what the models predict
    tuner.wait_for_chart()
    assert VEGALITE in tuner.chart.outputs[0]["data"]
    first = tuner.chart.outputs
    tuner.sliders["dwell"].value = tuner.sliders["dwell"].min  # dwell: the one explore prediction that varies here
    tuner.wait_for_chart()
    assert tuner.chart.outputs != first
    tuner.reset()  # the default order again: the chart drawn first is reused
    assert tuner.chart.outputs == first
    assert set(tuner.timings) >= {"weight", "chart"}
    with pytest.raises(FeedlabError, match="k must be"):
        WeightTuner(ranked_world, "explore", users=viewers, k=0, models=models, progress=False)
    with pytest.raises(FeedlabError, match="not in the store"):
        WeightTuner(ranked_world, "explore", users=[10**9], models=models, progress=False)


def test_signal_importance_switches_action_and_post(ranked_world):
    models = load_models(ranked_world, "explore")
    panel = SignalImportance(ranked_world, "explore", models=models, k=5)
    assert panel.message.value == "" and panel.post.value == panel.ranking["post_id"][0]
    assert panel.importance["action"].unique().to_list() == [panel.action.value] == [models.actions[0]]
    assert panel.importance_chart.outputs and panel.shap_chart.outputs

    def margin_matches(action: str, post: int) -> None:
        p = panel.ranking.filter(pl.col("post_id") == post)[f"p_{action}"].item()
        margin = panel.base_value + panel.shap["shap"].sum()
        assert 1 / (1 + math.exp(-margin)) == pytest.approx(p, rel=1e-4)

    margin_matches(panel.action.value, panel.post.value)
    first = panel.shap
    panel.action.value = "save"
    assert panel.importance["action"].unique().to_list() == ["save"]
    assert not panel.shap.equals(first)
    margin_matches("save", panel.post.value)
    other = panel.post.options[2][1]
    panel.post.value = other
    margin_matches("save", other)
    assert f"post {other}" in panel.contributions.value and "▶ save" in panel.contributions.value
    assert panel.shap.columns == ["feature", "family", "value", "shap"]
    assert panel.shap["shap"].abs().is_sorted(descending=True)
    assert np.isfinite(panel.base_value)
