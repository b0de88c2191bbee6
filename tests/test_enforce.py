"""Enforcement from a cutoff (toolkit.integrity.enforcement): the not-retroactive rule, a valid copy, its effect on rankings."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from toolkit.charts import enforcement_chart
from toolkit.errors import FeedlabError
from toolkit.integrity import enforcement as E
from toolkit.integrity.enforcement import (
    boosted_posts,
    counterfactual_store,
    enforce,
    enforcement_effect,
    flagged_accounts,
    post_reach,
    removed_engagements,
    truth_scores,
)
from toolkit.predict import load_models
from toolkit.signals import compute_features
from toolkit.rank.candidates import GRAPH_EXCLUDED_TABLE
from toolkit.store import connect, has_table, table_digests

T0 = datetime(2026, 1, 1)
CUTOFF = datetime(2026, 1, 3)


def _tiny(path):
    """Users 1 (a buyer) and 3 (a bot) are flagged; 2, 4, 5 are not. Post 10 is the buyer's, 11 a genuine author's."""
    con = connect(path)
    con.execute("insert into users select unnest([1, 2, 3, 4, 5]), ?, null", [T0])
    con.execute(
        "insert into posts values (10, 1, ?, 'photo', null, 1, null, false, false, false, false, false, false, false, false, false, false, false), "
        "(11, 2, ?, 'photo', null, 1, null, false, false, false, false, false, false, false, false, false, false, false)",
        [T0, T0],
    )
    rows = [
        # user, post, target, action, ts, via_third_party_app, kept?
        (3, 10, None, "like", datetime(2026, 1, 2, 10), True),  # before the cutoff: stays
        (3, 11, None, "like", datetime(2026, 1, 2, 11), False),  # before the cutoff: stays
        (3, 10, None, "like", datetime(2026, 1, 3, 10), True),  # flagged giver: removed
        (3, 11, None, "like", CUTOFF, False),  # exactly at the cutoff: removed
        (1, 11, None, "like", datetime(2026, 1, 3, 9), False),  # the flagged buyer's own like: removed
        (4, 10, None, "like", datetime(2026, 1, 3, 12), True),  # third-party app to a flagged author: removed
        (4, 11, None, "like", datetime(2026, 1, 3, 12), True),  # third-party app to an unflagged author: stays
        (5, 10, None, "like", datetime(2026, 1, 3, 13), False),  # genuine like on the buyer's post: stays
        (3, None, 1, "follow", datetime(2026, 1, 3, 14), False),  # flagged giver's follow: removed
        (4, None, 1, "follow", datetime(2026, 1, 3, 14), True),  # third-party follow of a flagged account: removed
        (4, None, 2, "follow", datetime(2026, 1, 3, 15), False),  # ordinary follow: stays
    ]
    con.executemany("insert into engagements values (?, ?, ?, ?, ?, ?)", rows)
    con.close()
    return rows


TINY_SCORES = pl.DataFrame({"user_id": [1, 2, 3, 4, 5], "score": [0.9, 0.1, 0.99, 0.6, 0.0], "flagged": [True, False, True, False, False]})


def _engagements(path):
    con = connect(path, read_only=True)
    try:
        return sorted(con.sql("select user_id, post_id, target_user_id, action, ts, via_third_party_app from engagements").fetchall(),
                      key=lambda r: (r[4], r[0], str(r[1]), str(r[2])))
    finally:
        con.close()


def test_not_retroactive_exactly_on_a_hand_checked_case(tmp_path):
    rows = _tiny(tmp_path / "t.duckdb")
    out = enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    kept = [rows[i] for i in (0, 1, 6, 7, 10)]
    assert _engagements(out) == sorted(kept, key=lambda r: (r[4], r[0], str(r[1]), str(r[2])))
    gone = removed_engagements(tmp_path / "t.duckdb", flagged=[1, 3], cutoff=CUTOFF)
    assert gone.height == 6
    assert sorted(gone["rule"].to_list()) == ["giver"] * 4 + ["third_party"] * 2
    assert sorted(gone.filter(pl.col("rule") == "third_party")["receiver_id"].to_list()) == [1, 1]


def test_third_party_rule_can_be_switched_off_and_a_threshold_flags_on_score(tmp_path):
    rows = _tiny(tmp_path / "t.duckdb")
    out = enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e.duckdb", third_party_to_flagged=False)
    assert len(_engagements(out)) == len(rows) - 4  # only the flagged givers' four after the cutoff
    # threshold 0.5 flags 1, 3 and 4: account 4's engagements after the cutoff go too
    out = enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, threshold=0.5, scores=TINY_SCORES, out=tmp_path / "e2.duckdb")
    assert [r[0] for r in _engagements(out) if r[4] >= CUTOFF] == [5]
    assert flagged_accounts(TINY_SCORES, threshold=0.95)["user_id"].to_list() == [3]


def test_flagged_accounts_leave_the_coengagement_graph_from_the_cutoff(tmp_path):
    _tiny(tmp_path / "t.duckdb")
    out = enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    con = connect(out, read_only=True)
    try:
        assert con.sql(f"select * from {GRAPH_EXCLUDED_TABLE} order by all").fetchall() == [(1, CUTOFF), (3, CUTOFF)]
    finally:
        con.close()
    # enforcing the enforced store again later: account 4 joins from the new cutoff, 1 and 3 keep theirs
    later = CUTOFF + timedelta(hours=12)
    again = enforce(out, cutoff=later, threshold=0.5, scores=TINY_SCORES, out=tmp_path / "e2.duckdb")
    con = connect(again, read_only=True)
    try:
        assert con.sql(f"select * from {GRAPH_EXCLUDED_TABLE} order by all").fetchall() == [(1, CUTOFF), (3, CUTOFF), (4, later)]
    finally:
        con.close()
    off = enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e3.duckdb", exclude_from_graph=False)
    con = connect(off, read_only=True)
    try:
        assert not has_table(con, GRAPH_EXCLUDED_TABLE)
    finally:
        con.close()


def test_clear_errors(tmp_path):
    _tiny(tmp_path / "t.duckdb")
    src = tmp_path / "t.duckdb"
    with pytest.raises(FeedlabError, match="outside the store's engagements"):
        enforce(src, cutoff="2025-12-01", scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="outside the store's engagements"):
        enforce(src, cutoff="2026-02-01", scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="is the input store"):
        enforce(src, cutoff=CUTOFF, scores=TINY_SCORES, out=src)
    with pytest.raises(FeedlabError, match="no integrity_scores table"):
        enforce(src, cutoff=CUTOFF, out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="lack a flagged column"):
        enforce(src, cutoff=CUTOFF, scores=TINY_SCORES.drop("flagged"), out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="needs a score column"):
        enforce(src, cutoff=CUTOFF, threshold=0.5, scores=TINY_SCORES.drop("score"), out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="not a date"):
        enforce(src, cutoff="soon", scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    with pytest.raises(FeedlabError, match="sim_accounts"):
        truth_scores(src)
    connect(tmp_path / "empty.duckdb").close()
    with pytest.raises(FeedlabError, match="no engagements"):
        enforce(tmp_path / "empty.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    assert not (tmp_path / "e.duckdb").exists()


def test_a_failure_leaves_no_file(tmp_path, monkeypatch):
    _tiny(tmp_path / "t.duckdb")
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(E, "_removed_sql", lambda *a, **k: ("select no_such_column from feedlab_src.engagements", []))
    with pytest.raises(FeedlabError, match="could not write the enforced store"):
        enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=tmp_path / "e.duckdb")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_existing_output_is_replaced_whole(tmp_path):
    _tiny(tmp_path / "t.duckdb")
    out = tmp_path / "e.duckdb"
    enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=out, third_party_to_flagged=False)
    enforce(tmp_path / "t.duckdb", cutoff=CUTOFF, scores=TINY_SCORES, out=out)
    assert len(_engagements(out)) == 5


@pytest.fixture(scope="module")
def enforced_small(ranked_world, tmp_path_factory):
    """The ranked small world enforced from the middle of day 2 with the truth as detector, and its counterfactual."""
    tmp = tmp_path_factory.mktemp("enforced")
    con = connect(ranked_world, read_only=True)
    start, end = con.sql("select min(ts), max(ts) from engagements").fetchall()[0]
    con.close()
    cutoff = start + (end - start) / 2
    scores = truth_scores(ranked_world)
    out = enforce(ranked_world, cutoff=cutoff, scores=scores, out=tmp / "enforced.duckdb")
    clean = counterfactual_store(ranked_world, out=tmp / "clean.duckdb")
    return {"cutoff": cutoff, "start": start, "scores": scores, "enforced": out, "clean": clean, "tmp": tmp}


def test_the_enforced_store_is_complete_and_only_engagements_change(ranked_world, enforced_small):
    src = connect(ranked_world, read_only=True)
    dst = connect(enforced_small["enforced"], read_only=True)
    try:
        a, b = table_digests(src), table_digests(dst)
        assert set(a) == set(b) and {"users", "follows", "posts", "impressions", "sim_accounts"} <= set(a)
        assert {t for t in a if a[t] != b[t]} == {"engagements"}
        # same columns and types everywhere
        q = f"select table_name, column_name, data_type, is_nullable from information_schema.columns where table_name <> '{GRAPH_EXCLUDED_TABLE}' order by all"
        assert src.sql(q).fetchall() == dst.sql(q).fetchall()
        n_src = src.sql("select count(*) from engagements").fetchall()[0][0]
        n_dst = dst.sql("select count(*) from engagements").fetchall()[0][0]
        cutoff = enforced_small["cutoff"]
        flagged = enforced_small["scores"].filter("flagged")["user_id"].to_list()
        gone = removed_engagements(ranked_world, flagged=flagged, cutoff=cutoff)
        assert gone.height > 100 and n_dst == n_src - gone.height
        # before the cutoff nothing changed, whoever gave it
        q = "select * from engagements where ts < ? order by all"
        assert src.sql(q, params=[cutoff]).fetchall() == dst.sql(q, params=[cutoff]).fetchall()
        # after it, no flagged account's engagement is left
        left = dst.sql("select count(*) from engagements where ts >= ? and user_id in (select unnest(?))", params=[cutoff, flagged])
        assert left.fetchall()[0][0] == 0
        # and the flagged accounts leave the co-engagement graph from the cutoff
        assert dst.sql(f"select user_id, since from {GRAPH_EXCLUDED_TABLE} order by user_id").fetchall() == [(u, cutoff) for u in sorted(flagged)]
    finally:
        src.close()
        dst.close()
    assert load_models(enforced_small["enforced"], "explore").actions == load_models(ranked_world, "explore").actions


def test_truth_enforced_from_the_start_is_the_counterfactual(ranked_world, enforced_small):
    out = enforce(ranked_world, cutoff=enforced_small["start"], scores=enforced_small["scores"],
                  out=enforced_small["tmp"] / "from_start.duckdb", third_party_to_flagged=False, models=False)
    a, b = connect(out, read_only=True), connect(enforced_small["clean"], read_only=True)
    try:
        assert table_digests(a) == table_digests(b)
        roles = b.sql("select distinct s.role from engagements e join sim_accounts s using (user_id)").fetchall()
        assert roles == [("genuine",)]
    finally:
        a.close()
        b.close()


def test_popularity_signals_drop_by_exactly_the_removed_likes(ranked_world, enforced_small):
    con = connect(ranked_world, read_only=True)
    at = con.sql("select max(ts) from engagements").fetchall()[0][0] + timedelta(seconds=1)
    con.close()
    boosted = boosted_posts(ranked_world)
    assert set(boosted["strategy"]) == {"burst", "drip", "lockstep"}
    flagged = enforced_small["scores"].filter("flagged")["user_id"].to_list()
    gone = removed_engagements(ranked_world, flagged=flagged, cutoff=enforced_small["cutoff"]).filter(pl.col("action") == "like")
    lost = gone.group_by("post_id").len().filter(pl.col("post_id").is_in(boosted["post_id"].implode()))
    assert lost.height > 10
    requests = lost.select(pl.lit(1, pl.Int64).alias("user_id"), "post_id", pl.lit(at).cast(pl.Datetime("us")).alias("ts"), pl.lit("ios").alias("device"))
    feats = {}
    for world, path in (("logged", ranked_world), ("enforced", enforced_small["enforced"])):
        c = connect(path, read_only=True)
        feats[world] = compute_features(c, requests).select("post_id", pl.col("post_likes_total").alias(world))
        c.close()
    got = lost.join(feats["logged"], on="post_id").join(feats["enforced"], on="post_id")
    assert (got["logged"] - got["enforced"]).to_list() == got["len"].cast(pl.Float64).to_list()


def test_enforcement_effect_on_explore(ranked_world, enforced_small):
    effect = enforcement_effect(ranked_world, enforced_small["enforced"], enforced_small["clean"], surface="explore", viewers=60, k=10, seed=1)
    assert effect["viewers"] == 60 and effect["k"] == 10
    groups = {r["group"]: r for r in effect["groups"].iter_rows(named=True)}
    tops = effect["tops"]
    for world in ("logged", "enforced", "counterfactual"):
        ids = set(effect["posts"].filter(pl.col("group") == "boosted")["post_id"].to_list())
        assert groups["boosted"][f"reach_{world}"] == int(np.isin(tops[world], list(ids)).sum())
    assert effect["advantage"] == groups["boosted"]["reach_logged"] - groups["boosted"]["reach_counterfactual"]
    assert effect["advantage"] > 0  # bought likes do buy Explore reach in the small world
    expected = (groups["boosted"]["reach_enforced"] - groups["boosted"]["reach_counterfactual"]) / effect["advantage"]
    assert effect["remaining_share"] == pytest.approx(expected)
    assert groups["boosted"]["reach_enforced"] < groups["boosted"]["reach_logged"]
    # enforced from the start with the truth (no third-party rule): the counterfactual's ranking, nothing remains
    start = enforce(ranked_world, cutoff=enforced_small["start"], scores=enforced_small["scores"],
                    out=enforced_small["tmp"] / "start.duckdb", third_party_to_flagged=False, models=False)
    again = enforcement_effect(ranked_world, start, enforced_small["clean"], surface="explore", viewers=effect["user_ids"], k=10,
                               tops={w: tops[w] for w in ("logged", "counterfactual")})
    assert np.array_equal(again["tops"]["enforced"], tops["counterfactual"])
    assert again["advantage"] == effect["advantage"]
    assert again["remaining_share"] == 0.0
    chart = enforcement_chart(effect, by="strategy").to_dict()
    assert len(list(chart["datasets"].values())[0]) == 9


def test_post_reach_and_chart_checks():
    top = np.array([[5, 7, -1], [7, 9, 5], [1, 2, 3]])
    assert post_reach(top, [9, 5, 4]).rows() == [(9, 1, 1.0), (5, 2, 1.0), (4, 0, None)]
    with pytest.raises(FeedlabError, match="unknown by"):
        enforcement_chart({}, by="world")
    with pytest.raises(FeedlabError, match="enforcement_effect"):
        enforcement_chart({})
