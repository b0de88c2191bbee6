"""The pandas baseline of the feature benchmark computes exactly the features of toolkit.signals."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.signals import compute_features, feature_names
from toolkit.store import connect

ROOT = Path(__file__).resolve().parents[1]


def _load_baseline():
    spec = importlib.util.spec_from_file_location("pandas_features", ROOT / "benchmarks" / "pandas_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compute_features_pandas = _load_baseline().compute_features_pandas

REQUEST_SQL = (
    "select impression_id, user_id, post_id, ts, device, position from impressions "
    "where surface in ('feed', 'stories') order by ts, impression_id"
)


def assert_same_features(polars_frame: pl.DataFrame, pandas_frame: pd.DataFrame) -> None:
    """Every feature equal: flags and counts exactly, other floats within rel 1e-9, nulls alike."""
    assert list(pandas_frame.columns) == polars_frame.columns
    assert len(pandas_frame) == polars_frame.height
    for name in feature_names():
        expected, got = polars_frame[name], pandas_frame[name]
        null = expected.is_null().to_numpy()
        np.testing.assert_array_equal(got.isna().to_numpy(), null, err_msg=f"{name}: nulls differ")
        want = expected.to_numpy()[~null]
        have = got.to_numpy()[~null]
        if expected.dtype == pl.Boolean:
            assert got.dtype == np.bool_, f"{name}: {got.dtype}"
            np.testing.assert_array_equal(have, want.astype(bool), err_msg=name)
            continue
        assert expected.dtype == pl.Float64 and got.dtype == np.float64, f"{name}: {expected.dtype} vs {got.dtype}"
        want = want.astype(np.float64)
        if np.array_equal(want, np.round(want)):  # a count (or a whole-valued column): exactly
            np.testing.assert_array_equal(have, want, err_msg=name)
        else:
            np.testing.assert_allclose(have, want, rtol=1e-9, atol=0, err_msg=name)


def test_pandas_baseline_equals_polars_features(small_world_path):
    con = connect(small_world_path, read_only=True)
    try:
        requests_pl = con.sql(REQUEST_SQL).pl()
        requests_pd = con.sql(REQUEST_SQL).df()
        # input order, not time order: both must give the rows back as asked
        order = np.random.default_rng(5).permutation(len(requests_pd))
        requests_pl = requests_pl[order]
        requests_pd = requests_pd.iloc[order].reset_index(drop=True)
        expected = compute_features(con, requests_pl)
        got = compute_features_pandas(con, requests_pd)
    finally:
        con.close()
    assert requests_pl.height > 5000 and requests_pl["position"].n_unique() > 1
    np.testing.assert_array_equal(got["impression_id"].to_numpy(), requests_pl["impression_id"].to_numpy())
    assert_same_features(expected, got)
    # not vacuous: the windows, the rates, the follow flags and the nulls all vary
    for name in ("post_likes_1h", "post_rate_like", "viewer_rate_follow", "author_followers", "va_days_since_interaction"):
        assert expected[name].n_unique() > 3, name
    assert expected["va_follows"].any() and expected["va_days_since_interaction"].null_count() > 0


def test_pandas_baseline_on_null_keys_and_defaults(small_world_path, tmp_path):
    """Null topics and devices, no position column, scoring-style requests, errors and no rows."""
    path = tmp_path / "nulls.duckdb"
    shutil.copy(small_world_path, path)
    con = connect(path)
    try:
        con.execute("update posts set topic = null where post_id % 7 = 0")
        con.execute("update impressions set device = null where impression_id % 5 = 0")
        requests_pl = con.sql(REQUEST_SQL.replace("('feed', 'stories')", "('explore')")).pl().drop("position")
        # candidates at a time between impressions, as scoring asks
        requests_pl = requests_pl.with_columns(pl.col("ts") + pl.duration(minutes=1))
        requests_pd = requests_pl.to_pandas()
        expected = compute_features(con, requests_pl)
        got = compute_features_pandas(con, requests_pd)
        assert requests_pl["device"].null_count() > 0
        assert_same_features(expected, got)
        assert (got["position"] == 0).all()

        empty = compute_features_pandas(con, requests_pd.iloc[:0])
        assert len(empty) == 0 and list(empty.columns) == compute_features(con, requests_pl.head(0)).columns
        with pytest.raises(FeedlabError, match="not in the store"):
            compute_features_pandas(con, requests_pd.iloc[:1].assign(post_id=10**12))
        with pytest.raises(FeedlabError, match="before it was created"):
            compute_features_pandas(con, requests_pd.iloc[:1].assign(ts=pd.Timestamp("2000-01-01")))
    finally:
        con.close()
