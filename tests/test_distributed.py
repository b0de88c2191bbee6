"""Distributed training (toolkit.predict.distributed): the same features and models on a 2-worker Dask cluster.

One LocalCluster (2 worker processes, 1 thread each) serves the module; the CLI test starts its
own with ``--dask local``.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from toolkit.cli import main
from toolkit.errors import FeedlabError
from toolkit.predict import load_models, predict_actions, save_models, train_surface
from toolkit.predict.distributed import build_feature_partitions, dask_client, train_surface_dask
from toolkit.signals.features import training_frame
from toolkit.store import connect

pytestmark = pytest.mark.slow

#: Rounds for both paths: enough for the judged actions to learn, few enough to stay quick.
ROUNDS = 60
#: Actions judged: those with at least this many positive test labels (AUC noise is small).
MIN_TEST_POSITIVES = 200
AUC_TOLERANCE = 0.003
#: No row subsampling in the comparison: each worker would draw its own rows (a different model,
#: seed to seed), so what is left to differ is the merged quantile sketch.
COMPARED = {"subsample": 1.0}


@pytest.fixture(scope="module")
def client():
    """A 2-worker local cluster for the module."""
    with dask_client("local", n_workers=2, threads_per_worker=1, verbose=False) as c:
        yield c


@pytest.fixture(scope="module")
def both_ways(small_world_path, client):
    """Feed (the surface with the most rows) trained locally and on the cluster, same parameters and default pool."""
    con = connect(small_world_path, read_only=True)
    try:
        local = train_surface(con, "feed", max_rounds=ROUNDS, params=COMPARED, progress=False)
    finally:
        con.close()
    started = time.perf_counter()
    dist = train_surface_dask(small_world_path, "feed", client=client, max_rounds=ROUNDS, params=COMPARED, progress=False)
    print(f"dask training took {time.perf_counter() - started:.1f} s")
    return local, dist


def test_the_distributed_models_match_the_local_ones(both_ways):
    local, dist = both_ways
    assert dist.actions == local.actions
    assert dist.window == local.window
    assert dist.rows == local.rows
    assert dist.rows["test"] > 0  # the last of the 3 days
    # Stories' rows before the early-stopping day join the fit on both paths
    assert dist.pooled_surfaces == local.pooled_surfaces == ["stories"]
    assert 0 < dist.rows["pooled"] < dist.rows["fit"]
    assert dist.features == local.features
    judged = [a for a in local.actions if local.metrics[a]["positives"] >= MIN_TEST_POSITIVES]
    assert len(judged) >= 2, judged
    for action in judged:
        assert dist.metrics[action]["positives"] == local.metrics[action]["positives"]
        assert dist.metrics[action]["auc"] == pytest.approx(local.metrics[action]["auc"], abs=AUC_TOLERANCE), action
    assert dist.params["distributed"] == "dask" and dist.params["dask_workers"] == 2
    assert dist.params["nthread"] == 1
    assert set(dist.importance["action"].unique()) == set(dist.actions)
    for action in dist.actions:  # cut at the best round, as the local path does
        assert dist.boosters[action].num_boosted_rounds() == dist.best_iteration[action] + 1


def test_the_distributed_models_save_load_and_predict(both_ways, small_world_path, tmp_path):
    _, dist = both_ways
    db = tmp_path / "small.duckdb"
    shutil.copy(small_world_path, db)
    save_models(dist, db)
    loaded = load_models(db, "feed")
    assert loaded.actions == dist.actions and loaded.params["distributed"] == "dask"
    con = connect(db, read_only=True)
    try:
        test = training_frame(con, "feed", start=loaded.train_until)
    finally:
        con.close()
    assert_frame_equal(predict_actions(loaded, test), predict_actions(dist, test))


def test_the_partitions_equal_the_local_training_frame(small_world_path, small_world, client, tmp_path):
    # a second client that joins the module's cluster by its address
    with dask_client(client.scheduler.address, verbose=False) as joined:
        folder = build_feature_partitions(small_world_path, "reels", tmp_path / "parts", client=joined)
    files = sorted(folder.glob("part-*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    parts = [pl.read_parquet(f) for f in files]
    assert all(p.schema == parts[0].schema for p in parts)
    local = training_frame(small_world, "reels")
    assert_frame_equal(pl.concat(parts).sort("impression_id"), local.sort("impression_id"))


def test_an_unreachable_scheduler_is_a_clear_error_quickly(tmp_path):
    started = time.perf_counter()
    with pytest.raises(FeedlabError, match="cannot reach a Dask scheduler at tcp://127.0.0.1:9"):
        with dask_client("tcp://127.0.0.1:9", timeout=2, verbose=False):
            pass
    assert time.perf_counter() - started < 10
    with pytest.raises(FeedlabError, match="cannot reach"):
        with dask_client("no-port-here", timeout=2, verbose=False):
            pass
    with pytest.raises(FeedlabError, match="no Dask scheduler file"):  # distributed would wait for it forever
        with dask_client(str(tmp_path / "scheduler.json"), verbose=False):
            pass


def test_cli_train_dask_local(small_world_path, tmp_path, capsys):
    db = tmp_path / "small.duckdb"
    shutil.copy(small_world_path, db)
    argv = ["train", "--db", str(db), "--surface", "feed", "--dask", "local", "--max-rounds", "20", "--quiet", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == str(db.parent / "small.models" / "feed")
    models = load_models(db, "feed")
    assert models.params["distributed"] == "dask" and models.params["max_rounds"] == 20
    assert set(out["actions"]) == set(models.actions)
    assert out["pooled_surfaces"] == models.pooled_surfaces == ["stories"]  # the default pool, as on one machine
    assert np.isfinite(models.metrics["dwell"]["auc"])


def test_cli_train_refuses_both_or_neither_source(tmp_path, capsys):
    assert main(["train", "--surface", "feed", "--dask", "local"]) == 2
    assert "--db FILE or the dataset as --data DIR" in capsys.readouterr().err
