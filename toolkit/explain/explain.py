"""Why a post is where it is for a viewer (:func:`explain_post`), and what limited its reach (:func:`explain_reach`).

Both rerun the ranker's own pieces (:mod:`toolkit.rank.ranker`): the candidates, the predicted
actions, the value model and the rules, so an explanation always matches what :func:`toolkit.rank.rank`
and :class:`toolkit.rank.RankingCache` return for the same arguments. Everything comes back as
plain data (dicts, lists, numbers, strings) with a list of plain-English ``sentences``.

The signals behind a prediction are SHAP values from XGBoost's own TreeSHAP
(``booster.predict(..., pred_contribs=True)``) in **log-odds** units: for each action the
features' SHAP values plus the model's bias add up to the margin, and the predicted probability
is ``1 / (1 + exp(-margin))``.

Example
-------
>>> why = explain_post("data/feedlab.duckdb", "explore", 17, 4711, k=50)  # doctest: +SKIP
>>> why["position"], why["contributions"][0]["action"]  # doctest: +SKIP
(2, 'save')
>>> reach = explain_reach("data/feedlab.duckdb", "feed", 812, k=20)  # doctest: +SKIP
>>> reach["reach"], reach["by_rule"][0]  # doctest: +SKIP
(14, {'rule': 'misinformation_demotion', 'reach_without': 31, 'lost': 17})
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import check_features
from toolkit.predict.predict import feature_matrix
from toolkit.rank.candidates import candidates_for
from toolkit.rank.config import SurfaceConfig, resolve_rules, surface_config
from toolkit.rank.ranker import (
    RankingCache,
    _check_user,
    _models,
    as_time,
    open_store,
    rank_candidates,
    usable_weights,
    viewer_devices,
)
from toolkit.rank.rules import _ordinal
from toolkit.signals import compute_features
from toolkit.signals.registry import FEATURES

Store = str | os.PathLike | duckdb.DuckDBPyConnection
Time = str | date | datetime | None

#: What the SHAP values of :func:`explain_post` are measured in.
SIGNAL_UNITS = (
    "log-odds: each shap is a feature's SHAP value from XGBoost (pred_contribs); for an action, "
    "bias + the shap of every feature = margin, and the probability is 1 / (1 + exp(-margin))"
)

#: At most this many distinct rule effects get a sentence in :func:`explain_reach`.
_MAX_EFFECT_SENTENCES = 5
#: Signal families left out of sentences: ``position`` is 0 for every candidate (scored as if on top).
_SILENT_FAMILIES = ("context",)

#: How a predicted action reads in a sentence ("the model expected a save").
_ACTION_NOUNS = {
    "dwell": "a dwell",
    "like": "a like",
    "comment": "a comment",
    "share": "a share",
    "save": "a save",
    "profile_tap": "a profile tap",
    "follow": "a follow",
    "watch_complete": "a complete watch",
    "audio_page": "a visit to the audio page",
    "not_interested": "a 'not interested'",
    "report": "a report",
    "entertaining": "an 'entertaining' survey answer",
}


# ---------------------------------------------------------------------------------------------
# one viewer, one post


def explain_post(
    store: Store,
    surface: str,
    user_id: int,
    post_id: int,
    *,
    at: Time = None,
    weights: Mapping[str, float] | None = None,
    rules: Mapping[str, bool | Mapping[str, Any]] | None = None,
    k: int = 50,
    models: TrainedSurface | None = None,
    top_signals: int = 5,
) -> dict[str, Any]:
    """Why post ``post_id`` is where it is (or nowhere) in ``user_id``'s ranking on ``surface``.

    Ranks the viewer once as :func:`toolkit.rank.rank` does (same ``at``, ``weights``,
    ``rules``, ``k``, ``models``), keeping every candidate, removed ones too, and takes the
    post's row apart. A post that is not among the viewer's candidates is scored on its own
    (as if it were one) and the reason it is not a candidate is given where it can be told
    cheaply (the viewer does not follow the author, it is older than the window, it is a story,
    the viewer already saw it, ...).

    Returns a dict: ``surface``, ``user_id``, ``post_id``, ``author_id``, ``at``; ``position``
    (0-based among the shown top ``k``, as in ``rank()``; None when not shown), ``shown``,
    ``candidate``, ``candidate_reason`` (why not, or None), ``removed``, ``kept_position``
    (0-based rank among the viewer's non-removed candidates, shown or not), ``kept`` (how many
    were not removed) and ``k``; ``score`` (after rules; None when removed) and ``base_score``
    (before); ``contributions``: one {action, weight, probability, contribution} per weighted
    action, largest |contribution| first, summing to ``base_score``; ``rules``: every {rule,
    effect, factor} that acted on it; ``signals``: for the two actions with the largest
    |contribution|, the ``top_signals`` features with the largest |SHAP| (features whose SHAP
    is exactly 0 are left out), each {feature, family, value, shap}, with ``signal_margins``
    ({action: {bias, margin, rest}}, ``rest`` being the SHAP of the features not listed) and
    ``signal_units`` (log-odds; see :data:`SIGNAL_UNITS`); and ``sentences``, the same in plain
    English (places in sentences count from 1; shares of the score are shares of the summed
    absolute contributions; the context family, the slot, is left out of them: it is 0 for
    every candidate).

    An unknown user, an unknown post or a post created after ``at`` is a FeedlabError.

    Example
    -------
    >>> why = explain_post("data/feedlab.duckdb", "explore", 17, 4711)  # doctest: +SKIP
    >>> why["sentences"][:2]  # doctest: +SKIP
    ['Shown at position 3 of 50 for user 17 on explore.',
     'Its score 0.41 comes mostly from the predicted save (42%) and like (31%).']
    """
    _check_whole(k, "k", minimum=1)
    _check_whole(top_signals, "top_signals", minimum=0)
    cfg = surface_config(surface)
    with open_store(store) as con:
        _check_user(con, user_id)
        user_id = int(user_id)
        when = as_time(at, con)
        post = _post(con, post_id, when)
        trained = _models(store, con, surface, models)
        w = usable_weights(cfg, weights, trained)
        specs = resolve_rules(cfg, rules)
        candidates = candidates_for(con, surface, [user_id], at=when, config=cfg)
        ranked = rank_candidates(con, trained, candidates, at=when, weights=w, rules=specs)
        mine = ranked.filter(pl.col("post_id") == post["post_id"])
        candidate = mine.height > 0
        reason = None
        if not candidate:
            reason = _not_candidate_reason(con, cfg, user_id, post, when)
            alone = pl.DataFrame(
                {"user_id": [user_id], "post_id": [post["post_id"]], "author_id": [post["author_id"]], "source": [None]},
                schema={"user_id": pl.Int64, "post_id": pl.Int64, "author_id": pl.Int64, "source": pl.String},
            )
            mine = rank_candidates(con, trained, alone, at=when, weights=w, rules=specs)
        features = _feature_row(con, trained, user_id, post["post_id"], when)

    row = mine.row(0, named=True)
    kept = ranked.filter(~pl.col("removed")).sort("position")
    removed = bool(row["removed"])
    kept_position = None if (removed or not candidate) else int(row["position"])
    shown = kept_position is not None and kept_position < k
    contributions = sorted(
        (
            {
                "action": a,
                "weight": float(wa),
                "probability": _float(row[f"p_{a}"]),
                "contribution": float(row[f"contribution_{a}"]),
            }
            for a, wa in w.items()
        ),
        key=lambda c: -abs(c["contribution"]),
    )
    signal_actions = [c["action"] for c in contributions[:2]]
    signals, margins = _signals(trained, features, signal_actions, top_signals)
    last_shown = kept.head(k)["score"].to_list()
    out = {
        "surface": surface,
        "user_id": user_id,
        "post_id": post["post_id"],
        "author_id": post["author_id"],
        "at": when,
        "k": k,
        "position": kept_position if shown else None,
        "shown": shown,
        "candidate": candidate,
        "candidate_reason": reason,
        "removed": removed,
        "kept_position": kept_position,
        "kept": kept.height,
        "score": _float(row["score"]),
        "base_score": float(row["base_score"]),
        "contributions": contributions,
        "rules": [dict(r) for r in row["rules"] or []],
        "signals": signals,
        "signal_margins": margins,
        "signal_units": SIGNAL_UNITS,
    }
    out["sentences"] = _post_sentences(out, last_shown[-1] if last_shown else None)
    return out


def _post(con: duckdb.DuckDBPyConnection, post_id: int, when: datetime) -> dict[str, Any]:
    """The post's row (post_id, author_id, created_at, format); unknown or not yet created is a FeedlabError."""
    if isinstance(post_id, bool) or not isinstance(post_id, (int, np.integer)):
        raise FeedlabError(f"a post id is a whole number (got {post_id!r})")
    rows = con.sql(
        "select post_id, author_id, created_at, format from posts where post_id = ?", params=[int(post_id)]
    ).fetchall()
    if not rows:
        raise FeedlabError(f"no post {post_id} in the store")
    pid, author, created, fmt = rows[0]
    if created >= when:
        raise FeedlabError(
            f"post {pid} was created at {created}, not before {when}: nothing could show it then "
            "(explain it at a later time)"
        )
    return {"post_id": int(pid), "author_id": int(author), "created_at": created, "format": fmt}


def _not_candidate_reason(
    con: duckdb.DuckDBPyConnection, cfg: SurfaceConfig, user_id: int, post: Mapping[str, Any], when: datetime
) -> str:
    """Why ``post`` is not among ``user_id``'s candidates on the surface, from cheap checks of the store."""
    surface = cfg.name
    name = surface.capitalize()
    follow = con.sql(
        "select muted from follows where follower_id = ? and followee_id = ? and created_at < ?",
        params=[user_id, post["author_id"], when],
    ).fetchall()
    follows, muted = bool(follow), bool(follow and follow[0][0])
    seen = con.sql(
        "select count(*) from impressions where user_id = ? and post_id = ? and ts < ?",
        params=[user_id, post["post_id"], when],
    ).fetchall()[0][0] > 0
    too_old = post["created_at"] < when - timedelta(hours=cfg.candidate_window_hours)
    fmt = post["format"]
    reasons = []
    if post["author_id"] == user_id:
        reasons.append("it is the viewer's own post")
    if surface == "feed" and fmt == "story":
        reasons.append("it is a story (Feed shows posts; stories are on Stories)")
    if surface == "stories" and fmt != "story":
        reasons.append(f"it is a {fmt}, not a story")
    if surface == "reels" and fmt != "reel":
        reasons.append(f"it is a {fmt}, not a reel")
    if surface == "explore" and fmt == "story":
        reasons.append("it is a story (Explore does not recommend stories)")
    if surface in ("feed", "stories") and post["author_id"] != user_id:
        if not follows:
            reasons.append("the viewer does not follow the author")
        elif muted and surface == "feed":
            reasons.append("the viewer muted the author")
    if surface in ("explore", "reels") and follows:
        reasons.append(f"the viewer follows the author ({name} recommends accounts the viewer does not follow)")
    if too_old:
        reasons.append(f"it is older than {name}'s {cfg.candidate_window_hours:g}-hour window")
    if seen:
        reasons.append("the viewer was already shown it")
    if reasons:
        return "; ".join(reasons)
    if surface in ("feed", "stories"):
        return f"newer posts filled the viewer's {cfg.max_candidates} candidates"
    sources = ", ".join(s.replace("_", " ") for s in cfg.candidate_sources)
    return f"none of {name}'s candidate sources ({sources}) found it for this viewer"


def _feature_row(
    con: duckdb.DuckDBPyConnection, trained: TrainedSurface, user_id: int, post_id: int, when: datetime
) -> pl.DataFrame:
    """The post's features for the viewer at ``when``, exactly as :func:`toolkit.rank.ranker.predict_candidates` computes them."""
    device = viewer_devices(con, [user_id], at=when)["device"][0]
    request = pl.DataFrame(
        {"user_id": [user_id], "post_id": [post_id], "ts": [when], "device": [device]},
        schema={"user_id": pl.Int64, "post_id": pl.Int64, "ts": pl.Datetime("us"), "device": pl.String},
    )
    features = compute_features(con, request)
    check_features(trained.features, features.columns, schema_version=trained.schema_version)
    return features


def _signals(
    trained: TrainedSurface, features: pl.DataFrame, actions: list[str], top: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]:
    """Per action, the ``top`` features by |SHAP| (log-odds), and the bias, margin and rest of the SHAP."""
    import xgboost as xgb

    X = feature_matrix(features, trained.features)
    matrix = xgb.DMatrix(X, feature_names=list(trained.features))
    values = features.row(0, named=True)
    signals: dict[str, list[dict[str, Any]]] = {}
    margins: dict[str, dict[str, float]] = {}
    for action in actions:
        booster = trained.boosters[action]
        contribs = booster.predict(
            matrix, pred_contribs=True, iteration_range=(0, trained.best_iteration[action] + 1)
        )[0].astype(np.float64)
        shap, bias = contribs[:-1], float(contribs[-1])
        # features with a SHAP of exactly 0 (never split on, or on no path of this row) say nothing
        order = sorted((i for i in range(len(shap)) if shap[i] != 0), key=lambda i: (-abs(shap[i]), i))
        listed = order[:top]
        signals[action] = [
            {
                "feature": trained.features[i],
                "family": FEATURES[trained.features[i]].family if trained.features[i] in FEATURES else "unknown",
                "value": _plain(values.get(trained.features[i])),
                "shap": float(shap[i]),
            }
            for i in listed
        ]
        margins[action] = {
            "bias": bias,
            "margin": bias + float(shap.sum()),
            "rest": float(sum(shap[i] for i in order[top:])),
        }
    return signals, margins


def _post_sentences(e: Mapping[str, Any], last_shown: float | None) -> list[str]:
    """The plain-English lines of an :func:`explain_post` result."""
    who = f"user {e['user_id']} on {e['surface']}"
    shown_n = min(e["k"], e["kept"])
    s: list[str] = []
    if e["shown"]:
        s.append(f"Shown at position {e['position'] + 1} of {shown_n} for {who}.")
    elif not e["candidate"]:
        s.append(f"Not a candidate for {who}: {e['candidate_reason']}.")
        if e["score"] is not None:
            bar = f"; the last shown post scores {_num(last_shown)}" if last_shown is not None else ""
            s.append(f"Scored on its own it would get {_num(e['score'])}{bar}.")
        else:
            s.append(f"Even as a candidate a rule would remove it: {', '.join(_removers(e))}.")
    elif e["removed"]:
        removers = _removers(e)
        by = f" by {' and '.join(removers)}" if removers else ""
        s.append(f"Not shown to {who}: removed{by}.")
    else:
        bar = f"; the last shown post scores {_num(last_shown)}" if last_shown is not None else ""
        s.append(
            f"Not shown to {who}: it ranks {_ordinal(e['kept_position'] + 1)} of {e['kept']}, below the top {e['k']} "
            f"(its score {_num(e['score'])}{bar})."
        )
    s.append(_score_sentence(e))
    for action, listed in e["signals"].items():
        line = _signal_sentence(action, listed, next(c["probability"] for c in e["contributions"] if c["action"] == action))
        if line:
            s.append(line)
    for r in e["rules"]:
        s.append(_rule_sentence(r["rule"], r["effect"]))
    if e["score"] is not None and e["rules"] and e["score"] != e["base_score"]:
        s.append(f"After the rules its score is {_num(e['score'])}.")
    return s


def _removers(e: Mapping[str, Any]) -> list[str]:
    return [r["rule"] for r in e["rules"] if r["factor"] == 0]


def _score_sentence(e: Mapping[str, Any]) -> str:
    """Which predicted actions the score comes from, as shares of the summed absolute contributions."""
    total = sum(abs(c["contribution"]) for c in e["contributions"])
    changed = e["score"] is None or not math.isclose(e["score"], e["base_score"], rel_tol=1e-12, abs_tol=1e-15)
    head = f"Its score before rules, {_num(e['base_score'])}," if changed else f"Its score {_num(e['base_score'])}"
    if total == 0:
        return f"{head} is 0: every weighted action was predicted at 0."
    positive = [c for c in e["contributions"] if c["contribution"] > 0][:2]
    negative = [c for c in e["contributions"] if c["contribution"] < 0][:1]
    parts = [f"{c['action'].replace('_', ' ')} ({abs(c['contribution']) / total:.0%})" for c in positive]
    line = f"{head} comes mostly from the predicted {' and '.join(parts)}" if parts else f"{head} comes from negative predictions only"
    if negative and abs(negative[0]["contribution"]) / total >= 0.05:
        c = negative[0]
        line += f"; the predicted {c['action'].replace('_', ' ')} took {_num(-c['contribution'])} off ({-c['contribution'] / total:.0%})"
    return line + "."


def _signal_sentence(action: str, listed: list[dict[str, Any]], probability: float | None) -> str | None:
    """What made the model expect ``action`` (or not), from its largest SHAP values.

    Example
    -------
    >>> _signal_sentence("save", [
    ...     {"feature": "position", "family": "context", "value": 0, "shap": 0.9},
    ...     {"feature": "post_saves_24h", "family": "post", "value": 4, "shap": 0.8},
    ...     {"feature": "va_follows", "family": "viewer_author", "value": False, "shap": -0.4},
    ...     {"feature": "post_age_h", "family": "post", "value": 50.0, "shap": -0.3},
    ... ], 0.12)
    'The model expected a save (p=0.12) mainly because of post_saves_24h (saves in engagements over the last 24h: 4); va_follows (the viewer follows the author: no) counted against it.'

    Context features (the slot, 0 for every candidate) are left out: they do not tell posts apart.
    """
    noun = _ACTION_NOUNS.get(action, f"a {action.replace('_', ' ')}")
    p = f" (p={_num(probability)})" if probability is not None else ""
    if not listed:
        return f"The model's chance of {noun}{p} is its base rate: no signal of this post moved it."
    listed = [x for x in listed if x.get("family") not in _SILENT_FAMILIES]
    up = [x for x in listed if x["shap"] > 0][:2]
    down = [x for x in listed if x["shap"] < 0][:1]
    if up:
        line = f"The model expected {noun}{p} mainly because of {' and '.join(_feature_words(x) for x in up)}"
        if down:
            line += f"; {_feature_words(down[0])} counted against it"
        return line + "."
    if down:
        return f"The model's chance of {noun}{p} was held down mainly by {_feature_words(down[0])}."
    return None


def _feature_words(x: Mapping[str, Any]) -> str:
    doc = FEATURES[x["feature"]].doc if x["feature"] in FEATURES else ""
    v = x["value"]
    value = "missing" if v is None else ("yes" if v else "no") if isinstance(v, bool) else _num(v)
    return f"{x['feature']} ({doc + ': ' if doc else ''}{value})"


def _rule_sentence(rule: str, effect: str) -> str:
    """One rule's effect on a post as a sentence about the viewer.

    Example
    -------
    >>> _rule_sentence("misinformation_demotion", "demoted x0.30: labelled misinformation by fact checkers")
    'The misinformation_demotion rule demoted it x0.30: labelled misinformation by fact checkers.'
    >>> _rule_sentence("mute_removal", "removed: you muted this account")
    'The mute_removal rule removed it: the viewer muted this account.'
    >>> _rule_sentence("author_diversity", "moved down from 2 to 3: too many posts of this author in a row")
    'The author_diversity rule moved it down from 2 to 3: too many posts of this author in a row.'
    """
    return f"The {_rule_clause(rule, effect)}."


def _rule_clause(rule: str, effect: str) -> str:
    """``rule {verb} it: {reason}``, the reason about the viewer rather than to them."""
    verb, sep, reason = effect.partition(": ")
    first, _, rest = verb.partition(" ")
    action = f"{first} it {rest}".rstrip()
    return f"{rule} rule {action}{sep}{_third_person(reason)}"


def _third_person(text: str) -> str:
    """A rule's reason, written to the viewer, about the viewer.

    Example
    -------
    >>> _third_person("one of your Close Friends; you marked a post")
    "one of the viewer's Close Friends; the viewer marked a post"
    """
    return re.sub(r"\byou\b", "the viewer", re.sub(r"\byour\b", "the viewer's", text))


# ---------------------------------------------------------------------------------------------
# one post, its audience


def explain_reach(
    store: Store,
    surface: str,
    post_id: int,
    *,
    at: Time = None,
    viewers: Iterable[int] | None = None,
    weights: Mapping[str, float] | None = None,
    rules: Mapping[str, bool | Mapping[str, Any]] | None = None,
    k: int = 50,
    models: TrainedSurface | None = None,
    max_viewers: int | None = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """How many of a post's audience would have it in their top ``k`` on ``surface``, and which rules cost it reach.

    The seeds' answer to "shadowbanning": most followers never see a post because it ranks below
    their other posts, and a few rules (demotions, removals) lower it on purpose. The audience
    is ``viewers`` when given, else the eligible viewers: on Feed and Stories the author's
    followers (follows made before ``at``), on Explore and Reels the accounts that existed
    before ``at``, are not the author and do not follow them; either way a seeded random sample
    of ``max_viewers`` when there are more (None: no cap).

    The audience is ranked once with a :class:`toolkit.rank.RankingCache` (only the viewers who
    have the post among their candidates: no one else can be shown it), and re-ranked once per
    enabled rule with that rule switched off (order-free rules' factors are recomputed from the
    cached items; no new predictions).

    Returns a dict: ``surface``, ``post_id``, ``author_id``, ``at``, ``k``; ``audience`` (viewers
    asked about), ``eligible`` (eligible viewers before sampling), ``sampled``, ``viewers`` (their
    ids); ``candidate_in`` (viewers with the post among their candidates), ``already_seen``
    (viewers shown it before ``at``); ``reach`` (viewers with it in their top ``k``) and
    ``reach_share``; ``by_rule``: per enabled rule {rule, reach_without, lost = reach_without -
    reach}, largest ``lost`` first (a negative ``lost``: the rule helped it);
    ``reach_without_rules`` (every rule off at once); ``effects``: the
    distinct effects rules had on the post in these viewers' lists (order-free rules), most
    frequent first; and ``sentences``.

    An unknown post, a post created after ``at`` or an unknown viewer is a FeedlabError.

    Example
    -------
    >>> reach = explain_reach("data/feedlab.duckdb", "feed", 812, k=50)  # doctest: +SKIP
    >>> reach["sentences"][0]  # doctest: +SKIP
    'Post 812 would reach 14 of 120 followers (12%) in their top 50 on feed.'
    """
    _check_whole(k, "k", minimum=1)
    if max_viewers is not None:
        _check_whole(max_viewers, "max_viewers", minimum=1)
    cfg = surface_config(surface)
    with open_store(store) as con:
        when = as_time(at, con)
        post = _post(con, post_id, when)
        pid, author = post["post_id"], post["author_id"]
        trained = _models(store, con, surface, models)
        usable_weights(cfg, weights, trained)  # checks the weights, whoever has the post
        specs = resolve_rules(cfg, rules)
        if viewers is None:
            audience, eligible = _audience(con, surface, author, when, max_viewers, seed)
        else:
            audience = _given_viewers(con, viewers)
            eligible = len(audience)
            if max_viewers is not None and len(audience) > max_viewers:
                audience = sorted(np.random.default_rng(seed).choice(audience, max_viewers, replace=False).tolist())
        holders: list[int] = []
        seen = 0
        if audience:
            cands = candidates_for(con, surface, audience, at=when, config=cfg)
            holders = sorted(set(cands.filter(pl.col("post_id") == pid)["user_id"].to_list()))
            seen = con.sql(
                "select count(distinct user_id) from impressions where post_id = ? and ts < ? and user_id in (select unnest(?))",
                params=[pid, when, audience],
            ).fetchall()[0][0]
        cache = (
            RankingCache.build(con, surface, holders, at=when, rules=rules, models=trained, progress=False)
            if holders
            else None
        )

    enabled = [n for n, spec in specs.items() if spec.enabled]
    reach = _reach(cache, weights, k, pid)
    by_rule = []
    for name in enabled:
        without = _reach(_without(cache, [name]), weights, k, pid) if cache is not None else 0
        by_rule.append({"rule": name, "reach_without": without, "lost": without - reach})
    without_rules = _reach(_without(cache, enabled), weights, k, pid) if cache is not None else 0
    by_rule.sort(key=lambda r: -r["lost"])  # stable: rules with equal losses keep application order
    entries: list[dict[str, Any]] = []
    if cache is not None:
        for rules_of_item in cache.items.filter(pl.col("post_id") == pid)["rules"].to_list():
            entries.extend(rules_of_item or [])
    counted = Counter((e["rule"], e["effect"]) for e in entries)
    out = {
        "surface": surface,
        "post_id": pid,
        "author_id": author,
        "at": when,
        "k": k,
        "audience": len(audience),
        "eligible": eligible,
        "sampled": len(audience) < eligible,
        "viewers": audience,
        "candidate_in": len(holders),
        "already_seen": int(seen),
        "reach": reach,
        "reach_share": reach / len(audience) if audience else None,
        "by_rule": by_rule,
        "reach_without_rules": without_rules,
        "effects": [effect for (_, effect), _ in counted.most_common()],
    }
    out["sentences"] = _reach_sentences(out, surface, given=viewers is not None, counted=counted)
    return out


def _audience(
    con: duckdb.DuckDBPyConnection, surface: str, author: int, when: datetime, max_viewers: int | None, seed: int
) -> tuple[list[int], int]:
    """The eligible viewers of an author's post (a seeded sample of ``max_viewers`` when more), and how many were eligible."""
    if surface in ("feed", "stories"):
        sql = "select follower_id from follows where followee_id = ? and created_at < ? order by follower_id"
        params: list[Any] = [author, when]
    else:
        sql = (
            "select user_id from users where user_id <> ? and created_at < ? and user_id not in "
            "(select follower_id from follows where followee_id = ? and created_at < ?) order by user_id"
        )
        params = [author, when, author, when]
    ids = [int(r[0]) for r in con.sql(sql, params=params).fetchall()]
    eligible = len(ids)
    if max_viewers is not None and eligible > max_viewers:
        ids = sorted(int(u) for u in np.random.default_rng(seed).choice(ids, max_viewers, replace=False))
    return ids, eligible


def _given_viewers(con: duckdb.DuckDBPyConnection, viewers: Iterable[int]) -> list[int]:
    ids = []
    for u in viewers:
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
            raise FeedlabError(f"a viewer is a user id, a whole number (got {u!r})")
        ids.append(int(u))
    ids = sorted(set(ids))
    if ids:
        known = {
            r[0] for r in con.sql("select user_id from users where user_id in (select unnest(?))", params=[ids]).fetchall()
        }
        unknown = [u for u in ids if u not in known]
        if unknown:
            raise FeedlabError(f"{len(unknown)} viewer(s) not in the store, e.g. {unknown[:5]}")
    return ids


def _reach(cache: RankingCache | None, weights: Mapping[str, float] | None, k: int, post_id: int) -> int:
    """How many of the cache's viewers have ``post_id`` in their top ``k``."""
    if cache is None:
        return 0
    return int((cache.top_posts(weights, k=k) == post_id).any(axis=1).sum())


def _without(cache: RankingCache, rules: list[str]) -> RankingCache:
    """``cache`` with ``rules`` switched off (:meth:`RankingCache.with_rules`: no new predictions)."""
    return cache.with_rules({r: False for r in rules})


def _reach_sentences(e: Mapping[str, Any], surface: str, *, given: bool, counted: Counter) -> list[str]:
    """The plain-English lines of an :func:`explain_reach` result."""
    n, k, reach = e["audience"], e["k"], e["reach"]
    if given:
        who = "given viewers"
    elif surface in ("feed", "stories"):
        who = "followers"
    else:
        who = "accounts that do not follow its author"
    if n == 0:
        return [f"Post {e['post_id']} has no {who} to reach on {surface}."]
    s = [f"Post {e['post_id']} would reach {reach} of {n} {who} ({reach / n:.0%}) in their top {k} on {surface}."]
    if e["sampled"]:
        s.append(f"They are a random sample of the {e['eligible']} eligible.")
    seen = f"; {e['already_seen']} of them had already been shown it" if e["already_seen"] else ""
    s.append(f"It was a candidate for {e['candidate_in']} of them{seen}.")
    reasons: dict[str, str] = {}
    for (rule, effect), _ in counted.most_common():
        reasons.setdefault(rule, effect.partition(": ")[2] or effect)
    costly = [r for r in e["by_rule"] if r["lost"] > 0]
    for r in costly:
        why = reasons.get(r["rule"])
        if why is None:
            why = (
                "it spaces out posts of one author"
                if r["rule"] == "author_diversity"
                else "it raised other posts above this one"
            )
        s.append(
            f"Without {r['rule']} it would reach {r['reach_without']}: that rule cost it {_viewers(r['lost'])} "
            f"({_third_person(why)})."
        )
    for r in e["by_rule"]:
        if r["lost"] < 0:
            s.append(f"{r['rule']} helped it: without it, it would reach {r['reach_without']} ({-r['lost']} fewer).")
    all_off = e["reach_without_rules"]
    if all_off > max([reach, *(r["reach_without"] for r in costly)]):
        lead = "No single rule cost it reach, but together" if not costly else "Together"
        s.append(f"{lead} the rules cost it {_viewers(all_off - reach)}: without any rule it would reach {all_off}.")
    missed = e["candidate_in"] - max([reach, all_off, *(r["reach_without"] for r in e["by_rule"])])
    lead = "No rule reduced its reach: " if not costly and all_off <= reach else ""
    if e["candidate_in"] == 0:
        s.append("No rule reduced its reach: it was not among these viewers' candidates.")
    elif missed > 0:
        text = (
            f"it ranks below other posts on predicted engagement for {missed} of the {e['candidate_in']} viewers "
            f"who had it as a candidate, even without any rule."
        )
        s.append(lead + text if lead else text[0].upper() + text[1:])
    elif lead:
        s.append(f"{lead}it made the top {k} of every viewer who had it as a candidate.")
    for (rule, effect), times in counted.most_common(_MAX_EFFECT_SENTENCES):
        s.append(f"For {times} of them the {_rule_clause(rule, effect)}.")
    return s


# ---------------------------------------------------------------------------------------------
# small helpers


def _viewers(n: int) -> str:
    return f"{n} viewer" if n == 1 else f"{n} viewers"


def _check_whole(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FeedlabError(f"{name} must be a whole number >= {minimum} (got {value!r})")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    """A feature value as plain data: NaN becomes None, numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(x: Any) -> str:
    """A number for a sentence: three significant digits, whole numbers as such.

    Example
    -------
    >>> _num(0.41234), _num(4.0), _num(True), _num(0.000123)
    ('0.412', '4', '1', '0.000123')
    """
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.3g}"
