"""Action probabilities from trained models, and their scores against observed labels.

Example
-------
>>> import numpy as np, polars as pl, xgboost as xgb
>>> from datetime import datetime
>>> from toolkit.predict.model import TrainedSurface
>>> X = np.array([[0.0], [1.0], [0.0], [1.0]], dtype=np.float32)
>>> booster = xgb.train({"objective": "binary:logistic", "min_child_weight": 0, "nthread": 1},
...     xgb.DMatrix(X, label=[0, 1, 0, 1], feature_names=["position"]), num_boost_round=2)
>>> models = TrainedSurface(surface="feed", actions=["like"], features=["position"],
...     boosters={"like": booster}, best_iteration={"like": 1}, train_until=datetime(2026, 1, 1),
...     window={}, rows={}, metrics={}, params={})
>>> frame = pl.DataFrame({"impression_id": [7, 8], "position": [0.0, 1.0]})
>>> out = predict_actions(models, frame)
>>> out.columns, bool(out["p_like"][1] > out["p_like"][0])
(['impression_id', 'p_like'], True)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.metrics import action_metrics
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import check_features

#: Identifier columns a prediction keeps from its input frame, when present.
ID_COLUMNS: tuple[str, ...] = ("impression_id", "user_id", "post_id")


def feature_matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """The features of a frame as a C-ordered float32 matrix in the given order, nulls as NaN.

    Booleans become 0/1. XGBoost bins float32 values, so converting here loses nothing it
    would have kept.

    Example
    -------
    >>> feature_matrix(pl.DataFrame({"a": [1.5, None], "b": [True, False]}), ["b", "a"]).tolist()
    [[1.0, 1.5], [0.0, nan]]
    """
    if not features:
        return np.empty((frame.height, 0), dtype=np.float32)
    X = frame.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy()
    # polars hands back a column-major array; XGBoost's in-place predictor reads rows
    return np.ascontiguousarray(X, dtype=np.float32)


def predict_actions(models: TrainedSurface, frame: pl.DataFrame) -> pl.DataFrame:
    """The predicted probability of every model action for each row of a feature frame.

    Keeps the frame's id columns (impression_id when present, user_id, post_id) and adds one
    Float64 ``p_<action>`` per model action, in the model's action order. ``frame`` needs every
    feature the models were trained on (a :func:`~toolkit.signals.training_frame` or
    :func:`~toolkit.signals.scoring_frame`); a mismatch is a
    :class:`~toolkit.errors.FeedlabError` naming the missing and extra features. Each booster
    predicts with its trees up to the early-stopping round.

    Example
    -------
    >>> preds = predict_actions(load_models("data/feedlab.duckdb", "feed"), frame)  # doctest: +SKIP
    """
    check_features(models.features, frame.columns, schema_version=models.schema_version)
    ids = [c for c in ID_COLUMNS if c in frame.columns]
    out = frame.select(ids)
    if frame.height == 0:
        return out.with_columns(pl.Series(f"p_{a}", [], dtype=pl.Float64) for a in models.actions)
    X = feature_matrix(frame, models.features)
    preds = []
    for action in models.actions:
        booster = models.boosters[action]
        p = booster.inplace_predict(X, iteration_range=(0, models.best_iteration[action] + 1))
        preds.append(pl.Series(f"p_{action}", np.asarray(p, dtype=np.float64)))
    # a frame without id columns gives a 0-row selection: the predictions alone then
    return out.hstack(preds) if ids else pl.DataFrame(preds)


def evaluate_actions(
    models: TrainedSurface, frame: pl.DataFrame, *, predictions: pl.DataFrame | None = None
) -> dict[str, dict[str, float]]:
    """Scores of every model action on the rows of ``frame`` whose label is observed (not null).

    ``frame`` carries the labels (columns named as the actions) and, on simulated data, the true
    probabilities ``p_<action>``: when those are present on every scored row the result also
    holds oracle_auc, oracle_rce and auc_gap (see :func:`~toolkit.predict.metrics.action_metrics`).
    ``predictions`` may pass :func:`predict_actions` of the same frame to avoid predicting twice.

    Example
    -------
    >>> evaluate_actions(models, training_frame(con, "feed", start=models.train_until))["like"]["auc"]  # doctest: +SKIP
    0.78
    """
    missing = [a for a in models.actions if a not in frame.columns]
    if missing:
        raise FeedlabError(f"the frame has no label column for {', '.join(missing)}")
    preds = predict_actions(models, frame) if predictions is None else predictions
    if preds.height != frame.height:
        raise FeedlabError("predictions and frame have different row counts")
    out: dict[str, dict[str, float]] = {}
    for action in models.actions:
        observed = frame[action].is_not_null()
        y = frame[action].filter(observed).cast(pl.Float64).to_numpy()
        p = preds[f"p_{action}"].filter(observed).to_numpy()
        truth = f"p_{action}"
        oracle = None
        if truth in frame.columns:
            t = frame[truth].filter(observed)
            # real data has no truth at all; a partial truth column would score a different row set
            if t.len() and t.null_count() == 0:
                oracle = t.cast(pl.Float64).to_numpy()
        out[action] = action_metrics(y, p, oracle=oracle)
    return out
