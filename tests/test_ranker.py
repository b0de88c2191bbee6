"""rank() end to end on a small world, the cached re-ranker against it, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.rank import RankingCache, rank
from toolkit.rank import ranker as R
from toolkit.rank.config import RuleSpec, surface_config
from toolkit.rank.rules import apply_rules
from toolkit.rank.value import value_scores
from toolkit.store import connect


def _busiest_viewers(path, surface: str, n: int) -> list[int]:
    con = connect(path, read_only=True)
    try:
        rows = con.sql(
            "select user_id from impressions where surface = ? group by user_id order by count(*) desc, user_id limit ?",
            params=[surface, n],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_rank_returns_ordered_items_with_contributions(ranked_world):
    user = _busiest_viewers(ranked_world, "feed", 1)[0]
    top = rank(ranked_world, "feed", user, k=10, rules={"author_diversity": False})
    assert 0 < top.height <= 10
    assert top["position"].to_list() == list(range(top.height))
    assert top["score"].is_sorted(descending=True)
    contributions = [c for c in top.columns if c.startswith("contribution_")]
    assert {c.removeprefix("contribution_") for c in contributions} == {c.removeprefix("p_") for c in top.columns if c.startswith("p_")}
    # contributions add up to the score before rules, and each is weight x probability
    assert top.select(pl.sum_horizontal(contributions) - pl.col("base_score")).to_series().abs().max() < 1e-9
    assert (top["contribution_comment"] - 6.0 * top["p_comment"]).abs().max() < 1e-9
    assert top.schema["rules"] == pl.List(pl.Struct({"rule": pl.String, "effect": pl.String, "factor": pl.Float64}))


def test_rank_given_candidates_ranks_exactly_those_posts(ranked_world):
    user = _busiest_viewers(ranked_world, "explore", 1)[0]
    con = connect(ranked_world, read_only=True)
    try:
        shown = [r[0] for r in con.sql(
            "select distinct post_id from impressions where user_id = ? and surface = 'explore' order by post_id limit 30",
            params=[user]).fetchall()]
        authors = dict(con.sql("select post_id, author_id from posts where post_id in (select unnest(?))", params=[shown]).fetchall())
    finally:
        con.close()
    rules_off = {name: False for name in surface_config("explore").rules}  # no rule may remove a post
    top = rank(ranked_world, "explore", user, candidates=shown, k=50, rules=rules_off)
    assert sorted(top["post_id"].to_list()) == sorted(shown)
    assert set(top["source"]) == {"given"}
    assert all(authors[p] == a for p, a in top.select("post_id", "author_id").rows())
    assert top["score"].is_sorted(descending=True)
    with pytest.raises(FeedlabError, match=r"not in the store, e.g. \[-5\]"):
        rank(ranked_world, "explore", user, candidates=[shown[0], -5])
    with pytest.raises(FeedlabError, match="must be post ids"):
        rank(ranked_world, "explore", user, candidates=["abc"])


def test_weights_change_the_order_without_new_predictions(ranked_world, monkeypatch):
    user = _busiest_viewers(ranked_world, "feed", 1)[0]
    cache = RankingCache.build(ranked_world, "feed", [user], rules={"author_diversity": False}, progress=False)
    base = cache.rerank(k=5)["post_id"].to_list()
    monkeypatch.setattr(R, "predict_actions", lambda *a, **k: pytest.fail("re-ranking ran XGBoost"))
    monkeypatch.setattr(R, "compute_features", lambda *a, **k: pytest.fail("re-ranking recomputed features"))
    by_comment = cache.rerank({a: 0.0 for a in cache.actions} | {"comment": 1.0}, k=5)["post_id"].to_list()
    # the order-free rules (boosts, demotions) still act: score = p_comment x their factor
    items = cache.items.with_columns((pl.col("p_comment") * pl.col("factor")).alias("_s"))
    kept = items.filter(~pl.col("removed")).sort("_s", "post_id", descending=[True, False])
    assert by_comment == kept["post_id"].head(5).to_list()
    assert base != by_comment or kept.height <= 1


@pytest.mark.parametrize(
    "rules",
    [
        {"author_diversity": False},
        {"author_diversity": {"mode": "decay"}},
        {"author_diversity": {"mode": "max_in_row", "max_in_row": 1}},
    ],
)
def test_cached_rerank_equals_the_audited_ranking(ranked_world, rules):
    users = _busiest_viewers(ranked_world, "explore", 6)
    cache = RankingCache.build(ranked_world, "explore", users, rules=rules, chunk=4, progress=False)
    weights = {"like": 1.0, "save": 3.0, "dwell": -0.3}  # a negative weight: some scores below 0
    fast = cache.rerank(weights, k=15)
    for user in users:
        audited = cache.rank(user, weights, k=15)
        assert fast.filter(pl.col("user_id") == user)["post_id"].to_list() == audited["post_id"].to_list(), user
        # cache.rank reuses the cached rule factors: the same frame as every rule run again
        items = cache.items.filter(pl.col("user_id") == user).drop("factor", "removed", "rules")
        w = cache.weights(weights)
        assert audited.equals(R._shown(apply_rules(value_scores(items, w), cache.rules), w, 15)), user
    # and the audited path equals rank() itself
    direct = rank(ranked_world, "explore", users[0], weights=weights, rules=rules, k=15, at=cache.at)
    assert direct["post_id"].to_list() == cache.rank(users[0], weights, k=15)["post_id"].to_list()


def _reference_top_k(raw, factor, author, spec, k):
    """Each row ranked the slow, obvious way (ties: lower column, which is lower post id, first)."""
    V, C = raw.shape
    out = np.full((V, k), -1)
    for v in range(V):
        s = R._adjust(raw[v : v + 1].copy(), factor[v : v + 1])[0]
        items = sorted((c for c in range(C) if np.isfinite(s[c])), key=lambda c: (-s[c], c))
        mode = spec.params["mode"] if spec else None
        if mode == "decay":
            seen, s2 = {}, {}
            for c in items:
                n = seen.get(author[v, c], 0)
                seen[author[v, c]] = n + 1
                f = np.float32((1 - spec.params["floor"]) * spec.params["decay"] ** n + spec.params["floor"])
                s2[c] = s[c] * f if s[c] >= 0 else s[c] / f  # float32, as the cache computes
            items.sort(key=lambda c: (-s2[c], c))
        if mode == "max_in_row":
            limit, chosen, left, last, run = spec.params["max_in_row"], [], list(items), None, 0
            while left and len(chosen) < k:
                pick = next((c for c in left if not (author[v, c] == last and run >= limit)), left[0])
                left.remove(pick)
                chosen.append(pick)
                run, last = (run + 1 if author[v, pick] == last else 1), author[v, pick]
            items = chosen
        out[v, : len(items[:k])] = items[:k]
    return out


def test_fast_top_k_matches_the_obvious_algorithm():
    rng = np.random.default_rng(0)
    for _ in range(40):
        V, C, k = int(rng.integers(1, 25)), int(rng.integers(1, 90)), int(rng.integers(1, 15))
        raw = np.round(rng.normal(0.4, 0.5, (V, C)), 1).astype(np.float32)  # rounded: many ties, some below 0
        factor = rng.choice([0, 0.3, 1, 1, 1, 1.5], size=(V, C)).astype(np.float32)
        author = rng.integers(0, max(1, C // int(rng.integers(1, 6))), (V, C)).astype(np.int32)
        for spec in (
            None,
            RuleSpec("author_diversity", True, {"mode": "decay", "decay": 0.5, "floor": 0.25, "max_in_row": 1}),
            RuleSpec("author_diversity", True, {"mode": "max_in_row", "decay": 0.5, "floor": 0.25, "max_in_row": int(rng.integers(1, 4))}),
        ):
            expected = _reference_top_k(raw, factor, author, spec, k)
            assert (R._top_k(R._adjust(raw, factor), author, spec, k) == expected).all()
            # scores given block by block, as the cache does, give the same order
            blocks = R._top_k(lambda rows: R._adjust(raw[rows], factor[rows]), author, spec, k, block=int(rng.integers(1, 8)))
            assert (blocks == expected).all()


def test_max_in_row_pass_equals_the_greedy_step_by_step():
    """The one-pass greedy equals picking, slot by slot, the best unused item that keeps runs <= limit."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        V, M, k, limit = int(rng.integers(1, 30)), int(rng.integers(1, 60)), int(rng.integers(1, 40)), int(rng.integers(1, 4))
        authors = rng.integers(0, max(1, M // int(rng.integers(1, 10))), (V, M)).astype(np.int32)
        valid = np.arange(M)[None, :] < rng.integers(0, M + 1, V)[:, None]  # removed items sort last
        picked, forced = R._max_in_row(authors, valid, limit, k)
        for v in range(V):
            left, chosen, last, run, broke = list(np.flatnonzero(valid[v])), [], None, 0, False
            while left and len(chosen) < k:
                pick = next((c for c in left if not (authors[v, c] == last and run >= limit)), None)
                if pick is None:
                    pick, broke = left[0], True
                left.remove(pick)
                chosen.append(pick)
                run, last = (run + 1 if authors[v, pick] == last else 1), authors[v, pick]
            assert list(picked[v][picked[v] >= 0]) == chosen
            assert (picked[v][len(chosen) :] == -1).all()
            assert forced[v] == broke


def test_bad_input_gives_clear_errors(ranked_world):
    user = _busiest_viewers(ranked_world, "feed", 1)[0]
    with pytest.raises(FeedlabError, match="unknown surface"):
        rank(ranked_world, "timeline", user)
    with pytest.raises(FeedlabError, match="does not weigh 'likes'"):
        rank(ranked_world, "feed", user, weights={"likes": 1})
    for bad in (math.nan, math.inf):
        with pytest.raises(FeedlabError, match="finite"):
            rank(ranked_world, "feed", user, weights={"like": bad})
    with pytest.raises(FeedlabError, match="no user 999999"):
        rank(ranked_world, "feed", 999999)
    with pytest.raises(FeedlabError, match="k must be"):
        rank(ranked_world, "feed", user, k=0)
    with pytest.raises(FeedlabError, match="feedlab train"):
        rank(ranked_world, "reels", user)  # no reels models saved
    with pytest.raises(FeedlabError, match="unknown rule"):
        rank(ranked_world, "feed", user, rules={"shadowban": True})
    with pytest.raises(FeedlabError, match="is not a date or time"):
        rank(ranked_world, "feed", user, at="next tuesday")


def test_a_viewer_without_candidates_gets_an_empty_ranking(ranked_world):
    con = connect(ranked_world, read_only=True)
    try:
        lonely = con.sql(
            "select user_id from users where user_id not in (select follower_id from follows) order by user_id limit 1"
        ).fetchall()
        first_day = con.sql("select min(ts) from impressions").fetchall()[0][0]
    finally:
        con.close()
    if lonely:
        assert rank(ranked_world, "feed", lonely[0][0]).height == 0
    # before anything was posted, no one has candidates
    user = _busiest_viewers(ranked_world, "feed", 1)[0]
    early = rank(ranked_world, "feed", user, at=first_day.replace(year=first_day.year - 1))
    assert early.height == 0 and "contribution_like" in early.columns


def test_cli_rank_prints_json(ranked_world, capsys):
    from toolkit.cli import main

    user = _busiest_viewers(ranked_world, "feed", 1)[0]
    assert main(["rank", "--db", str(ranked_world), "--surface", "feed", "--user", str(user), "--k", "3", "--weights", "comment=9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["surface"] == "feed" and 0 < len(out["items"]) <= 3
    assert all(math.isclose(i["contribution_comment"], 9 * i["p_comment"]) for i in out["items"])
    assert main(["rank", "--db", str(ranked_world), "--surface", "feed", "--user", str(user), "--weights", "like=abc"]) == 2
    assert "must be a number" in capsys.readouterr().err


# ------------------------------------------------------------------------------ unknown authors


def _unknown_author_items() -> pl.DataFrame:
    """Viewer 1: posts 1-3 by unknown authors (null), 4-5 by author 7; viewer 2: three unknown-author posts."""
    from toolkit.rank.rules import RULE_ENTRIES

    return pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1, 2, 2, 2],
            "post_id": [1, 2, 3, 4, 5, 6, 7, 8],
            "author_id": pl.Series([None, None, None, 7, 7, None, None, None], dtype=pl.Int64),
            "source": ["popular"] * 8,
            "p_like": [0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1],
            "factor": [1.0] * 8,
            "removed": [False] * 8,
            "rules": pl.Series([[]] * 8, dtype=RULE_ENTRIES),
        }
    )


@pytest.mark.parametrize("mode", ["decay", "max_in_row"])
def test_unknown_authors_each_count_as_their_own_author(mode):
    """A log without author ids (KuaiRand) stores author_id null: diversity must neither crash nor
    treat every null-author post as one author (which would demote posts 2 and 3 below 4 and 5)."""
    from datetime import datetime

    from toolkit.rank.config import surface_config

    spec = RuleSpec("author_diversity", True, {"mode": mode, "decay": 0.5, "floor": 0.25, "max_in_row": 1})
    cache = R.RankingCache._dense(
        "reels", datetime(2022, 4, 22), ["like"], surface_config("reels"), {"author_diversity": spec}, [1, 2],
        _unknown_author_items(),
    )  # fmt: skip
    # every unknown author its own slot, after the viewer's known ones; unknown ids read -1
    assert cache.author_slot.tolist() == [[1, 2, 3, 0, 0], [0, 1, 2, 0, 0]]
    assert cache.author_ids.tolist() == [[-1, -1, -1, 7, 7], [-1, -1, -1, -1, -1]]
    fast = cache.rerank({"like": 1.0}, k=5)
    # posts 1-3 are by three different authors: only author 7's second post (5) is held back
    assert fast.filter(pl.col("user_id") == 1)["post_id"].to_list() == [1, 2, 3, 4, 5]
    assert fast.filter(pl.col("user_id") == 2)["post_id"].to_list() == [6, 7, 8]
    for user in (1, 2):
        audited = cache.rank(user, {"like": 1.0}, k=5)
        assert audited["post_id"].to_list() == fast.filter(pl.col("user_id") == user)["post_id"].to_list()
        assert audited["author_id"].null_count() == 3  # the nulls come back as they were
    # through apply_rules too (the path rank() takes); post 5 is the only one author diversity acts on
    out = apply_rules(value_scores(_unknown_author_items().drop("factor", "removed", "rules"), {"like": 1.0}), {"author_diversity": spec})
    acted = out.filter(pl.col("rules").list.len() > 0)["post_id"].to_list()
    assert acted == ([5] if mode == "decay" else [])
