"""Stage 5 of the seeds' pipeline: the rules applied after the value model ("other considerations").

Two kinds of rule:

* **static** rules give each item a multiplicative factor from its own inputs (1 = untouched,
  0 = removed), whatever the action weights; the factors of all enabled static rules multiply.
  A factor ``f`` changes a score ``s`` sign-aware, so that a demotion always lowers a score and
  a boost always raises it: ``s * f`` when ``s >= 0``, else ``s / f``.
* the **positional** rule ``author_diversity`` runs last, on each viewer's list sorted by the
  adjusted score (ties broken by ``post_id``): X's decay of an author's k-th post, or a greedy
  reorder so that no more than ``max_in_row`` consecutive items share an author.

Every rule that touches an item leaves an entry in its ``rules`` list (the rule, a plain
sentence, the factor), which explanations show. :func:`rule_inputs` reads what the rules need
from the store, point in time; :func:`rule_factors` is weight-independent, so a re-ranker can
compute it once per (viewer, candidate) and re-run only :func:`author_diversity` when weights
change.

Example
-------
>>> import polars as pl
>>> from toolkit.rank.config import resolve_rules
>>> frame = pl.DataFrame({
...     "user_id": [1, 1, 1], "post_id": [10, 11, 12], "author_id": [7, 7, 8],
...     "score": [0.9, 0.8, 0.5], "misinformation": [False, True, False],
... })
>>> rules = resolve_rules("feed", {"author_diversity": False})
>>> rules = {n: rules[n] for n in ("misinformation_demotion", "author_diversity")}
>>> out = apply_rules(frame, rules)
>>> out.select("post_id", "base_score", "score", "position").rows()
[(10, 0.9, 0.9, 0), (12, 0.5, 0.5, 1), (11, 0.8, 0.24, 2)]
>>> out["rules"][2].to_list()
[{'rule': 'misinformation_demotion', 'effect': 'demoted x0.30: labelled misinformation by fact checkers', 'factor': 0.3}]
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.rank.config import RULE_DEFAULTS, RuleSpec
from toolkit.store.schema import CONTENT_FLAGS

#: The columns :func:`rule_inputs` adds, with their dtypes.
RULE_INPUT_SCHEMA: dict[str, pl.DataType] = {
    "format": pl.String(),
    "topic": pl.Int32(),
    "is_reshare": pl.Boolean(),
    **{f: pl.Boolean() for f in CONTENT_FLAGS},
    "close_friend": pl.Boolean(),
    "muted": pl.Boolean(),
    "ni_author": pl.Boolean(),
    "ni_topic": pl.Boolean(),
    "author_misinfo_posts": pl.Int64(),
}
#: The columns :func:`rule_inputs` adds, in order.
RULE_INPUT_COLUMNS: tuple[str, ...] = tuple(RULE_INPUT_SCHEMA)
#: One entry of an item's ``rules`` list.
RULE_ENTRY = pl.Struct({"rule": pl.String, "effect": pl.String, "factor": pl.Float64})
RULE_ENTRIES = pl.List(RULE_ENTRY)
#: Columns every frame needs to be ordered per viewer.
KEY_COLUMNS = ("user_id", "post_id", "author_id")

_FRAME_VIEW = "_feedlab_rule_frame"
_ROW = "_feedlab_row"
_ENTRY = "_feedlab_entry"


# ---------------------------------------------------------------------------------------------
# inputs


def rule_inputs(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, *, at: datetime) -> pl.DataFrame:
    """``frame`` (user_id, post_id, author_id, ...) with every column the rules read, as known before ``at``.

    Adds :data:`RULE_INPUT_COLUMNS`: the post's ``format``, ``topic``, ``is_reshare`` and content
    flags; ``close_friend`` / ``muted`` (the viewer follows the author with that flag, the follow
    made before ``at``); ``ni_author`` / ``ni_topic`` (the viewer marked a post of this author /
    of this topic not interested in an impression before ``at``); ``author_misinfo_posts`` (the
    author's posts labelled misinformation created before ``at``). Every event counts only when
    strictly before ``at``. Columns of ``frame`` keep their order; rule input columns already in
    it are replaced. A post that did not exist before ``at`` is a FeedlabError.

    Example
    -------
    >>> import duckdb, polars as pl
    >>> from datetime import datetime
    >>> from toolkit.store.schema import schema_ddl
    >>> con = duckdb.connect()
    >>> for stmt in schema_ddl(): _ = con.execute(stmt)
    >>> _ = con.execute("insert into users values (1, '2026-01-01', false), (2, '2026-01-01', false)")
    >>> _ = con.execute("insert into follows values (1, 2, '2026-01-01', true, false)")
    >>> flags = ", ".join(["false"] * 9)
    >>> _ = con.execute(f"insert into posts values (10, 2, '2026-01-02', 'photo', null, 3, null, false, false, {flags})")
    >>> frame = pl.DataFrame({"user_id": [1], "post_id": [10], "author_id": [2]})
    >>> rule_inputs(con, frame, at=datetime(2026, 1, 3)).select("topic", "close_friend", "muted").rows()
    [(3, True, False)]
    """
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise FeedlabError(f"rule inputs need columns user_id, post_id, author_id; missing {', '.join(missing)}")
    base = frame.drop([c for c in RULE_INPUT_COLUMNS if c in frame.columns])
    if frame.height == 0:
        return base.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in RULE_INPUT_SCHEMA.items())
    keys = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), *(pl.col(c).cast(pl.Int64) for c in KEY_COLUMNS)
    )
    con.register(_FRAME_VIEW, keys)
    try:
        found = con.sql(_RULE_INPUTS_SQL, params=[at] * 4).pl()
    finally:
        con.unregister(_FRAME_VIEW)
    absent = found.filter(pl.col("_missing"))["_row"]
    if absent.len():
        ids = keys["post_id"].gather(absent).unique(maintain_order=True).to_list()
        shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        raise FeedlabError(f"post(s) {shown} did not exist before {at}: no rule inputs for them")
    added = found.sort("_row").select(pl.col(c).cast(t) for c, t in RULE_INPUT_SCHEMA.items())
    return pl.concat([base, added], how="horizontal")


_RULE_INPUTS_SQL = f"""
with f as (select _row, user_id, post_id, author_id from {_FRAME_VIEW}),
ni as (
    select distinct i.user_id, p.author_id, p.topic
    from impressions i join posts p on p.post_id = i.post_id
    where i.not_interested and i.ts < ? and i.user_id in (select user_id from f)
),
ni_author as (select distinct user_id, author_id from ni),
ni_topic as (select distinct user_id, topic from ni where topic is not null),
misinfo as (
    select author_id, count(*) as n from posts
    where misinformation and created_at < ? and author_id in (select author_id from f)
    group by author_id
)
select
    f._row,
    p.post_id is null as _missing,
    p.format, p.topic, p.is_reshare,
    {", ".join(f'p."{c}"' for c in CONTENT_FLAGS)},
    coalesce(fo.close_friend, false) as close_friend,
    coalesce(fo.muted, false) as muted,
    na.user_id is not null as ni_author,
    nt.user_id is not null as ni_topic,
    coalesce(m.n, 0) as author_misinfo_posts
from f
left join posts p on p.post_id = f.post_id and p.created_at < ?
left join follows fo on fo.follower_id = f.user_id and fo.followee_id = f.author_id and fo.created_at < ?
left join ni_author na on na.user_id = f.user_id and na.author_id = f.author_id
left join ni_topic nt on nt.user_id = f.user_id and nt.topic = p.topic
left join misinfo m on m.author_id = f.author_id
"""


# ---------------------------------------------------------------------------------------------
# static rules


@dataclass(frozen=True)
class Clause:
    """One reason a static rule changes an item: where ``when`` holds, multiply by ``factor``."""

    when: pl.Expr
    factor: float
    reason: pl.Expr | str


@dataclass(frozen=True)
class Entry:
    """A ``rules`` entry (a :data:`RULE_ENTRY` struct expression) for the items where ``holds``."""

    holds: pl.Expr
    value: pl.Expr


def _entry(rule: str, effect: pl.Expr | str, factor: pl.Expr | float) -> pl.Expr:
    effect = pl.lit(effect) if isinstance(effect, str) else effect
    factor = pl.lit(float(factor), dtype=pl.Float64) if isinstance(factor, (int, float)) else factor
    return pl.struct(rule=pl.lit(rule), effect=effect, factor=factor).cast(RULE_ENTRY)


def add_entries(frame: pl.DataFrame, entries: Sequence[Entry]) -> pl.DataFrame:
    """``frame`` with each of ``entries`` appended, in order, to the ``rules`` list of the items where it holds.

    A ``rules`` column is added (empty lists) when ``frame`` has none.

    Example
    -------
    >>> frame = pl.DataFrame({"x": [1, 2]})
    >>> out = add_entries(frame, [Entry(pl.col("x") == 2, _entry("r", "why", 0.5))])
    >>> out["rules"].to_list()
    [[], [{'rule': 'r', 'effect': 'why', 'factor': 0.5}]]
    """
    # In long form (one row per entry) and back: concatenating list-of-struct columns that hold
    # nulls is ~50x slower in polars, and most items have no entry at all.
    row = pl.int_range(pl.len(), dtype=pl.UInt32).alias(_ROW)
    parts = []
    if "rules" in frame.columns:
        parts.append(
            frame.select(row, pl.col("rules").cast(RULE_ENTRIES).alias(_ENTRY))
            .filter(pl.col(_ENTRY).list.len() > 0)
            .explode(_ENTRY)
        )
    for e in entries:
        parts.append(
            frame.select(row, e.holds.fill_null(False).alias("_holds"), e.value.alias(_ENTRY))
            .filter("_holds")
            .drop("_holds")
        )
    empty = pl.lit([], dtype=RULE_ENTRIES)
    if not parts:
        return frame.with_columns(empty.alias("rules"))
    per_row = pl.concat(parts).group_by(_ROW).agg(_ENTRY)  # keeps the order of entries within a row
    lists = (
        frame.select(row)
        .join(per_row, on=_ROW, how="left", maintain_order="left")
        .select(pl.col(_ENTRY).fill_null(empty).cast(RULE_ENTRIES))
        .to_series()
    )
    return frame.with_columns(lists.alias("rules"))


@dataclass(frozen=True)
class StaticRule:
    """A rule that gives each item a factor from the item's own inputs, independent of the weights.

    ``needs(params)`` names the input columns it reads; ``clauses(params)`` says when it changes
    an item, by how much and why. Several clauses of one rule multiply and leave one entry.

    Example
    -------
    >>> RULES["mute_removal"].needs({})
    ('muted',)
    """

    name: str
    needs: Callable[[Mapping[str, Any]], tuple[str, ...]]
    clauses: Callable[[Mapping[str, Any]], list[Clause]]

    def expressions(self, params: Mapping[str, Any]) -> tuple[pl.Expr, list[Entry]]:
        """This rule's factor (Float64, 1 where untouched) and its ``rules`` entries, each with where it holds.

        The entries exclude each other: an item gets at most one. An enabled rule whose factor is
        exactly 1 for an item (a multiplier of 1.0, say) has no effect and leaves no entry.

        Example
        -------
        >>> f, entries = RULES["guideline_removal"].expressions({})
        >>> pl.DataFrame({"guideline_violation": [True, False]}).select(f.alias("f"))["f"].to_list()
        [0.0, 1.0]
        >>> len(entries)
        1
        """
        clauses = self.clauses(params)
        conds = [c.when.fill_null(False) for c in clauses]
        factor = pl.lit(1.0, dtype=pl.Float64)
        for cond, clause in zip(conds, clauses):
            factor = factor * pl.when(cond).then(pl.lit(float(clause.factor))).otherwise(pl.lit(1.0))
        entries = []
        # one entry per combination of clauses that hold: its factor, and so its verb, is a constant
        for k in range(len(clauses), 0, -1):
            for chosen in combinations(range(len(clauses)), k):
                f = math.prod(float(clauses[i].factor) for i in chosen)
                if f == 1.0:
                    continue
                holds = pl.all_horizontal(
                    [conds[i] for i in chosen] + [~conds[i] for i in range(len(clauses)) if i not in chosen]
                )
                reasons = [pl.lit(clauses[i].reason) if isinstance(clauses[i].reason, str) else clauses[i].reason for i in chosen]
                text = pl.concat_str([pl.lit(f"{_verb(f)}: "), pl.concat_str(reasons, separator=" and ")])
                entries.append(Entry(holds, _entry(self.name, text, pl.lit(f, dtype=pl.Float64))))
        return factor, entries


def _verb(factor: float) -> str:
    """How a factor reads: ``removed``, ``demoted x0.30`` or ``boosted x1.50``.

    Example
    -------
    >>> _verb(0.0), _verb(0.3), _verb(1.5)
    ('removed', 'demoted x0.30', 'boosted x1.50')
    """
    if factor == 0:
        return "removed"
    return f"{'demoted' if factor < 1 else 'boosted'} x{factor:.2f}"


def _any_flag(flags: Sequence[str]) -> pl.Expr:
    return pl.any_horizontal([pl.col(f).fill_null(False) for f in flags]) if flags else pl.lit(False)


def _flag_names(flags: Sequence[str]) -> pl.Expr:
    """The flags of ``flags`` an item has, in words, separated by commas."""
    return pl.concat_str(
        [pl.when(pl.col(f).fill_null(False)).then(pl.lit(f.replace("_", " "))) for f in flags],
        separator=", ",
        ignore_nulls=True,
    )


def _flag_clause(params: Mapping[str, Any], where: str) -> list[Clause]:
    flags = list(params["flags"])
    if not flags:
        return []
    return [Clause(_any_flag(flags), 0.0, pl.concat_str([pl.lit(f"{where} ("), _flag_names(flags), pl.lit(")")]))]


def _no_params(cols: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[str, ...]]:
    return lambda params: cols


STATIC_RULES: tuple[StaticRule, ...] = (
    StaticRule(
        "guideline_removal",
        _no_params(("guideline_violation",)),
        lambda p: [Clause(pl.col("guideline_violation"), 0.0, "goes against the Community Guidelines")],
    ),
    StaticRule(
        "recommendation_guidelines",
        lambda p: tuple(p["flags"]),
        lambda p: _flag_clause(p, "not recommended under the Recommendations Guidelines"),
    ),
    StaticRule(
        "reels_quality_filters",
        lambda p: tuple(p["flags"]),
        lambda p: _flag_clause(p, "not recommended on Reels"),
    ),
    StaticRule(
        "mute_removal",
        _no_params(("muted",)),
        lambda p: [Clause(pl.col("muted"), 0.0, "you muted this account")],
    ),
    StaticRule(
        "not_interested_suppression",
        _no_params(("ni_author", "ni_topic")),
        lambda p: [
            Clause(pl.col("ni_author"), p["author_factor"], "you marked a post of this account not interested"),
            Clause(pl.col("ni_topic"), p["topic_factor"], "you marked a post on this topic not interested"),
        ],
    ),
    StaticRule(
        "misinformation_demotion",
        _no_params(("misinformation",)),
        lambda p: [Clause(pl.col("misinformation"), p["factor"], "labelled misinformation by fact checkers")],
    ),
    StaticRule(
        "repeat_offender_demotion",
        _no_params(("author_misinfo_posts",)),
        lambda p: [
            Clause(
                pl.col("author_misinfo_posts") >= p["min_labelled_posts"],
                p["factor"],
                pl.concat_str(
                    pl.lit("this account has posted misinformation "),
                    pl.when(pl.col("author_misinfo_posts") == 1)
                    .then(pl.lit("once"))
                    .otherwise(pl.format("{} times", pl.col("author_misinfo_posts"))),
                ),
            )
        ],
    ),
    StaticRule(
        "reshare_multiplier",
        _no_params(("is_reshare",)),
        lambda p: [Clause(pl.col("is_reshare"), p["factor"], "a story resharing a Feed post")],
    ),
    StaticRule(
        "close_friends_boost",
        _no_params(("close_friend",)),
        lambda p: [Clause(pl.col("close_friend"), p["factor"], "one of your Close Friends")],
    ),
)


def _params(spec: RuleSpec) -> dict[str, Any]:
    return {**RULE_DEFAULTS.get(spec.name, {}), **spec.params}


def _enabled(rules: Mapping[str, RuleSpec]) -> dict[str, RuleSpec]:
    """The enabled rules of ``rules``, in application order; an unknown rule is a FeedlabError."""
    unknown = [n for n in rules if n not in RULES]
    if unknown:
        raise FeedlabError(f"unknown rule(s) {', '.join(unknown)}; rules are {', '.join(RULES)}")
    return {n: rules[n] for n in RULES if n in rules and rules[n].enabled}


def _require(frame: pl.DataFrame, who: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeedlabError(
            f"{who} needs column(s) {', '.join(missing)}, which the frame lacks "
            "(toolkit.rank.rules.rule_inputs adds the rules' inputs from the store)"
        )


def rule_factors(frame: pl.DataFrame, rules: Mapping[str, RuleSpec]) -> pl.DataFrame:
    """``frame`` with ``factor``, ``removed`` and ``rules`` from its enabled static rules, same rows, same order.

    ``factor`` (Float64) is the product of the enabled static rules' factors, 0 when any removes
    the item; ``removed`` is ``factor == 0``; ``rules`` (replaced if present) lists one {rule, effect, factor} entry
    per rule that changed the item, in application order. It does not depend on the weights
    (nor on ``score``), so it can be computed once per (viewer, candidate). The positional
    ``author_diversity`` is ignored here.

    Example
    -------
    >>> from toolkit.rank.config import RuleSpec
    >>> frame = pl.DataFrame({"muted": [True, False], "close_friend": [False, True]})
    >>> rules = {
    ...     "mute_removal": RuleSpec("mute_removal", True),
    ...     "close_friends_boost": RuleSpec("close_friends_boost", True, {"factor": 2.0}),
    ... }
    >>> rule_factors(frame, rules).select("factor", "removed").rows()
    [(0.0, True), (2.0, False)]
    """
    factor = pl.lit(1.0, dtype=pl.Float64)
    entries: list[Entry] = []
    for name, spec in _enabled(rules).items():
        rule = RULES[name]
        if not isinstance(rule, StaticRule):
            continue
        params = _params(spec)
        _require(frame, f"rule {name}", rule.needs(params))
        f, rule_entries = rule.expressions(params)
        factor = factor * f
        entries.extend(rule_entries)
    out = add_entries(frame.drop("factor", "removed", "rules", strict=False), entries)
    return out.with_columns(factor.alias("factor"), (factor == 0).alias("removed")).select(
        *(c for c in out.columns if c != "rules"), "factor", "removed", "rules"
    )


def adjust(score: pl.Expr, factor: pl.Expr) -> pl.Expr:
    """``score`` changed by ``factor`` sign-aware: ``score * factor`` if ``score >= 0`` else ``score / factor``.

    So a factor below 1 always lowers a score and one above 1 always raises it. A factor of 0
    (removal) gives null.

    Example
    -------
    >>> pl.DataFrame({"s": [2.0, -2.0, 1.0], "f": [0.5, 0.5, 0.0]}).select(adjust(pl.col("s"), pl.col("f")))["s"].to_list()
    [1.0, -4.0, None]
    """
    return pl.when(factor != 0).then(pl.when(score >= 0).then(score * factor).otherwise(score / factor))


# ---------------------------------------------------------------------------------------------
# author diversity (positional)


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``.

    Example
    -------
    >>> [_ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd']
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ``removed`` and ``rules`` (added when absent), sorted by user, removed last, score."""
    _require(frame, "rule author_diversity", (*KEY_COLUMNS, "score"))
    if "removed" not in frame.columns:
        frame = frame.with_columns(pl.lit(False).alias("removed"))
    if "rules" not in frame.columns:
        frame = frame.with_columns(pl.lit([], dtype=RULE_ENTRIES).alias("rules"))
    frame = frame.with_columns(pl.col("removed").fill_null(False))
    return _sorted(frame)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Each viewer's items by score (ties: post_id ascending), removed items last."""
    keys = [pl.col("user_id"), pl.col("removed"), pl.col("score")]
    descending = [False, False, True]
    if "base_score" in frame.columns:  # removed items (no score) by what they would have scored
        keys.append(pl.when(pl.col("removed")).then(pl.col("base_score")))
        descending.append(True)
    return frame.sort([*keys, pl.col("post_id")], descending=[*descending, False], nulls_last=True)


def _with_positions(frame: pl.DataFrame) -> pl.DataFrame:
    """``position``: 0-based rank of each non-removed item in its viewer's (already ordered) list."""
    return frame.with_columns(
        pl.when(~pl.col("removed"))
        .then(pl.int_range(pl.len(), dtype=pl.Int32).over("user_id"))
        .otherwise(None)
        .cast(pl.Int32)
        .alias("position")
    )


def _decay(frame: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """X's discount of an author's k-th post in a viewer's list, ``(1 - floor) * decay**k + floor``, then re-sorted."""
    decay, floor = float(params["decay"]), float(params["floor"])
    frame = frame.with_columns(
        pl.when(~pl.col("removed"))
        .then(pl.int_range(pl.len(), dtype=pl.Int64).over("user_id", "author_id", "removed"))
        .otherwise(None)
        .alias("_k")
    )
    ks = frame["_k"].drop_nulls().unique().sort().to_list()
    factors = {k: (1 - floor) * decay**k + floor for k in ks}
    texts = {
        k: f"{_verb(f)}: {_ordinal(k + 1)} post of this author in your list" for k, f in factors.items() if f != 1.0
    }
    factor = pl.col("_k").replace_strict(factors, default=1.0, return_dtype=pl.Float64)
    frame = frame.with_columns(factor.alias("_f"))
    effect = pl.col("_k").replace_strict(texts, default=None, return_dtype=pl.String)
    frame = add_entries(frame, [Entry(pl.col("_k").is_in(list(texts)), _entry("author_diversity", effect, pl.col("_f")))])
    frame = frame.with_columns(
        pl.when(pl.col("removed")).then(pl.col("score")).otherwise(adjust(pl.col("score"), pl.col("_f"))).alias("score")
    )
    return _sorted(frame.drop("_k", "_f"))


def _greedy(authors: Sequence[Any], max_in_row: int) -> list[int]:
    """The order of items (given best first) so that no more than ``max_in_row`` in a row share an author.

    At each slot, the best remaining item that does not make its author's run longer than
    ``max_in_row``; the best remaining item anyway when every remaining item would.

    Example
    -------
    >>> _greedy(["A", "A", "B"], 1)
    [0, 2, 1]
    >>> _greedy(["A", "A", "A", "B"], 1)
    [0, 3, 1, 2]
    """
    queues: dict[Any, deque[int]] = {}
    for i, a in enumerate(authors):
        queues.setdefault(a, deque()).append(i)
    # heap of (index of the author's best remaining item, author): the best remaining item overall first
    heap = [(q[0], n) for n, q in enumerate(queues.values())]
    names = list(queues)
    heapq.heapify(heap)
    order: list[int] = []
    last, run = None, 0
    while heap:
        i, a = heapq.heappop(heap)
        if a == last and run >= max_in_row and heap:
            blocked = (i, a)
            i, a = heapq.heappop(heap)
            heapq.heappush(heap, blocked)
        q = queues[names[a]]
        q.popleft()
        if q:
            heapq.heappush(heap, (q[0], a))
        order.append(i)
        run = run + 1 if a == last else 1
        last = a
    return order


def _max_in_row(frame: pl.DataFrame, params: Mapping[str, Any]) -> pl.DataFrame:
    """Greedy reorder of each viewer's list so no more than ``max_in_row`` consecutive items share an author."""
    max_in_row = int(params["max_in_row"])
    if max_in_row < 1:
        raise FeedlabError(f"author_diversity.max_in_row must be at least 1 (got {max_in_row})")
    live = frame.filter(~pl.col("removed")).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over("user_id").alias("_from")
    )
    users = live["user_id"].to_numpy()
    authors = live["author_id"].to_list()
    rank = np.arange(live.height, dtype=np.int64)  # new global row order of the live items
    # only viewers with a run longer than max_in_row need the Python loop
    run = live.select(
        pl.len().over(pl.col("author_id").rle_id().over("user_id"), "user_id").alias("n")
    )["n"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if live.height else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], live.height].astype(np.int64)
    for s, e in zip(starts, ends):
        if run[s:e].max() <= max_in_row:
            continue
        rank[s:e] = s + np.argsort(_greedy(authors[s:e], max_in_row))
    live = live.with_columns(pl.Series("_rank", rank)).sort("_rank")
    live = live.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("user_id").alias("_to"))
    effect = pl.format(
        "moved down from {} to {}: too many posts of this author in a row", pl.col("_from") + 1, pl.col("_to") + 1
    )
    live = add_entries(live, [Entry(pl.col("_to") > pl.col("_from"), _entry("author_diversity", effect, 1.0))])
    live = live.drop("_from", "_to", "_rank")
    out = pl.concat([live, frame.filter(pl.col("removed"))])
    # back together per viewer: live items in their new order, then the removed ones
    return out.sort("user_id", "removed", maintain_order=True)


def author_diversity(frame: pl.DataFrame, spec: RuleSpec) -> pl.DataFrame:
    """Each viewer's list in final order with ``position``, after the author diversity rule.

    ``frame`` has user_id, post_id, author_id, score (and optionally ``removed`` and ``rules``).
    Items are first sorted per viewer by score (ties: post_id ascending), removed items last.
    Mode ``decay`` multiplies the k-th (0-based) post of an author in that order by
    ``(1 - floor) * decay**k + floor`` (sign-aware, X's author diversity discount) and re-sorts;
    mode ``max_in_row`` reorders greedily so that no more than ``max_in_row`` consecutive items
    share an author (scores unchanged). Every item changed gets an entry in ``rules`` (places
    in its sentence count from 1). ``position`` is the 0-based rank among non-removed items
    (null for removed ones). A disabled spec only sorts. Many viewers can be ordered at once.

    Example
    -------
    >>> from toolkit.rank.config import RuleSpec
    >>> frame = pl.DataFrame({"user_id": [1, 1, 1], "post_id": [1, 2, 3], "author_id": [7, 7, 8], "score": [0.9, 0.8, 0.7]})
    >>> spec = RuleSpec("author_diversity", True, {"mode": "max_in_row", "decay": 0.5, "floor": 0.25, "max_in_row": 1})
    >>> author_diversity(frame, spec).select("post_id", "position").rows()
    [(1, 0), (3, 1), (2, 2)]
    """
    frame = _prepare(frame)
    unknown = spec.enabled and frame["author_id"].null_count() > 0
    if unknown:
        # a post whose author is unknown (null) is its own author: a stand-in id per post, above every known id
        stand_in = pl.col("author_id").max().fill_null(0) + 1 + pl.int_range(pl.len(), dtype=pl.Int64)
        frame = frame.with_columns(pl.col("author_id").alias("_author_id"), pl.coalesce("author_id", stand_in).alias("author_id"))
    if spec.enabled:
        params = _params(spec)
        mode = params["mode"]
        if mode == "decay":
            frame = _decay(frame, params)
        elif mode == "max_in_row":
            frame = _max_in_row(frame, params)
        else:
            raise FeedlabError(f"author_diversity.mode must be decay or max_in_row (got {mode!r})")
    if unknown:
        frame = frame.with_columns(pl.col("_author_id").alias("author_id")).drop("_author_id")
    return _with_positions(frame)


# ---------------------------------------------------------------------------------------------
# all rules


def apply_rules(frame: pl.DataFrame, rules: Mapping[str, RuleSpec]) -> pl.DataFrame:
    """Every candidate after the enabled rules: ``base_score``, ``score``, ``removed``, ``rules``, ``position``.

    ``frame`` holds candidates with their rule inputs (:func:`rule_inputs`) and the value model's
    ``score``. Static rules run first (:func:`rule_factors`, applied sign-aware), then
    ``author_diversity`` orders each viewer's list. Every row comes back, removed ones too
    (``score`` and ``position`` null), sorted by user_id then position, removed last. Disabled
    rules do nothing and leave no entry; an enabled rule whose input column is missing is a
    FeedlabError naming the column.

    Example
    -------
    >>> from toolkit.rank.config import RuleSpec
    >>> frame = pl.DataFrame({
    ...     "user_id": [1, 1], "post_id": [1, 2], "author_id": [7, 8], "score": [0.9, -0.1], "muted": [True, False],
    ... })
    >>> out = apply_rules(frame, {"mute_removal": RuleSpec("mute_removal", True)})
    >>> out.select("post_id", "score", "removed", "position").rows()
    [(2, -0.1, False, 0), (1, None, True, None)]
    """
    _require(frame, "apply_rules", (*KEY_COLUMNS, "score"))
    enabled = _enabled(rules)
    out = rule_factors(frame.drop([c for c in ("base_score", "factor", "removed", "rules") if c in frame.columns]), enabled)
    out = out.with_columns(pl.col("score").alias("base_score")).with_columns(
        adjust(pl.col("score"), pl.col("factor")).alias("score")
    )
    diversity = enabled.get("author_diversity", RuleSpec("author_diversity", False))
    return author_diversity(out.drop("factor"), diversity)


#: Every rule, in application order: name -> its implementation.
RULES: dict[str, StaticRule | Callable[[pl.DataFrame, RuleSpec], pl.DataFrame]] = {
    **{r.name: r for r in STATIC_RULES},
    "author_diversity": author_diversity,
}
