"""Policies scored offline on logged sessions (toolkit.rank.policy) and `feedlab compare`."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.predict import load_models
from toolkit.rank.evaluate import policy_metrics, surface_attention
from toolkit.rank.policy import compare_policies, evaluate_policy, order_sessions, session_predictions
from toolkit.store import connect


@pytest.fixture(scope="module")
def explore_predictions(ranked_world):
    con = connect(ranked_world, read_only=True)
    try:
        models = load_models(ranked_world, "explore")
        yield session_predictions(con, "explore", models, start=models.train_until, viewers=40, seed=1), models
    finally:
        con.close()


def test_session_predictions_score_each_session_at_its_start(explore_predictions):
    frame, models = explore_predictions
    assert frame.height > 0 and frame["session_id"].n_unique() > 1
    assert all(f"p_{a}" in frame.columns for a in models.actions)
    assert frame.select((pl.col("scored_at") <= pl.col("ts").max().over("session_id")).all()).item()
    # every item of a session is scored at one time unless its post appeared later in the session
    spread = frame.group_by("session_id").agg(pl.col("scored_at").n_unique().alias("n"))
    assert (spread["n"] == 1).mean() > 0.9
    assert frame.select(pl.all_horizontal(pl.col(f"p_{a}").is_between(0, 1) for a in models.actions).all()).item()


def test_a_policy_ordering_by_the_truth_is_perfect(explore_predictions):
    """Wiring check: rank by the true probabilities with rules off, and NDCG is exactly 1."""
    frame, _ = explore_predictions
    truth = frame.with_columns(pl.col("q_like").fill_null(0).alias("p_like"))
    off = {r: False for r in ("author_diversity", "guideline_removal", "recommendation_guidelines", "misinformation_demotion",
                              "repeat_offender_demotion", "mute_removal", "not_interested_suppression")}
    ranked = order_sessions(truth, "explore", weights={"like": 1.0}, rules=off)
    m = policy_metrics(ranked, weights={"like": 1.0}, **surface_attention("explore"))
    assert m["ndcg_at_k"] == pytest.approx(1.0)
    logged = policy_metrics(frame, weights={"like": 1.0}, **surface_attention("explore"))
    assert logged["ndcg_at_k"] < 1.0  # the logging policy was noisy
    assert m["expected_value_per_session"] >= logged["expected_value_per_session"]


def test_evaluate_policy_reports_metrics_and_the_logged_baseline(ranked_world):
    out = evaluate_policy(ranked_world, "explore", viewers=30, seed=2)
    for key in ("ndcg_at_k", "expected_value_per_session", "distinct_authors_at_k", "author_exposure_gini",
                "small_creator_exposure_share", "flagged_share_at_k"):
        assert 0 <= out[key] <= (math.inf if key.startswith("expected") or key.startswith("distinct") else 1), key
        assert key in out["logged"]
    assert out["sessions"] == out["logged"]["sessions"] > 0
    assert set(out["expected_actions_per_session"]) >= {"like", "save"}


def test_compare_identical_and_different_policies(ranked_world):
    same = compare_policies(ranked_world, "explore", viewers=30, seed=2)
    assert same["comparison"]["kendall_tau"] == pytest.approx(1.0)
    assert same["comparison"]["top_k_overlap"] == pytest.approx(1.0)
    assert same["comparison"]["biggest_movers"] == []
    assert same["a"]["ndcg_at_k"] == same["b"]["ndcg_at_k"]
    # on the small world only the dwell model has learnt much: a negative dwell weight reverses orders
    other = compare_policies(ranked_world, "explore", weights_b={"dwell": -1.0}, viewers=30, seed=2)
    assert other["comparison"]["kendall_tau"] < 0 and other["comparison"]["biggest_movers"]
    assert other["b"]["weights"]["dwell"] == -1.0


def test_bad_policy_input(ranked_world):
    with pytest.raises(FeedlabError, match="does not weigh"):
        evaluate_policy(ranked_world, "explore", weights={"entertaining": 1.0}, viewers=5)
    with pytest.raises(FeedlabError, match="no logged explore sessions"):
        evaluate_policy(ranked_world, "explore", start="2030-01-01", viewers=5)
    with pytest.raises(FeedlabError, match="feedlab train"):
        evaluate_policy(ranked_world, "reels", viewers=5)


def test_cli_compare_json(ranked_world, capsys):
    from toolkit.cli import main

    status = main(["compare", "--db", str(ranked_world), "--surface", "explore", "--weights-b", "save=0", "--viewers", "20", "--json"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert out["b"]["weights"]["save"] == 0.0 and "kendall_tau" in out["comparison"]
    assert main(["compare", "--db", str(ranked_world), "--surface", "explore", "--weights-a", "nope=1"]) == 2
