"""What a policy (weights + rules) does to a whole population of viewers, from a :class:`RankingCache`.

:func:`toolkit.rank.policy.evaluate_policy` scores a policy on logged sessions against the
simulator's truth; :func:`population_metrics` answers the quicker question an interactive tuner
asks after every change: over the cached viewers, what would the top of their lists look like,
by the models' **predicted** probabilities? It needs no truth, so it works on real data too, and
it is a few numpy operations on the cache's arrays (a few milliseconds for 200 viewers).

Example
-------
>>> from toolkit.rank import RankingCache
>>> from toolkit.rank.population import compare_metrics, population_metrics
>>> cache = RankingCache.build("data/feedlab.duckdb", "explore", range(200))  # doctest: +SKIP
>>> base = population_metrics(cache)  # doctest: +SKIP
>>> more_saves = population_metrics(cache, {"save": 20.0})  # doctest: +SKIP
>>> compare_metrics(base, more_saves)["expected_save"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.rank.evaluate import attention
from toolkit.rank.policy import _followers
from toolkit.rank.ranker import RankingCache

NAN = float("nan")

__all__ = ["author_followers", "compare_metrics", "flatten_metrics", "population_metrics"]


def author_followers(con: duckdb.DuckDBPyConnection, author_ids: Iterable[int], at: datetime) -> pl.DataFrame:
    """Each author's follower count from follows made before ``at``: columns author_id, followers (0 for none).

    Example
    -------
    >>> from toolkit.store import connect
    >>> con = connect("data/feedlab.duckdb", read_only=True)  # doctest: +SKIP
    >>> author_followers(con, [3, 17], cache.at)  # doctest: +SKIP
    """
    ids = sorted({int(a) for a in author_ids if int(a) >= 0})
    frame = pl.DataFrame({"author_id": pl.Series(ids, dtype=pl.Int64)})
    if not ids:
        return frame.with_columns(pl.lit(0, dtype=pl.Int64).alias("followers"))
    counts = _followers(con, ids, at).select(pl.col("author_id").cast(pl.Int64), pl.col("followers").cast(pl.Int64))
    return frame.join(counts, on="author_id", how="left", maintain_order="left").with_columns(
        pl.col("followers").fill_null(0)
    )


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FeedlabError(f"{name} must be a whole number >= 1 (got {value!r})")
    return int(value)


def population_metrics(
    cache: RankingCache,
    weights: Mapping[str, float] | None = None,
    *,
    k: int = 10,
    session: int = 50,
    followers: pl.DataFrame | Mapping[int, int] | None = None,
    small_creator_followers: float | None = None,
) -> dict[str, Any]:
    """How a policy (the cache's rules and ``weights``) would fill the top of every cached viewer's list, by the predictions.

    Each viewer's list is :meth:`RankingCache.top_columns` under ``weights`` (overrides of the
    surface's defaults, checked as there) and the cache's rules; a viewer looks at 0-based
    position ``i`` with chance ``attention(i)``, the surface's curve (``surface_attention``).
    Probabilities are the cached predictions "if shown on top". Returns a dict of:

    * ``expected_actions_per_session``: action -> mean over viewers of
      ``sum_{i < session} attention(i) * p_action`` over the filled slots of their top ``session``;
    * ``expected_value_per_session``: the same for the score before rules, ``sum_a w_a p_a``;
    * ``distinct_authors_at_k``: mean over viewers of the number of different authors in their top ``k``;
    * ``small_creator_exposure_share``: of all the attention the top ``session`` slots get, the
      share that goes to authors with fewer followers than the median author of the cache
      (every author of a cached candidate, each once), or than ``small_creator_followers``
      when given (a caller that asks again and again passes the first answer's threshold and
      saves finding the median); ``small_creator_threshold`` says which. ``followers`` is a
      frame (author_id, followers), as :func:`author_followers` gives it, or a dict author ->
      followers; an author missing there has 0. Both NaN without ``followers``;
    * ``demoted_share_at_k``: share of the filled top-``k`` slots (over all viewers) whose item
      an order-free rule demoted (rule factor < 1; author diversity's positional discount is
      not a factor). NaN when no slot is filled;
    * ``viewers`` (every cached viewer counts in the means) and ``empty_viewers`` (those with
      nothing to show).

    Example
    -------
    >>> m = population_metrics(cache, {"comment": 10.0}, k=10, session=50)  # doctest: +SKIP
    >>> m["expected_actions_per_session"]["comment"], m["distinct_authors_at_k"]  # doctest: +SKIP
    """
    k, session = _whole(k, "k"), _whole(session, "session")
    w = cache.weights(weights)
    n = max(k, session)
    cols = cache.top_columns(weights, k=n)  # checks the weights
    V = cols.shape[0]
    filled = cols >= 0
    at = np.maximum(cols, 0)
    rows = np.arange(V)[:, None]
    att = attention(np.arange(session), **dict(cache.config.attention)) * filled[:, :session]

    probs = cache.probs[rows[:, :1], at[:, :session]].astype(np.float64)  # (V, session, A)
    per_viewer = np.einsum("vs,vsa->va", att, probs)
    expected = {a: float(per_viewer[:, i].mean()) if V else NAN for i, a in enumerate(cache.actions)}
    value = sum(w.get(a, 0.0) * expected[a] for a in cache.actions) if V else NAN

    authors = np.where(filled, cache.author_ids[rows, at], -1)
    top_k = np.sort(authors[:, :k], axis=1)
    distinct = (top_k[:, :1] >= 0).sum(axis=1) + ((top_k[:, 1:] != top_k[:, :-1]) & (top_k[:, 1:] >= 0)).sum(axis=1)

    factor = cache.factor[rows, at]
    filled_k = filled[:, :k]
    demoted = float(((factor[:, :k] < 1) & filled_k).sum() / filled_k.sum()) if filled_k.any() else NAN

    small, threshold = NAN, NAN
    if followers is None and small_creator_followers is not None:
        raise FeedlabError("small_creator_followers needs followers (a frame author_id, followers)")
    if followers is not None:
        ids, counts = _follower_arrays(followers)

        def count(a: np.ndarray) -> np.ndarray:
            if ids.size == 0:
                return np.zeros(a.shape)
            where = np.clip(np.searchsorted(ids, a), 0, ids.size - 1)
            return np.where(ids[where] == a, counts[where], 0.0)

        if small_creator_followers is not None:
            threshold = float(small_creator_followers)
        elif filled.any():
            threshold = float(np.median(count(np.unique(cache.author_ids[cache.post_ids >= 0]))))
        total = float(att.sum())
        if total > 0 and not math.isnan(threshold):
            small = float((att * (count(authors[:, :session]) < threshold)).sum()) / total

    return {
        "expected_actions_per_session": expected,
        "expected_value_per_session": float(value),
        "distinct_authors_at_k": float(distinct.mean()) if V else NAN,
        "small_creator_exposure_share": small,
        "small_creator_threshold": threshold,
        "demoted_share_at_k": demoted,
        "viewers": int(V),
        "empty_viewers": int((~filled[:, 0]).sum()) if V else 0,
    }


def _follower_arrays(followers: pl.DataFrame | Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Author ids (sorted) and their follower counts."""
    if isinstance(followers, pl.DataFrame):
        missing = [c for c in ("author_id", "followers") if c not in followers.columns]
        if missing:
            raise FeedlabError(f"followers lacks column(s) {', '.join(missing)} (it needs author_id, followers)")
        ids = followers["author_id"].cast(pl.Int64).to_numpy()
        counts = followers["followers"].cast(pl.Float64).fill_null(0.0).to_numpy()
    elif isinstance(followers, Mapping):
        ids = np.array([int(a) for a in followers], dtype=np.int64)
        counts = np.array([float(v) for v in followers.values()], dtype=np.float64)
    else:
        raise FeedlabError(f"followers must be a frame (author_id, followers) or a dict author -> followers (got {type(followers).__name__})")
    order = np.argsort(ids, kind="stable")
    return ids[order], counts[order]


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A metrics dict as a flat dict of finite numbers, as tables and charts show them.

    ``expected_actions_per_session`` (a dict action -> value) becomes ``expected_<action>``,
    another nested dict ``name`` becomes ``name_<key>``; non-numeric, boolean, NaN and infinite
    entries are left out.

    Example
    -------
    >>> flatten_metrics({"expected_actions_per_session": {"like": 0.5}, "viewers": 3, "note": "x", "gini": float("nan")})
    {'expected_like': 0.5, 'viewers': 3.0}
    """

    def number(value: Any) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)

    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            prefix = "expected" if key == "expected_actions_per_session" else str(key)
            out.update({f"{prefix}_{sub}": float(v) for sub, v in value.items() if number(v)})
        elif number(value):
            out[str(key)] = float(value)
    return out


def compare_metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """How metrics changed from ``a`` to ``b``: ``b - a`` for every number both hold (see :func:`flatten_metrics`).

    Example
    -------
    >>> a = {"expected_actions_per_session": {"like": 0.5}, "distinct_authors_at_k": 8.0}
    >>> b = {"expected_actions_per_session": {"like": 0.75}, "distinct_authors_at_k": 9.0}
    >>> compare_metrics(a, b)
    {'expected_like': 0.25, 'distinct_authors_at_k': 1.0}
    """
    fa, fb = flatten_metrics(a), flatten_metrics(b)
    return {key: fb[key] - fa[key] for key in fa if key in fb}
