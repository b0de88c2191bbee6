"""Score ranking policies (weights + rules) offline, on the slates a surface actually logged.

A policy re-orders each logged session (one viewer, one surface, one clock hour) by its value
model and rules; :func:`toolkit.rank.evaluate.policy_metrics` then scores that order against
the simulator's true, position-free probabilities. Predictions do not depend on the weights:
:func:`session_predictions` computes them once, and any number of policies reuse them.

Example
-------
>>> from toolkit.rank.policy import compare_policies
>>> out = compare_policies("data/feedlab.duckdb", "reels",
...                        weights_a=None, weights_b={"audio_page": 0.0})  # doctest: +SKIP
>>> out["a"]["ndcg_at_k"], out["b"]["ndcg_at_k"], out["comparison"]["kendall_tau"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.predict import predict_actions
from toolkit.rank.config import resolve_rules, surface_config
from toolkit.rank.evaluate import compare_orders, logged_sessions, policy_metrics
from toolkit.rank.ranker import _models, as_time, open_store, usable_weights
from toolkit.rank.rules import apply_rules, rule_inputs
from toolkit.rank.value import value_scores
from toolkit.signals import compute_features
from toolkit.store.schema import CONTENT_FLAGS


def session_predictions(
    con: duckdb.DuckDBPyConnection,
    surface: str,
    models: TrainedSurface,
    *,
    start: datetime,
    end: datetime | None = None,
    viewers: int | None = 200,
    seed: int = 0,
) -> pl.DataFrame:
    """Logged sessions with, per item, the models' ``p_<action>`` if shown on top at the session's start and the rule inputs.

    Every item of a session is scored at the same time: the session's first impression (or
    just after the post was created, for a post that appeared during the session), so no item
    sees the session's own later events. Rule inputs (follows, mutes, not-interested marks,
    misinformation counts) are read once per clock hour, as of the last of those times.
    """
    sessions = logged_sessions(con, surface, start=start, end=end, viewers=viewers, seed=seed)
    if sessions.height == 0:
        raise FeedlabError(f"no logged {surface} sessions from {start}{f' to {end}' if end else ''} to evaluate on")
    created = con.sql(
        "select post_id, created_at from posts where post_id in (select unnest(?))",
        params=[sessions["post_id"].unique().to_list()],
    ).pl()
    devices = con.sql(
        "select impression_id, device from impressions where impression_id in (select unnest(?))",
        params=[sessions["impression_id"].to_list()],
    ).pl()
    one_us = timedelta(microseconds=1)
    sessions = (
        sessions.join(created, on="post_id", how="left", maintain_order="left")
        .join(devices, on="impression_id", how="left", maintain_order="left")
        .with_columns(pl.max_horizontal(pl.col("ts").min().over("session_id"), pl.col("created_at") + one_us).alias("scored_at"))
    )
    requests = sessions.select("user_id", "post_id", pl.col("scored_at").alias("ts"), "device")
    predicted = predict_actions(models, compute_features(con, requests)).drop("user_id", "post_id")
    frame = pl.concat([sessions, predicted], how="horizontal")
    # rule inputs per clock hour of the sessions
    frame = frame.with_columns(pl.col("ts").dt.truncate("1h").alias("_hour"))
    parts = []
    for (_,), part in frame.group_by("_hour", maintain_order=True):
        at = part["scored_at"].max() + one_us
        parts.append(rule_inputs(con, part.drop("format", "topic", strict=False), at=at))
    return pl.concat(parts).drop("_hour", "created_at").sort("session_id", "position")


def order_sessions(
    predictions: pl.DataFrame,
    surface: str,
    *,
    weights: Mapping[str, float],
    rules: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Each session's items in the order a policy gives them (``position``; null = removed by a rule).

    ``weights`` are final (see :func:`toolkit.rank.ranker.usable_weights`); ``rules`` are
    overrides of the surface's rules. Adds ``flagged``: the item carries a content flag or a
    rule demoted or removed it.
    """
    specs = resolve_rules(surface, rules)
    scored = value_scores(predictions, weights)
    # the rules rank per "user": here each session is its own list
    by_session = scored.rename({"user_id": "viewer_id"}).with_columns(pl.col("session_id").alias("user_id"))
    ranked = apply_rules(by_session, specs).drop("user_id").rename({"viewer_id": "user_id"})
    demoted = pl.col("rules").list.eval(pl.element().struct.field("factor") < 1).list.any().fill_null(False)
    flags = pl.any_horizontal(pl.col(f).fill_null(False) for f in CONTENT_FLAGS)
    return ranked.with_columns((flags | demoted | pl.col("removed")).alias("flagged"))


def _followers(con: duckdb.DuckDBPyConnection, authors: list[int], at: datetime) -> pl.DataFrame:
    return con.sql(
        "select followee_id as author_id, count(*) as followers from follows "
        "where followee_id in (select unnest(?)) and created_at < ? group by followee_id",
        params=[authors, at],
    ).pl()


def evaluate_policy(
    store: str | os.PathLike | duckdb.DuckDBPyConnection,
    surface: str,
    *,
    weights: Mapping[str, float] | None = None,
    rules: Mapping[str, Any] | None = None,
    start: str | date | datetime | None = None,
    end: str | date | datetime | None = None,
    viewers: int | None = 200,
    seed: int = 0,
    k: int = 10,
    models: TrainedSurface | None = None,
) -> dict[str, Any]:
    """How a policy would have ranked the sessions a surface logged, scored by the true probabilities.

    Sessions from ``start`` (default: the models' train-until, so the models never saw them) of
    ``viewers`` viewers drawn with ``seed``. Returns :func:`policy_metrics` for the policy and,
    under ``"logged"``, for the order the logging policy actually used.
    """
    with open_store(store) as con:
        cfg, trained, when, predictions, followers = _prepare(store, con, surface, models, start, end, viewers, seed)
        w = usable_weights(cfg, weights, trained)
        ranked = order_sessions(predictions, surface, weights=w, rules=rules)
    attention = dict(cfg.attention)
    out = {
        "surface": surface, "from": when, "weights": w,
        **policy_metrics(ranked, weights=w, k=k, followers=followers, **attention),
    }  # fmt: skip
    out["logged"] = policy_metrics(predictions, weights=w, k=k, followers=followers, **attention)
    return out


def _prepare(store, con, surface, models, start, end, viewers, seed):
    """The surface's config, models, start time, session predictions and author follower counts."""
    cfg = surface_config(surface)
    trained = _models(store, con, surface, models)
    when = trained.train_until if start is None else as_time(start, con)
    until = None if end is None else as_time(end, con)
    predictions = session_predictions(con, surface, trained, start=when, end=until, viewers=viewers, seed=seed)
    followers = _followers(con, predictions["author_id"].unique().to_list(), when)
    return cfg, trained, when, predictions, followers


def compare_policies(
    store: str | os.PathLike | duckdb.DuckDBPyConnection,
    surface: str,
    *,
    weights_a: Mapping[str, float] | None = None,
    weights_b: Mapping[str, float] | None = None,
    rules_a: Mapping[str, Any] | None = None,
    rules_b: Mapping[str, Any] | None = None,
    start: str | date | datetime | None = None,
    end: str | date | datetime | None = None,
    viewers: int | None = 200,
    seed: int = 0,
    k: int = 10,
    n_movers: int = 5,
    models: TrainedSurface | None = None,
) -> dict[str, Any]:
    """Two policies on the same logged sessions: each one's metrics, and how their orders differ.

    Predictions are computed once for both. ``comparison`` holds the mean Kendall tau and top-k
    overlap over sessions and the biggest movers (see :func:`compare_orders`).
    """
    with open_store(store) as con:
        cfg, trained, when, predictions, followers = _prepare(store, con, surface, models, start, end, viewers, seed)
        wa = usable_weights(cfg, weights_a, trained)
        wb = usable_weights(cfg, weights_b, trained)
        ranked_a = order_sessions(predictions, surface, weights=wa, rules=rules_a)
        ranked_b = order_sessions(predictions, surface, weights=wb, rules=rules_b)
    attention = dict(cfg.attention)
    return {
        "surface": surface,
        "from": when,
        "a": {"weights": wa, **policy_metrics(ranked_a, weights=wa, k=k, followers=followers, **attention)},
        "b": {"weights": wb, **policy_metrics(ranked_b, weights=wb, k=k, followers=followers, **attention)},
        "comparison": compare_orders(ranked_a, ranked_b, k=k, n_movers=n_movers),
    }
