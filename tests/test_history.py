"""History-only days: a world's first days give everyone a past that features read but models never train or test on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from toolkit.cli import main
from toolkit.errors import FeedlabError
from toolkit.predict import train_surface
from toolkit.signals import training_frame
from toolkit.signals.features import chunk_edges
from toolkit.store import connect, history_until
from toolkit.store.schema import schema_ddl
from toolkit.synth import SynthConfig, build_world

HISTORY = SynthConfig(n_users=300, days=3, history_days=1, seed=5)
EARLIEST = datetime(2000, 1, 1)


@pytest.fixture(scope="module")
def history_world(tmp_path_factory):
    path = tmp_path_factory.mktemp("history") / "h.duckdb"
    build_world(path, HISTORY, progress=False)
    con = connect(path, read_only=True)
    yield con
    con.close()


def test_history_until_is_recorded_with_the_world(history_world, small_world):
    assert history_until(history_world) == HISTORY.start + timedelta(days=1)
    assert history_until(small_world) is None  # history_days=0: every day is studied
    bare = duckdb.connect()
    for stmt in schema_ddl():
        bare.execute(stmt)
    assert history_until(bare) is None  # an imported log records no history period


def test_training_rows_start_after_the_history_but_features_read_it(history_world):
    H = history_until(history_world)
    everything = training_frame(history_world, "feed", start=EARLIEST)
    studied = training_frame(history_world, "feed")
    assert everything["ts"].min() < H <= studied["ts"].min()
    assert 0 < studied.height < everything.height
    # The rows after H are those of the whole log, feature for feature: their features still
    # count the history-only impressions, which every studied row's viewer history starts with.
    assert_frame_equal(studied, everything.filter(pl.col("ts") >= H))
    first_day = studied.filter(pl.col("ts") < H + timedelta(hours=1))
    assert first_day["viewer_impressions_total"].min() >= 0 and first_day["viewer_impressions_total"].mean() > 5
    assert chunk_edges(history_world, "feed")[0][0] >= H
    assert chunk_edges(history_world, "feed", start=EARLIEST)[0][0] < H


def test_models_train_and_test_after_the_history(history_world):
    H = history_until(history_world)
    trained = train_surface(history_world, "feed", actions=["dwell"], max_rounds=5, progress=False)
    assert trained.window["train_start"] >= H
    assert trained.window["train_until"] == H + timedelta(days=1)  # the last of the two studied days is the test


@pytest.mark.parametrize("history_days", [-1, 3, 4])
def test_history_must_leave_days_to_study(history_days):
    with pytest.raises(FeedlabError, match="history_days must be at least 0 and fewer than days"):
        SynthConfig(n_users=300, days=3, history_days=history_days)


def test_cli_synth_history_days(tmp_path, capsys):
    path = tmp_path / "h.duckdb"
    args = ["synth", "--db", str(path), "--users", "200", "--days", "2", "--history-days", "1", "--quiet", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["history_days"] == 1
    with connect(path, read_only=True) as con:
        assert history_until(con) == datetime(2026, 1, 6)


def test_a_partitioned_dataset_keeps_the_history_boundary(history_world, tmp_path):
    from toolkit.store import database_path, export_partitioned, open_dataset

    export_partitioned(database_path(history_world), tmp_path / "ds")
    con = open_dataset(tmp_path / "ds")
    assert history_until(con) == history_until(history_world)
    assert training_frame(con, "stories")["ts"].min() >= history_until(con)
