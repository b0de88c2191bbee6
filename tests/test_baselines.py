"""Baselines of the action predictors: history rates by hand and point-in-time, the tuned prior and
pseudocount, the pre-impression model's inputs, and the side-by-side table on a small world."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import FeedlabError
from toolkit.predict import (
    MATCH_TOLERANCE,
    PRE_IMPRESSION_FEATURES,
    PSEUDOCOUNT_GRID,
    compare_with_baselines,
    history_baseline,
    history_rates,
    log_loss,
    matches_or_beats_history,
    pre_impression_baseline,
    split_times,
    train_on_frame,
    tune_history_rates,
)
from toolkit.predict.baselines import BASELINE_MODELS, pre_impression_matrix
from toolkit.signals import training_frame
from toolkit.store import connect

T0 = datetime(2026, 1, 1)
METRIC_COLUMNS = ["auc", "pr_auc", "logloss", "rce", "ece", "base_rate", "n", "positives"]


def _tiny() -> pl.DataFrame:
    h = [T0 + timedelta(hours=i) for i in range(4)]
    return pl.DataFrame(
        {
            "impression_id": [1, 2, 3, 4, 5, 6],
            "user_id": [1, 2, 1, 1, 2, 1],
            "post_id": [10, 10, 11, 10, 11, 11],
            "ts": [h[0], h[0], h[1], h[2], h[2], h[3]],
            "like": [True, False, None, False, True, True],
        }
    )


# ------------------------------------------------------------------------------------------
# (a) history rates


def test_history_rates_by_hand():
    # prior 0.25, m = 2: rate = (positives + 0.5) / (observed + 2); no history -> 0.25
    out = history_rates(_tiny(), "like", prior=0.25, pseudocount=2)
    assert out.columns == [
        "impression_id", "viewer_positives", "viewer_observed", "viewer_rate",
        "post_positives", "post_observed", "post_rate", "score",
    ]  # fmt: skip
    assert out["impression_id"].to_list() == [1, 2, 3, 4, 5, 6]
    # 1: u1, p10 at h0: nothing before
    # 2: u2, p10 at h0: row 1 is at the same ts, so it does not count
    # 3: u1 at h1 has row 1 (+); p11 nothing
    # 4: u1 at h2 has row 1 (+) and row 3 (null: no observation); p10 has rows 1 (+), 2 (-)
    # 5: u2 at h2 has row 2 (-); p11 has row 3 only (null) and row 4 is at the same ts
    # 6: u1 at h3 has rows 1 (+), 3 (null), 4 (-); p11 has row 3 (null) and row 5 (+)
    assert out["viewer_observed"].to_list() == [0, 0, 1, 1, 1, 2]
    assert out["viewer_positives"].to_list() == [0, 0, 1, 1, 0, 1]
    assert out["post_observed"].to_list() == [0, 0, 0, 2, 0, 1]
    assert out["post_positives"].to_list() == [0, 0, 0, 1, 0, 1]
    viewer = [0.25, 0.25, 1.5 / 3, 1.5 / 3, 0.5 / 3, 1.5 / 4]
    post = [0.25, 0.25, 0.25, 1.5 / 4, 0.25, 1.5 / 3]
    assert out["viewer_rate"].to_list() == pytest.approx(viewer, abs=1e-12)
    assert out["post_rate"].to_list() == pytest.approx(post, abs=1e-12)
    assert out["score"].to_list() == pytest.approx([(v + p) / 2 for v, p in zip(viewer, post)], abs=1e-12)


def test_history_rates_keep_input_order():
    frame = _tiny()
    expected = history_rates(frame, "like", prior=0.1, pseudocount=3)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=4)
    got = history_rates(shuffled, "like", prior=0.1, pseudocount=3)
    assert got.sort("impression_id").equals(expected)


def test_history_rates_refuse_bad_arguments():
    with pytest.raises(FeedlabError, match="pseudocount"):
        history_rates(_tiny(), "like", prior=0.1, pseudocount=0)
    with pytest.raises(FeedlabError, match="prior"):
        history_rates(_tiny(), "like", prior=1.5, pseudocount=1)
    with pytest.raises(FeedlabError, match="share"):
        history_rates(_tiny(), "share", prior=0.1, pseudocount=1)


def _random_log(rng: np.random.Generator, n: int, start_id: int = 0, min_hour: int = 0) -> pl.DataFrame:
    labels = rng.choice([True, False, None], size=n, p=[0.3, 0.5, 0.2]).tolist()
    return pl.DataFrame(
        {
            "impression_id": np.arange(start_id, start_id + n),
            "user_id": rng.integers(0, 4, n),
            "post_id": rng.integers(0, 5, n),
            # few distinct times: many ties
            "ts": [T0 + timedelta(hours=int(h)) for h in rng.integers(min_hour, 12, n)],
            "like": pl.Series(labels, dtype=pl.Boolean),
        }
    )


def _history_by_loop(frame: pl.DataFrame, prior: float, m: float) -> list[tuple[float, float]]:
    """The definition, row by row: rows strictly earlier, observed labels only."""
    rows = frame.rows(named=True)
    out = []
    for r in rows:
        rates = []
        for key in ("user_id", "post_id"):
            past = [o["like"] for o in rows if o[key] == r[key] and o["ts"] < r["ts"] and o["like"] is not None]
            rates.append((sum(past) + m * prior) / (len(past) + m))
        out.append(tuple(rates))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), m=st.sampled_from(PSEUDOCOUNT_GRID))
def test_history_rates_equal_the_definition(seed, n, m):
    frame = _random_log(np.random.default_rng(seed), n)
    out = history_rates(frame, "like", prior=0.2, pseudocount=m)
    expected = np.array(_history_by_loop(frame, 0.2, m))
    np.testing.assert_allclose(out["viewer_rate"].to_numpy(), expected[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["post_rate"].to_numpy(), expected[:, 1], rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), extra=st.integers(1, 30), cut=st.integers(0, 11))
def test_history_rates_are_point_in_time(seed, n, extra, cut):
    # appending rows at or after a time t never changes the rates of rows at or before t
    rng = np.random.default_rng(seed)
    base = _random_log(rng, n)
    later = _random_log(rng, extra, start_id=n, min_hour=cut)
    before = history_rates(base, "like", prior=0.3, pseudocount=3)
    after = history_rates(pl.concat([base, later]), "like", prior=0.3, pseudocount=3).head(n)
    keep = (base["ts"] <= T0 + timedelta(hours=cut)).to_numpy()
    assert after.filter(keep).equals(before.filter(keep))


# ------------------------------------------------------------------------------------------
# on the small world's reels


@pytest.fixture(scope="module")
def reels(small_world_path):
    """The small world's reels frame and feedlab's models trained on it (40 rounds)."""
    con = connect(small_world_path, read_only=True)
    try:
        frame = training_frame(con, "reels")
    finally:
        con.close()
    return frame, train_on_frame(frame, surface="reels", max_rounds=40)


def test_tuned_prior_and_pseudocount(reels):
    frame, _ = reels
    bounds = split_times(frame["ts"])
    T, V = bounds["train_until"], bounds["valid_start"]
    fit = tune_history_rates(frame, "like")
    assert (fit["train_until"], fit["valid_start"]) == (T, V)
    train = frame.filter(pl.col("ts") < T)["like"].drop_nulls()
    assert fit["prior"] == pytest.approx(train.cast(pl.Float64).mean(), abs=1e-15)
    assert fit["pseudocount"] in PSEUDOCOUNT_GRID
    assert set(fit["valid_logloss"]) == set(PSEUDOCOUNT_GRID)
    # the chosen value has the lowest validation log loss, recomputed here
    valid = frame.with_columns(history_rates(frame, "like", prior=fit["prior"], pseudocount=fit["pseudocount"])["score"])
    valid = valid.filter((pl.col("ts") >= V) & (pl.col("ts") < T) & pl.col("like").is_not_null())
    chosen = log_loss(valid["like"].cast(pl.Float64).to_numpy(), valid["score"].to_numpy())
    assert chosen == pytest.approx(min(fit["valid_logloss"].values()), abs=1e-12)
    assert fit["valid_logloss"][fit["pseudocount"]] == pytest.approx(chosen, abs=1e-12)
    # the test scores are those of history_rates on the whole frame
    p, same = history_baseline(frame, "like")
    assert same == fit
    assert p.shape == (frame.filter(pl.col("ts") >= T).height,)
    assert np.isfinite(p).all() and ((0 < p) & (p < 1)).all()


def test_pre_impression_baseline_reads_only_its_columns(reels):
    frame, _ = reels
    own = {"user_id", "post_id", "ts", "post_duration_s", "like"}
    rng = np.random.default_rng(0)
    shuffled = frame.with_columns(
        pl.Series(c, frame[c].to_numpy()[rng.permutation(frame.height)] if frame[c].dtype.is_numeric() else frame[c].shuffle(seed=1))
        for c in frame.columns
        if c not in own
    )
    assert not shuffled["viewer_rate_like"].equals(frame["viewer_rate_like"])
    p = pre_impression_baseline(frame, "like", max_rounds=40)
    q = pre_impression_baseline(shuffled, "like", max_rounds=40)
    assert p.shape == (frame.filter(pl.col("ts") >= split_times(frame["ts"])["train_until"]).height,)
    np.testing.assert_array_equal(p, q)
    X = pre_impression_matrix(frame.head(3))
    assert X.shape == (3, len(PRE_IMPRESSION_FEATURES))
    assert X[:, 2].tolist() == frame.head(3)["ts"].dt.hour().cast(pl.Float64).to_list()
    # and it does read them: the hour of day matters to nothing here, the ids do
    moved = frame.with_columns(pl.col("user_id").shuffle(seed=2))
    assert not np.array_equal(pre_impression_baseline(moved, "like", max_rounds=40), p)


def test_compare_with_baselines_on_small_world_reels(reels):
    frame, trained = reels
    table = compare_with_baselines(frame, trained)
    assert table.columns == ["action", "model", *METRIC_COLUMNS, "auc_vs_history", "prior", "pseudocount"]
    assert table.height == 3 * len(trained.actions)
    assert table["action"].unique(maintain_order=True).to_list() == trained.actions
    assert table["model"].to_list() == list(BASELINE_MODELS) * len(trained.actions)

    test = frame.filter(pl.col("ts") >= trained.train_until)
    for action in trained.actions:
        rows = table.filter(pl.col("action") == action)
        observed = test[action].drop_nulls()
        # the same rows for the three models: the test rows whose label is observed
        assert rows["n"].to_list() == [observed.len()] * 3
        assert rows["positives"].to_list() == [int(observed.sum())] * 3
        # feedlab's row is the trained models' own test score
        assert rows["auc"][0] == pytest.approx(trained.metrics[action]["auc"], nan_ok=True)
        assert rows["logloss"][0] == pytest.approx(trained.metrics[action]["logloss"])
        gap = rows["auc"][0] - rows["auc"][1]
        assert rows["auc_vs_history"].to_list() == pytest.approx([gap] * 3, nan_ok=True)
        assert rows["pseudocount"][1] in PSEUDOCOUNT_GRID and rows["pseudocount"].null_count() == 2
        assert 0 < rows["prior"][1] < 1

    # on these 1.6k test rows feedlab ranks likes clearly better than the viewer's and the
    # post's past like rates (0.62 against 0.56 when written), and better than ids + time
    like = table.filter(pl.col("action") == "like")
    assert like["auc"][0] > like["auc"][1] + 0.03
    assert like["auc"][0] > like["auc"][2] + 0.03
    # the pre-impression row is pre_impression_baseline with the models' settings (40 rounds here)
    p = pre_impression_baseline(frame.sort("ts", maintain_order=True), "like", train_until=trained.train_until, max_rounds=40)
    y = test["like"].drop_nulls().cast(pl.Float64).to_numpy()
    assert like["logloss"][2] == pytest.approx(log_loss(y, p[test["like"].is_not_null().to_numpy()]), abs=1e-12)
    auc = table.pivot(on="model", index="action", values="auc")
    assert auc.columns == ["action", *BASELINE_MODELS]
    verdict = matches_or_beats_history(table)
    assert verdict["action"].to_list() == trained.actions
    assert verdict.filter(pl.col("action") == "like")["matches_or_beats"].item() is True


def test_compare_refuses_another_frame(reels):
    frame, trained = reels
    with pytest.raises(FeedlabError, match="another frame"):
        compare_with_baselines(frame.filter(pl.col("post_id") % 2 == 0), trained)


def test_matches_or_beats_tolerance():
    t = pl.DataFrame(
        {
            "action": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
            "model": list(BASELINE_MODELS) * 3,
            "auc": [0.70, 0.70 + MATCH_TOLERANCE / 2, 0.9, 0.70, 0.72, 0.5, math.nan, 0.6, 0.5],
            "positives": [10] * 9,
        }
    )
    v = matches_or_beats_history(t)
    assert v["matches_or_beats"].to_list() == [True, False, None]
    assert v["auc_vs_history"][1] == pytest.approx(-0.02)
