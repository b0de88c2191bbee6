"""Shared fixtures: small simulated worlds built once per test session."""

from __future__ import annotations

import os
import shutil

# XGBoost's OpenMP threads spin-wait by default; on a shared 2-core machine that slows tests 4-6x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from toolkit.predict import save_models, train_surface
from toolkit.store import connect
from toolkit.synth import SynthConfig, build_world

SMALL = SynthConfig(n_users=600, days=3, seed=11)


@pytest.fixture(scope="session")
def small_world_path(tmp_path_factory):
    """A 600-account, 3-day simulated store (about 20k impressions), built once."""
    path = tmp_path_factory.mktemp("worlds") / "small.duckdb"
    build_world(path, SMALL, progress=False)
    return path


@pytest.fixture()
def small_world(small_world_path):
    """A read-only connection to the small simulated store."""
    con = connect(small_world_path, read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="session")
def default_world_path(tmp_path_factory):
    """The default world (what `make data` builds): about 5,000 accounts, 14 days, 1M impressions."""
    path = tmp_path_factory.mktemp("worlds") / "default.duckdb"
    build_world(path, SynthConfig(), progress=False)
    return path


@pytest.fixture(scope="session")
def ranked_world(small_world_path, tmp_path_factory):
    """A copy of the small world with saved feed and explore models (few rounds: speed, not quality)."""
    path = tmp_path_factory.mktemp("ranked") / "small.duckdb"
    shutil.copy(small_world_path, path)
    con = connect(path, read_only=True)
    try:
        for surface in ("feed", "explore"):
            save_models(train_surface(con, surface, max_rounds=40, progress=False), path)
    finally:
        con.close()
    return path
