"""Predictors: per-surface XGBoost models of each action, scored against the truth.

One binary classifier per (surface, action) learns P(action | impression) from the signals of
:mod:`toolkit.signals`, trained on the past and scored on the future (:func:`train_surface`).
Models are saved beside their store in XGBoost's own format (:func:`save_models`,
:func:`load_models`) and predict ``p_<action>`` for any feature frame (:func:`predict_actions`).
On a simulated world, metrics include how far the model is from the true probabilities
(``oracle_auc``, ``auc_gap``). See ``docs/predictors.md``.

Example
-------
>>> from toolkit.predict import action_metrics
>>> action_metrics([0, 1], [0.2, 0.9])["auc"]
1.0
"""

from toolkit.predict.baselines import (
    MATCH_TOLERANCE,
    PRE_IMPRESSION_FEATURES,
    PSEUDOCOUNT_GRID,
    compare_with_baselines,
    history_baseline,
    history_rates,
    matches_or_beats_history,
    pre_impression_baseline,
    tune_history_rates,
)
from toolkit.predict.metrics import (
    action_metrics,
    expected_calibration_error,
    log_loss,
    pr_auc,
    rce,
    reliability_table,
    roc_auc,
)
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import check_features, load_models, models_dir, save_models
from toolkit.predict.predict import evaluate_actions, feature_matrix, predict_actions
from toolkit.predict.train import (
    DEFAULT_PARAMS,
    calibrate_intercept,
    default_pool,
    parse_time,
    pooled_rows,
    select_actions,
    split_times,
    train_on_frame,
    train_on_parquet,
    train_surface,
    train_surfaces,
)

__all__ = [
    "DEFAULT_PARAMS",
    "MATCH_TOLERANCE",
    "PRE_IMPRESSION_FEATURES",
    "PSEUDOCOUNT_GRID",
    "TrainedSurface",
    "action_metrics",
    "build_feature_partitions",
    "calibrate_intercept",
    "default_pool",
    "check_features",
    "compare_with_baselines",
    "dask_client",
    "evaluate_actions",
    "expected_calibration_error",
    "feature_matrix",
    "history_baseline",
    "history_rates",
    "load_models",
    "log_loss",
    "matches_or_beats_history",
    "models_dir",
    "parse_time",
    "pooled_rows",
    "pr_auc",
    "pre_impression_baseline",
    "predict_actions",
    "rce",
    "reliability_table",
    "roc_auc",
    "save_models",
    "select_actions",
    "split_times",
    "train_on_frame",
    "train_on_parquet",
    "train_surface",
    "train_surfaces",
    "train_surface_dask",
    "tune_history_rates",
]


def __getattr__(name: str):
    # the Dask path, imported on first use so that `import toolkit.predict` stays free of dask
    if name in ("build_feature_partitions", "dask_client", "train_surface_dask"):
        from toolkit.predict import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
