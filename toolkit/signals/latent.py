"""Latent effects estimated jointly from earlier labels: a ridge logistic model refitted every day.

The rate features of :mod:`toolkit.signals.features` read each latent quantity from its own
counts: a viewer's like rate, a post's like rate. But a viewer who is shown good posts high on the
page likes more without liking more readily, and a post shown to eager viewers looks better than
it is. This module estimates them together, as the simulator (and, by the seeds' account, the
real system) composes them, on the logit scale::

    logit P(action) = b[action, surface] + position[surface, bucket] + format[action, format]
                      + sign(action) * (level[viewer] + topic[viewer, topic] + quality[post]
                                        + author[author] + tie[viewer, author])
                      + taste[viewer, action]

fitted by penalised maximum likelihood (each random effect has a Gaussian prior, a ridge
penalty ``1 / sd**2``; :data:`PENALTIES`) on every observed label of every surface. ``sign`` is
-1 for the negative actions (not interested, report), which good, well-matched posts make rarer.

Point in time: the effects of an impression on day d come from the fit on the labels of the
impressions *before day d* (midnight UTC), so every value uses only labels logged before the
impression. Each day's fit starts from the day before's (L-BFGS, :data:`MAX_ITER` iterations) and
holds parameters only for the viewers, posts, pairs, ... seen before that day, in order of first
appearance, so later events change nothing of it, bit for bit.

Not yet one of the registered signals: ``benchmarks/ablate_latent.py`` measures what the effects
add to the models (docs/predictors.md).

Example
-------
>>> from toolkit.store import connect
>>> con = connect("data/feedlab.duckdb", read_only=True)  # doctest: +SKIP
>>> effects = latent_effects(con)  # doctest: +SKIP
>>> effects.columns[:4]  # doctest: +SKIP
['impression_id', 'latent_viewer_level', 'latent_viewer_topic', 'latent_post_quality']
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from toolkit.errors import FeedlabError
from toolkit.store.schema import ACTIONS

#: Actions that the shared effects make rarer: a liked topic or a good post is reported less.
NEGATIVE_ACTIONS: tuple[str, ...] = ("not_interested", "report")
#: Ridge penalty (prior precision, 1 / sd**2 on the logit scale) per effect. The fixed effects
#: (base rate, position, format) are barely penalised; the random ones are held near 0 until the
#: labels say otherwise. The spreads are those a ranking team would assume: about 0.45 for a
#: viewer's level, 0.2 for their taste for one action beyond it, 1 for a topic interest, 0.4 for a
#: post around its author, 0.5 for authors and ties.
PENALTIES: dict[str, float] = {
    "base": 1e-3,
    "position": 1e-3,
    "format": 1e-3,
    "level": 5.0,
    "topic": 1.0,
    "quality": 6.0,
    "author": 4.0,
    "tie": 4.0,
    "taste": 25.0,
}
#: L-BFGS iterations per daily fit (each starts from the day before's).
MAX_ITER = 30
#: Positions are bucketed by powers of two: 0, 1, 2-3, 4-7, ..., 64 and beyond.
POSITION_BUCKETS = 8
#: Random effects shared by all actions (their sign flips for NEGATIVE_ACTIONS), and their columns.
SHARED_EFFECTS: dict[str, str] = {
    "level": "latent_viewer_level",
    "topic": "latent_viewer_topic",
    "quality": "latent_post_quality",
    "author": "latent_author_quality",
    "tie": "latent_pair_tie",
}


def latent_columns() -> list[str]:
    """The columns :func:`latent_effects` adds, in order.

    Example
    -------
    >>> latent_columns()[:2], latent_columns()[-1]
    (['latent_viewer_level', 'latent_viewer_topic'], 'latent_score_report')
    """
    return [*SHARED_EFFECTS.values(), *(f"latent_taste_{a}" for a in ACTIONS), *(f"latent_score_{a}" for a in ACTIONS)]


@dataclass
class _Block:
    """One group of parameters: each observation's code (first-appearance order) and its loading."""

    codes: np.ndarray  # per observation
    penalty: float
    loading: np.ndarray | None  # per observation; None = 1
    running_size: np.ndarray  # per observation: codes seen up to and including it


def latent_effects(
    con: duckdb.DuckDBPyConnection,
    *,
    penalties: dict[str, float] | None = None,
    max_iter: int = MAX_ITER,
    progress: bool = False,
) -> pl.DataFrame:
    """Each impression's latent effects as the labels of the days before its day estimate them.

    One row per impression of the store (every surface), sorted by time: ``impression_id``, the
    shared effects (viewer level, viewer's interest in the post's topic, post quality, author
    quality, viewer-author tie: :data:`SHARED_EFFECTS`), the viewer's taste per action
    (``latent_taste_<action>``) and the fitted logit per action (``latent_score_<action>``,
    every effect plus base rate, position and format). Impressions of the first day, and
    viewers, posts or pairs not seen before the impression's day, get the prior: 0 for the
    effects, the fixed part for the score. See the module docstring for the model.

    Example
    -------
    >>> effects = latent_effects(con, progress=True)  # doctest: +SKIP
    >>> effects.filter(pl.col("latent_post_quality") > 0.5).height  # doctest: +SKIP
    1804
    """
    from scipy.optimize import minimize

    lam = {**PENALTIES, **(penalties or {})}
    unknown = sorted(set(lam) - set(PENALTIES))
    if unknown or max_iter < 1:
        raise FeedlabError(f"unknown latent effect(s) {unknown}; choose from {', '.join(PENALTIES)}" if unknown else "max_iter must be at least 1")
    labels = ", ".join(f'i."{a}"' for a in ACTIONS)
    imp = con.sql(
        f"""select i.impression_id, i.user_id, i.post_id, i.surface, i.ts, i.position,
                   p.author_id, p.topic, p.format, {labels}
            from impressions i join posts p using (post_id)
            order by i.ts, i.impression_id"""
    ).pl()
    n = imp.height
    columns = latent_columns()
    if n == 0:
        return pl.DataFrame(schema={"impression_id": pl.Int64, **{c: pl.Float32 for c in columns}})

    # observations: one per (impression, action) with an observed label, in time order
    obs_imp, obs_act, y = [], [], []
    for j, action in enumerate(ACTIONS):
        observed = imp[action].is_not_null().to_numpy()
        rows = np.flatnonzero(observed)
        obs_imp.append(rows)
        obs_act.append(np.full(rows.size, j, dtype=np.int64))
        y.append(imp[action].to_numpy()[observed].astype(np.float64))
    order = np.argsort(np.concatenate(obs_imp), kind="stable")
    obs_imp, obs_act, y = (np.concatenate(x)[order] for x in (obs_imp, obs_act, y))
    if y.size == 0:
        raise FeedlabError("the store's impressions have no observed labels to estimate latent effects from")

    def key(*cols: str) -> np.ndarray:
        """Per impression, one integer per distinct combination of ``cols`` (arbitrary order)."""
        codes = np.zeros(n, dtype=np.int64)
        for c in cols:
            values = imp[c].fill_null(-1) if imp[c].dtype.is_numeric() else imp[c].fill_null("")
            part = np.unique(values.to_numpy(), return_inverse=True)[1].astype(np.int64)
            codes = codes * (int(part.max()) + 1) + part
        return codes

    n_act = len(ACTIONS)
    sign = np.where(np.isin(np.array(ACTIONS), NEGATIVE_ACTIONS), -1.0, 1.0)
    bucket = np.minimum(POSITION_BUCKETS - 1, np.floor(np.log2(imp["position"].to_numpy() + 1.0))).astype(np.int64)
    imp = imp.with_columns(pl.Series("bucket", bucket))
    # per impression, the key of each effect; base rate, format and taste also vary by action
    imp_keys = {
        "base": key("surface"),
        "position": key("surface", "bucket"),
        "format": key("format"),
        "level": key("user_id"),
        "topic": key("user_id", "topic"),
        "quality": key("post_id"),
        "author": key("author_id"),
        "tie": key("user_id", "author_id"),
    }
    imp_keys["taste"] = imp_keys["level"]
    per_action = ("base", "format", "taste")
    per_obs_keys = {name: k[obs_imp] * n_act + obs_act if name in per_action else k[obs_imp] for name, k in imp_keys.items()}
    shared_loading = sign[obs_act]
    blocks = {}
    for name, keys in per_obs_keys.items():
        codes = _first_appearance_codes(keys)
        blocks[name] = _Block(
            codes=codes,
            penalty=lam[name],
            loading=shared_loading if name in SHARED_EFFECTS else None,
            running_size=np.maximum.accumulate(codes) + 1,
        )
    # per impression, each effect's code (-1: never observed; a day's fit knows the codes below
    # its block sizes, the keys seen before that day), per action for those that vary by action
    imp_codes = {}
    for name, k in imp_keys.items():
        # each key's code once per block (np.unique over every observation), then per impression
        known, first = np.unique(per_obs_keys[name], return_index=True)
        code_of = _code_lookup(known, blocks[name].codes[first])
        imp_codes[name] = [code_of(k * n_act + j) for j in range(n_act)] if name in per_action else code_of(k)

    day = imp["ts"].dt.truncate("1d").to_numpy()
    days, first_row = np.unique(day, return_index=True)
    out = {c: np.zeros(n, dtype=np.float32) for c in columns}
    theta = {name: np.zeros(0) for name in blocks}
    for i in tqdm(range(len(days)), desc="latent effects", unit="day", disable=not progress):
        lo = first_row[i]
        hi = first_row[i + 1] if i + 1 < len(days) else n
        m = int(np.searchsorted(obs_imp, lo))  # the observations of impressions before this day
        if m:
            sizes = {name: int(b.running_size[m - 1]) for name, b in blocks.items()}
            start = np.concatenate([np.pad(theta[name], (0, sizes[name] - theta[name].size)) for name in blocks])
            result = minimize(
                _objective, start, args=(blocks, sizes, y[:m], m), jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
            )
            theta = dict(zip(blocks, np.split(result.x, np.cumsum([sizes[name] for name in blocks])[:-1])))
        rows = slice(lo, hi)
        shared = np.zeros(hi - lo)
        for name, column in SHARED_EFFECTS.items():
            values = _lookup(theta[name], imp_codes[name][rows])
            out[column][rows] = values
            shared += values
        position = _lookup(theta["position"], imp_codes["position"][rows])
        for j, action in enumerate(ACTIONS):
            taste = _lookup(theta["taste"], imp_codes["taste"][j][rows])
            fixed = _lookup(theta["base"], imp_codes["base"][j][rows]) + position + _lookup(theta["format"], imp_codes["format"][j][rows])
            out[f"latent_taste_{action}"][rows] = taste
            out[f"latent_score_{action}"][rows] = fixed + sign[j] * shared + taste
    return pl.DataFrame({"impression_id": imp["impression_id"], **out})


def _first_appearance_codes(keys: np.ndarray) -> np.ndarray:
    """Codes 0, 1, 2, ... in the order each key first appears: a prefix of the rows uses a prefix of the codes."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse]


def _code_lookup(known: np.ndarray, codes: np.ndarray):
    """A function from keys to their block codes (-1 for a key never observed); ``known`` sorted."""

    def code_of(keys: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(known, keys), 0, known.size - 1)
        return np.where(known[pos] == keys, codes[pos], -1)

    return code_of


def _lookup(theta: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``theta[code]`` where the code was fitted, else 0 (the prior)."""
    known = (codes >= 0) & (codes < theta.size)
    if not known.any():
        return np.zeros(codes.shape)
    return np.where(known, theta[np.where(known, codes, 0)], 0.0)


def _objective(flat: np.ndarray, blocks: dict[str, _Block], sizes: dict[str, int], y: np.ndarray, m: int):
    """Penalised log loss of the first ``m`` observations and its gradient."""
    parts = np.split(flat, np.cumsum([sizes[name] for name in blocks])[:-1])
    z = np.zeros(m)
    for (name, block), theta in zip(blocks.items(), parts):
        term = theta[block.codes[:m]]
        z += term if block.loading is None else block.loading[:m] * term
    residual = 1.0 / (1.0 + np.exp(-z)) - y
    loss = float(np.sum(np.logaddexp(0.0, z) - y * z))
    grads = []
    for (name, block), theta in zip(blocks.items(), parts):
        weights = residual if block.loading is None else residual * block.loading[:m]
        grads.append(np.bincount(block.codes[:m], weights=weights, minlength=sizes[name]) + block.penalty * theta)
        loss += 0.5 * block.penalty * float(theta @ theta)
    return loss, np.concatenate(grads)
