"""Distributed training of a surface's action models on a Dask cluster, with ``xgboost.dask``.

The same models as :func:`~toolkit.predict.train.train_surface` (the surface's rows plus the
earlier rows of its pool, by default the sibling surface), trained on a ``dask.distributed``
cluster (a :class:`~distributed.LocalCluster` on this machine, or any running scheduler:
Kubernetes, YARN, SSH, ...):

1. :func:`build_feature_partitions` featurizes a surface one time chunk per task on the
   workers: each task opens the store read-only itself and runs
   :func:`~toolkit.signals.training_frame` on its chunk (the definitions of the local path;
   point-in-time features do not depend on how the impressions are chunked), writing one
   Parquet file per chunk.
2. :func:`train_surface_dask` featurizes the surface and its pool that way (all their chunks
   in one batch of tasks), reads the files with ``dask.dataframe.read_parquet``, persists them
   on the workers, splits them with :func:`~toolkit.predict.train.split_times` (the same
   bounds as the local path), adds the pooled rows before the early-stopping day to the
   fitting rows, chooses the actions with
   :func:`~toolkit.predict.train.select_actions` and trains each action with
   ``xgboost.dask.train`` (XGBoost's distributed ``hist``: every worker builds histograms of its
   rows, summed across workers each round). The test rows (the last 20% of days) are collected
   and scored with the local path's helpers, so the result is an ordinary
   :class:`~toolkit.predict.model.TrainedSurface` that :func:`~toolkit.predict.save_models`
   saves and ``feedlab evaluate/predict/rank`` use.
3. :func:`dask_client` connects to a cluster (``"local"`` starts one) and closes what it started.

The store (and the feature folder, by default beside it) must be reachable at the same path
from this process and every worker: a shared file system, for a real cluster.

Example
-------
>>> from toolkit.predict.distributed import dask_client, train_surface_dask
>>> from toolkit.predict import save_models
>>> with dask_client("local") as client:  # doctest: +SKIP
...     trained = train_surface_dask("data/feedlab.duckdb", "feed", client=client)
>>> save_models(trained, "data/feedlab.duckdb")  # doctest: +SKIP
PosixPath('data/feedlab.models/feed')
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError
from toolkit.store import open_source
from toolkit.predict.model import TrainedSurface
from toolkit.predict.predict import evaluate_actions, predict_actions
from toolkit.predict.train import (
    DEFAULT_PARAMS,
    EARLY_STOPPING_ROUNDS,
    MAX_ROUNDS,
    _importance,
    calibrate_intercept,
    _pooled,
    select_actions,
    split_times,
)
from toolkit.store.schema import ACTIONS, SURFACES

if TYPE_CHECKING:  # dask is imported only when used
    from distributed import Client

__all__ = ["build_feature_partitions", "dask_client", "train_surface_dask"]

#: Workers a ``"local"`` cluster starts, and threads per worker, by default.
LOCAL_WORKERS = 2
LOCAL_THREADS = 1
#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 5.0
#: Environment of a local cluster's workers (threads per worker added for OpenMP and polars):
#: XGBoost's OpenMP threads otherwise spin-wait, which slows a shared machine several times over.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@contextmanager
def dask_client(
    address: str = "local",
    *,
    n_workers: int = LOCAL_WORKERS,
    threads_per_worker: int = LOCAL_THREADS,
    timeout: float = CONNECT_TIMEOUT,
    verbose: bool = True,
) -> Iterator[Client]:
    """A ``distributed.Client`` for a ``with`` block: ``"local"`` starts a cluster, anything else joins one.

    ``"local"`` starts a :class:`~distributed.LocalCluster` of ``n_workers`` processes with
    ``threads_per_worker`` threads each (OpenMP set to wait passively, and OpenMP and polars
    limited to the worker's threads) and closes both the client and the cluster on exit. Any
    other ``address`` (``tcp://host:8786``, or a scheduler's ``scheduler-file.json``) joins a
    running scheduler; the client is closed on exit, the cluster is left running. A scheduler
    that cannot be reached within ``timeout`` seconds is a :class:`~toolkit.errors.FeedlabError`.
    With ``verbose``, prints the workers and the dashboard's address to stderr.

    Example
    -------
    >>> with dask_client("local") as client:  # doctest: +SKIP
    ...     len(client.nthreads())
    2
    >>> try:
    ...     with dask_client("tcp://127.0.0.1:9", timeout=1, verbose=False):
    ...         pass
    ... except FeedlabError as err:
    ...     print(str(err).split(" (")[0])
    cannot reach a Dask scheduler at tcp://127.0.0.1:9 within 1 s
    """
    from distributed import Client, LocalCluster

    address = str(address).strip()
    cluster = None
    if address == "local":
        if n_workers < 1 or threads_per_worker < 1:
            raise FeedlabError("a local Dask cluster needs at least one worker with one thread")
        threads = str(threads_per_worker)
        env = {**WORKER_ENV, "OMP_NUM_THREADS": threads, "POLARS_MAX_THREADS": threads}
        # the dashboard on a free port: a second cluster on the machine must not fight for 8787
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0",
            env=env,
        )
        try:
            client = Client(cluster, timeout=timeout)
            # the workers share this terminal: what they print (XGBoost's "Task ... got rank"
            # lines) goes to stderr, so that stdout stays this process's (--json, say)
            client.run(_stdout_to_stderr)
        except BaseException:
            cluster.close()
            raise
    else:
        if not address:
            raise FeedlabError("no Dask scheduler address given: pass tcp://host:8786 or local")
        kwargs: dict[str, Any] = {"address": address}
        if address.endswith(".json"):
            # distributed waits for a missing scheduler file to appear, without a timeout
            if not Path(address).is_file():
                raise FeedlabError(f"no Dask scheduler file at {address} (`dask scheduler --scheduler-file` writes one)")
            kwargs = {"scheduler_file": address}
        try:
            client = Client(**kwargs, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as err:
            raise FeedlabError(
                f"cannot reach a Dask scheduler at {address} within {timeout:g} s ({err}); start one "
                "(`dask scheduler`, or a Kubernetes, YARN or SSH deployment) and pass its address, or use --dask local"
            ) from None
    try:
        if verbose:
            workers = client.nthreads()
            where = "local cluster" if cluster is not None else f"scheduler {client.scheduler.address}"
            print(
                f"dask: {where}, {len(workers)} worker(s), {sum(workers.values())} thread(s); "
                f"dashboard {client.dashboard_link}",
                file=sys.stderr,
            )
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _chunk_edges(source: Path, surface: str, chunk: timedelta) -> list[tuple[datetime, datetime]]:
    """The time chunks of a surface's impressions, as :func:`~toolkit.signals.iter_training_frames` cuts them."""
    from toolkit.signals.features import chunk_edges

    con = open_source(source)
    try:
        return chunk_edges(con, surface, chunk=chunk)
    finally:
        con.close()


def _featurize_chunk(source: str, surface: str, start: datetime, end: datetime, path: str) -> int:
    """One task: the training rows of ``[start, end)`` written to ``path``; returns the row count (0: no file)."""
    from toolkit.signals.features import training_frame

    con = open_source(source)
    try:
        try:
            from distributed import get_worker

            # DuckDB takes every core by default; a worker gets its own threads' worth
            con.execute(f"set threads = {max(1, int(get_worker().state.nthreads))}")
        except ValueError:  # not on a worker (called directly)
            pass
        frame = training_frame(con, surface, start=start, end=end)
    finally:
        con.close()
    if frame.height == 0:
        return 0
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        frame.write_parquet(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return frame.height


def build_feature_partitions(
    source: str | os.PathLike,
    surface: str,
    directory: str | os.PathLike,
    *,
    client: Client,
    chunk: timedelta = timedelta(days=1),
    progress: bool = False,
) -> Path:
    """Featurize a surface's impressions on the Dask workers, one Parquet file per time chunk.

    The chunks are those of :func:`~toolkit.signals.iter_training_frames` (from the first
    impression on, ``chunk`` long). Each chunk is one task that opens ``source`` read-only
    itself (DuckDB allows many read-only processes) and writes
    :func:`~toolkit.signals.training_frame` of its chunk to ``directory/part-NNNNN.parquet``
    (chunks without impressions write nothing). Together the files hold exactly the rows and
    values of one ``training_frame(con, surface)``. ``source`` and ``directory`` must be
    reachable at the same path from every worker; earlier ``part-*.parquet`` files in
    ``directory`` are removed first. Returns ``directory``.

    Example
    -------
    >>> with dask_client("local") as client:  # doctest: +SKIP
    ...     folder = build_feature_partitions("data/feedlab.duckdb", "feed", "/shared/feed_parts", client=client)
    >>> pl.scan_parquet(folder / "*.parquet").select(pl.len()).collect().item()  # doctest: +SKIP
    513043
    """
    if surface not in SURFACES:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    directory = Path(directory).resolve()
    _build_partitions(source, {surface: directory}, client=client, chunk=chunk, progress=progress)
    return directory


def _build_partitions(
    source: str | os.PathLike,
    directories: dict[str, Path],
    *,
    client: Client,
    chunk: timedelta,
    progress: bool,
    optional: Sequence[str] = (),
) -> list[str]:
    """:func:`build_feature_partitions` for several surfaces at once: every chunk of every surface is one task.

    Returns the surfaces written; an ``optional`` surface without impressions is left out, any
    other is a FeedlabError.
    """
    if chunk <= timedelta(0):
        raise FeedlabError("chunk must be a positive duration")
    source = Path(source).resolve()
    tasks, written = [], []  # tasks: (surface, start, end, path)
    for surface, directory in directories.items():
        chunks = _chunk_edges(source, surface, chunk)
        if not chunks:
            if surface in optional:
                continue
            raise FeedlabError(f"the store has no {surface} impressions to train on")
        written.append(surface)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("part-*.parquet"):
            old.unlink()
        tasks += [(surface, a, b, str(directory / f"part-{i:05d}.parquet")) for i, (a, b) in enumerate(chunks)]
    futures = client.map(
        _featurize_chunk,
        [str(source)] * len(tasks),
        *(list(column) for column in zip(*tasks)),
        pure=False,
        key=[f"feedlab-features-{s}-{Path(path).stem}-{uuid.uuid4().hex[:8]}" for s, _, _, path in tasks],
    )
    from distributed import as_completed

    try:
        desc = f"features {', '.join(directories)}"
        with tqdm(total=len(futures), desc=desc, unit="chunk", disable=not progress) as bar:
            for future in as_completed(futures):
                future.result()  # re-raises a task's error (a FeedlabError stays one)
                bar.update()
    except BaseException:
        client.cancel(futures)  # the other chunks' tasks are not needed any more
        raise
    return written


def train_surface_dask(
    source: str | os.PathLike,
    surface: str,
    *,
    client: Client,
    pool: Sequence[str] | None = None,
    train_until: str | date | datetime | None = None,
    actions: Sequence[str] | None = None,
    min_positives: int = 50,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    workdir: str | os.PathLike | None = None,
    chunk: timedelta = timedelta(days=1),
    progress: bool = True,
) -> TrainedSurface:
    """:func:`~toolkit.predict.train.train_surface` on a Dask cluster: features per chunk, ``xgboost.dask`` per action.

    Same arguments, split, action choice, pooled rows (``pool``, by default
    :func:`~toolkit.predict.train.default_pool`: the sibling surface's rows before the
    early-stopping day join the fit), parameters, null-label handling, early stopping and result
    as the local path (see :func:`~toolkit.predict.train.train_on_frame`); the result saves with
    :func:`~toolkit.predict.save_models` unchanged. What differs:

    - features of the surface and its pool are built by :func:`build_feature_partitions`, one
      subfolder per surface, into ``workdir`` (default: a temporary folder beside the store,
      removed afterwards; a given ``workdir`` is kept);
    - each worker trains with its own thread count (``nthread`` of ``params`` is ignored),
      and XGBoost sums the workers' histograms every round, so rows are split over workers;
    - ``params`` of the result records ``"distributed": "dask"``, the worker count
      (``"dask_workers"``) and the threads per worker (``"nthread"``).

    Only the ``ts`` column and the test rows (the last days, by default 20%) are brought to
    this process; the training rows stay on the workers.

    Example
    -------
    >>> with dask_client("local") as client:  # doctest: +SKIP
    ...     trained = train_surface_dask("data/feedlab.duckdb", "feed", client=client)
    >>> trained.metrics["like"]["auc"]  # doctest: +SKIP
    0.80
    """
    from toolkit.signals.registry import feature_names

    if surface not in SURFACES:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    others = _pooled(surface, pool)
    workers = client.nthreads()
    if not workers:
        raise FeedlabError("the Dask cluster has no workers (yet); start some or wait for them to join")
    client.run(_passive_openmp)  # before XGBoost first runs there (a LocalCluster has it already)

    source = Path(source).resolve()
    temporary = workdir is None
    folder = (
        source.parent / f".{source.stem}.dask-{surface}-{uuid.uuid4().hex[:8]}" if temporary else Path(workdir).resolve()
    )
    try:
        folders = {s: folder / s for s in [surface, *others]}
        built = _build_partitions(source, folders, client=client, chunk=chunk, progress=progress, optional=others)
        return _train_from_partitions(
            folders[surface],
            pooled={s: folders[s] for s in others if s in built},
            surface=surface,
            client=client,
            features=feature_names(),
            train_until=train_until,
            actions=actions,
            min_positives=min_positives,
            params=params,
            seed=seed,
            max_rounds=max_rounds,
            early_stopping_rounds=early_stopping_rounds,
            progress=progress,
        )
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _stdout_to_stderr() -> None:
    sys.stdout.flush()
    os.dup2(2, 1)


def _passive_openmp() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _model_partition(df, columns: list[str]):
    """A pandas partition's ``ts`` and ``columns`` as float32 with NaN for nulls (what XGBoost reads)."""
    import pandas as pd

    # to_numpy with na_value handles every pandas flavour of a nullable boolean (object,
    # "boolean", arrow) the same way: null -> NaN, True -> 1
    data = {"ts": df["ts"]}
    data.update({c: df[c].to_numpy(dtype=np.float32, na_value=np.nan) for c in columns})
    return pd.DataFrame(data, index=df.index)


def _train_from_partitions(
    folder: Path,
    *,
    pooled: dict[str, Path],
    surface: str,
    client: Client,
    features: list[str],
    train_until,
    actions,
    min_positives: int,
    params: dict[str, Any] | None,
    seed: int,
    max_rounds: int,
    early_stopping_rounds: int,
    progress: bool,
) -> TrainedSurface:
    import dask
    import dask.dataframe as dd
    import pandas as pd
    import xgboost as xgb
    import xgboost.dask  # noqa: F401  (xgb.dask)

    files = sorted(folder.glob("part-*.parquet"))
    labels = [a for a in ACTIONS if a in pl.read_parquet_schema(files[0])]
    columns = [*features, *labels]
    # every column: a column subset lets dask fuse small files into fewer partitions, and a
    # persisted fused read lost track of its partitions in dask 2026.8; the map keeps what is used
    raw = dd.read_parquet([str(f) for f in files])
    meta = pd.DataFrame({"ts": pd.Series([], dtype="datetime64[us]"), **{c: pd.Series([], dtype=np.float32) for c in columns}})
    # persist once: the splits, the counts and every action's matrices read these partitions,
    # not the Parquet files again
    frame = raw.map_partitions(_model_partition, columns, meta=meta).persist()

    # the split of the local path, from the same function: only the ts column comes here
    ts = pl.Series("ts", frame["ts"].compute().to_numpy()).cast(pl.Datetime("us"))
    bounds = split_times(ts, train_until=train_until)
    T, V = bounds["train_until"], bounds["valid_start"]
    n_workers = len(client.nthreads())
    # each split's rows spread evenly over the workers: a split of a few days would otherwise
    # sit on the one or two workers that featurized those days
    own_fit = frame[frame["ts"] < V][columns]
    # the pooled surfaces' rows before the early-stopping day join the fit, as in train_on_frame
    extra = {}
    for other, other_folder in pooled.items():
        rows = dd.read_parquet([str(f) for f in sorted(other_folder.glob("part-*.parquet"))])
        rows = rows.map_partitions(_model_partition, columns, meta=meta)
        extra[other] = rows[rows["ts"] < V][columns].persist()
    n_extra = dict(zip(extra, dask.compute(*(rows.shape[0] for rows in extra.values()))))
    pooled_surfaces = [s for s in SURFACES if n_extra.get(s, 0) > 0]
    fit = _spread(dd.concat([own_fit, *(extra[s] for s in pooled_surfaces)]) if pooled_surfaces else own_fit, client)
    valid = _spread(frame[(frame["ts"] >= V) & (frame["ts"] < T)][columns], client)
    n_fit, n_valid, pos_own, pos_fit, obs_fit, pos_valid, obs_valid = dask.compute(
        fit.shape[0], valid.shape[0], own_fit[labels].sum(), fit[labels].sum(), fit[labels].count(),
        valid[labels].sum(), valid[labels].count(),
    )  # fmt: skip
    del frame, own_fit, extra  # the workers keep them until fit and valid are built, then drop them
    # select_actions sums each label column of the surface's own training rows; a one-row
    # frame of their positive counts gives it the same sums
    chosen = select_actions(
        pl.DataFrame({a: [int(pos_own[a] + pos_valid[a])] for a in labels}, schema={a: pl.Int64 for a in labels}),
        actions=actions,
        min_positives=min_positives,
    )
    # the test rows: the last days, small enough to score here with the local path's helpers
    test = (
        pl.scan_parquet(files)
        .filter(pl.col("ts") >= T)
        .collect()
        .sort("ts", maintain_order=True)
    )

    booster_params = {**DEFAULT_PARAMS, "seed": seed, **(params or {})}
    # each worker trains with its own threads (xgboost.dask's default when nthread is unset)
    booster_params.pop("nthread", None)
    booster_params.pop("n_jobs", None)
    boosters, best, seconds = {}, {}, {}
    dfit = dvalid = None
    for action in tqdm(chosen, desc=f"train {surface} (dask)", unit="model", disable=not progress):
        if pos_fit[action] == 0 or pos_fit[action] == obs_fit[action]:
            raise FeedlabError(
                f"cannot train {action} on {surface}: the training rows before {V} hold only one class of its labels"
            )
        started = perf_counter()
        # One DaskQuantileDMatrix per action: unlike the local QuantileDMatrix, a Dask matrix
        # has no set_label/set_weight, so labels and weights are given when it is built. A null
        # label gets weight 0 (and a label of 0 that is never read), as in train_on_frame.
        dfit = xgb.dask.DaskQuantileDMatrix(
            client, fit[features], fit[action].fillna(0.0), weight=fit[action].notnull().astype(np.float32),
            missing=np.nan, feature_names=features,
        )  # fmt: skip
        if obs_valid[action] == 0:
            # nothing observable to early-stop on: the full budget, as the local path does
            out = xgb.dask.train(client, booster_params, dfit, num_boost_round=max_rounds, verbose_eval=False)
            booster = out["booster"]
            best[action] = booster.num_boosted_rounds() - 1
        else:
            dvalid = xgb.dask.DaskQuantileDMatrix(
                client, valid[features], valid[action].fillna(0.0), weight=valid[action].notnull().astype(np.float32),
                missing=np.nan, feature_names=features, ref=dfit,
            )  # fmt: skip
            out = xgb.dask.train(
                client, booster_params, dfit, num_boost_round=max_rounds, evals=[(dvalid, "valid")],
                early_stopping_rounds=early_stopping_rounds, verbose_eval=False,
            )  # fmt: skip
            best[action] = int(out["booster"].best_iteration)
            # keep only the trees used, as the local path does
            booster = out["booster"][: best[action] + 1]
            # the intercept set on the held-out day, as the local path does (valid is one day: small)
            margin, y_valid = dask.compute(
                xgb.dask.inplace_predict(client, booster, valid[features], predict_type="margin"), valid[action]
            )
            calibrate_intercept(booster, margin, y_valid)
        boosters[action] = booster
        seconds[action] = perf_counter() - started
    del fit, valid, dfit, dvalid  # the workers may drop the training rows now

    threads = sorted(set(client.nthreads().values()))
    trained = TrainedSurface(
        surface=surface,
        actions=chosen,
        features=features,
        boosters=boosters,
        best_iteration=best,
        train_until=T,
        window={
            "train_start": bounds["train_start"],
            "valid_start": V,
            "train_until": T,
            "test_start": T,
            "test_end": bounds["test_end"],
        },
        rows={"fit": int(n_fit), "valid": int(n_valid), "test": test.height, "pooled": int(sum(n_extra.values()))},
        metrics={},
        params={
            **booster_params,
            "nthread": threads[0] if len(threads) == 1 else threads,
            "max_rounds": max_rounds,
            "early_stopping_rounds": early_stopping_rounds,
            "distributed": "dask",
            "dask_workers": n_workers,
        },
        train_seconds=seconds,
    )
    trained.pooled_surfaces = pooled_surfaces
    predictions = predict_actions(trained, test)
    trained.metrics = evaluate_actions(trained, test, predictions=predictions)
    trained.importance, trained.family_importance = _importance(trained, test, seed=seed)
    return trained


def _rows(df, start: int, stop: int):
    return df.iloc[start:stop]


def _spread(part, client: Client):
    """``part`` computed on the workers as pieces of about equal rows, at least one per worker.

    Empty partitions are dropped; while there are fewer pieces than workers the partitions are
    cut into slices; each piece (largest first) goes to the worker with the fewest rows so far.
    """
    import dask
    import dask.dataframe as dd

    workers = sorted(client.nthreads())
    lengths = part.map_partitions(len).compute().tolist()
    nonempty = [(d, n) for d, n in zip(part.to_delayed(), lengths) if n]
    slices = -(-len(workers) // max(1, len(nonempty)))  # pieces per partition: ceil(workers / partitions)
    pieces = []
    for d, n in nonempty:
        cuts = np.linspace(0, n, min(slices, n) + 1).astype(int)
        pieces += [(dask.delayed(_rows)(d, a, b) if slices > 1 else d, int(b - a)) for a, b in zip(cuts[:-1], cuts[1:])]
    load = dict.fromkeys(workers, 0)
    futures = []
    for d, n in sorted(pieces, key=lambda p: -p[1]):
        worker = min(workers, key=lambda w: (load[w], w))
        load[worker] += n
        futures.append(client.compute(d, workers=[worker], allow_other_workers=False))
    return dd.from_delayed(futures, meta=part._meta, verify_meta=False)
