"""Saving trained models beside their store, and loading them back with a feature check.

Models of store ``data/w.duckdb`` live in ``data/w.models/<surface>/``: one ``<action>.ubj`` per
action (XGBoost's own UBJSON model format, never pickle) and a ``metadata.json`` with the
features and their families, the schema version, the training window, metrics, best
iterations, parameters and library versions.

Example
-------
>>> models_dir("data/feedlab.duckdb", "feed").as_posix()
'data/feedlab.models/feed'
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.store.connection import store_file
from toolkit.store.schema import SCHEMA_VERSION, SURFACES

METADATA = "metadata.json"
#: Version of the layout of a model folder (bump when metadata.json changes incompatibly).
FORMAT_VERSION = 1


def models_dir(db: str | os.PathLike | duckdb.DuckDBPyConnection, surface: str) -> Path:
    """The folder holding a surface's models for a store: ``<db parent>/<db stem>.models/<surface>``.

    Example
    -------
    >>> models_dir("/data/w.duckdb", "reels").as_posix()
    '/data/w.models/reels'
    """
    if surface not in SURFACES:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    path = store_file(db, needs="models are saved beside a database file")
    return path.parent / f"{path.stem}.models" / surface


def check_features(
    metadata_features: list[str] | list[dict], frame_columns: list[str], *, schema_version: int | None = None
) -> None:
    """Raise a FeedlabError unless a frame carries exactly the features a model was trained on.

    ``metadata_features`` are the model's features (names, or ``{"name", "family"}`` records as in
    metadata.json). Missing features are model features absent from the frame; extra ones are
    registered features (:func:`~toolkit.signals.feature_names`) in the frame that the model
    never saw, which means the signals changed since training. A ``schema_version`` other than
    this toolkit's is refused as well. Either way the fix is to retrain.

    Example
    -------
    >>> check_features(["position"], ["impression_id", "position"])
    >>> check_features(["position", "post_age_h"], ["position"])
    Traceback (most recent call last):
    ...
    toolkit.errors.FeedlabError: the model's features do not match the data: missing from the data: post_age_h; retrain the models (feedlab train)
    """
    from toolkit.signals.registry import feature_names

    problems = []
    if schema_version is not None and schema_version != SCHEMA_VERSION:
        problems.append(f"models were trained on schema version {schema_version}, the data is version {SCHEMA_VERSION}")
    names = [f["name"] if isinstance(f, dict) else f for f in metadata_features]
    columns = set(frame_columns)
    missing = [f for f in names if f not in columns]
    known = set(names)
    extra = [f for f in feature_names() if f in columns and f not in known]
    if missing:
        problems.append(f"missing from the data: {', '.join(missing)}")
    if extra:
        problems.append(f"not known to the model: {', '.join(extra)}")
    if problems:
        raise FeedlabError(
            "the model's features do not match the data: " + "; ".join(problems) + "; retrain the models (feedlab train)"
        )


def save_models(trained: TrainedSurface, db: str | os.PathLike | duckdb.DuckDBPyConnection) -> Path:
    """Write a surface's models and metadata beside the store ``db``; returns the folder.

    Replaces any earlier models of the surface as a whole: files are written into a temporary
    folder that is swapped in when complete, so a reader never sees half a set.

    Example
    -------
    >>> save_models(train_surface(con, "feed"), "data/feedlab.duckdb")  # doctest: +SKIP
    PosixPath('data/feedlab.models/feed')
    """
    target = models_dir(db, trained.surface)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for action in trained.actions:
            trained.boosters[action].save_model(str(partial / f"{action}.ubj"))
        created = datetime.now().replace(microsecond=0)
        (partial / METADATA).write_text(json.dumps(_metadata(trained, created), indent=2, allow_nan=False) + "\n")
        if target.exists():
            os.replace(target, old)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    trained.created_at = created
    return target


def load_models(db: str | os.PathLike | duckdb.DuckDBPyConnection, surface: str) -> TrainedSurface:
    """The models :func:`save_models` wrote for a surface of the store ``db``.

    The result is a :class:`~toolkit.predict.model.TrainedSurface` with the saved metrics and
    importances. Missing or unreadable models are a FeedlabError that says how to train them.

    Example
    -------
    >>> models = load_models("data/feedlab.duckdb", "feed")  # doctest: +SKIP
    >>> models.actions[:2]  # doctest: +SKIP
    ['dwell', 'like']
    """
    import xgboost as xgb

    folder = models_dir(db, surface)
    db_path = store_file(db, needs="models are saved beside a database file")
    hint = f"run `feedlab train --db {db_path} --surface {surface}`"
    meta_path = folder / METADATA
    if not meta_path.exists():
        raise FeedlabError(f"no saved {surface} models for {db_path} (looked in {folder}); {hint} first")
    try:
        meta = json.loads(meta_path.read_text())
        actions = list(meta["actions"])
    except (ValueError, KeyError, TypeError) as err:
        raise FeedlabError(f"{meta_path} is not a feedlab model metadata file ({err}); {hint} again") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FeedlabError(f"{meta_path} has model format {meta.get('format_version')!r}, this toolkit reads {FORMAT_VERSION}; {hint} again")
    boosters = {}
    for action in actions:
        path = folder / f"{action}.ubj"
        if not path.exists():
            raise FeedlabError(f"{folder} lacks the {action} model ({path.name}); {hint} again")
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as err:
            raise FeedlabError(f"{path}: cannot read the model ({str(err).splitlines()[0]}); {hint} again") from None
        boosters[action] = booster
    imp = meta.get("importance") or {}
    fam = meta.get("family_importance") or {}
    return TrainedSurface(
        surface=meta["surface"],
        actions=actions,
        features=[f["name"] for f in meta["features"]],
        boosters=boosters,
        best_iteration={a: int(i) for a, i in meta["best_iteration"].items()},
        train_until=datetime.fromisoformat(meta["train_until"]),
        window={k: _parse_time(v) for k, v in meta.get("window", {}).items()},
        rows=dict(meta.get("rows", {})),
        metrics={a: {k: math.nan if v is None else v for k, v in m.items()} for a, m in meta["metrics"].items()},
        params=dict(meta.get("params", {})),
        importance=pl.DataFrame(imp) if imp else pl.DataFrame(),
        family_importance=pl.DataFrame(fam) if fam else pl.DataFrame(),
        schema_version=int(meta["schema_version"]),
        created_at=_parse_time(meta.get("created_at")),
        pooled_surfaces=list(meta.get("pooled_surfaces", [])),
    )


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _json_value(value: Any) -> Any:
    """JSON has no NaN: an undefined metric becomes null; datetimes become ISO strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return value


def library_versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on (recorded in metadata.json).

    Example
    -------
    >>> sorted(library_versions())
    ['duckdb', 'numpy', 'polars', 'python', 'xgboost']
    """
    import numpy
    import xgboost

    return {
        "xgboost": xgboost.__version__,
        "polars": pl.__version__,
        "duckdb": duckdb.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _metadata(trained: TrainedSurface, created: datetime) -> dict[str, Any]:
    from toolkit.signals.registry import FEATURES

    return _json_value(
        {
            "format": "feedlab-models",
            "format_version": FORMAT_VERSION,
            "surface": trained.surface,
            "schema_version": trained.schema_version,
            "created_at": created,
            "train_until": trained.train_until,
            "window": trained.window,
            "rows": trained.rows,
            "pooled_surfaces": trained.pooled_surfaces,
            "actions": trained.actions,
            "features": [
                {"name": f, "family": FEATURES[f].family if f in FEATURES else None} for f in trained.features
            ],
            "best_iteration": trained.best_iteration,
            "params": trained.params,
            "metrics": trained.metrics,
            "versions": library_versions(),
            # column-wise: one list per column of the importance tables
            "importance": trained.importance.to_dict(as_series=False),
            "family_importance": trained.family_importance.to_dict(as_series=False),
        }
    )
