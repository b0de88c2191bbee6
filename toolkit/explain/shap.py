"""One prediction's SHAP values per feature, as a frame: what pushed one post's predicted action up or down.

XGBoost's own TreeSHAP (``booster.predict(..., pred_contribs=True)``) in **log-odds**: the
features' SHAP values plus the base value (the model's bias) add up to the margin, and the
predicted probability is ``1 / (1 + exp(-margin))`` (see :data:`toolkit.explain.explain.SIGNAL_UNITS`).
Features are computed exactly as the ranker computes them (viewer's device, scored as if shown
on top at ``at``), so the margin matches the ranker's ``p_<action>``.

Example
-------
>>> from toolkit.explain.shap import post_shap
>>> frame, base = post_shap("data/feedlab.duckdb", "explore", 17, 4711, "save")  # doctest: +SKIP
>>> frame.head(3)  # doctest: +SKIP
>>> base + frame["shap"].sum()  # the margin of p_save  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import check_features
from toolkit.predict.predict import feature_matrix
from toolkit.rank.ranker import _check_user, _models, as_time, open_store, viewer_devices
from toolkit.signals import compute_features
from toolkit.signals.registry import FEATURES

#: Columns of a SHAP frame, with their types.
SHAP_SCHEMA = {"feature": pl.String, "family": pl.String, "value": pl.String, "shap": pl.Float64}

__all__ = ["SHAP_SCHEMA", "post_features", "post_shap", "shap_frame"]


def post_features(
    con: duckdb.DuckDBPyConnection, models: TrainedSurface, user_id: int, post_ids: Sequence[int], *, at: datetime
) -> pl.DataFrame:
    """The features of ``post_ids`` for ``user_id`` at ``at``, one row per post in that order, as the ranker computes them.

    Example
    -------
    >>> features = post_features(con, models, 17, [4711, 4712], at=cache.at)  # doctest: +SKIP
    """
    ids = [int(p) for p in post_ids]
    device = viewer_devices(con, [int(user_id)], at=at)["device"][0]
    requests = pl.DataFrame(
        {"user_id": [int(user_id)] * len(ids), "post_id": ids, "ts": [at] * len(ids), "device": [device] * len(ids)},
        schema={"user_id": pl.Int64, "post_id": pl.Int64, "ts": pl.Datetime("us"), "device": pl.String},
    )
    features = compute_features(con, requests)
    check_features(models.features, features.columns, schema_version=models.schema_version)
    return features


def shap_frame(models: TrainedSurface, features: pl.DataFrame, action: str, *, row: int = 0) -> tuple[pl.DataFrame, float]:
    """SHAP values of one row of a feature frame for one action: (frame, base value), both in log-odds.

    The frame has one row per model feature, largest |shap| first (ties by feature name):
    ``feature``, ``family`` (its signal family), ``value`` (the feature's value as text; null
    when missing) and ``shap``. ``base value + sum(shap)`` is the row's margin.

    Example
    -------
    >>> frame, base = shap_frame(models, features, "like", row=0)  # doctest: +SKIP
    """
    import xgboost as xgb

    if action not in models.boosters:
        raise FeedlabError(f"no {models.surface} model predicts {action!r}; the models predict {', '.join(models.actions)}")
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < features.height:
        raise FeedlabError(f"row must be a whole number in [0, {features.height}) (got {row!r})")
    one = features[int(row)]
    matrix = xgb.DMatrix(feature_matrix(one, models.features), missing=np.nan, feature_names=list(models.features))
    contribs = models.boosters[action].predict(
        matrix, pred_contribs=True, iteration_range=(0, models.best_iteration[action] + 1)
    )[0].astype(np.float64)
    values = one.row(0, named=True)
    frame = pl.DataFrame(
        {
            "feature": list(models.features),
            "family": [FEATURES[f].family if f in FEATURES else "unknown" for f in models.features],
            "value": [_text(values.get(f)) for f in models.features],
            "shap": contribs[:-1],
        },
        schema=SHAP_SCHEMA,
    )
    order = frame.with_columns(pl.col("shap").abs().alias("_abs")).sort(["_abs", "feature"], descending=[True, False])
    return order.drop("_abs"), float(contribs[-1])


def post_shap(
    store: str | duckdb.DuckDBPyConnection,
    surface: str,
    user_id: int,
    post_id: int,
    action: str,
    *,
    at: str | date | datetime | None = None,
    models: TrainedSurface | None = None,
) -> tuple[pl.DataFrame, float]:
    """Why the model predicts ``action`` for ``post_id`` shown to ``user_id`` on ``surface``: (SHAP frame, base value).

    See :func:`shap_frame` for the frame. ``at`` defaults to just after the store's last event,
    as in :func:`toolkit.rank.rank`.

    Example
    -------
    >>> frame, base = post_shap("data/feedlab.duckdb", "explore", 17, 4711, "save")  # doctest: +SKIP
    """
    with open_store(store) as con:
        _check_user(con, user_id)
        trained = _models(store, con, surface, models)
        when = as_time(at, con)
        known = con.sql("select count(*) from posts where post_id = ? and created_at < ?", params=[int(post_id), when]).fetchall()
        if not known[0][0]:
            raise FeedlabError(f"no post {post_id} created before {when} in the store")
        features = post_features(con, trained, user_id, [post_id], at=when)
    return shap_frame(trained, features, action)


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
