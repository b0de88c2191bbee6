"""Honest baselines for the action predictors, scored on the same split and rows as feedlab's models.

A predictor is only worth its signals if it beats what needs none of them. Two baselines:

- :func:`history_rates` (no model): the viewer's and the post's past rate of the action, each
  from rows strictly before the impression and shrunk towards the training base rate; the
  score is their mean. The prior is the action's positive rate in the training rows, the
  pseudocount is chosen from :data:`PSEUDOCOUNT_GRID` by log loss on the early-stopping
  (validation) rows (:func:`tune_history_rates`): a tuned baseline is an honest one.
- :func:`pre_impression_baseline`: XGBoost with feedlab's parameters, split and early stopping,
  on what a log knows before the impression only: the ids (user_id, post_id as numbers), the
  hour of day (UTC) and the post's duration. Post-impression columns (a click, a long view,
  play time) are outcomes of the impression itself and never features.

:func:`compare_with_baselines` scores both beside a :class:`~toolkit.predict.TrainedSurface` on
its own test rows; :func:`matches_or_beats_history` says per action whether feedlab's AUC
matches (within :data:`MATCH_TOLERANCE`) or beats the history baseline's. See
``docs/predictors.md``, section "Baselines".

Example
-------
>>> from datetime import datetime
>>> f = pl.DataFrame({"impression_id": [1, 2, 3], "user_id": [7, 7, 7], "post_id": [1, 2, 1],
...     "ts": [datetime(2026, 1, 1, h) for h in (9, 10, 11)], "like": [True, False, None]})
>>> history_rates(f, "like", prior=0.5, pseudocount=2).select("viewer_rate", "post_rate").rows()
[(0.5, 0.5), (0.6666666666666666, 0.5), (0.5, 0.6666666666666666)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.metrics import action_metrics, log_loss
from toolkit.predict.model import TrainedSurface
from toolkit.predict.predict import feature_matrix, predict_actions
from toolkit.predict.train import (
    DEFAULT_PARAMS,
    EARLY_STOPPING_ROUNDS,
    MAX_ROUNDS,
    _fit_action,
    _labels,
    split_times,
)

__all__ = [
    "BASELINE_MODELS",
    "MATCH_TOLERANCE",
    "PRE_IMPRESSION_FEATURES",
    "PSEUDOCOUNT_GRID",
    "compare_with_baselines",
    "history_baseline",
    "history_rates",
    "matches_or_beats_history",
    "pre_impression_baseline",
    "pre_impression_matrix",
    "tune_history_rates",
]

#: Pseudo-observations tried for the history baseline's shrinkage, smallest first (ties keep it).
PSEUDOCOUNT_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
#: The only features of :func:`pre_impression_baseline`, in matrix order.
PRE_IMPRESSION_FEATURES: tuple[str, ...] = ("user_id", "post_id", "hour_of_day", "post_duration_s")
#: The ``model`` values of :func:`compare_with_baselines`, in row order.
BASELINE_MODELS: tuple[str, ...] = ("feedlab", "history_rates", "pre_impression")
#: feedlab "matches" the history baseline when its test AUC is at most this much lower: about
#: one standard error of a test AUC with a few thousand positives (0.005 for an AUC of 0.8 with
#: 3,000 positives among 60,000 rows, by Hanley & McNeil's formula), so a smaller shortfall says
#: nothing about which predictor ranks better.
MATCH_TOLERANCE = 0.005

_METRICS = ("auc", "pr_auc", "logloss", "rce", "ece", "base_rate", "n", "positives")


# --------------------------------------------------------------------------------------------
# (a) history rates: no model


def _past_counts(frame: pl.DataFrame, key: str, action: str) -> pl.DataFrame:
    """Per row, the positives and observed labels of ``action`` among the rows of the same
    ``key`` with a strictly earlier ts (rows at the row's own ts, itself included, never count)."""
    label = pl.col(action)
    per_ts = (
        frame.lazy()
        .group_by(key, "ts")
        # count() skips nulls: a label that could not be observed is no observation
        .agg(label.cast(pl.Int64).sum().alias("_pos"), label.count().cast(pl.Int64).alias("_obs"))
        .sort(key, "ts")
        .with_columns(
            (pl.col(c).cum_sum().over(key) - pl.col(c)).alias(f"{c}_before") for c in ("_pos", "_obs")
        )
    )
    return (
        frame.lazy()
        .select(key, "ts")
        .join(per_ts, on=[key, "ts"], how="left", maintain_order="left")
        .select(pl.col("_pos_before").alias("positives"), pl.col("_obs_before").alias("observed"))
        .collect()
    )


def history_rates(frame: pl.DataFrame, action: str, *, prior: float, pseudocount: float) -> pl.DataFrame:
    """The viewer's and the post's past rate of ``action`` for every row of a training frame.

    ``frame`` needs ``user_id``, ``post_id``, ``ts`` and the label column ``action`` (null where
    not observable); ``impression_id`` is kept when present. For a row at time t, a viewer's
    history is their rows with ``ts < t`` whose label is observed: rows at t itself or later
    never count (point-in-time), and null labels are no observations. Each rate is shrunk
    towards ``prior`` with ``pseudocount`` (m) pseudo-observations:
    ``(positives + m * prior) / (observed + m)``, so a viewer or post with no history gets the
    prior.

    ``score`` is the mean of the two rates. A mean, rather than a learned combination, keeps it
    a probability with no fitted weights: "no model" beyond the prior and m. Returns one row per
    input row, in input order: impression_id (if present), viewer_positives, viewer_observed,
    viewer_rate, post_positives, post_observed, post_rate, score. Vectorised in polars: one
    group-by per key and a running total over its distinct timestamps.

    Example
    -------
    >>> from datetime import datetime
    >>> f = pl.DataFrame({"user_id": [1, 1, 2], "post_id": [5, 5, 5],
    ...     "ts": [datetime(2026, 1, 1, h) for h in (8, 9, 9)], "like": [True, True, False]})
    >>> out = history_rates(f, "like", prior=0.1, pseudocount=1)
    >>> out["post_observed"].to_list(), [round(s, 3) for s in out["score"]]
    ([0, 1, 1], [0.1, 0.55, 0.325])
    """
    missing = [c for c in ("user_id", "post_id", "ts", action) if c not in frame.columns]
    if missing:
        raise FeedlabError(f"history_rates needs the column(s) {', '.join(missing)}")
    if not 0.0 <= prior <= 1.0 or not math.isfinite(prior):
        raise FeedlabError(f"prior must be a probability (got {prior})")
    if not pseudocount > 0 or not math.isfinite(pseudocount):
        raise FeedlabError(f"pseudocount must be a positive number (got {pseudocount})")
    m = float(pseudocount)
    parts = []
    for who, key in (("viewer", "user_id"), ("post", "post_id")):
        counts = _past_counts(frame, key, action)
        parts.append(
            counts.select(
                pl.col("positives").alias(f"{who}_positives"),
                pl.col("observed").alias(f"{who}_observed"),
                ((pl.col("positives") + m * prior) / (pl.col("observed") + m)).alias(f"{who}_rate"),
            )
        )
    ids = frame.select("impression_id") if "impression_id" in frame.columns else pl.DataFrame()
    out = pl.concat([ids, *parts], how="horizontal")
    return out.with_columns(((pl.col("viewer_rate") + pl.col("post_rate")) / 2).alias("score"))


def tune_history_rates(
    frame: pl.DataFrame,
    action: str,
    *,
    train_until: str | date | datetime | None = None,
    grid: Sequence[float] = PSEUDOCOUNT_GRID,
) -> dict[str, Any]:
    """The prior and pseudocount of :func:`history_rates` for ``action``, from the training rows only.

    The split is :func:`~toolkit.predict.split_times` (that of ``train_on_frame``): ``prior`` is
    the action's positive rate over the observed labels of the training rows (``ts < T``), and
    ``pseudocount`` the value of ``grid`` whose scores have the lowest log loss on the
    validation rows (``valid_start <= ts < T``), the rows feedlab's models early-stop on (the
    smallest on a tie). Returns prior, pseudocount, valid_logloss (per grid value), train_until
    and valid_start.

    Example
    -------
    >>> fit = tune_history_rates(frame, "like")  # doctest: +SKIP
    >>> fit["prior"], fit["pseudocount"]  # doctest: +SKIP
    (0.071, 10.0)
    """
    if not grid:
        raise FeedlabError("the pseudocount grid is empty")
    bounds = split_times(frame["ts"], train_until=train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    train_labels = frame.filter(pl.col("ts") < T)[action].drop_nulls()
    if train_labels.len() == 0:
        raise FeedlabError(f"no observed {action} labels before {T} to take a prior from")
    prior = float(train_labels.cast(pl.Float64).mean())
    valid = ((pl.col("ts") >= V) & (pl.col("ts") < T) & pl.col(action).is_not_null()).alias("_valid")
    mask = frame.select(valid)["_valid"]
    y = frame[action].filter(mask).cast(pl.Float64).to_numpy()
    losses: dict[float, float] = {}
    for m in grid:
        score = history_rates(frame, action, prior=prior, pseudocount=m)["score"].filter(mask).to_numpy()
        losses[float(m)] = log_loss(y, score) if y.size else math.nan
    finite = {m: v for m, v in losses.items() if not math.isnan(v)}
    # no observed validation label: nothing to choose by, keep the first grid value
    chosen = min(finite, key=lambda m: (finite[m], m)) if finite else float(grid[0])
    return {"prior": prior, "pseudocount": chosen, "valid_logloss": losses, "train_until": T, "valid_start": V}


def history_baseline(
    frame: pl.DataFrame,
    action: str,
    *,
    train_until: str | date | datetime | None = None,
    grid: Sequence[float] = PSEUDOCOUNT_GRID,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The tuned history baseline's scores for the test rows (``ts >= T``), in frame order.

    Tunes prior and pseudocount on the training rows (:func:`tune_history_rates`) and scores
    every test row with :func:`history_rates` over the whole frame: a test row's history holds
    every earlier row, earlier test rows included, as feedlab's own rate features do. Returns
    the scores and the tuned settings.

    Example
    -------
    >>> p, fit = history_baseline(frame, "not_interested")  # doctest: +SKIP
    >>> fit["pseudocount"]  # doctest: +SKIP
    3.0
    """
    fit = tune_history_rates(frame, action, train_until=train_until, grid=grid)
    scores = history_rates(frame, action, prior=fit["prior"], pseudocount=fit["pseudocount"])["score"]
    test = frame.select((pl.col("ts") >= fit["train_until"]).alias("_test"))["_test"]
    return scores.filter(test).to_numpy(), fit


# --------------------------------------------------------------------------------------------
# (b) XGBoost on pre-impression columns


def pre_impression_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The :data:`PRE_IMPRESSION_FEATURES` of a frame as a float32 matrix (nulls as NaN).

    user_id and post_id as numbers, the hour of day of ts in UTC (0-23; the store keeps naive
    UTC times, an aware ts is converted) and post_duration_s (null for photos). Nothing else of
    the frame is read.

    Example
    -------
    >>> from datetime import datetime
    >>> f = pl.DataFrame({"user_id": [3], "post_id": [9], "ts": [datetime(2026, 1, 1, 17, 5)],
    ...     "post_duration_s": [None], "like": [True]})
    >>> pre_impression_matrix(f).tolist()
    [[3.0, 9.0, 17.0, nan]]
    """
    missing = [c for c in ("user_id", "post_id", "ts", "post_duration_s") if c not in frame.columns]
    if missing:
        raise FeedlabError(f"the pre-impression baseline needs the column(s) {', '.join(missing)}")
    ts = pl.col("ts")
    if getattr(frame.schema["ts"], "time_zone", None):
        ts = ts.dt.convert_time_zone("UTC")
    cols = frame.select("user_id", "post_id", ts.dt.hour().alias("hour_of_day"), "post_duration_s")
    return feature_matrix(cols, list(PRE_IMPRESSION_FEATURES))


def pre_impression_baseline(
    frame: pl.DataFrame,
    action: str,
    *,
    train_until: str | date | datetime | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
) -> np.ndarray:
    """XGBoost on the pre-impression columns only; its predictions for the test rows (``ts >= T``), in frame order.

    The features are :data:`PRE_IMPRESSION_FEATURES` (:func:`pre_impression_matrix`); the rest
    is ``train_on_frame``'s: :func:`~toolkit.predict.split_times` for the fit, validation and test
    rows, :data:`~toolkit.predict.DEFAULT_PARAMS` updated with ``params`` (plus ``seed`` and
    ``nthread``), null labels with weight 0, early stopping after ``early_stopping_rounds``
    rounds on the validation rows, the booster cut at its best round.

    Example
    -------
    >>> p = pre_impression_baseline(frame, "like", params={"eta": 0.15})  # doctest: +SKIP
    >>> p.shape  # doctest: +SKIP
    (51204,)
    """
    import xgboost as xgb

    if action not in frame.columns:
        raise FeedlabError(f"the frame has no label column for {action}")
    bounds = split_times(frame["ts"], train_until=train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    fit = frame.filter(pl.col("ts") < V)
    valid = frame.filter((pl.col("ts") >= V) & (pl.col("ts") < T))
    test = frame.filter(pl.col("ts") >= T)
    y_fit, y_valid = _labels(fit, action), _labels(valid, action)
    if np.nansum(y_fit) == 0 or np.nansum(1 - y_fit) == 0:
        raise FeedlabError(f"cannot train {action}: the training rows before {V} hold only one class of its labels")
    names = list(PRE_IMPRESSION_FEATURES)
    booster_params = {**DEFAULT_PARAMS, "seed": seed, "nthread": os.cpu_count() or 1, **(params or {})}
    dfit = xgb.QuantileDMatrix(pre_impression_matrix(fit), missing=np.nan, feature_names=names)
    dvalid = xgb.QuantileDMatrix(pre_impression_matrix(valid), missing=np.nan, feature_names=names, ref=dfit)
    booster, best = _fit_action(
        dfit, dvalid, y_fit, y_valid, params=booster_params, max_rounds=max_rounds,
        early_stopping_rounds=early_stopping_rounds,
    )  # fmt: skip
    if test.height == 0:
        return np.empty(0, dtype=np.float64)
    p = booster.inplace_predict(pre_impression_matrix(test), iteration_range=(0, best + 1))
    return np.asarray(p, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# side by side


def compare_with_baselines(frame: pl.DataFrame, trained: TrainedSurface, *, seed: int = 0) -> pl.DataFrame:
    """feedlab's models beside both baselines, per action, on the same test rows of the same split.

    ``trained`` is what :func:`~toolkit.predict.train_on_frame` returned for this ``frame`` (its
    window gives T and its row counts must match the frame's split). For each of its actions,
    the rows scored are the test rows (``ts >= T``) whose label is observed, the same for all
    three models: ``feedlab`` (:func:`~toolkit.predict.predict_actions`), ``history_rates``
    (:func:`history_baseline`, tuned on the training rows) and ``pre_impression``
    (:func:`pre_impression_baseline`, with the trained models' booster parameters, rounds and
    early stopping, and ``seed``).

    One row per (action, model), actions in the models' order, models in
    :data:`BASELINE_MODELS` order, with the columns of
    :func:`~toolkit.predict.action_metrics` (auc, pr_auc, logloss, rce, ece, base_rate, n,
    positives), ``auc_vs_history`` (feedlab's AUC minus the history baseline's, the same on the
    action's three rows) and the history baseline's ``prior`` and ``pseudocount`` (null on the
    other models' rows). Undefined metrics (one class) are NaN. Pivot it with
    ``table.pivot(on="model", index="action", values="auc")``.

    Example
    -------
    >>> frame = training_frame(con, "reels")  # doctest: +SKIP
    >>> trained = train_on_frame(frame, surface="reels", params={"eta": 0.15})  # doctest: +SKIP
    >>> table = compare_with_baselines(frame, trained)  # doctest: +SKIP
    >>> table.pivot(on="model", index="action", values="auc")  # doctest: +SKIP
    """
    frame = frame.sort("ts", maintain_order=True)  # as train_on_frame does
    bounds = split_times(frame["ts"], train_until=trained.train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    test = frame.filter(pl.col("ts") >= T)
    n_train = frame.filter(pl.col("ts") < T).height
    n_fit = frame.filter(pl.col("ts") < V).height
    rows = {"fit": n_fit, "valid": n_train - n_fit, "test": test.height}
    if trained.rows and any(trained.rows.get(k) != v for k, v in rows.items()):
        raise FeedlabError(
            f"the models were trained on another frame: their split has {trained.rows} rows, this frame's {rows}"
        )
    # the trained models' booster parameters (eta, depth, ...); seed is this call's, nthread this machine's
    params = {k: v for k, v in trained.params.items() if k not in ("max_rounds", "early_stopping_rounds", "seed", "nthread")}
    feedlab = predict_actions(trained, test)
    out = []
    for action in trained.actions:
        observed = test[action].is_not_null().to_numpy()
        y = test[action].cast(pl.Float64).to_numpy()[observed]
        p_history, fit = history_baseline(frame, action, train_until=T)
        p_pre = pre_impression_baseline(
            frame, action, train_until=T, seed=seed, params=params,
            max_rounds=int(trained.params.get("max_rounds", MAX_ROUNDS)),
            early_stopping_rounds=int(trained.params.get("early_stopping_rounds", EARLY_STOPPING_ROUNDS)),
        )  # fmt: skip
        scores = {
            "feedlab": feedlab[f"p_{action}"].to_numpy()[observed],
            "history_rates": p_history[observed],
            "pre_impression": p_pre[observed],
        }
        metrics = {model: action_metrics(y, p) for model, p in scores.items()}
        gap = metrics["feedlab"]["auc"] - metrics["history_rates"]["auc"]
        for model in BASELINE_MODELS:
            history = model == "history_rates"
            out.append(
                {
                    "action": action,
                    "model": model,
                    **{k: metrics[model][k] for k in _METRICS},
                    "auc_vs_history": gap,
                    "prior": fit["prior"] if history else None,
                    "pseudocount": fit["pseudocount"] if history else None,
                }
            )
    schema: dict[str, Any] = {"action": pl.String, "model": pl.String}
    schema.update({k: pl.Int64 if k in ("n", "positives") else pl.Float64 for k in _METRICS})
    schema.update({"auc_vs_history": pl.Float64, "prior": pl.Float64, "pseudocount": pl.Float64})
    return pl.DataFrame(out, schema=schema, orient="row") if out else pl.DataFrame(schema=schema)


def matches_or_beats_history(table: pl.DataFrame, *, tolerance: float = MATCH_TOLERANCE) -> pl.DataFrame:
    """Per action, whether feedlab's test AUC matches or beats the history baseline's.

    "Matches or beats" means ``feedlab auc >= history_rates auc - tolerance``
    (:data:`MATCH_TOLERANCE`, 0.005, by default: differences that small are noise). ``table`` is
    :func:`compare_with_baselines`'s. Returns action, feedlab_auc, history_auc, auc_vs_history,
    positives and matches_or_beats (null when an AUC is undefined: one class in the test rows).

    Example
    -------
    >>> t = pl.DataFrame({"action": ["like", "like", "share", "share"],
    ...     "model": ["feedlab", "history_rates"] * 2, "auc": [0.80, 0.75, 0.70, 0.704],
    ...     "positives": [900, 900, 40, 40]})
    >>> matches_or_beats_history(t)["matches_or_beats"].to_list()
    [True, True]
    """
    wide = (
        table.filter(pl.col("model").is_in(["feedlab", "history_rates"]))
        .with_columns(pl.col("auc").fill_nan(None))
        .pivot(on="model", index="action", values="auc", maintain_order=True)
        .rename({"feedlab": "feedlab_auc", "history_rates": "history_auc"})
    )
    positives = table.filter(pl.col("model") == "feedlab").select("action", "positives")
    return (
        wide.join(positives, on="action", how="left", maintain_order="left")
        .with_columns((pl.col("feedlab_auc") - pl.col("history_auc")).alias("auc_vs_history"))
        .with_columns((pl.col("auc_vs_history") >= -tolerance).alias("matches_or_beats"))
        .select("action", "feedlab_auc", "history_auc", "auc_vs_history", "positives", "matches_or_beats")
    )
