"""Per-surface action models: one binary XGBoost classifier per action, split by time.

:func:`train_surface` featurizes a surface's impressions, trains on the past and scores on the
future: training rows have ``ts < T``, test rows ``ts >= T``, and early stopping watches the
last day before T. :func:`train_on_frame` does the same on a frame you already have (the
layout of :func:`~toolkit.signals.training_frame`).

Example
-------
>>> from toolkit.predict.train import split_times
>>> from datetime import datetime
>>> ts = [datetime(2026, 1, d, 12) for d in (1, 2, 3, 4, 5)]
>>> {k: v.day for k, v in split_times(ts).items() if k != "test_end"}
{'train_start': 1, 'valid_start': 4, 'train_until': 5}
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

import duckdb
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.predict import evaluate_actions, feature_matrix, predict_actions
from toolkit.store.schema import ACTIONS, RECOMMENDATION_SURFACES, SURFACES

__all__ = [
    "DEFAULT_PARAMS",
    "TrainedSurface",
    "calibrate_intercept",
    "default_pool",
    "parse_time",
    "pooled_rows",
    "select_actions",
    "split_times",
    "train_on_frame",
    "train_on_parquet",
    "train_surface",
    "train_surfaces",
]

#: Booster parameters; ``seed`` (from the ``seed`` argument) and ``nthread`` (os.cpu_count())
#: are added per run, and ``params`` overrides any of them.
DEFAULT_PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    # Regularised for rare actions: on the default world, depth 6 / eta 0.1 overfit the few
    # thousand shares and saves (AUC gap to the oracle 0.051 for share, against 0.032 with these).
    "max_depth": 5,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.6,
    "min_child_weight": 50,
    "lambda": 5.0,
}
MAX_ROUNDS = 600
EARLY_STOPPING_ROUNDS = 30
#: Test rows used for SHAP importances (TreeSHAP costs grow with rows x trees x leaves).
SHAP_ROWS = 5_000
#: Share of the days held out for testing by default, and of training rows for early stopping
#: when the training period is too short to hold out a whole day.
TEST_SHARE = 0.2
VALID_SHARE = 0.1


def parse_time(value: str | date | datetime) -> datetime:
    """A datetime from a datetime, a date (its midnight) or an ISO date/time string.

    Example
    -------
    >>> parse_time("2026-01-08"), parse_time("2026-01-08T06:30")
    (datetime.datetime(2026, 1, 8, 0, 0), datetime.datetime(2026, 1, 8, 6, 30))
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise FeedlabError(
                f"{value!r} is not a date or time (use ISO format: 2026-01-08 or 2026-01-08T06:00)"
            ) from None
    # the store keeps naive UTC timestamps
    return parsed if parsed.tzinfo is None else parsed.astimezone(timezone.utc).replace(tzinfo=None)


def split_times(ts: Sequence[datetime] | pl.Series, *, train_until: str | date | datetime | None = None) -> dict[str, datetime]:
    """Where the time split of impressions at times ``ts`` falls: train, early-stopping and test.

    Returns train_start (first impression), valid_start, train_until (T) and test_end (last
    impression). Training rows are ``ts < T``, test rows ``ts >= T``. By default T is the
    midnight that starts the last ``max(1, round(0.2 * n_days))`` calendar days of the data.
    Early stopping uses the training rows of the last day before T, ``[T - 1 day, T)``, when at
    least 10% of training rows come before that day; otherwise (a training period of about a
    day) it uses the last 10% of training rows by time. A T that leaves no training or no test
    rows is a FeedlabError naming the data's time span.

    Example
    -------
    >>> ts = [datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 10), datetime(2026, 1, 2, 9)]
    >>> split_times(ts)["train_until"]
    datetime.datetime(2026, 1, 2, 0, 0)
    """
    ts = pl.Series("ts", ts).cast(pl.Datetime("us")).drop_nulls().sort()
    if ts.len() == 0:
        raise FeedlabError("no impressions to split")
    first, last = ts[0], ts[-1]
    if train_until is None:
        n_days = (last.date() - first.date()).days + 1
        test_days = max(1, round(TEST_SHARE * n_days))
        T = datetime.combine(last.date() - timedelta(days=test_days - 1), time())
    else:
        T = parse_time(train_until)
    train = ts.filter(ts < T)
    if train.len() == 0 or train.len() == ts.len():
        side = "no training rows (ts < T)" if train.len() == 0 else "no test rows (ts >= T)"
        raise FeedlabError(
            f"splitting at {T} leaves {side}: the data spans {first} to {last}; "
            "choose train_until (--train-until) inside that span"
        )
    valid_start = T - timedelta(days=1)
    before = train.filter(train < valid_start).len()
    if before < VALID_SHARE * train.len() or before == train.len():
        valid_start = train[train.len() - max(1, math.ceil(VALID_SHARE * train.len()))]
        if valid_start == train[0]:
            raise FeedlabError(f"too few training rows before {T} to hold some out for early stopping ({train.len()})")
    return {"train_start": first, "valid_start": valid_start, "train_until": T, "test_end": last}


def select_actions(
    frame: pl.DataFrame, *, actions: Sequence[str] | None = None, min_positives: int = 50
) -> list[str]:
    """The actions to model: ``actions`` checked against ACTIONS, or every action with enough positives.

    By default an action qualifies with at least ``min_positives`` positive labels among the
    non-null labels of ``frame`` (the training rows); the order is that of ACTIONS.

    Example
    -------
    >>> f = pl.DataFrame({"like": [True, False, None], "share": [False, False, False]})
    >>> select_actions(f, min_positives=1)
    ['like']
    """
    if actions is not None:
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise FeedlabError(f"unknown action(s) {', '.join(map(repr, unknown))}; choose from {', '.join(ACTIONS)}")
        if not actions:
            raise FeedlabError(f"no actions given; choose from {', '.join(ACTIONS)}")
        missing = [a for a in actions if a not in frame.columns]
        if missing:
            raise FeedlabError(f"the frame has no label column for {', '.join(missing)}")
        return [a for a in ACTIONS if a in set(actions)]
    present = [a for a in ACTIONS if a in frame.columns]
    counts = frame.select(pl.col(a).cast(pl.Int64).sum() for a in present).row(0, named=True) if present else {}
    chosen = [a for a in present if (counts[a] or 0) >= min_positives]
    if not chosen:
        raise FeedlabError(
            f"no action has {min_positives} positive labels in the training rows "
            f"({', '.join(f'{a}: {counts[a] or 0}' for a in present)}); use more data or lower min_positives"
        )
    return chosen


def train_surface(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    *,
    pool: Sequence[str] | None = None,
    train_until: str | date | datetime | None = None,
    actions: Sequence[str] | None = None,
    min_positives: int = 50,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    chunk: timedelta | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainedSurface:
    """Train, early-stop and score one model per action of a surface's impressions in a store.

    Featurizes every impression of ``surface`` and of the ``pool`` surfaces
    (:func:`~toolkit.signals.training_frames`) and runs :func:`train_on_frame`; see there and
    :func:`split_times` for the split, the actions and the parameters. ``pool`` names the
    surfaces whose earlier rows also train the models (default :func:`default_pool`: the
    surfaces of the same kind, Explore with Reels and Feed with Stories). The features mean the
    same on every surface, so an action's labels on a sibling surface teach its models more of
    how the signals relate to it (on the default world, Explore's mean AUC gap to the oracle
    falls by about 0.003; docs/predictors.md). Early stopping, the intercept and the test stay
    on ``surface``'s own rows. ``pool=[surface]`` trains on the surface alone. Reads the store
    only.

    For logs larger than memory pass ``chunk`` (``timedelta(days=1)``, say): the features of the
    surface and its pool are written a chunk at a time to one Parquet file per surface in
    ``workdir`` (a temporary folder by default, removed afterwards) and :func:`train_on_parquet`
    trains from them batch by batch with XGBoost's external memory, so memory follows one chunk
    and one page of the binned matrix. The models equal those trained in memory.

    Example
    -------
    >>> from toolkit.store import connect
    >>> con = connect("data/feedlab.duckdb", read_only=True)  # doctest: +SKIP
    >>> trained = train_surface(con, "feed")  # doctest: +SKIP
    >>> trained.metrics["like"]["auc"]  # doctest: +SKIP
    0.79
    """
    from toolkit.signals.features import write_training_frames

    fit_args = dict(
        train_until=train_until, actions=actions, min_positives=min_positives, params=params,
        seed=seed, max_rounds=max_rounds, early_stopping_rounds=early_stopping_rounds, progress=progress,
    )
    if chunk is None:
        return train_surfaces(con, [surface], pool=pool, **fit_args)[surface]
    others = _pooled(surface, pool)
    present = {s for (s,) in con.execute("select distinct surface from impressions").fetchall()}
    if surface not in present:
        raise FeedlabError(f"the store has no {surface} impressions to train on")
    others = [s for s in others if s in present]
    with tempfile.TemporaryDirectory(prefix="feedlab-train-", dir=workdir) as tmp:
        # one pass over the log for the surface and its pool: each chunk's history is read once
        write_training_frames(con, tmp, surfaces=[surface, *others], chunk=chunk, progress=progress)
        pooled = {s: Path(tmp) / f"{s}.parquet" for s in others}
        return train_on_parquet(Path(tmp) / f"{surface}.parquet", surface=surface, pooled=pooled, external_memory=True, **fit_args)


def train_surfaces(
    con: duckdb.DuckDBPyConnection,
    surfaces: Sequence[str] | None = None,
    *,
    pool: Sequence[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, TrainedSurface]:
    """:func:`train_surface` for several surfaces (default: all), featurizing each surface once.

    Each surface's models train on its own rows and the ``pool`` surfaces' (default
    :func:`default_pool`), exactly as :func:`train_surface` would, but the impressions are
    featurized in one pass for all of them. ``options`` are :func:`train_on_frame`'s
    (train_until, actions, params, max_rounds, ...). A surface without impressions is a
    FeedlabError.

    Example
    -------
    >>> models = train_surfaces(con, ["explore", "reels"])  # doctest: +SKIP
    >>> sorted(models), models["reels"].pooled_surfaces  # doctest: +SKIP
    (['explore', 'reels'], ['explore'])
    """
    from toolkit.signals.features import training_frames

    surfaces = list(SURFACES) if surfaces is None else _known_surfaces(surfaces)
    if not surfaces:
        raise FeedlabError(f"no surfaces given; choose from {', '.join(SURFACES)}")
    needed = [s for s in SURFACES if s in surfaces or any(s in _pooled(t, pool) for t in surfaces)]
    frames = training_frames(con, needed, progress=progress)
    out = {}
    for s in surfaces:
        if frames[s].height == 0:
            raise FeedlabError(f"the store has no {s} impressions to train on")
        out[s] = train_on_frame(frames[s], surface=s, pooled=pooled_rows(frames, s, pool), progress=progress, **options)
    return out


def pooled_rows(frames: Mapping[str, pl.DataFrame], surface: str, pool: Sequence[str] | None = None) -> pl.DataFrame | None:
    """The rows of ``surface``'s pool among per-surface training ``frames``, with a ``surface`` column; None when empty.

    What :func:`train_on_frame` takes as ``pooled``; ``pool`` as in :func:`train_surface`
    (default :func:`default_pool`). Surfaces missing from ``frames`` or without rows add nothing.

    Example
    -------
    >>> f = pl.DataFrame({"ts": [1]})
    >>> pooled_rows({"explore": f, "reels": f}, "explore")["surface"].to_list()
    ['reels']
    """
    others = [frames[o].with_columns(surface=pl.lit(o)) for o in _pooled(surface, pool) if o in frames and frames[o].height]
    return pl.concat(others) if others else None


def _known_surfaces(surfaces: Sequence[str]) -> list[str]:
    """``surfaces`` checked against SURFACES, in SURFACES order, without repeats."""
    unknown = [s for s in surfaces if s not in SURFACES]
    if unknown:
        raise FeedlabError(f"unknown surface(s) {', '.join(map(repr, unknown))}; choose from {', '.join(SURFACES)}")
    return [s for s in SURFACES if s in set(surfaces)]


def default_pool(surface: str) -> list[str]:
    """The surfaces whose rows train ``surface``'s models by default: those of the same kind.

    Explore and Reels recommend accounts the viewer does not follow
    (:data:`~toolkit.store.schema.RECOMMENDATION_SURFACES`); Feed and Stories show accounts
    they follow. Within a kind the signals relate to the actions alike, so each surface's
    models learn from both; across kinds the extra rows cost more training time than they
    add (docs/predictors.md).

    Example
    -------
    >>> default_pool("explore"), default_pool("feed")
    (['explore', 'reels'], ['feed', 'stories'])
    """
    _known_surfaces([surface])
    recommended = surface in RECOMMENDATION_SURFACES
    return [s for s in SURFACES if (s in RECOMMENDATION_SURFACES) == recommended]


def _pooled(surface: str, pool: Sequence[str] | None) -> list[str]:
    """The other surfaces whose rows train ``surface``'s models: ``pool`` (default :func:`default_pool`) less itself."""
    _known_surfaces([surface])
    return [s for s in (default_pool(surface) if pool is None else _known_surfaces(pool)) if s != surface]


def _file_labels(path: Path) -> pl.DataFrame:
    """The time, label and truth columns of a training file, checked to be sorted by time."""
    if not path.exists():
        raise FeedlabError(f"{path}: no such training file (write one with write_training_frame)")
    try:
        labels = pl.read_parquet(path, columns=["ts", *ACTIONS, *(f"p_{a}" for a in ACTIONS)])
    except (pl.exceptions.PolarsError, OSError) as err:
        raise FeedlabError(f"{path}: not a training file with ts, labels and p_ columns ({err})") from None
    if not labels["ts"].is_sorted():
        raise FeedlabError(f"{path}: rows must be sorted by ts (write_training_frame writes them so)")
    return labels


def train_on_frame(
    frame: pl.DataFrame,
    *,
    surface: str,
    pooled: pl.DataFrame | None = None,
    train_until: str | date | datetime | None = None,
    actions: Sequence[str] | None = None,
    min_positives: int = 50,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    progress: bool = False,
) -> TrainedSurface:
    """Train one binary XGBoost model per action on a training frame, scored on its future rows.

    ``frame`` has the layout of :func:`~toolkit.signals.training_frame` (ts, every registered
    feature, the label columns, optionally ``p_<action>`` truth). Rows are split by
    :func:`split_times`; actions chosen by :func:`select_actions` on the training rows. Each
    model minimises log loss over the rows whose label is observed: a null label gets weight 0,
    so it adds nothing to the loss, the early-stopping score, or the base rate. Parameters are
    :data:`DEFAULT_PARAMS` updated with ``params``, up to ``max_rounds`` rounds with early
    stopping after ``early_stopping_rounds`` rounds without improvement on the validation rows;
    each booster's intercept is then set on those rows (:func:`calibrate_intercept`).

    ``pooled`` holds other surfaces' rows in the same layout: those before the early-stopping
    rows' start join the fitting rows (only ``frame``'s rows decide the split, the actions,
    early stopping, the intercept and the scores), and their surfaces are recorded as
    ``pooled_surfaces`` when the frame has a ``surface`` column.

    Example
    -------
    >>> trained = train_on_frame(training_frame(con, "reels"), surface="reels")  # doctest: +SKIP
    """
    import xgboost as xgb

    from toolkit.signals.registry import feature_names

    features = feature_names()
    missing = [c for c in ("ts", *features) if c not in frame.columns]
    if missing:
        raise FeedlabError(f"the training frame lacks {len(missing)} column(s): {', '.join(missing[:10])}")
    frame = frame.sort("ts", maintain_order=True)
    bounds = split_times(frame["ts"], train_until=train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    train = frame.filter(pl.col("ts") < T)
    fit, valid = train.filter(pl.col("ts") < V), train.filter(pl.col("ts") >= V)
    test = frame.filter(pl.col("ts") >= T)
    chosen = select_actions(train, actions=actions, min_positives=min_positives)
    n_pooled, pooled_surfaces = 0, []
    if pooled is not None:
        columns = ["ts", *features, *chosen]
        lacking = [c for c in columns if c not in pooled.columns]
        if lacking:
            raise FeedlabError(f"the pooled rows lack {len(lacking)} column(s): {', '.join(lacking[:10])}")
        # strictly before the early-stopping rows, so nothing at or after them trains the trees
        extra = pooled.filter(pl.col("ts") < V)
        n_pooled = extra.height
        if "surface" in extra.columns:
            pooled_surfaces = [s for s in SURFACES if s in set(extra["surface"].unique().to_list())]
        fit = pl.concat([fit.select(columns), extra.select(columns)])

    booster_params = {**DEFAULT_PARAMS, "seed": seed, "nthread": os.cpu_count() or 1, **(params or {})}
    # One quantile sketch for all actions: the features are the same, only labels and weights
    # change (set_label/set_weight work on a QuantileDMatrix in xgboost 3.2; a test checks that
    # a weight-0 row changes nothing).
    dfit = xgb.QuantileDMatrix(feature_matrix(fit, features), missing=np.nan, feature_names=features)
    dvalid = xgb.QuantileDMatrix(feature_matrix(valid, features), missing=np.nan, feature_names=features, ref=dfit)

    boosters, best, seconds = _fit_actions(
        dfit, dvalid, fit, valid, chosen, surface=surface, valid_start=V, params=booster_params,
        max_rounds=max_rounds, early_stopping_rounds=early_stopping_rounds, progress=progress,
    )

    trained = _trained_surface(
        surface, chosen, features, boosters, best, bounds,
        rows={"fit": fit.height, "valid": valid.height, "test": test.height, "pooled": n_pooled},
        params={**booster_params, "max_rounds": max_rounds, "early_stopping_rounds": early_stopping_rounds}, seconds=seconds,
    )
    trained.pooled_surfaces = pooled_surfaces
    predictions = predict_actions(trained, test)
    trained.metrics = evaluate_actions(trained, test, predictions=predictions)
    trained.importance, trained.family_importance = _importance(trained, test, seed=seed)
    return trained


#: Rows per batch handed to XGBoost when a training file is read piecewise.
BATCH_ROWS = 500_000


def _row_batches(path: Path, columns: list[str], lo: int, hi: int, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Rows ``lo:hi`` of a Parquet file's ``columns``, a record batch at a time."""
    import pyarrow.parquet as pq

    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
        end = start + batch.num_rows
        if end > lo and start < hi:
            yield pl.from_arrow(batch).slice(max(lo - start, 0), min(hi, end) - max(lo, start))
        if end >= hi:
            return
        start = end


def _feature_batches(segments: Sequence[tuple[Path, int, int]], features: list[str], batch_rows: int, cache_prefix: str | None = None):
    """An XGBoost DataIter over rows ``lo:hi`` of each ``(path, lo, hi)`` training file in turn: the quantile matrix never holds raw floats.

    With ``cache_prefix`` the iterator feeds an external-memory matrix, whose pages XGBoost
    writes to files starting with that prefix.
    """
    import xgboost as xgb

    class Batches(xgb.DataIter):
        def __init__(self) -> None:
            super().__init__(cache_prefix=cache_prefix, release_data=True)
            self._it: Iterator[pl.DataFrame] | None = None

        def reset(self) -> None:
            self._it = None

        def next(self, input_data) -> bool:
            if self._it is None:
                self._it = (b for path, lo, hi in segments for b in _row_batches(path, features, lo, hi, batch_rows))
            frame = next(self._it, None)
            if frame is None:
                return False
            input_data(data=feature_matrix(frame, features), feature_names=features)
            return True

    return Batches()


def _picked_rows(batches: Iterator[pl.DataFrame], picked: np.ndarray) -> Iterator[pl.DataFrame]:
    """The rows at sorted positions ``picked`` of consecutive batches, one batch in memory at a time."""
    start = 0
    for batch in batches:
        end = start + batch.height
        lo, hi = np.searchsorted(picked, [start, end])
        yield batch[picked[lo:hi] - start]
        start = end


def train_on_parquet(
    path: str | os.PathLike,
    *,
    surface: str,
    pooled: Mapping[str, str | os.PathLike] | None = None,
    train_until: str | date | datetime | None = None,
    actions: Sequence[str] | None = None,
    min_positives: int = 50,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    batch_rows: int = BATCH_ROWS,
    external_memory: bool = False,
    progress: bool = False,
) -> TrainedSurface:
    """:func:`train_on_frame` on a training file too large to load: features are read a batch at a time.

    ``path`` is a Parquet file in :func:`~toolkit.signals.training_frame`'s layout, sorted by
    time (what :func:`~toolkit.signals.write_training_frame` writes). Only the time and label
    columns are loaded whole; XGBoost's quantile matrices are built from ``batch_rows``-row
    batches (an ``xgboost.DataIter``), so memory holds the binned matrix (about one byte per
    value), not the floats, and test rows are predicted batch by batch. Split, actions, early
    stopping, metrics and importances are those of :func:`train_on_frame`; with one batch
    (``batch_rows`` at least the file's rows) the models are identical.

    The binned matrix itself takes about 4 bytes per feature value when features have missing
    values (12.5 GB peak for 7.2M rows of 100 features). ``external_memory=True`` builds XGBoost's
    ``ExtMemQuantileDMatrix`` instead: its pages are cached on disk in a temporary folder beside
    ``path`` and read back page by page while training, with the same quantiles and the same
    models.

    ``pooled`` maps other surfaces to their training files in the same layout; their rows before
    the early-stopping rows' start join the fitting rows, as :func:`train_on_frame`'s ``pooled``.

    Example
    -------
    >>> write_training_frame(con, "feed", "feed.parquet")  # doctest: +SKIP
    >>> trained = train_on_parquet("feed.parquet", surface="feed")  # doctest: +SKIP
    """
    import xgboost as xgb

    from toolkit.signals.registry import feature_names

    path = Path(path)
    features = feature_names()
    labels = _file_labels(path)
    bounds = split_times(labels["ts"], train_until=train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    n_fit = int(labels["ts"].search_sorted(V, side="left"))
    n_train = int(labels["ts"].search_sorted(T, side="left"))
    fit, valid, test = labels[:n_fit], labels[n_fit:n_train], labels[n_train:]
    chosen = select_actions(labels[:n_train], actions=actions, min_positives=min_positives)
    # other surfaces' rows strictly before the early-stopping rows, after the surface's own
    segments, pooled_surfaces = [(path, 0, n_fit)], []
    for other, other_path in (pooled or {}).items():
        other_labels = _file_labels(Path(other_path))
        n = int(other_labels["ts"].search_sorted(V, side="left"))
        if n:
            segments.append((Path(other_path), 0, n))
            pooled_surfaces.append(other)
            fit = pl.concat([fit, other_labels[:n]])
    n_pooled = fit.height - n_fit

    booster_params = {**DEFAULT_PARAMS, "seed": seed, "nthread": os.cpu_count() or 1, **(params or {})}
    # the pages go beside the features file: the disk its writer chose for data this size
    pages = tempfile.TemporaryDirectory(prefix=".feedlab-xgb-pages-", dir=path.parent) if external_memory else nullcontext()
    with pages as cache:
        if external_memory:
            dfit = xgb.ExtMemQuantileDMatrix(_feature_batches(segments, features, batch_rows, f"{cache}/fit"), missing=np.nan)
            dvalid = xgb.ExtMemQuantileDMatrix(
                _feature_batches([(path, n_fit, n_train)], features, batch_rows, f"{cache}/valid"), missing=np.nan, ref=dfit
            )
        else:
            dfit = xgb.QuantileDMatrix(_feature_batches(segments, features, batch_rows), missing=np.nan)
            dvalid = xgb.QuantileDMatrix(_feature_batches([(path, n_fit, n_train)], features, batch_rows), missing=np.nan, ref=dfit)
        boosters, best, seconds = _fit_actions(
            dfit, dvalid, fit, valid, chosen, surface=surface, valid_start=V, params=booster_params,
            max_rounds=max_rounds, early_stopping_rounds=early_stopping_rounds, progress=progress,
        )
        del dfit, dvalid
    trained = _trained_surface(
        surface, chosen, features, boosters, best, bounds,
        rows={"fit": fit.height, "valid": valid.height, "test": test.height, "pooled": n_pooled},
        params={**booster_params, "max_rounds": max_rounds, "early_stopping_rounds": early_stopping_rounds}, seconds=seconds,
    )
    trained.pooled_surfaces = pooled_surfaces
    # split_times guarantees test rows
    predictions = pl.concat(predict_actions(trained, b) for b in _row_batches(path, features, n_train, labels.height, batch_rows))
    trained.metrics = evaluate_actions(trained, test, predictions=predictions)
    # the same SHAP rows as train_on_frame would sample from the test rows
    n_test = test.height
    picked = np.sort(np.random.default_rng(seed).choice(n_test, SHAP_ROWS, replace=False)) if n_test > SHAP_ROWS else np.arange(n_test)
    sample = pl.concat(_picked_rows(_row_batches(path, features, n_train, labels.height, batch_rows), picked))
    trained.importance, trained.family_importance = _importance(trained, sample, seed=seed)
    return trained


def _fit_actions(dfit, dvalid, fit: pl.DataFrame, valid: pl.DataFrame, actions, *, surface, valid_start, params,
                 max_rounds, early_stopping_rounds, progress) -> tuple[dict, dict, dict]:
    """One booster per action on the shared matrices (labels from ``fit``/``valid``); boosters, best rounds, seconds."""
    boosters, best, seconds = {}, {}, {}
    for action in tqdm(actions, desc=f"train {surface}", unit="model", disable=not progress):
        y_fit, y_valid = _labels(fit, action), _labels(valid, action)
        if np.nansum(y_fit) == 0 or np.nansum(1 - y_fit) == 0:
            raise FeedlabError(
                f"cannot train {action} on {surface}: the training rows before {valid_start} hold only one class of its labels"
            )
        started = perf_counter()
        boosters[action], best[action] = _fit_action(
            dfit, dvalid, y_fit, y_valid, params=params, max_rounds=max_rounds, early_stopping_rounds=early_stopping_rounds,
        )
        seconds[action] = perf_counter() - started
    return boosters, best, seconds


def _trained_surface(surface, actions, features, boosters, best, bounds, *, rows, params, seconds) -> TrainedSurface:
    """The TrainedSurface of a finished training run, metrics and importance still to fill in."""
    T = bounds["train_until"]
    return TrainedSurface(
        surface=surface,
        actions=actions,
        features=features,
        boosters=boosters,
        best_iteration=best,
        train_until=T,
        window={
            "train_start": bounds["train_start"],
            "valid_start": bounds["valid_start"],
            "train_until": T,
            "test_start": T,
            "test_end": bounds["test_end"],
        },
        rows=rows,
        metrics={},
        params=params,
        train_seconds=seconds,
    )


def _labels(frame: pl.DataFrame, action: str) -> np.ndarray:
    """An action's labels as float32 with NaN where not observable."""
    return frame[action].cast(pl.Float32).to_numpy().astype(np.float32, copy=False)


def _set_labels(dmatrix, y: np.ndarray) -> float:
    """Point a (Quantile)DMatrix at one action: null labels get weight 0; returns the total weight."""
    observed = ~np.isnan(y)
    # the label of a weight-0 row is never read; 0 keeps it a valid binary label
    dmatrix.set_label(np.where(observed, y, 0.0).astype(np.float32))
    dmatrix.set_weight(observed.astype(np.float32))
    return float(observed.sum())


def _fit_action(dfit, dvalid, y_fit, y_valid, *, params, max_rounds, early_stopping_rounds):
    """One action's booster, cut at its best round, and that round's index."""
    import xgboost as xgb

    _set_labels(dfit, y_fit)
    if _set_labels(dvalid, y_valid) == 0:
        # nothing observable to early-stop on: train the full budget (rare: a label only
        # observable on content that appeared only in the first days)
        booster = xgb.train(params, dfit, num_boost_round=max_rounds)
        return booster, booster.num_boosted_rounds() - 1
    booster = xgb.train(
        params,
        dfit,
        num_boost_round=max_rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    # keep only the trees used: saved files shrink and total_gain counts what predicts
    booster = booster[: best + 1]
    calibrate_intercept(booster, booster.predict(dvalid, output_margin=True), y_valid)
    return booster, best


def calibrate_intercept(booster, margin: np.ndarray, y: np.ndarray, *, max_steps: int = 50) -> float:
    """Shift a binary booster's intercept so that its mean prediction on held-out rows equals their rate.

    ``margin`` is the booster's raw score (``output_margin=True``) on the rows, ``y`` their 0/1
    labels; rows whose label is NaN (not observable) are left out, as in training. The shift ``c`` maximises the likelihood of ``sigmoid(margin + c)``, and the
    booster's ``base_score`` moves by ``c`` on the logit scale, so every later prediction, saved
    file and SHAP value carries it. Returns ``c``; 0 (booster unchanged) when there are no rows,
    one class only, or the objective is not ``binary:logistic``.

    Why: the training rows come before the held-out day, the test rows after it. When the
    world drifts (here topic match and post quality fall as the content pool ages), trees fit
    on older rows keep the older base rate; the held-out day, closest to what comes next, resets
    it with one parameter and leaves the ranking (AUC) unchanged.

    Example
    -------
    >>> import numpy as np, xgboost as xgb
    >>> X = np.arange(200, dtype=float).reshape(-1, 1); y = (np.arange(200) % 4 == 0).astype(float)
    >>> b = xgb.train({"objective": "binary:logistic", "base_score": 0.5}, xgb.DMatrix(X, y), 1)
    >>> shift = calibrate_intercept(b, b.predict(xgb.DMatrix(X), output_margin=True), y)
    >>> round(float(b.predict(xgb.DMatrix(X)).mean()), 3)
    0.25
    """
    import json

    y = np.asarray(y, dtype=np.float64)
    observed = ~np.isnan(y)
    y, margin = y[observed], np.asarray(margin, dtype=np.float64)[observed]
    config = json.loads(booster.save_config())
    if config["learner"]["objective"]["name"] != "binary:logistic" or y.size == 0 or y.min() == y.max():
        return 0.0
    c = 0.0
    for _ in range(max_steps):  # Newton's method on a concave one-parameter likelihood
        p = 1.0 / (1.0 + np.exp(-(margin + c)))
        step = (y.sum() - p.sum()) / max(float((p * (1.0 - p)).sum()), 1e-12)
        c += step
        if abs(step) < 1e-9:
            break
    base = float(np.atleast_1d(json.loads(config["learner"]["learner_model_param"]["base_score"]))[0])
    booster.set_param({"base_score": 1.0 / (1.0 + math.exp(-(math.log(base / (1.0 - base)) + c)))})
    return c


def _importance(trained: TrainedSurface, test: pl.DataFrame, *, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Total gain and mean |SHAP| per action and feature (on up to SHAP_ROWS test rows), and per family."""
    import xgboost as xgb

    from toolkit.signals.registry import FEATURES

    if test.height > SHAP_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(test.height, SHAP_ROWS, replace=False))
        test = test[rows]
    dsample = xgb.DMatrix(feature_matrix(test, trained.features), missing=np.nan, feature_names=trained.features)
    parts = []
    for action in trained.actions:
        booster = trained.boosters[action]
        gain = booster.get_score(importance_type="total_gain")
        contribs = booster.predict(
            dsample, pred_contribs=True, iteration_range=(0, trained.best_iteration[action] + 1)
        )
        shap = np.abs(contribs[:, :-1]).mean(axis=0) if test.height else np.full(len(trained.features), np.nan)
        parts.append(
            pl.DataFrame(
                {
                    "action": action,
                    "feature": trained.features,
                    "family": [FEATURES[f].family for f in trained.features],
                    "gain": [float(gain.get(f, 0.0)) for f in trained.features],
                    "mean_abs_shap": shap.astype(np.float64),
                }
            )
        )
    schema = {"action": pl.String, "feature": pl.String, "family": pl.String, "gain": pl.Float64, "mean_abs_shap": pl.Float64}
    per_feature = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    per_family = per_feature.group_by("action", "family", maintain_order=True).agg(
        pl.col("gain").sum(), pl.col("mean_abs_shap").sum()
    )
    return per_feature, per_family
