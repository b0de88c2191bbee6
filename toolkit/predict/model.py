"""The trained models of one surface, with what they were trained on and how well they did.

:class:`TrainedSurface` is what :func:`~toolkit.predict.train.train_surface` returns and what
:func:`~toolkit.predict.persist.load_models` reads back; it lives in its own module so that
training, prediction and persistence can all use it without importing each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from toolkit.store.schema import SCHEMA_VERSION

#: Columns of :meth:`TrainedSurface.metrics_frame`, after ``action``, in print order.
METRIC_COLUMNS: tuple[str, ...] = (
    "auc",
    "pr_auc",
    "logloss",
    "rce",
    "ece",
    "base_rate",
    "oracle_auc",
    "oracle_rce",
    "auc_gap",
    "n",
    "positives",
)


@dataclass
class TrainedSurface:
    """One binary XGBoost model per action of a surface, with its split, scores and importances.

    ``window`` holds the time split: training rows have ``train_start <= ts < train_until``
    (early stopping watches the rows from ``valid_start`` on), test rows have
    ``test_start <= ts <= test_end`` with ``test_start == train_until``. ``pooled_surfaces``
    are the other surfaces whose rows before ``valid_start`` also trained the models (counted in
    ``rows["pooled"]``); early stopping, the intercept and the test rows are the surface's own.
    ``metrics`` maps each action to :func:`~toolkit.predict.metrics.action_metrics` on the test
    rows. ``importance``
    has one row per action and feature (action, feature, family, gain, mean_abs_shap);
    ``family_importance`` sums it per signal family. ``boosters`` hold the trees up to the
    early-stopping round only, so ``best_iteration[a] + 1`` is each booster's size.

    Example
    -------
    >>> from datetime import datetime
    >>> t = TrainedSurface(surface="feed", actions=["like"], features=["position"], boosters={},
    ...     best_iteration={"like": 9}, train_until=datetime(2026, 1, 8), window={}, rows={},
    ...     metrics={"like": {"auc": 0.75, "n": 4}}, params={})
    >>> t.metrics_frame().select("action", "auc", "n").rows()
    [('like', 0.75, 4)]
    """

    surface: str
    actions: list[str]
    features: list[str]
    boosters: dict[str, Any]  # action -> xgboost.Booster
    best_iteration: dict[str, int]
    train_until: datetime
    window: dict[str, datetime | None]
    rows: dict[str, int]
    metrics: dict[str, dict[str, float]]
    params: dict[str, Any]
    importance: pl.DataFrame = field(default_factory=pl.DataFrame)
    family_importance: pl.DataFrame = field(default_factory=pl.DataFrame)
    schema_version: int = SCHEMA_VERSION
    created_at: datetime | None = None  # set when saved or loaded
    train_seconds: dict[str, float] = field(default_factory=dict)  # per action, this run only
    pooled_surfaces: list[str] = field(default_factory=list)

    def metrics_frame(self) -> pl.DataFrame:
        """The test metrics as a table, one row per action (null where a metric does not apply).

        NaN (an undefined metric: one class only) is shown as null too.
        """
        schema: dict[str, pl.DataType] = {"action": pl.String}
        schema.update({c: pl.Int64 if c in ("n", "positives") else pl.Float64 for c in METRIC_COLUMNS})
        rows = [
            {"action": a, **{c: _none_if_nan(self.metrics.get(a, {}).get(c)) for c in METRIC_COLUMNS}}
            for a in self.actions
        ]
        return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)

    def predict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``p_<action>`` per model action for each row of a feature frame (see :func:`~toolkit.predict.predict.predict_actions`)."""
        from toolkit.predict.predict import predict_actions

        return predict_actions(self, frame)


def _none_if_nan(value):
    if isinstance(value, float) and value != value:
        return None
    return value
