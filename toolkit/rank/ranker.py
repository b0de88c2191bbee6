"""Rank a viewer's candidates on a surface: candidates -> predictions -> value model -> rules.

:func:`rank` runs the whole pipeline for one viewer and returns the ordered items with every
prediction, every action's contribution to the score and every rule that acted on them.
:class:`RankingCache` predicts once for many viewers and then re-ranks them for any weight
vector without running XGBoost again (what interactive weight tuning needs).

Example
-------
>>> from toolkit.rank import rank
>>> top = rank("data/feedlab.duckdb", "feed", 17, k=10)  # doctest: +SKIP
>>> top.select("position", "post_id", "score", "contribution_comment").head(3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import load_models
from toolkit.predict.predict import predict_actions
from toolkit.predict.train import parse_time
from toolkit.rank.candidates import candidates_for
from toolkit.rank.config import RULE_DEFAULTS, RuleSpec, SurfaceConfig, resolve_rules, resolve_weights, surface_config
from toolkit.rank.rules import RULES, StaticRule, adjust, apply_rules, author_diversity, rule_factors, rule_inputs
from toolkit.rank.value import value_scores
from toolkit.signals import compute_features
from toolkit.store import open_store

#: Device assumed for a viewer the store has never seen on any device.
DEFAULT_DEVICE = "android"
#: Re-ranking many viewers runs on threads in blocks of at least this many viewers.
_ROWS_PER_BLOCK = 1000


def as_time(at: str | date | datetime | None, con: duckdb.DuckDBPyConnection) -> datetime:
    """``at`` as a naive UTC datetime (see :func:`toolkit.predict.parse_time`); None is just after the store's last event ("now")."""
    if at is not None:
        return parse_time(at)
    rows = con.sql(
        "select greatest((select max(ts) from impressions), (select max(created_at) from posts), "
        "(select max(ts) from engagements))"
    ).fetchall()
    if not rows or rows[0][0] is None:
        raise FeedlabError("the store is empty: no impressions, posts or engagements to rank from")
    return rows[0][0] + timedelta(microseconds=1)


def usable_weights(
    cfg: SurfaceConfig, overrides: Mapping[str, float] | None, models: TrainedSurface | Sequence[str]
) -> dict[str, float]:
    """The surface's weights with ``overrides``, restricted to the actions the models predict.

    ``models`` is the trained models or their list of actions. A default weight on an action
    without a model (too rare to train) is left out; an override naming one is an error, since
    the user asked for something that cannot act.
    """
    actions = list(models.actions if isinstance(models, TrainedSurface) else models)
    weights = resolve_weights(cfg, overrides)
    untrained = [a for a in (overrides or {}) if a not in actions]
    if untrained:
        raise FeedlabError(
            f"no {cfg.name} model predicts {', '.join(untrained)} (too few examples to train); "
            f"the models predict {', '.join(actions)}"
        )
    return {a: w for a, w in weights.items() if a in actions}


def viewer_devices(con: duckdb.DuckDBPyConnection, user_ids: Sequence[int], *, at: datetime) -> pl.DataFrame:
    """Each viewer's device at ``at``: the one of their last impression before it."""
    ids = pl.DataFrame({"user_id": pl.Series(list(user_ids), dtype=pl.Int64)})
    con.register("_feedlab_viewers", ids)
    try:
        last = con.sql(
            "select user_id, arg_max(device, ts) as device from impressions "
            "where user_id in (select user_id from _feedlab_viewers) and ts < ? group by user_id",
            params=[at],
        ).pl()
    finally:
        con.unregister("_feedlab_viewers")
    return ids.join(last, on="user_id", how="left", maintain_order="left").with_columns(
        pl.col("device").fill_null(DEFAULT_DEVICE)
    )


def predict_candidates(
    con: duckdb.DuckDBPyConnection, models: TrainedSurface, candidates: pl.DataFrame, *, at: datetime
) -> pl.DataFrame:
    """``candidates`` (user_id, post_id, ...) with one ``p_<action>`` per model action, if shown on top at ``at``."""
    if candidates.height == 0:
        return candidates.with_columns(pl.lit(None, dtype=pl.Float64).alias(f"p_{a}") for a in models.actions)
    devices = viewer_devices(con, candidates["user_id"].unique(maintain_order=True).to_list(), at=at)
    requests = candidates.select("user_id", "post_id").join(devices, on="user_id", how="left", maintain_order="left")
    requests = requests.with_columns(pl.lit(at).cast(pl.Datetime("us")).alias("ts"))
    features = compute_features(con, requests.select("user_id", "post_id", "ts", "device"))
    predictions = predict_actions(models, features).drop("user_id", "post_id")
    return pl.concat([candidates, predictions], how="horizontal")


def _check_user(con: duckdb.DuckDBPyConnection, user_id: int) -> None:
    if not isinstance(user_id, (int, np.integer)) or isinstance(user_id, bool):
        raise FeedlabError(f"a user id is a whole number (got {user_id!r})")
    if not con.sql("select count(*) from users where user_id = ?", params=[int(user_id)]).fetchall()[0][0]:
        raise FeedlabError(f"no user {user_id} in the store")


def _models(store, con, surface: str, models: TrainedSurface | None) -> TrainedSurface:
    if models is not None:
        if models.surface != surface:
            raise FeedlabError(f"the models given are for {models.surface}, not {surface}")
        return models
    return load_models(store if not isinstance(store, duckdb.DuckDBPyConnection) else con, surface)


def rank(
    store: str | os.PathLike | duckdb.DuckDBPyConnection,
    surface: str,
    user_id: int,
    *,
    at: str | date | datetime | None = None,
    weights: Mapping[str, float] | None = None,
    rules: Mapping[str, bool | Mapping[str, Any]] | None = None,
    k: int = 50,
    models: TrainedSurface | None = None,
    candidates: Sequence[int] | None = None,
) -> pl.DataFrame:
    """The top ``k`` posts of ``surface`` for ``user_id`` at time ``at``, with why each is there.

    Runs the seeds' pipeline: candidates (:mod:`toolkit.rank.candidates`), predicted actions
    (the surface's saved models, see ``feedlab train``), score = sum of weight x probability
    with the surface's default weights updated by ``weights``, then the surface's rules updated
    by ``rules`` (``{"author_diversity": False}``, ``{"close_friends_boost": {"factor": 2}}``).
    ``at`` defaults to just after the store's last event.

    Returns one row per shown post: position (0-based), post_id, author_id, source (the
    candidate source), score (after rules), base_score (before), p_<action> and
    contribution_<action> per weighted action, and ``rules`` (a list of {rule, effect, factor}
    for every rule that acted on the post). An empty candidate set gives an empty frame.
    ``candidates`` (post ids) replaces the surface's candidate sources with a set of your own,
    such as the posts a log showed the viewer; their source reads ``given``.

    Example
    -------
    >>> top = rank("data/feedlab.duckdb", "reels", 17, weights={"audio_page": 10}, k=5)  # doctest: +SKIP
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FeedlabError(f"k must be a whole number >= 1 (got {k!r})")
    cfg = surface_config(surface)
    with open_store(store) as con:
        _check_user(con, user_id)
        trained = _models(store, con, surface, models)
        w = usable_weights(cfg, weights, trained)
        rule_specs = resolve_rules(cfg, rules)
        when = as_time(at, con)
        if candidates is None:
            frame = candidates_for(con, surface, [int(user_id)], at=when, config=cfg)
        else:
            frame = given_candidates(con, int(user_id), candidates)
        ranked = rank_candidates(con, trained, frame, at=when, weights=w, rules=rule_specs)
    return _shown(ranked, w, k)


def given_candidates(con: duckdb.DuckDBPyConnection, user_id: int, post_ids: Sequence[int]) -> pl.DataFrame:
    """A candidate frame (user_id, post_id, author_id, source ``given``) for posts chosen by the caller.

    Unknown post ids are a :class:`~toolkit.errors.FeedlabError` that names a few of them.
    """
    try:
        ids = pl.Series("post_id", list(post_ids), dtype=pl.Int64, strict=True).unique(maintain_order=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise FeedlabError(f"candidates must be post ids (whole numbers): {exc}") from None
    con.register("_feedlab_given", pl.DataFrame({"post_id": ids, "_order": pl.int_range(ids.len(), eager=True)}))
    try:
        found = con.sql(
            "select g.post_id, p.author_id, p.post_id is not null as known from _feedlab_given g "
            "left join posts p using (post_id) order by g._order"
        ).pl()
    finally:
        con.unregister("_feedlab_given")
    unknown = found.filter(~pl.col("known"))["post_id"].to_list()
    if unknown:
        raise FeedlabError(f"{len(unknown)} candidate post id(s) are not in the store, e.g. {unknown[:5]}")
    return found.select(
        pl.lit(user_id, dtype=pl.Int64).alias("user_id"), "post_id", pl.col("author_id").cast(pl.Int64), pl.lit("given").alias("source")
    )


def rank_candidates(
    con: duckdb.DuckDBPyConnection,
    models: TrainedSurface,
    candidates: pl.DataFrame,
    *,
    at: datetime,
    weights: Mapping[str, float],
    rules: Mapping[str, RuleSpec],
) -> pl.DataFrame:
    """Stages 3 to 5 for a candidate frame: predictions, value model, rules; every row, removed ones too.

    ``weights`` and ``rules`` are resolved (:func:`usable_weights`, :func:`~toolkit.rank.config.resolve_rules`).
    """
    predicted = predict_candidates(con, models, candidates, at=at)
    return apply_rules(rule_inputs(con, value_scores(predicted, weights), at=at), rules)


def _shown_columns(weights: Mapping[str, float]) -> list[str]:
    return [
        "position", "post_id", "author_id", "source", "score", "base_score",
        *(f"p_{a}" for a in weights), *(f"contribution_{a}" for a in weights), "rules",
    ]  # fmt: skip


def _shown(ranked: pl.DataFrame, weights: Mapping[str, float], k: int) -> pl.DataFrame:
    """The output layout of :func:`rank`: the kept items in order, top k."""
    return ranked.filter(~pl.col("removed")).sort("position").head(k).select(_shown_columns(weights))


@dataclass
class RankingCache:
    """Predictions for many viewers' candidates, computed once, re-ranked for any weights.

    XGBoost runs only in :meth:`build`. The rules that do not depend on the order (removals,
    demotions, boosts) are folded into one factor per item there too; :meth:`rerank` then
    needs a matrix product, the factors, author diversity and a top-k per viewer.

    Example
    -------
    >>> cache = RankingCache.build("data/feedlab.duckdb", "feed", range(1000))  # doctest: +SKIP
    >>> cache.rerank({"comment": 20.0}, k=10).head()  # doctest: +SKIP
    """

    surface: str
    at: datetime
    actions: list[str]  # the last axis of ``probs``
    config: SurfaceConfig
    rules: dict[str, RuleSpec]
    items: pl.DataFrame  # one row per (viewer, candidate): predictions, rule inputs, factor, removed, rules
    user_ids: np.ndarray  # (V,)
    post_ids: np.ndarray  # (V, C), -1 where a viewer has fewer than C candidates
    author_ids: np.ndarray  # (V, C); -1 where the store does not know the author (or padding)
    author_slot: np.ndarray  # (V, C): the author as a small per-viewer index, for counting repeats; each unknown author its own
    probs: np.ndarray  # (V, C, A) float32
    factor: np.ndarray  # (V, C) float32; 0 = removed by a rule, or padding
    _row_of: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._parts = _factor_parts(self.factor)  # weight-free: computed once per cache

    @classmethod
    def build(
        cls,
        store: str | os.PathLike | duckdb.DuckDBPyConnection,
        surface: str,
        user_ids: Iterable[int],
        *,
        at: str | date | datetime | None = None,
        rules: Mapping[str, bool | Mapping[str, Any]] | None = None,
        models: TrainedSurface | None = None,
        chunk: int = 250,
        progress: bool = True,
    ) -> RankingCache:
        """Source, predict and apply the order-free rules for every viewer of ``user_ids``, ``chunk`` viewers at a time."""
        cfg = surface_config(surface)
        users = [int(u) for u in dict.fromkeys(user_ids)]
        if not users:
            raise FeedlabError("no viewers to cache")
        rule_specs = resolve_rules(cfg, rules)
        parts = []
        with open_store(store) as con:
            trained = _models(store, con, surface, models)
            when = as_time(at, con)
            known = set(
                con.sql("select user_id from users where user_id in (select unnest(?))", params=[users]).pl()["user_id"].to_list()
            )
            unknown = [u for u in users if u not in known]
            if unknown:
                raise FeedlabError(f"{len(unknown)} viewer(s) not in the store, e.g. {unknown[:5]}")
            for start in tqdm(range(0, len(users), chunk), desc=f"predict {surface}", unit="chunk", disable=not progress):
                candidates = candidates_for(con, surface, users[start : start + chunk], at=when, config=cfg)
                predicted = predict_candidates(con, trained, candidates, at=when)
                inputs = rule_inputs(con, predicted, at=when)
                parts.append(pl.concat([inputs, rule_factors(inputs, rule_specs).select("factor", "removed", "rules")], how="horizontal"))
        items = pl.concat(parts) if parts else pl.DataFrame()
        return cls._dense(surface, when, list(trained.actions), cfg, rule_specs, users, items)

    @classmethod
    def _dense(cls, surface, at, actions, cfg, rule_specs, users, items) -> RankingCache:
        V = len(users)
        # columns in post id order: equal scores then rank the lower post id first, as apply_rules does
        items = items.sort("user_id", "post_id") if items.height else items
        row_of = {u: i for i, u in enumerate(users)}
        if items.height:
            slots = items.select(
                pl.col("user_id").replace_strict(row_of, return_dtype=pl.Int64).alias("row"),
                pl.int_range(pl.len()).over("user_id").alias("col"),
                pl.col("author_id").rank("dense").over("user_id").cast(pl.Int32).alias("slot") - 1,
                pl.col("user_id"),
            )
            # a post whose author is unknown (null: a log without author ids) is its own author,
            # after the viewer's known ones, never one "null author" for diversity to count
            slots = slots.with_columns(
                pl.col("slot").fill_null(
                    pl.col("slot").max().over("user_id").fill_null(-1) + pl.col("slot").is_null().cum_sum().over("user_id").cast(pl.Int32)
                )
            )
            rows, cols = slots["row"].to_numpy(), slots["col"].to_numpy()
            C = int(cols.max()) + 1
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
            C = 1
        post_ids = np.full((V, C), -1, dtype=np.int64)
        author_ids = np.full((V, C), -1, dtype=np.int64)
        author_slot = np.zeros((V, C), dtype=np.int32)
        probs = np.zeros((V, C, len(actions)), dtype=np.float32)
        factor = np.zeros((V, C), dtype=np.float32)
        if items.height:
            post_ids[rows, cols] = items["post_id"].to_numpy()
            author_ids[rows, cols] = items["author_id"].fill_null(-1).to_numpy()
            author_slot[rows, cols] = slots["slot"].to_numpy()
            probs[rows, cols] = items.select(pl.col(f"p_{a}").fill_null(0.0) for a in actions).to_numpy().astype(np.float32)
            factor[rows, cols] = np.where(items["removed"].to_numpy(), 0.0, items["factor"].to_numpy())
        return cls(
            surface=surface, at=at, actions=actions, config=cfg, rules=rule_specs, items=items,
            user_ids=np.array(users, dtype=np.int64), post_ids=post_ids, author_ids=author_ids,
            author_slot=author_slot, probs=probs, factor=factor, _row_of=row_of,
        )  # fmt: skip

    def with_rules(self, rules: Mapping[str, bool | Mapping[str, Any]]) -> RankingCache:
        """A cache of the same predictions with ``rules`` changed, without running XGBoost again.

        ``rules`` are overrides as :func:`rank` takes them (``{"misinformation_demotion": False}``,
        ``{"close_friends_boost": {"factor": 2.0}}``), resolved against this cache's current
        rules, not the surface's defaults. Only the items a changed order-free rule can act on
        (where one of its conditions holds, under the old or the new parameters) get their
        ``factor``, ``removed`` and ``rules`` recomputed; every other item keeps them, since a
        rule that acts on no item leaves it as it was. A change of ``author_diversity`` alone
        (positional, applied at re-rank time) changes only the spec. The result equals a
        cache built with those rules.

        Example
        -------
        >>> off = cache.with_rules({"misinformation_demotion": False})  # doctest: +SKIP
        >>> off.rerank(k=10)  # doctest: +SKIP
        """
        current = replace(self.config, rules=self.rules)
        variant = resolve_rules(current, rules)
        changed = [n for n in variant if self.rules.get(n) != variant[n]]
        static = [n for n in changed if isinstance(RULES.get(n), StaticRule)]
        if not static or self.items.height == 0:
            return replace(self, rules=variant)
        # the items where a changed rule could act, before or after: every other item is untouched
        conditions = [
            clause.when.fill_null(False)
            for name in static
            for spec in (self.rules.get(name), variant.get(name))
            if spec is not None
            for clause in RULES[name].clauses({**RULE_DEFAULTS.get(name, {}), **spec.params})
        ]
        if not conditions:
            return replace(self, rules=variant)
        touched = np.flatnonzero(self.items.select(pl.any_horizontal(conditions)).to_series().to_numpy())
        if touched.size == 0:
            return replace(self, rules=variant)
        redone = rule_factors(self.items[touched].drop("factor", "removed", "rules"), variant)
        # put the redone rows back in place: gather from [old rows, redone rows] (polars cannot
        # scatter into list-of-struct columns; gathering from one chunk is ~50x faster than from two)
        n = self.items.height
        take = np.arange(n, dtype=np.int64)
        take[touched] = n + np.arange(touched.size)
        columns = {
            c: pl.concat([self.items[c], redone[c].cast(self.items.schema[c])], rechunk=True).gather(take)
            for c in ("factor", "removed", "rules")
        }
        items = self.items.with_columns(**columns)
        # and into the dense factor array, at each item's (row, column)
        users = self.items["user_id"].to_numpy()
        viewers, which = np.unique(users[touched], return_inverse=True)
        rows = np.array([self._row_of[int(u)] for u in viewers], dtype=np.int64)[which]
        if users.size < 2 or bool((users[1:] >= users[:-1]).all()):
            # as build leaves them: sorted by (user, post), the k-th item of a user in column k
            cols = touched - np.searchsorted(users, users[touched], side="left")
        else:
            posts = redone["post_id"].to_numpy()
            cols = np.argmax(self.post_ids[rows] == posts[:, None], axis=1)
        factor = self.factor.copy()
        factor[rows, cols] = np.where(redone["removed"].to_numpy(), 0.0, redone["factor"].to_numpy())
        return replace(self, rules=variant, items=items, factor=factor)

    def weights(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """The surface's weights with ``overrides``, over the cached actions (checked as in :func:`rank`)."""
        return usable_weights(self.config, overrides, self.actions)

    def top_posts(self, weights: Mapping[str, float] | None = None, *, k: int = 50, user_ids: Sequence[int] | None = None) -> np.ndarray:
        """Post ids of each viewer's top ``k`` as a (viewers, k) array, -1 where fewer remain; the fast path.

        Every viewer of the cache (or ``user_ids``), in cache order (see :meth:`top_columns`).
        """
        cols = self.top_columns(weights, k=k, user_ids=user_ids)
        post_ids = self.post_ids if user_ids is None else self.post_ids[self._rows(user_ids)]
        return np.where(cols >= 0, np.take_along_axis(post_ids, np.maximum(cols, 0), axis=1), -1)

    def top_columns(self, weights: Mapping[str, float] | None = None, *, k: int = 50, user_ids: Sequence[int] | None = None) -> np.ndarray:
        """Where each viewer's top ``k`` sit in the cache's arrays: a (viewers, k) array of columns, -1 where fewer remain.

        ``post_ids``, ``author_ids``, ``probs`` and ``factor`` of a viewer's row at these columns
        are its top k in order. Large caches are cut into blocks of rows ranked on parallel
        threads: numpy releases the GIL in its sorts and arithmetic, which gains about a quarter
        on two cores.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FeedlabError(f"k must be a whole number >= 1 (got {k!r})")
        w = self.weights(weights)
        vector = np.array([w.get(a, 0.0) for a in self.actions], dtype=np.float32)
        diversity = self.rules.get("author_diversity")
        if user_ids is not None:
            return self._top_rows(self._rows(user_ids), vector, diversity, k)
        n = len(self.user_ids)
        blocks = max(1, min(2 * (os.cpu_count() or 1), n // _ROWS_PER_BLOCK))
        bounds = np.linspace(0, n, blocks + 1).astype(int)
        rows = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if blocks == 1:
            return self._top_rows(rows[0], vector, diversity, k)
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            return np.concatenate(list(pool.map(lambda r: self._top_rows(r, vector, diversity, k), rows)))

    def _top_rows(self, rows: slice | np.ndarray, vector: np.ndarray, diversity: RuleSpec | None, k: int) -> np.ndarray:
        probs, parts = self.probs[rows], tuple(a[rows] for a in self._parts)

        def scores(r: slice | np.ndarray) -> np.ndarray:
            p = probs[r]
            raw = (p.reshape(-1, p.shape[-1]) @ vector).reshape(p.shape[:2])
            return _adjust(raw, parts=tuple(a[r] for a in parts))

        return _top_k(scores, self.author_slot[rows], diversity, k)

    def rerank(self, weights: Mapping[str, float] | None = None, *, k: int = 50, user_ids: Sequence[int] | None = None) -> pl.DataFrame:
        """Every cached viewer's top ``k`` under ``weights``: user_id, position, post_id."""
        top = self.top_posts(weights, k=k, user_ids=user_ids)
        users = self.user_ids if user_ids is None else self.user_ids[self._rows(user_ids)]
        frame = pl.DataFrame(
            {
                "user_id": np.repeat(users, top.shape[1]),
                "position": np.tile(np.arange(top.shape[1], dtype=np.int32), len(users)),
                "post_id": top.ravel(),
            }
        )
        return frame.filter(pl.col("post_id") >= 0)

    def rank(self, user_id: int, weights: Mapping[str, float] | None = None, *, k: int = 50) -> pl.DataFrame:
        """One cached viewer's ranking with every contribution and rule, as :func:`rank` returns it.

        The same pipeline as :func:`~toolkit.rank.rules.apply_rules`, except that the order-free
        rules' factors and entries come from the cache, which holds them for its rules: only the
        value model and author diversity run here.
        """
        w = self.weights(weights)
        self._rows([user_id])  # refuses a viewer the cache does not hold
        items = self.items.filter(pl.col("user_id") == user_id) if self.items.height else self.items
        if items.height == 0:  # no candidates: an empty frame of the usual columns
            known = {"position": pl.Int32, "post_id": pl.Int64, "author_id": pl.Int64, "source": pl.String, **items.schema}
            return pl.DataFrame(schema={c: known.get(c, pl.Float64) for c in _shown_columns(w) if c != "rules"}).with_columns(
                pl.lit(None, dtype=items.schema.get("rules", pl.List(pl.Struct({"rule": pl.String, "effect": pl.String, "factor": pl.Float64})))).alias("rules")
            ).clear()
        scored = value_scores(items, w).with_columns(pl.col("score").alias("base_score"))
        scored = scored.with_columns(adjust(pl.col("score"), pl.col("factor")).alias("score")).drop("factor")
        diversity = self.rules.get("author_diversity")
        if diversity is None or not diversity.enabled:
            diversity = RuleSpec("author_diversity", False)
        return _shown(author_diversity(scored, diversity), w, k)

    def _rows(self, user_ids: Sequence[int]) -> np.ndarray:
        missing = [u for u in user_ids if int(u) not in self._row_of]
        if missing:
            raise FeedlabError(f"viewer(s) {missing[:5]} are not in this cache")
        return np.array([self._row_of[int(u)] for u in user_ids], dtype=np.int64)


def _factor_parts(factor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`_adjust` needs of the rule factors, which do not change with the weights."""
    removed = factor <= 0
    safe = factor + removed  # a removed item's factor 0 becomes 1, then -inf in _adjust
    return safe, np.float32(1) / safe - safe, removed


def _adjust(score: np.ndarray, factor: np.ndarray | None = None, *, parts=None) -> np.ndarray:
    """A rule factor applied so that a demotion always lowers a score and a boost raises it; 0 removes.

    ``parts`` (from :func:`_factor_parts`) replaces ``factor`` when a cache has them ready.
    """
    safe, spread, removed = parts if parts is not None else _factor_parts(factor)
    # s * f above 0, s / f below, as arithmetic: branching per item (np.where, masks) is several
    # times slower when negative weights make scores of either sign common
    out = spread * (score < 0)
    out += safe
    out *= score
    np.putmask(out, removed, -np.inf)
    return out


#: Bits of a sort key that hold the column; the score's order-preserving bits sit above them.
_COL_BITS = 24
_COL_MASK = (1 << _COL_BITS) - 1


def _keys(score: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One int64 per item that sorts by float32 score descending, then column ascending.

    A float32's bits, read as an int32 with the lower 31 bits of negatives flipped, order like
    the float; inverted, they order descending, and the column in the low bits breaks ties by
    post id (columns are in post id order). Sorting or partitioning these integers is faster
    than an argsort plus a stable tie-break.
    """
    score = np.asarray(score, dtype=np.float32) + np.float32(0.0)  # -0.0 becomes 0.0: equal floats, equal keys
    bits = score.view(np.int32)
    ordered = bits >> 31
    ordered &= np.int32(0x7FFFFFFF)
    ordered ^= bits
    np.invert(ordered, out=ordered)
    keys = ordered.astype(np.int64)
    keys <<= _COL_BITS
    keys |= cols
    return keys


def _decode(keys: np.ndarray) -> np.ndarray:
    """The float32 scores that :func:`_keys` encoded."""
    ordered = np.invert((keys >> _COL_BITS).astype(np.int32))
    return (ordered ^ ((ordered >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


def _top_k(
    score: np.ndarray | Callable[[slice | np.ndarray], np.ndarray],
    author_slot: np.ndarray,
    diversity: RuleSpec | None,
    k: int,
    *,
    block: int = 64,
) -> np.ndarray:
    """Column indices of each row's top k by ``score`` (after the rule factors) and author diversity (-1: none left).

    ``score`` is a (V, C) array, or a function giving the scores of some of its rows, which is
    called on blocks of ``block`` rows so that each block's scores, sort keys and partition
    stay in the CPU's cache instead of crossing memory several times. Removed items score
    -inf. Each row's columns must be in ascending post id order: equal scores rank the lower
    post id first, as :func:`toolkit.rank.rules.apply_rules` does.
    """
    score_of = score if callable(score) else score.__getitem__
    V, C = author_slot.shape
    if C > _COL_MASK:
        raise FeedlabError(f"at most {_COL_MASK} candidates per viewer can be re-ranked (got {C})")
    cols = np.arange(C, dtype=np.int64)

    def best(rows: slice | np.ndarray, M: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows' M best items as sorted keys, and the best score left outside them."""
        keys = _keys(score_of(rows), cols)
        if M == C:
            return np.sort(keys, axis=1), np.full(len(keys), -np.inf, dtype=np.float32)
        part = np.partition(keys, M, axis=1)  # the M best first, the best one left out at M
        return np.sort(part[:, :M], axis=1), _decode(part[:, M])

    # Work on each row's best M items only; rows where an item outside could still reach the
    # top k after diversity are redone on all their items.
    M = min(C, max(2 * k, k + 20))
    ranked = np.empty((V, M), dtype=np.int64)
    best_outside = np.empty(V, dtype=np.float32)
    for start in range(0, V, block):
        rows = slice(start, min(V, start + block))
        ranked[rows], best_outside[rows] = best(rows, M)
    order, kth, forced = _diversify(ranked, author_slot, diversity, k)
    # redo a row with twice the items when an item left outside could beat its k-th, or when
    # its greedy reorder ran out of other authors while items outside remained
    redo = np.flatnonzero((best_outside > kth) | (forced & np.isfinite(best_outside)))
    while redo.size:
        M = min(C, 2 * M)
        ranked, best_outside = best(redo, M)
        order[redo], kth, forced = _diversify(ranked, author_slot[redo], diversity, k)
        redo = redo[(best_outside > kth) | (forced & np.isfinite(best_outside))]
    return order


def _diversify(sorted_keys: np.ndarray, author_slot: np.ndarray, diversity: RuleSpec | None, k: int):
    """Top k of rows of sorted keys (see :func:`_keys`), after author diversity.

    Returns the chosen columns (V, k), per row the lowest final score among them (the bar an
    item outside the slice would have to clear), and whether the greedy reorder had to break
    its limit for want of other authors."""
    V, M = sorted_keys.shape
    ranked = sorted_keys & _COL_MASK
    s = _decode(sorted_keys)
    valid = np.isfinite(s)
    authors = np.take_along_axis(author_slot, ranked, axis=1)
    mode = diversity.params["mode"] if diversity is not None and diversity.enabled else None
    if mode == "decay":
        p = diversity.params
        repeat = _repeats(authors, valid, author_slot.shape[1])
        s = _adjust(s, ((1 - p["floor"]) * p["decay"] ** repeat + p["floor"]).astype(np.float32))
        again = np.sort(_keys(s, ranked), axis=1)  # re-sort; equal scores keep post id order
        ranked, s = again & _COL_MASK, _decode(again)
        valid = np.isfinite(s)
        authors = np.take_along_axis(author_slot, ranked, axis=1)
    forced = np.zeros(V, dtype=bool)
    if mode == "max_in_row":
        picked, forced = _max_in_row(authors, valid, diversity.params["max_in_row"], k)
    else:
        n = min(k, M)
        picked = np.where(np.arange(n)[None, :] < valid.sum(axis=1)[:, None], np.arange(n)[None, :], -1)
    if picked.shape[1] < k:
        picked = np.concatenate([picked, np.full((V, k - picked.shape[1]), -1, dtype=picked.dtype)], axis=1)
    at = np.maximum(picked, 0)
    chosen = np.where(picked >= 0, np.take_along_axis(ranked, at, 1), -1)
    final = np.where(picked >= 0, np.take_along_axis(s, at, 1), np.inf)
    full = (picked >= 0).sum(axis=1) == k
    kth = np.where(full, final.min(axis=1), -np.inf)  # a row with fewer than k kept items admits anything
    return chosen, kth, forced


def _repeats(authors: np.ndarray, valid: np.ndarray, n_slots: int) -> np.ndarray:
    """For each sorted item, how many items of the same author come before it in its row.

    Removed items sort last, so they never count before a kept one. A stable sort by author
    groups each author's items in row order; an item's repeat is its place in its group.
    """
    V, M = authors.shape
    place = np.broadcast_to(np.arange(M), (V, M))
    # sort (author, place) pairs packed in one integer: unique keys, so any sort is stable
    packed = np.sort(authors.astype(np.int64) * M + place, axis=1)
    by_author, grouped = packed % M, packed // M
    starts = np.ones((V, M), dtype=bool)
    starts[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    group_start = np.maximum.accumulate(np.where(starts, place, 0), axis=1)
    repeat = np.empty((V, M), dtype=np.int32)
    np.put_along_axis(repeat, by_author, (place - group_start).astype(np.int32), axis=1)
    return repeat


def _max_in_row(authors: np.ndarray, valid: np.ndarray, limit: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy per row over sorted items: the best unused item that keeps runs of one author <= limit.

    Returns the picked positions (V, k; -1 when none is left) and whether a row had to take an
    item beyond the limit because only its author was left.

    The greedy is one pass over the sorted items, vectorised over rows, with a small state per
    row: the author X of the current run, its length, and a queue of X's items that wait. An
    item of X joins the run while it is shorter than ``limit`` and waits otherwise; an item of
    another author is shown, then up to ``limit`` waiting items follow it (first come, first
    served), or, with none waiting, it starts a new run. Only X's items ever wait, because X
    changes only when none do; so the greedy's "best unused item of another author" is always
    the next item of the pass. Items still waiting at the end are shown last ("forced").
    """
    V, M = authors.shape
    limit = max(int(limit), 1)
    n_out = min(k, M)
    rows = np.arange(V)  # the rows still filling their k slots; full ones are dropped as they go
    A = np.ascontiguousarray(authors.T)  # (M, V): each step of the pass reads contiguous rows
    ok = np.ascontiguousarray(valid.T)
    first = 0  # the step that A's and ok's first row holds
    X = np.full(V, -1, dtype=A.dtype)  # author slots are >= 0
    run = np.zeros(V, dtype=np.int32)
    # Flat arrays with one segment of M + 1 cells per row. Every step writes every row's next
    # cell, wanted or not, and advances only the rows that meant it: an unwanted write is
    # overwritten by the row's next real one, or lies past its end. No boolean indexing.
    queue = np.zeros(V * (M + 1), dtype=np.int64)  # the waiting items, between head and tail
    head = rows * (M + 1)
    tail = head.copy()
    out = np.zeros(V * (M + 1), dtype=np.int64)
    shown = rows * (M + 1)  # each row's next cell in ``out``
    full = shown + n_out

    for i in range(M):
        if i % 8 == 0:
            filling = shown < full
            if not filling.any():
                break  # every row has its k: later items cannot get in
            if filling.sum() < 0.75 * len(rows):
                keep = np.flatnonzero(filling)
                rows, X, run, head, tail, shown, full = (x[keep] for x in (rows, X, run, head, tail, shown, full))
                A, ok, first = A[i - first :, keep], ok[i - first :, keep], i
        a, v = A[i - first], ok[i - first]
        same = (a == X) & v
        other = v ^ same
        wait = same & (run >= limit)  # items only wait behind a full run
        queue[tail] = i
        tail += wait
        out[shown] = i
        shown += v ^ wait
        run += same ^ wait
        waiting = tail - wait - head
        had = waiting > 0
        m = np.minimum(waiting, limit) * other  # waiting items shown right after this one
        for t in range(limit):
            if not (these := m > t).any():
                break
            out[shown] = queue[head]
            shown += these
            head += these
        np.copyto(run, np.where(had, m, 1), where=other)
        np.copyto(X, a, where=other & ~had)
    # items still waiting when no other author is left: shown last, beyond the limit
    left = (head < tail) & (shown < full)
    forced = np.zeros(V, dtype=bool)
    forced[rows[left]] = True
    while left.any():
        out[shown] = queue[head]
        shown += left
        head += left
        left &= (head < tail) & (shown < full)
    out = out.reshape(V, M + 1)[:, :n_out]
    count = np.full(V, n_out)  # rows dropped when full
    count[rows] = shown - rows * (M + 1)
    out[np.arange(n_out) >= count[:, None]] = -1
    return out, forced
