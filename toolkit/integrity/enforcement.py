"""Enforcement against bought engagement, and what it does to Explore and Reels rankings.

:func:`enforce` writes a copy of a store in which, from a cutoff forward, the engagements judged
inauthentic no longer exist; earlier ones stay (enforcement is not retroactive). Every
popularity signal and every candidate source reads ``engagements``, so rankings computed on the
copy use only what remains. :func:`counterfactual_store` writes the world where no bought
engagement ever counted (from the simulator's truth), and :func:`enforcement_effect` compares
the three worlds' rankings for a sample of viewers: how far the boosted posts fall, how much of
their bought rank advantage remains, and what happens to genuine creators.

What "judged inauthentic" means, precisely (an engagement at or after the cutoff is removed when
either holds):

1. **giver rule**: the account that gave it is flagged (every action: like, comment, share,
   save, follow); a flagged buyer's own likes on others' posts stop counting too, since
   enforcement acts on the account;
2. **third-party rule** (``third_party_to_flagged=True``): it was marked
   ``via_third_party_app`` and its receiver (the post's author, or the followed account) is
   flagged: an unflagged bot that delivers to a flagged buyer through a like app is caught by
   the buyer's flag. Genuine accounts' own scheduling apps are untouched unless they engage
   with a flagged account.

Only ``engagements`` changes: ``follows`` (bought follows add rows there too) and every other
table are copied as they are, so the graph, Feed and the follower counts are unchanged; the
enforced store is a complete, valid store (same schema, same tables). It also gets
``graph_excluded_accounts`` (the flagged accounts, ``since`` = the cutoff): the co-engagement graph
of Explore and Reels candidates stops reading those accounts' engagements, earlier ones
included, while every count still holds them (``exclude_from_graph=False`` leaves the table out).

This module sits above :mod:`toolkit.rank` and :mod:`toolkit.charts`.

Example
-------
>>> from toolkit.integrity.enforcement import enforce, truth_scores, enforcement_effect
>>> scores = truth_scores("data/feedlab.duckdb")  # doctest: +SKIP
>>> out = enforce("data/feedlab.duckdb", cutoff="2026-01-12", scores=scores, out="/tmp/enforced.duckdb")  # doctest: +SKIP
>>> cf = counterfactual_store("data/feedlab.duckdb", out="/tmp/clean.duckdb")  # doctest: +SKIP
>>> effect = enforcement_effect("data/feedlab.duckdb", out, cf, surface="explore", viewers=300)  # doctest: +SKIP
>>> effect["remaining_share"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.predict.persist import load_models
from toolkit.predict.train import parse_time
from toolkit.rank.candidates import GRAPH_EXCLUDED_TABLE
from toolkit.rank.ranker import RankingCache, as_time, open_store
from toolkit.store import connect, has_table, store_file

#: The three worlds :func:`enforcement_effect` compares, in order.
WORLDS: tuple[str, ...] = ("logged", "enforced", "counterfactual")
#: Groups of posts :func:`enforcement_effect` reports on.
GROUPS: tuple[str, ...] = ("boosted", "genuine", "genuine_touched")


# --------------------------------------------------------------------------- who is flagged


def truth_scores(store: str | os.PathLike | duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """A stand-in for the detector's scores, from the simulator's truth: every non-genuine account flagged.

    Returns user_id, score (1.0 for bots, buyers and ring members, else 0.0) and flagged, the
    layout :func:`enforce` reads. It isolates enforcement from detection quality: enforcing
    with it shows what a perfect detector would achieve. Needs the ``sim_accounts`` table.

    Example
    -------
    >>> truth_scores("data/feedlab.duckdb").filter("flagged").height  # doctest: +SKIP
    304
    """
    with open_store(store) as con:
        _require_truth(con)
        return con.sql(
            "select user_id, (role <> 'genuine')::double as score, role <> 'genuine' as flagged "
            "from sim_accounts order by user_id"
        ).pl()


def flagged_accounts(scores: pl.DataFrame, *, threshold: float | None = None) -> pl.DataFrame:
    """The user ids judged inauthentic: ``flagged`` of ``scores``, or ``score >= threshold`` when a threshold is given.

    ``scores`` is what :func:`toolkit.integrity.score_accounts` returns (or :func:`truth_scores`):
    one row per account with user_id and flagged and/or score. Returns one column, user_id.

    Example
    -------
    >>> s = pl.DataFrame({"user_id": [1, 2, 3], "score": [0.1, 0.7, 0.95], "flagged": [False, False, True]})
    >>> flagged_accounts(s)["user_id"].to_list(), flagged_accounts(s, threshold=0.5)["user_id"].to_list()
    ([3], [2, 3])
    """
    if not isinstance(scores, pl.DataFrame):
        raise FeedlabError(f"scores must be a polars DataFrame of user_id and flagged/score (got {type(scores).__name__})")
    if "user_id" not in scores.columns:
        raise FeedlabError(f"scores lack a user_id column; they have {scores.columns}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise FeedlabError(f"threshold must be a finite number (got {threshold!r})")
        if "score" not in scores.columns:
            raise FeedlabError(f"a threshold needs a score column; scores have {scores.columns}")
        chosen = pl.col("score").fill_null(-np.inf) >= float(threshold)
    else:
        if "flagged" not in scores.columns:
            raise FeedlabError(f"scores lack a flagged column; pass threshold= to flag on score (columns: {scores.columns})")
        chosen = pl.col("flagged").fill_null(False)
    # a detector may score an account once per role (giver, receiver): flagged in any is flagged
    return scores.filter(chosen).select(pl.col("user_id").cast(pl.Int64)).unique().sort("user_id")


def _scores_from_store(con: duckdb.DuckDBPyConnection, path: Path) -> pl.DataFrame:
    if not has_table(con, "integrity_scores"):
        raise FeedlabError(
            f"no scores given and {path} has no integrity_scores table: run `feedlab integrity --db {path}` "
            "or pass scores= (toolkit.integrity.score_accounts(...), or truth_scores(...) for the simulator's truth)"
        )
    return con.sql("select * from integrity_scores").pl()


# --------------------------------------------------------------------------- enforcement


def _path_of(store: str | os.PathLike | duckdb.DuckDBPyConnection) -> Path:
    path = store_file(store, needs="enforcement copies a store file")
    if not path.exists():
        raise FeedlabError(f"{path}: no such database")
    return path


def _require_truth(con: duckdb.DuckDBPyConnection) -> None:
    if not has_table(con, "sim_accounts"):
        raise FeedlabError("the store has no sim_accounts table: the simulator's truth exists only in simulated worlds")


def _span(con: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime]:
    lo, hi = con.sql("select min(ts), max(ts) from engagements").fetchall()[0]
    if lo is None:
        raise FeedlabError("the store has no engagements: there is nothing to enforce on")
    return lo, hi


def removed_engagements(
    store: str | os.PathLike | duckdb.DuckDBPyConnection,
    *,
    flagged: Iterable[int],
    cutoff: datetime | None,
    third_party_to_flagged: bool = True,
) -> pl.DataFrame:
    """The engagements that enforcement removes: at or after ``cutoff`` (None: all time), judged inauthentic.

    One row per removed engagement (the ``engagements`` columns) plus ``receiver_id`` (post
    author or followed account) and ``rule`` ("giver" or "third_party"); see the module's
    docstring for the two rules.

    Example
    -------
    >>> gone = removed_engagements("data/feedlab.duckdb", flagged=[17, 42], cutoff=datetime(2026, 1, 12))  # doctest: +SKIP
    """
    with open_store(store) as con:
        sql, params = _removed_sql(flagged, cutoff, third_party_to_flagged)
        con.register("_feedlab_flagged", _ids_frame(flagged))
        try:
            return con.sql(f"select * from ({sql}) order by ts, user_id", params=params).pl()
        finally:
            con.unregister("_feedlab_flagged")


def _ids_frame(ids: Iterable[int]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": pl.Series([int(i) for i in ids], dtype=pl.Int64)}).unique()


def _removed_sql(flagged: Iterable[int], cutoff: datetime | None, third_party: bool, prefix: str = "") -> tuple[str, list]:
    """The query of removed engagements over ``{prefix}engagements`` and ``_feedlab_flagged`` (registered by the caller)."""
    third = (
        "(e.via_third_party_app and coalesce(p.author_id, e.target_user_id) in (select user_id from _feedlab_flagged))"
        if third_party
        else "false"
    )
    since = "e.ts >= ?" if cutoff is not None else "true"
    sql = (
        "select e.*, coalesce(p.author_id, e.target_user_id) as receiver_id, "
        "case when e.user_id in (select user_id from _feedlab_flagged) then 'giver' else 'third_party' end as rule "
        f"from {prefix}engagements e left join {prefix}posts p on p.post_id = e.post_id "
        f"where {since} and (e.user_id in (select user_id from _feedlab_flagged) or {third})"
    )
    return sql, ([cutoff] if cutoff is not None else [])


def enforce(
    store: str | os.PathLike | duckdb.DuckDBPyConnection,
    *,
    cutoff: str | date | datetime,
    out: str | os.PathLike,
    threshold: float | None = None,
    scores: pl.DataFrame | None = None,
    third_party_to_flagged: bool = True,
    exclude_from_graph: bool = True,
    models: bool = True,
) -> Path:
    """Write an enforced copy of ``store`` at ``out``: from ``cutoff`` on, engagements judged inauthentic are gone.

    Engagements before ``cutoff`` stay whoever gave them (not retroactive). Flagged accounts
    come from ``scores`` (:func:`toolkit.integrity.score_accounts`, or :func:`truth_scores`):
    its ``flagged`` column, or ``score >= threshold`` when ``threshold`` is given; without
    ``scores`` the store's ``integrity_scores`` table (``feedlab integrity`` writes it) is used.
    See the module docstring for the giver and third-party rules. ``cutoff`` must lie within the
    store's engagements (first to last). With ``exclude_from_graph`` the flagged accounts also
    leave the co-engagement graph of candidate generation from the cutoff on, their earlier
    engagements included (``graph_excluded_accounts``; see ``docs/integrity.md``).

    The copy holds every table of the store, ``engagements`` filtered and the rest identical; it
    is written to a temporary file beside ``out`` and renamed when complete, so a failure leaves
    no file. With ``models`` the saved models (``<store stem>.models/``) are hard-linked (copied
    where links are impossible) to ``<out stem>.models/``, so ``load_models(out, surface)``
    works; otherwise pass the store's models to the ranking functions (``models=``).

    Example
    -------
    >>> enforce("data/feedlab.duckdb", cutoff="2026-01-12", scores=truth_scores("data/feedlab.duckdb"), out="/tmp/e.duckdb")  # doctest: +SKIP
    PosixPath('/tmp/e.duckdb')
    """
    src = _path_of(store)
    out = Path(out)
    when = parse_time(cutoff)
    _check_out(src, out)
    with open_store(src) as con:
        lo, hi = _span(con)
        if not lo <= when <= hi:
            raise FeedlabError(f"cutoff {when} is outside the store's engagements ({lo} to {hi}); choose a time within them")
        if scores is None:
            scores = _scores_from_store(con, src)
    flagged = flagged_accounts(scores, threshold=threshold)["user_id"].to_list()
    _write_copy(src, out, flagged=flagged, cutoff=when, third_party=third_party_to_flagged, exclude_from_graph=exclude_from_graph)
    if models:
        link_models(src, out)
    return out


def counterfactual_store(
    store: str | os.PathLike | duckdb.DuckDBPyConnection, *, out: str | os.PathLike, models: bool = True
) -> Path:
    """Write the world where no bought engagement ever counted: every engagement given by a truly inauthentic account removed.

    Uses the simulator's truth (``sim_accounts.role`` other than genuine: bots, buyers, ring
    members), from the first engagement on and without the third-party rule: the reference
    against which the bought rank advantage is measured. Written as :func:`enforce` writes.

    Example
    -------
    >>> counterfactual_store("data/feedlab.duckdb", out="/tmp/clean.duckdb")  # doctest: +SKIP
    PosixPath('/tmp/clean.duckdb')
    """
    src = _path_of(store)
    out = Path(out)
    _check_out(src, out)
    with open_store(src) as con:
        _span(con)
    flagged = flagged_accounts(truth_scores(src))["user_id"].to_list()
    _write_copy(src, out, flagged=flagged, cutoff=None, third_party=False)
    if models:
        link_models(src, out)
    return out


def _check_out(src: Path, out: Path) -> None:
    if out.suffix != ".duckdb":
        raise FeedlabError(f"out must be a .duckdb file path (got {out})")
    if out.resolve() == src.resolve():
        raise FeedlabError(f"out is the input store {src}: enforcement writes a copy, choose another path")
    if not out.parent.exists():
        raise FeedlabError(f"{out.parent}: no such folder for the enforced store")


def _quoted(path: Path) -> str:
    # ATTACH takes no bound parameters: a path becomes a SQL string literal (quotes doubled)
    return "'" + str(path).replace("'", "''") + "'"


def _write_copy(
    src: Path, out: Path, *, flagged: list[int], cutoff: datetime | None, third_party: bool, exclude_from_graph: bool = False
) -> None:
    """Copy ``src`` to ``out`` through a temporary file, dropping the removed engagements."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(partial))
        try:
            con.execute("set enable_progress_bar = false")
            con.execute(f"attach {_quoted(src)} as feedlab_src (read_only)")
            target = con.sql("select current_database()").fetchall()[0][0]
            # the schema first (tables, types, NOT NULLs), then the rows table by table
            con.execute(f'copy from database feedlab_src to "{target}" (schema)')
            tables = [
                r[0]
                for r in con.sql("select table_name from duckdb_tables() where database_name = 'feedlab_src' order by 1").fetchall()
            ]
            con.register("_feedlab_flagged", _ids_frame(flagged))
            for table in tables:
                if table == "engagements":
                    removed, params = _removed_sql(flagged, cutoff, third_party, prefix="feedlab_src.")
                    con.execute(
                        f'insert into "{target}".engagements select * from feedlab_src.engagements '
                        f"except all select * exclude (receiver_id, rule) from ({removed})",
                        params,
                    )
                else:
                    con.execute(f'insert into "{target}"."{table}" select * from feedlab_src."{table}"')
            if exclude_from_graph:
                # an account an earlier enforcement already excluded keeps its earlier since
                earlier = (
                    f'select user_id, since from "{target}".{GRAPH_EXCLUDED_TABLE} union all '
                    if GRAPH_EXCLUDED_TABLE in tables
                    else ""
                )
                con.execute(
                    f'create or replace table "{target}".{GRAPH_EXCLUDED_TABLE} as select user_id, min(since) as since from ('
                    f"{earlier}select user_id, ?::timestamp as since from _feedlab_flagged) group by user_id order by user_id",
                    [cutoff],
                )
            con.unregister("_feedlab_flagged")
            con.execute("detach feedlab_src")
            con.execute("checkpoint")
        finally:
            con.close()
        os.replace(partial, out)
    except duckdb.Error as err:
        raise FeedlabError(f"could not write the enforced store {out}: {err}") from None
    finally:
        for leftover in (partial, partial.with_name(partial.name + ".wal")):
            leftover.unlink(missing_ok=True)


def link_models(src: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Make the models saved beside ``src`` available beside ``out`` (hard links, else copies); the folder, or None without models.

    Example
    -------
    >>> link_models("data/feedlab.duckdb", "/tmp/e.duckdb")  # doctest: +SKIP
    PosixPath('/tmp/e.models')
    """
    src, out = Path(src), Path(out)
    folder = src.parent / f"{src.stem}.models"
    if not folder.is_dir():
        return None
    target = out.parent / f"{out.stem}.models"
    shutil.rmtree(target, ignore_errors=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copy2(a, b)

    shutil.copytree(folder, target, copy_function=link)
    return target


# --------------------------------------------------------------------------- the effect on rankings


def boosted_posts(store: str | os.PathLike | duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The posts that bought engagement boosted: posts of buyers and ring members that inauthentic accounts engaged with.

    From the simulator's truth. Returns post_id, author_id, strategy (burst, drip, lockstep)
    and bought (how many engagements inauthentic accounts gave the post).

    Example
    -------
    >>> boosted_posts("data/feedlab.duckdb").group_by("strategy").len()  # doctest: +SKIP
    """
    with open_store(store) as con:
        _require_truth(con)
        return con.sql(
            "select p.post_id, p.author_id, a.strategy, count(*) as bought "
            "from engagements e join posts p on p.post_id = e.post_id "
            "join sim_accounts a on a.user_id = p.author_id join sim_accounts g on g.user_id = e.user_id "
            "where a.role in ('buyer', 'ring') and g.role <> 'genuine' and e.user_id <> p.author_id "
            "group by all order by p.post_id"
        ).pl()


def sample_viewers(
    store: str | os.PathLike | duckdb.DuckDBPyConnection, surface: str, *, n: int, seed: int = 0
) -> list[int]:
    """``n`` viewers drawn at random (seeded) among the accounts with impressions on ``surface``, sorted.

    Example
    -------
    >>> sample_viewers("data/feedlab.duckdb", "explore", n=3, seed=0)  # doctest: +SKIP
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FeedlabError(f"n must be a whole number >= 1 (got {n!r})")
    with open_store(store) as con:
        ids = con.sql("select distinct user_id from impressions where surface = ? order by 1", params=[surface]).pl()["user_id"]
    if ids.len() == 0:
        raise FeedlabError(f"no viewer has {surface} impressions in the store")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids.to_numpy(), size=min(n, ids.len()), replace=False)
    return sorted(int(u) for u in chosen)


def post_reach(top: np.ndarray, post_ids: Sequence[int]) -> pl.DataFrame:
    """How many viewers have each post in their top k, and its mean 0-based position there (null: nowhere).

    ``top`` is :meth:`RankingCache.top_posts` output: (viewers, k) post ids, -1 for empty slots.

    Example
    -------
    >>> top = np.array([[5, 7, -1], [7, 9, 5]])
    >>> post_reach(top, [5, 7, 8]).rows()
    [(5, 2, 1.0), (7, 2, 0.5), (8, 0, None)]
    """
    wanted = pl.DataFrame({"post_id": pl.Series([int(p) for p in post_ids], dtype=pl.Int64)})
    pos = np.broadcast_to(np.arange(top.shape[1]), top.shape)
    seen = pl.DataFrame({"post_id": top.ravel().astype(np.int64), "position": pos.ravel().astype(np.float64)})
    agg = seen.filter(pl.col("post_id") >= 0).group_by("post_id").agg(
        pl.len().cast(pl.Int64).alias("reach"), pl.col("position").mean().alias("mean_position")
    )
    return wanted.join(agg, on="post_id", how="left", maintain_order="left").with_columns(pl.col("reach").fill_null(0))


def enforcement_effect(
    logged: str | os.PathLike,
    enforced: str | os.PathLike,
    counterfactual: str | os.PathLike,
    *,
    surface: str = "explore",
    viewers: int | Sequence[int] = 500,
    k: int = 20,
    seed: int = 0,
    at: str | date | datetime | None = None,
    models: TrainedSurface | None = None,
    tops: dict[str, np.ndarray] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare ``surface`` rankings in three worlds: as logged, enforced, and where bought engagement never counted.

    A :class:`~toolkit.rank.RankingCache` per world ranks the same viewers (``viewers``: ids,
    or how many to draw with :func:`sample_viewers`) at the same time ``at`` (default: just
    after the logged store's last event) with the same models (``models``, default the logged
    store's saved ones), default weights and rules; the top ``k`` of each viewer counts.
    ``tops`` may hold a world's (viewers, k) top posts from an earlier call (its ``"tops"``
    entry, same viewers and k) to skip ranking that world again: comparing several cutoffs
    needs the logged and counterfactual worlds ranked once.

    Reach of a post = viewers with it in their top k. Groups: ``boosted`` (:func:`boosted_posts`),
    ``genuine`` (posts of genuine authors, from the truth) and ``genuine_touched`` (genuine
    authors' posts that lost an engagement to enforcement: camouflage likes of bots, and
    likes of falsely flagged accounts). Returns a dict:

    - ``advantage``: reach(logged) - reach(counterfactual) of the boosted posts, summed;
    - ``remaining_share``: (reach(enforced) - reach(counterfactual)) / advantage (NaN without an advantage);
    - ``groups``: a frame of group, posts, reach_<world>, mean_position_<world> (reach-weighted);
    - ``strategies``: the same for boosted posts per strategy (burst, drip, lockstep);
    - ``posts``: one row per boosted or touched post: post_id, author_id, group, strategy,
      reach_<world>, mean_position_<world>;
    - ``collateral``: genuine posts' total reach change from enforcement, absolute and relative,
      and for the touched ones;
    - ``surface``, ``k``, ``viewers`` (how many), ``at``, ``user_ids`` and ``tops`` (each
      world's top posts, viewers in ``user_ids`` order).

    Example
    -------
    >>> effect = enforcement_effect("data/feedlab.duckdb", "/tmp/e.duckdb", "/tmp/clean.duckdb", viewers=200)  # doctest: +SKIP
    >>> round(effect["remaining_share"], 3)  # doctest: +SKIP
    """
    paths = {w: _path_of(p) for w, p in zip(WORLDS, (logged, enforced, counterfactual))}
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FeedlabError(f"k must be a whole number >= 1 (got {k!r})")
    with open_store(paths["logged"]) as con:
        _require_truth(con)
        when = as_time(at, con)
    trained = models if models is not None else load_models(paths["logged"], surface)
    users = sample_viewers(paths["logged"], surface, n=viewers, seed=seed) if isinstance(viewers, int) else [int(u) for u in viewers]
    given = dict(tops or {})
    unknown = [w for w in given if w not in WORLDS]
    if unknown:
        raise FeedlabError(f"tops has unknown world(s) {unknown}; choose among {list(WORLDS)}")
    for w, top in given.items():
        if not isinstance(top, np.ndarray) or top.shape != (len(users), k):
            raise FeedlabError(f"tops[{w!r}] must be a ({len(users)}, {k}) array of post ids for these viewers and k")
    tops = {
        w: given[w] if w in given else surface_tops(p, surface, users, at=when, k=k, models=trained, progress=progress)
        for w, p in paths.items()
    }
    boosted = boosted_posts(paths["logged"])
    touched = _touched_genuine(paths["logged"], paths["enforced"])
    genuine = _genuine_posts(paths["logged"], tops)
    posts = pl.concat(
        [
            boosted.select("post_id", "author_id", pl.lit("boosted").alias("group"), "strategy"),
            genuine.select("post_id", "author_id", pl.lit("genuine").alias("group"), pl.lit(None, pl.String).alias("strategy")),
            touched.select("post_id", "author_id", pl.lit("genuine_touched").alias("group"), pl.lit(None, pl.String).alias("strategy")),
        ]
    )
    for w, top in tops.items():
        r = post_reach(top, posts["post_id"].unique().to_list()).rename({"reach": f"reach_{w}", "mean_position": f"mean_position_{w}"})
        posts = posts.join(r, on="post_id", how="left", maintain_order="left")
    groups = _summarise(posts, "group", GROUPS)
    strategies = _summarise(posts.filter(pl.col("group") == "boosted"), "strategy", ("burst", "drip", "lockstep"))
    b = groups.row(0, named=True)
    advantage = b["reach_logged"] - b["reach_counterfactual"]
    remaining = (b["reach_enforced"] - b["reach_counterfactual"]) / advantage if advantage > 0 else float("nan")
    collateral = {}
    for g in ("genuine", "genuine_touched"):
        row = groups.filter(pl.col("group") == g).row(0, named=True)
        change = row["reach_enforced"] - row["reach_logged"]
        collateral[g] = {
            "posts": row["posts"],
            "reach_logged": row["reach_logged"],
            "reach_enforced": row["reach_enforced"],
            "reach_change": change,
            "relative_change": change / row["reach_logged"] if row["reach_logged"] else float("nan"),
        }
    return {
        "surface": surface,
        "k": k,
        "viewers": len(users),
        "at": when,
        "advantage": int(advantage),
        "remaining_share": float(remaining),
        "groups": groups,
        "strategies": strategies,
        "posts": posts.filter(pl.col("group") != "genuine"),
        "collateral": collateral,
        "user_ids": users,
        "tops": tops,
    }


def surface_tops(
    store: str | os.PathLike,
    surface: str,
    user_ids: Sequence[int],
    *,
    at: datetime,
    k: int,
    models: TrainedSurface,
    progress: bool = False,
) -> np.ndarray:
    """Each viewer's top ``k`` post ids on ``surface`` in ``store`` at ``at`` with ``models``, default weights and rules.

    A (viewers, k) array, -1 where fewer posts remain (see :meth:`RankingCache.top_posts`).

    Example
    -------
    >>> surface_tops("/tmp/e.duckdb", "explore", [17, 42], at=datetime(2026, 1, 19), k=10, models=m)  # doctest: +SKIP
    """
    cache = RankingCache.build(store, surface, user_ids, at=at, models=models, progress=progress)
    return cache.top_posts(k=k)


def _touched_genuine(logged: Path, enforced: Path) -> pl.DataFrame:
    """Genuine authors' posts with fewer engagements in the enforced store than in the logged one."""
    counts = []
    for path in (logged, enforced):
        with open_store(path) as con:
            counts.append(
                con.sql(
                    "select e.post_id, p.author_id, count(*) as n from engagements e join posts p using (post_id) "
                    "join sim_accounts a on a.user_id = p.author_id where a.role = 'genuine' group by all"
                ).pl()
            )
    before, after = counts
    joined = before.join(after.select("post_id", pl.col("n").alias("n_after")), on="post_id", how="left")
    return joined.filter(pl.col("n_after").fill_null(0) < pl.col("n")).select("post_id", "author_id").sort("post_id")


def _genuine_posts(logged: Path, tops: dict[str, np.ndarray]) -> pl.DataFrame:
    """Genuine authors' posts that appear in some world's top k (the others have reach 0 everywhere)."""
    shown = np.unique(np.concatenate([t.ravel() for t in tops.values()]))
    shown = pl.DataFrame({"post_id": pl.Series(shown[shown >= 0].astype(np.int64))})
    with open_store(logged) as con:
        con.register("_feedlab_shown", shown)
        try:
            return con.sql(
                "select p.post_id, p.author_id from posts p join sim_accounts a on a.user_id = p.author_id "
                "where a.role = 'genuine' and p.post_id in (select post_id from _feedlab_shown) order by 1"
            ).pl()
        finally:
            con.unregister("_feedlab_shown")


def _summarise(posts: pl.DataFrame, by: str, order: Sequence[str]) -> pl.DataFrame:
    aggs = [pl.len().alias("posts")]
    for w in WORLDS:
        aggs.append(pl.col(f"reach_{w}").sum().alias(f"reach_{w}"))
        # mean position over every top-k appearance of the group's posts
        aggs.append(
            ((pl.col(f"mean_position_{w}") * pl.col(f"reach_{w}")).sum() / pl.col(f"reach_{w}").sum()).alias(f"mean_position_{w}")
        )
    got = posts.group_by(by).agg(aggs)
    frame = pl.DataFrame({by: list(order)}).join(got, on=by, how="left", maintain_order="left")
    return frame.with_columns(pl.col("posts").fill_null(0), *(pl.col(f"reach_{w}").fill_null(0) for w in WORLDS))
