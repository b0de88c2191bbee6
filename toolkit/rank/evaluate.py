"""Offline evaluation of a ranking policy on logged sessions, scored with the simulator's truth.

A *session* is what one viewer was served on one surface within one clock hour;
:func:`logged_sessions` reads them from the store as evaluation slates. On a simulated store
every slate item carries ``q_<action>`` = ``p_<action> / examination``: the true probability of
the action *if the viewer looks at the item*, free of the position it was logged at. A policy
re-orders (or removes) the items of each session; :func:`policy_metrics` then scores the new
order with an attention curve (the chance a viewer looks at 0-based position ``k`` is
``1 / (1 + k / tau) ** power``, the simulator's own examination model) and
:func:`compare_orders` says how far two policies' orders differ.

The metric functions below them are pure (numbers or numpy arrays in, floats out), and every
undefined value (NDCG of a session with nothing worth showing, Kendall tau of one common item)
is NaN rather than an exception, so a table over many sessions never stops at one.

Example
-------
>>> import polars as pl
>>> round(ndcg_at_k([0.0, 1.0], k=10), 4)          # the better item second: 1 / log2(3)
0.6309
>>> attention([0, 6], tau=6.0, power=1.0).tolist()
[1.0, 0.5]
>>> gini([0, 0, 0, 1])
0.75
>>> ranked = pl.DataFrame({
...     "session_id": [1, 1], "post_id": [10, 11], "author_id": [7, 8],
...     "position": [1, 0], "q_like": [0.5, 0.1],
... })
>>> m = policy_metrics(ranked, weights={"like": 1.0}, tau=1.0, power=1.0, k=10)
>>> m["expected_actions_per_session"]["like"]    # 1 * 0.1 + 1/2 * 0.5
0.35
>>> m["sessions"]
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.train import parse_time
from toolkit.store import has_table
from toolkit.store.schema import ACTIONS, SURFACES

NAN = float("nan")

__all__ = [
    "attention",
    "biggest_movers",
    "compare_orders",
    "distinct_authors_at_k",
    "expected_actions",
    "gini",
    "kendall_tau",
    "logged_sessions",
    "ndcg_at_k",
    "policy_metrics",
    "surface_attention",
    "top_k_overlap",
]


# --------------------------------------------------------------------------------------------
# Metric functions (pure)
# --------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FeedlabError(f"k must be a whole number >= 1 (got {k!r})")
    return int(k)


def _dcg(gains: np.ndarray, k: int) -> float:
    """DCG of ``gains`` (already clipped, in ranked order) over the first ``k`` positions."""
    top = gains[:k]
    return float(np.sum(top / np.log2(np.arange(top.size) + 2.0)))


def _gains(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    g = np.asarray(values, dtype=np.float64).reshape(-1)
    if g.size and not np.isfinite(g).all():
        raise FeedlabError(f"{what} must be finite numbers (got NaN or infinity)")
    return np.clip(g, 0.0, None)


def ndcg_at_k(order_gains: Sequence[float], ideal_gains: Sequence[float] | None = None, *, k: int = 10) -> float:
    """Normalised discounted cumulative gain of a ranked list over its first ``k`` positions.

    Gain and discount are stated because toolkits disagree on both:

    * **gain** is *linear*: the item's gain value itself (not ``2**gain - 1``), with **negative
      gains clipped to 0** (a value model with negative weights can give an item a negative
      value; such an item adds nothing, it does not subtract);
    * **discount** is ``log2(i + 2)`` for the 0-based position ``i`` (position 0 is divided by
      1, position 1 by log2(3), position 2 by 2, ...).

    ``DCG@k = sum_{i < k} max(gain_i, 0) / log2(i + 2)`` over ``order_gains`` in ranked order;
    ``NDCG@k = DCG@k / IDCG@k`` where IDCG is the DCG of the (clipped) gains sorted in
    descending order: of ``ideal_gains`` when given (pass every candidate's gain, including the
    ones the ranking left out, so that leaving a good item out costs), else of ``order_gains``.
    NaN when IDCG is 0 (nothing worth ranking) or the lists are empty. A ``k`` larger than the
    list counts every item. Ties in the gains do not matter: swapping two equal gains leaves
    the NDCG unchanged.

    Example
    -------
    >>> ndcg_at_k([3, 2, 1])
    1.0
    >>> round(ndcg_at_k([2, 0, 2], k=10), 4)           # (2 + 2/2) / (2 + 2/log2(3))
    0.9197
    >>> ndcg_at_k([1, 2], k=1)                        # 1 / 2
    0.5
    >>> round(ndcg_at_k([1], [2, 1]), 4)              # 1 / (2 + 1/log2(3))
    0.3801
    >>> ndcg_at_k([0, 0])
    nan
    """
    k = _check_k(k)
    order = _gains(order_gains, "order_gains")
    ideal = order if ideal_gains is None else _gains(ideal_gains, "ideal_gains")
    idcg = _dcg(np.sort(ideal)[::-1], k)
    if idcg <= 0.0:
        return NAN
    return _dcg(order, k) / idcg


def attention(positions: Sequence[int] | np.ndarray, *, tau: float, power: float) -> np.ndarray:
    """The chance a viewer looks at each 0-based position: ``1 / (1 + position / tau) ** power``.

    This is the simulator's examination curve (:func:`surface_attention` gives its ``tau`` and
    ``power`` per surface): position 0 is always looked at; ``tau`` sets how soon attention
    halves (at position ``tau * (2 ** (1 / power) - 1)``), ``power`` how fast it falls.

    Example
    -------
    >>> attention([0, 1, 3], tau=1.0, power=1.0).tolist()
    [1.0, 0.5, 0.25]
    >>> round(float(attention([6], tau=6.0, power=0.8)[0]), 6)   # 2 ** -0.8
    0.574349
    """
    pos = np.asarray(positions, dtype=np.float64)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise FeedlabError(f"tau must be a finite number > 0 (got {tau!r})")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise FeedlabError(f"power must be a finite number >= 0 (got {power!r})")
    if pos.size and (not np.isfinite(pos).all() or pos.min() < 0):
        raise FeedlabError("positions must be finite numbers >= 0 (0-based)")
    return 1.0 / (1.0 + pos / float(tau)) ** float(power)


def expected_actions(probs: np.ndarray, *, tau: float, power: float, k: int | None = None) -> np.ndarray:
    """Expected number of each action in one ranked list: ``sum_i attention(i) * probs[i, a]``.

    ``probs`` is ``(n_items, n_actions)``: position-free probabilities (the chance of the action
    given that the viewer looks at the item) with row ``i`` at 0-based position ``i``. Only the
    first ``k`` positions count when ``k`` is given (default: all). A NaN probability (an action
    that cannot happen on that item) counts as 0.

    Example
    -------
    >>> import numpy as np
    >>> probs = np.array([[0.5, 0.1], [0.2, 0.4]])
    >>> expected_actions(probs, tau=1.0, power=1.0).tolist()    # attention 1, 1/2
    [0.6, 0.30000000000000004]
    >>> expected_actions(probs, tau=1.0, power=1.0, k=1).tolist()
    [0.5, 0.1]
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise FeedlabError(f"probs must be a 2-D array (n_items, n_actions) (got shape {p.shape})")
    if k is not None:
        p = p[: _check_k(k)]
    p = np.nan_to_num(p, nan=0.0)
    return attention(np.arange(p.shape[0]), tau=tau, power=power) @ p


def gini(values: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative amounts (exposure per author, say): 0 = all equal.

    The standard (population) formula, the mean absolute difference over twice the mean::

        G = sum_i sum_j |x_i - x_j| / (2 * n**2 * mean(x))

    computed as ``2 * sum_i i * x_(i) / (n * sum x) - (n + 1) / n`` over the values sorted
    ascending (``i`` from 1). It approaches 1 as one value takes everything (``1 - 1/n`` at
    most, no small-sample correction). NaN for no values or all zero.

    Example
    -------
    >>> gini([1, 1, 1, 1])
    0.0
    >>> gini([0, 0, 0, 1])
    0.75
    """
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if x.size and (not np.isfinite(x).all() or x[0] < 0):
        raise FeedlabError("gini needs finite, non-negative values")
    total = x.sum()
    if x.size == 0 or total <= 0:
        return NAN
    n = x.size
    g = 2.0 * float(np.sum(np.arange(1, n + 1) * x)) / (n * total) - (n + 1) / n
    return float(max(0.0, g))  # -0.0 or -1e-17 from rounding on equal values


def distinct_authors_at_k(author_ids: Sequence[Any], k: int = 10) -> int:
    """Number of different authors among the first ``k`` items of a ranked list.

    Example
    -------
    >>> distinct_authors_at_k([1, 1, 2, 3, 3], k=3)
    2
    """
    return len(set(list(author_ids)[: _check_k(k)]))


def _positions(order: Sequence[Any], name: str) -> dict[Any, int]:
    items = list(order)
    where = {item: i for i, item in enumerate(items)}
    if len(where) != len(items):
        raise FeedlabError(f"{name} lists an item more than once")
    return where


def kendall_tau(order_a: Sequence[Any], order_b: Sequence[Any]) -> float:
    """Kendall's tau-b between two orders, over the items both contain (1 = same order, -1 = reversed).

    Items are compared by their ranks in each list (``scipy.stats.kendalltau``, variant ``b``);
    items only one list holds are ignored. NaN when fewer than 2 items are common.

    Example
    -------
    >>> kendall_tau([1, 2, 3], [1, 2, 3])
    1.0
    >>> kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])
    -1.0
    >>> kendall_tau([1, 2, 9], [2, 1, 8])       # common items 1, 2 swapped
    -1.0
    """
    from scipy.stats import kendalltau

    pa, pb = _positions(order_a, "order_a"), _positions(order_b, "order_b")
    common = [item for item in pa if item in pb]
    if len(common) < 2:
        return NAN
    result = kendalltau([pa[i] for i in common], [pb[i] for i in common], variant="b")
    return float(result.statistic)


def _kendall_distinct(order_a: Sequence[Any], order_b: Sequence[Any]) -> float:
    """:func:`kendall_tau` without scipy's per-call overhead (about 1 ms), for many sessions.

    The items of an order are distinct, so their ranks have no ties and tau-b is
    ``(concordant - discordant) / (n * (n - 1) / 2)`` over the common items.
    """
    pb = _positions(order_b, "order_b")
    common = [item for item in _positions(order_a, "order_a") if item in pb]
    n = len(common)
    if n < 2:
        return NAN
    rb = np.array([pb[i] for i in common], dtype=np.int64)  # ranks in b, listed in a's order
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    return float(np.sign(rb[None, :] - rb[:, None])[upper].sum()) / (n * (n - 1) / 2)


def top_k_overlap(order_a: Sequence[Any], order_b: Sequence[Any], k: int) -> float:
    """Share of the top ``k`` that two orders agree on: ``|top_k(a) & top_k(b)| / k``.

    When both lists are shorter than ``k`` the denominator is the longer list's length instead
    of ``k`` (so two identical lists of 3 items overlap 1.0 at ``k = 10``, not 0.3). NaN when
    both lists are empty.

    Example
    -------
    >>> top_k_overlap([1, 2, 3, 4], [2, 1, 4, 3], k=2)
    1.0
    >>> top_k_overlap([1, 2, 3, 4], [3, 2, 1, 4], k=2)
    0.5
    >>> top_k_overlap([1, 2, 3], [1, 2, 3], k=10)
    1.0
    """
    k = _check_k(k)
    a, b = list(order_a)[:k], list(order_b)[:k]
    denominator = min(k, max(len(list(order_a)), len(list(order_b))))
    if denominator == 0:
        return NAN
    return len(set(a) & set(b)) / denominator


_MOVERS_SCHEMA = {"post_id": pl.Int64, "position_a": pl.Int64, "position_b": pl.Int64, "moved": pl.Int64}


def biggest_movers(order_a: Sequence[int], order_b: Sequence[int], n: int = 5) -> pl.DataFrame:
    """The ``n`` items whose 0-based position changed most from ``order_a`` to ``order_b``.

    Columns ``post_id, position_a, position_b, moved`` with ``moved = position_a - position_b``
    (positive: ``b`` ranks the item higher, nearer the top). Only items both orders hold and
    whose position changed are listed, sorted by ``|moved|`` descending, then ``post_id``.

    Example
    -------
    >>> biggest_movers([1, 2, 3], [3, 2, 1]).rows()
    [(1, 0, 2, -2), (3, 2, 0, 2)]
    """
    pa, pb = _positions(order_a, "order_a"), _positions(order_b, "order_b")
    rows = [(item, pa[item], pb[item], pa[item] - pb[item]) for item in pa if item in pb and pa[item] != pb[item]]
    rows.sort(key=lambda r: (-abs(r[3]), r[0]))
    return pl.DataFrame(rows[: max(int(n), 0)], schema=_MOVERS_SCHEMA, orient="row")


def surface_attention(surface: str) -> dict[str, float]:
    """A surface's position-attention model as ``{"tau": ..., "power": ...}`` (from ``surfaces.toml``).

    Pass it on to :func:`attention`, :func:`expected_actions` or :func:`policy_metrics`
    (``**surface_attention("feed")``). The defaults are the simulator's examination curves, so
    a simulated store's policies are scored with the attention that produced its labels.

    Example
    -------
    >>> surface_attention("feed")
    {'tau': 6.0, 'power': 0.8}
    """
    from toolkit.rank.config import surface_config

    return dict(surface_config(surface).attention)


# --------------------------------------------------------------------------------------------
# Logged sessions as evaluation slates
# --------------------------------------------------------------------------------------------


def logged_sessions(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    viewers: int | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """A surface's logged impressions as evaluation slates, one session per viewer and clock hour.

    A session is every impression of one viewer on ``surface`` whose ``ts`` falls in one clock
    hour (``date_trunc('hour', ts)``); ``session_id`` (Int64) numbers the sessions in the window
    from 0 by viewer, then hour, before any sampling, so a session keeps its id whether or not
    viewers are sampled. A post shown twice within one session (a viewer who opened the app twice
    in the hour) is kept once, at its first impression (earliest ``ts``, then lowest
    ``impression_id``), so ``(session_id, post_id)`` is unique.

    Columns: ``session_id, impression_id, user_id, post_id, author_id, ts, position`` (the logged
    0-based position) and ``q_<action>`` for every action in :data:`ACTIONS`: on a simulated
    store ``p_<action> / examination`` (from ``sim_impression_inputs``), the true probability of
    the action given that the viewer looks, free of position; null where ``p_<action>`` is null
    (the action cannot happen there) and on a store without ``sim_impression_inputs`` (real
    data). Rows are sorted by ``session_id, position, impression_id``.

    ``start`` and ``end`` keep ``start <= ts < end``. ``viewers`` keeps that many viewers of the
    surface in the window, drawn without replacement by ``numpy.random.default_rng(seed)`` from
    the sorted viewer ids (same seed, same viewers; all of them when fewer are there).

    Example
    -------
    >>> import duckdb
    >>> from toolkit.store.schema import schema_ddl
    >>> con = duckdb.connect()
    >>> for stmt in schema_ddl():
    ...     _ = con.sql(stmt)
    >>> _ = con.sql("insert into users values (1, '2026-01-01', null), (2, '2026-01-01', null)")
    >>> _ = con.sql("insert into posts (post_id, author_id, created_at, format, has_location, is_reshare, "
    ...     "misinformation, guideline_violation, sensitive, political, low_resolution, watermarked, "
    ...     "muted_audio, has_borders, mostly_text) values (5, 2, '2026-01-01', 'photo', false, false, "
    ...     "false, false, false, false, false, false, false, false, false)")
    >>> _ = con.sql("insert into impressions (impression_id, user_id, post_id, surface, ts, position) "
    ...     "values (1, 1, 5, 'feed', '2026-01-02 10:05', 0)")
    >>> s = logged_sessions(con, "feed")
    >>> s.select("session_id", "user_id", "post_id", "author_id", "position", "q_like").rows()
    [(0, 1, 5, 2, 0, None)]
    """
    if surface not in SURFACES:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    if viewers is not None and (isinstance(viewers, bool) or not isinstance(viewers, int) or viewers < 1):
        raise FeedlabError(f"viewers must be a whole number >= 1 or None (got {viewers!r})")

    where, params = ["i.surface = ?"], [surface]
    if start is not None:
        where.append("i.ts >= ?")
        params.append(parse_time(start))
    if end is not None:
        where.append("i.ts < ?")
        params.append(parse_time(end))

    simulated = has_table(con, "sim_impression_inputs")
    if simulated:
        q_cols = ", ".join(f'i."p_{a}" / s.examination as "q_{a}"' for a in ACTIONS)
        sim_join = "left join sim_impression_inputs s on s.impression_id = i.impression_id"
    else:
        q_cols = ", ".join(f'cast(null as double) as "q_{a}"' for a in ACTIONS)
        sim_join = ""

    sample_filter = ""
    if viewers is not None:
        ids = con.sql(
            f"select distinct i.user_id from impressions i where {' and '.join(where)} order by 1", params=params
        ).fetchnumpy()["user_id"]
        ids = np.asarray(ids, dtype=np.int64)
        if viewers < ids.size:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=viewers, replace=False))
        sample_filter = "where user_id in (select unnest(?::BIGINT[]))"
        params = [*params, ids.tolist()]

    query = f"""
        with imp as (
            select i.impression_id, i.user_id, i.post_id, i.ts, i.position,
                   date_trunc('hour', i.ts) as session_hour, {q_cols}
            from impressions i {sim_join}
            where {' and '.join(where)}
        ),
        numbered as (
            select *, cast(dense_rank() over (order by user_id, session_hour) - 1 as BIGINT) as session_id
            from imp
        ),
        kept as (
            select * from numbered {sample_filter}
            qualify row_number() over (partition by session_id, post_id order by ts, impression_id) = 1
        )
        select k.session_id, k.impression_id, k.user_id, k.post_id, p.author_id, k.ts, k.position,
               {', '.join(f'k."q_{a}"' for a in ACTIONS)}
        from kept k join posts p on p.post_id = k.post_id
        order by k.session_id, k.position, k.impression_id
    """
    return con.sql(query, params=params).pl()


# --------------------------------------------------------------------------------------------
# Scoring a policy's order
# --------------------------------------------------------------------------------------------


def _require(frame: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeedlabError(f"{name} lacks column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})")


def _unique_items(frame: pl.DataFrame, name: str) -> None:
    if frame.select(pl.struct("session_id", "post_id").is_duplicated().any()).item():
        raise FeedlabError(f"{name} lists a post more than once within a session; (session_id, post_id) must be unique")


def _shown(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows a policy shows, with ``_rank``: the 0-based order within the session.

    ``position`` only orders the items (ties broken by the frame's row order); gaps left by
    removed items are closed, so the shown items of a session sit at ranks 0, 1, 2, ...
    """
    return (
        frame.filter(pl.col("position").is_not_null())
        .sort("session_id", "position", "_row")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("session_id").alias("_rank"))
    )


def policy_metrics(
    ranked: pl.DataFrame,
    *,
    weights: Mapping[str, float],
    tau: float,
    power: float,
    k: int = 10,
    small_creator_followers: int | None = None,
    followers: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """How good, how varied and how fair a policy's order is, by the true probabilities.

    ``ranked`` has one row per candidate item of a session: ``session_id, post_id, author_id,
    position`` (the policy's order within the session; null = removed by a rule) and
    ``q_<action>`` columns (position-free true probabilities, as :func:`logged_sessions` gives
    them; a null counts as 0), optionally ``flagged`` (Boolean: the item carries a content flag or
    was demoted by a rule). ``position`` only orders the items: the shown items of a session
    are placed at 0-based ranks 0, 1, 2, ... in that order and looked at with chance
    ``attention(rank, tau=tau, power=power)``.

    The *oracle value* of an item is ``sum_a weights[a] * q_a``: the policy's own weights applied
    to the true probabilities. Returns a dict of:

    * ``ndcg_at_k``: mean over sessions of :func:`ndcg_at_k` of the shown items' oracle values in
      the policy's order, against the ideal order of **every** candidate of the session
      (removed ones included, so removing a valuable item costs); linear gain with negative
      values clipped to 0, log2 discount. Sessions whose ideal DCG is 0 are left out;
    * ``ndcg_sessions``: how many sessions that mean is over;
    * ``expected_actions_per_session``: action -> mean over sessions of the attention-weighted
      sum of ``q_<action>`` over all shown positions (for every ``q_`` column of ``ranked``);
    * ``expected_value_per_session``: the same for the oracle value (not clipped);
    * ``distinct_authors_at_k``: mean number of different authors in a session's top ``k``;
    * ``author_exposure_gini``: :func:`gini` of each author's total attention over all sessions,
      over every author in ``ranked`` (one whose items were all removed has exposure 0);
    * ``small_creator_exposure_share``: share of all attention that goes to authors with fewer
      than ``small_creator_followers`` followers (from ``followers``: columns ``author_id,
      followers``; an author missing there has 0). The default threshold is the median follower
      count of the authors shown (each author once); ``small_creator_threshold`` says which
      threshold was used. Both NaN without ``followers``;
    * ``flagged_share_at_k``: share of the filled top-``k`` slots (over all sessions) holding a
      flagged item (null counts as not flagged); NaN without a ``flagged`` column;
    * ``sessions``: number of sessions in ``ranked``.

    Means "per session" are over every session, including one whose items were all removed.

    Example
    -------
    >>> import polars as pl
    >>> ranked = pl.DataFrame({
    ...     "session_id": [1, 1, 1], "post_id": [10, 11, 12], "author_id": [7, 8, 8],
    ...     "position": [1, 0, None], "q_like": [0.5, 0.1, 0.9],
    ... })
    >>> m = policy_metrics(ranked, weights={"like": 1.0}, tau=1.0, power=1.0, k=10)
    >>> m["expected_value_per_session"]              # 1 * 0.1 + 1/2 * 0.5
    0.35
    >>> round(m["ndcg_at_k"], 4)   # (0.1 + 0.5/log2(3)) / (0.9 + 0.5/log2(3) + 0.1/2)
    0.3283
    """
    k = _check_k(k)
    if not weights:
        raise FeedlabError("no action weights: the oracle value needs at least one weighted action")
    _require(ranked, ["session_id", "post_id", "author_id", "position"], "ranked")
    _require(ranked, [f"q_{a}" for a in weights], "ranked (the true probabilities of the weighted actions)")
    if followers is None and small_creator_followers is not None:
        raise FeedlabError("small_creator_followers needs the followers frame (author_id, followers)")
    _unique_items(ranked, "ranked")
    attention(np.zeros(1), tau=tau, power=power)  # checks tau and power
    actions = [c.removeprefix("q_") for c in ranked.columns if c.startswith("q_")]

    q = {a: pl.col(f"q_{a}").cast(pl.Float64).fill_nan(None).fill_null(0.0) for a in actions}
    value = pl.sum_horizontal(float(w) * q[a] for a, w in weights.items())
    frame = ranked.with_row_index("_row").with_columns(*(q[a].alias(f"q_{a}") for a in actions), value.alias("_value"))
    n_sessions = frame["session_id"].n_unique()
    shown = _shown(frame)
    shown = shown.with_columns(
        pl.Series("_att", attention(shown["_rank"].to_numpy(), tau=tau, power=power), dtype=pl.Float64)
    )

    # NDCG: DCG of the shown order against the ideal order of every candidate of the session.
    gain = pl.col("_value").clip(lower_bound=0.0)
    discount = (pl.col("_rank").cast(pl.Float64) + 2.0).log(2.0)
    dcg = shown.filter(pl.col("_rank") < k).group_by("session_id").agg((gain / discount).sum().alias("dcg"))
    idcg = (
        frame.sort("session_id", "_value", descending=[False, True])
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("session_id").alias("_rank"))
        .filter(pl.col("_rank") < k)
        .group_by("session_id")
        .agg((gain / discount).sum().alias("idcg"))
    )
    per_session = idcg.join(dcg, on="session_id", how="left").filter(pl.col("idcg") > 0)
    ndcg_values = (per_session["dcg"].fill_null(0.0) / per_session["idcg"]).to_numpy()
    ndcg = float(ndcg_values.mean()) if ndcg_values.size else NAN

    totals = shown.select(
        *((pl.col("_att") * pl.col(f"q_{a}")).sum().alias(a) for a in actions),
        (pl.col("_att") * pl.col("_value")).sum().alias("_value"),
    ).row(0, named=True)
    per = max(n_sessions, 1)
    expected = {a: float(totals[a]) / per if n_sessions else NAN for a in actions}
    expected_value = float(totals["_value"]) / per if n_sessions else NAN

    top = shown.filter(pl.col("_rank") < k)
    distinct = float(top.group_by("session_id").agg(pl.col("author_id").n_unique())["author_id"].sum()) / per

    exposure = frame.select("author_id").unique().join(
        shown.group_by("author_id").agg(pl.col("_att").sum()), on="author_id", how="left"
    ).with_columns(pl.col("_att").fill_null(0.0))
    exposure_gini = gini(exposure["_att"].to_numpy())

    small_share, threshold = NAN, NAN
    if followers is not None:
        _require(followers, ["author_id", "followers"], "followers")
        counts = followers.select(pl.col("author_id").cast(exposure["author_id"].dtype), pl.col("followers").cast(pl.Float64))
        with_f = exposure.join(counts, on="author_id", how="left").with_columns(pl.col("followers").fill_null(0.0))
        shown_authors = with_f.filter(pl.col("_att") > 0)
        if small_creator_followers is not None:
            threshold = float(small_creator_followers)
        elif shown_authors.height:
            threshold = float(shown_authors["followers"].median())
        total = float(with_f["_att"].sum())
        if total > 0 and not math.isnan(threshold):
            small_share = float(with_f.filter(pl.col("followers") < threshold)["_att"].sum()) / total

    flagged_share = NAN
    if "flagged" in frame.columns and top.height:
        flagged_share = float(top["flagged"].cast(pl.Boolean).fill_null(False).mean())

    return {
        "ndcg_at_k": ndcg,
        "ndcg_sessions": int(ndcg_values.size),
        "expected_actions_per_session": expected,
        "expected_value_per_session": expected_value,
        "distinct_authors_at_k": distinct if n_sessions else NAN,
        "author_exposure_gini": exposure_gini,
        "small_creator_exposure_share": small_share,
        "small_creator_threshold": threshold,
        "flagged_share_at_k": flagged_share,
        "sessions": int(n_sessions),
    }


def compare_orders(ranked_a: pl.DataFrame, ranked_b: pl.DataFrame, *, k: int = 10, n_movers: int = 5) -> dict[str, Any]:
    """How much two policies' orders of the same sessions differ.

    Both frames have ``session_id, post_id, position`` (null position = removed; ``position``
    only orders the items, as in :func:`policy_metrics`). Over the sessions both frames hold:

    * ``kendall_tau``: mean of :func:`kendall_tau` of the shown orders (over the items both
      show), over sessions where it is defined (at least 2 common items);
    * ``top_k_overlap``: mean of :func:`top_k_overlap` of the shown orders at ``k``;
    * ``biggest_movers``: the ``n_movers`` items whose 0-based rank changed most, over all
      sessions, as a list of dicts ``session_id, post_id, position_a, position_b, moved``
      (``moved = position_a - position_b``: positive means ``b`` ranks the item higher), sorted
      by ``|moved|`` descending, then ``session_id``, ``post_id``; items only one policy shows
      are not movers;
    * ``sessions``: the number of sessions compared.

    Example
    -------
    >>> import polars as pl
    >>> a = pl.DataFrame({"session_id": [1, 1, 1], "post_id": [1, 2, 3], "position": [0, 1, 2]})
    >>> b = a.with_columns(position=pl.Series([2, 1, 0]))
    >>> c = compare_orders(a, b, k=2)
    >>> c["kendall_tau"], c["top_k_overlap"]
    (-1.0, 0.5)
    >>> [(m["post_id"], m["moved"]) for m in c["biggest_movers"]]
    [(1, -2), (3, 2)]
    """
    k = _check_k(k)
    shown = {}
    for name, frame in (("ranked_a", ranked_a), ("ranked_b", ranked_b)):
        _require(frame, ["session_id", "post_id", "position"], name)
        _unique_items(frame, name)
        shown[name] = _shown(frame.select("session_id", "post_id", "position").with_row_index("_row"))
    sessions = (
        ranked_a.select("session_id").unique().join(ranked_b.select("session_id").unique(), on="session_id")
    )
    lists = {
        name: sessions.join(
            s.group_by("session_id").agg(pl.col("post_id").sort_by("_rank").alias(name)), on="session_id", how="left"
        )
        for name, s in shown.items()
    }
    both = lists["ranked_a"].join(lists["ranked_b"], on="session_id").sort("session_id")
    taus, overlaps = [], []
    for _sid, a, b in both.iter_rows():
        a, b = a or [], b or []
        taus.append(_kendall_distinct(a, b))
        overlaps.append(top_k_overlap(a, b, k))
    taus_arr, overlaps_arr = np.array(taus, dtype=np.float64), np.array(overlaps, dtype=np.float64)

    movers = (
        shown["ranked_a"].select("session_id", "post_id", pl.col("_rank").alias("position_a"))
        .join(shown["ranked_b"].select("session_id", "post_id", pl.col("_rank").alias("position_b")), on=["session_id", "post_id"])
        .with_columns((pl.col("position_a") - pl.col("position_b")).alias("moved"))
        .filter(pl.col("moved") != 0)
        .with_columns(pl.col("moved").abs().alias("_abs"))
        .sort(["_abs", "session_id", "post_id"], descending=[True, False, False])
        .head(max(int(n_movers), 0))
        .drop("_abs")
    )
    return {
        "kendall_tau": _nanmean(taus_arr),
        "top_k_overlap": _nanmean(overlaps_arr),
        "biggest_movers": movers.to_dicts(),
        "sessions": int(both.height),
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else NAN
