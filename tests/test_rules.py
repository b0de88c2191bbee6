"""Rules after the value model: each rule on and off, composition, diversity by hand, inputs point in time."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from toolkit.errors import FeedlabError
from toolkit.rank.config import RULE_DEFAULTS, RULE_PARAMS, RuleSpec, resolve_rules
from toolkit.rank.rules import (
    RULE_INPUT_COLUMNS,
    RULES,
    apply_rules,
    author_diversity,
    rule_factors,
    rule_inputs,
)
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, schema_ddl

T0 = datetime(2026, 1, 1)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def spec(name: str, enabled: bool = True, **params) -> RuleSpec:
    return RuleSpec(name, enabled, {**RULE_DEFAULTS.get(name, {}), **params})


def diversity(mode: str, *, decay: float = 0.5, floor: float = 0.25, max_in_row: int = 1, enabled: bool = True) -> RuleSpec:
    return RuleSpec("author_diversity", enabled, {"mode": mode, "decay": decay, "floor": floor, "max_in_row": max_in_row})


NEUTRAL = {
    "format": "photo",
    "topic": 0,
    "is_reshare": False,
    **{f: False for f in CONTENT_FLAGS},
    "close_friend": False,
    "muted": False,
    "ni_author": False,
    "ni_topic": False,
    "author_misinfo_posts": 0,
}


def items(n: int, **columns) -> pl.DataFrame:
    """``n`` items of viewer 1, each by its own author, scores 1.0, 0.9, ...; rule inputs neutral unless given."""
    data = {
        "user_id": [1] * n,
        "post_id": list(range(1, n + 1)),
        "author_id": list(range(101, 101 + n)),
        "score": [1.0 - 0.1 * i for i in range(n)],
        **{c: [v] * n for c, v in NEUTRAL.items()},
    }
    data.update(columns)
    return pl.DataFrame(data)


def touched(**inputs) -> pl.DataFrame:
    """Two items: the first with ``inputs`` (touched by a rule), the second neutral."""
    return items(2, **{c: [v, NEUTRAL[c]] for c, v in inputs.items()})


# ---------------------------------------------------------------------------------------------
# the registry


def test_rules_are_the_configured_rules_in_application_order():
    assert list(RULES) == list(RULE_PARAMS)


# ---------------------------------------------------------------------------------------------
# each static rule on and off

CASES = [
    # rule, params, inputs of the touched item, factor, effect
    ("guideline_removal", {}, {"guideline_violation": True}, 0.0, "removed: goes against the Community Guidelines"),
    (
        "recommendation_guidelines",
        {},
        {"sensitive": True},
        0.0,
        "removed: not recommended under the Recommendations Guidelines (sensitive)",
    ),
    (
        "recommendation_guidelines",
        {"flags": ["political"]},
        {"political": True, "sensitive": True},
        0.0,
        "removed: not recommended under the Recommendations Guidelines (political)",
    ),
    (
        "reels_quality_filters",
        {},
        {"low_resolution": True, "watermarked": True},
        0.0,
        "removed: not recommended on Reels (low resolution, watermarked)",
    ),
    ("mute_removal", {}, {"muted": True}, 0.0, "removed: you muted this account"),
    (
        "not_interested_suppression",
        {},
        {"ni_author": True},
        0.0,
        "removed: you marked a post of this account not interested",
    ),
    (
        "not_interested_suppression",
        {},
        {"ni_topic": True},
        0.5,
        "demoted x0.50: you marked a post on this topic not interested",
    ),
    (
        "not_interested_suppression",
        {"author_factor": 0.5, "topic_factor": 0.4},
        {"ni_author": True, "ni_topic": True},
        0.2,
        "demoted x0.20: you marked a post of this account not interested and you marked a post on this topic not interested",
    ),
    (
        "misinformation_demotion",
        {},
        {"misinformation": True},
        0.3,
        "demoted x0.30: labelled misinformation by fact checkers",
    ),
    (
        "repeat_offender_demotion",  # every post of the author, this one not labelled itself
        {},
        {"author_misinfo_posts": 2},
        0.5,
        "demoted x0.50: this account has posted misinformation 2 times",
    ),
    ("reshare_multiplier", {"factor": 0.5}, {"is_reshare": True}, 0.5, "demoted x0.50: a story resharing a Feed post"),
    ("close_friends_boost", {}, {"close_friend": True}, 1.5, "boosted x1.50: one of your Close Friends"),
]


@pytest.mark.parametrize("rule, params, inputs, factor, effect", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_static_rule_changes_only_what_it_targets_and_says_why(rule, params, inputs, factor, effect):
    frame = touched(**inputs)
    on = rule_factors(frame, {rule: spec(rule, **params)})
    assert on["factor"].to_list() == pytest.approx([factor, 1.0])
    assert on["removed"].to_list() == [factor == 0, False]
    assert on["rules"].to_list() == [[{"rule": rule, "effect": effect, "factor": pytest.approx(factor)}], []]
    off = rule_factors(frame, {rule: spec(rule, enabled=False, **params)})
    assert off["factor"].to_list() == [1.0, 1.0]
    assert off["removed"].to_list() == [False, False]
    assert off["rules"].to_list() == [[], []]


@pytest.mark.parametrize("rule, params, inputs, factor, effect", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_static_rule_changes_the_score_in_apply_rules(rule, params, inputs, factor, effect):
    frame = touched(**inputs).with_columns(pl.Series("score", [0.6, 0.5]))
    out = apply_rules(frame, {rule: spec(rule, **params)}).sort("post_id")
    expected = None if factor == 0 else 0.6 * factor
    assert out["score"][0] == (None if expected is None else pytest.approx(expected))
    assert out["base_score"].to_list() == [0.6, 0.5]
    assert out["rules"][0].to_list()[0]["rule"] == rule
    off = apply_rules(frame, {rule: spec(rule, enabled=False, **params)}).sort("post_id")
    assert off["score"].to_list() == [0.6, 0.5] and off["rules"].to_list() == [[], []]


def test_thresholds_and_neutral_parameters_leave_items_alone():
    below = touched(author_misinfo_posts=1)
    assert rule_factors(below, {"repeat_offender_demotion": spec("repeat_offender_demotion")})["factor"].to_list() == [1.0, 1.0]
    # a multiplier of 1 (the stories default since the seeds' change) has no effect and says nothing
    reshare = rule_factors(touched(is_reshare=True), {"reshare_multiplier": spec("reshare_multiplier")})
    assert reshare["factor"].to_list() == [1.0, 1.0] and reshare["rules"].to_list() == [[], []]
    once = rule_factors(below, {"repeat_offender_demotion": spec("repeat_offender_demotion", min_labelled_posts=1)})
    assert once["rules"][0][0]["effect"] == "demoted x0.50: this account has posted misinformation once"
    # a flag that the rule does not list is not filtered
    political_only = {"recommendation_guidelines": spec("recommendation_guidelines", flags=["political"])}
    flags = rule_factors(touched(sensitive=True), political_only)
    assert flags["factor"].to_list() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# composition, sign, removal


def test_factors_multiply_and_apply_sign_aware():
    frame = items(3, misinformation=[True, True, False], close_friend=[True, True, True], score=[2.0, -1.0, -1.0])
    rules = {"misinformation_demotion": spec("misinformation_demotion"), "close_friends_boost": spec("close_friends_boost")}
    factors = rule_factors(frame, rules)
    assert factors["factor"].to_list() == pytest.approx([0.45, 0.45, 1.5])
    assert [[e["rule"] for e in r] for r in factors["rules"].to_list()] == [
        ["misinformation_demotion", "close_friends_boost"],
        ["misinformation_demotion", "close_friends_boost"],
        ["close_friends_boost"],
    ]
    out = apply_rules(frame, rules).sort("post_id")
    # a demotion lowers a negative score (-1 / 0.45), a boost raises it (-1 / 1.5)
    assert out["score"].to_list() == pytest.approx([0.9, -1 / 0.45, -1 / 1.5])
    assert out["score"][1] < -1 < out["score"][2]


def test_removed_items_come_back_last_without_score_or_position():
    frame = items(3, muted=[False, True, False], guideline_violation=[False, False, True])
    out = apply_rules(frame, {"guideline_removal": spec("guideline_removal"), "mute_removal": spec("mute_removal")})
    assert out.select("post_id", "removed", "position").rows() == [(1, False, 0), (2, True, None), (3, True, None)]
    assert out["score"].to_list() == [1.0, None, None]
    assert out["base_score"].to_list() == pytest.approx([1.0, 0.9, 0.8])
    assert out["rules"][2].to_list() == [
        {"rule": "guideline_removal", "effect": "removed: goes against the Community Guidelines", "factor": 0.0}
    ]


def test_a_missing_input_column_names_it():
    frame = items(2).drop("misinformation")
    with pytest.raises(FeedlabError, match="misinformation_demotion.*misinformation"):
        apply_rules(frame, {"misinformation_demotion": spec("misinformation_demotion")})
    with pytest.raises(FeedlabError, match="muted"):
        rule_factors(items(2).drop("muted"), {"mute_removal": spec("mute_removal")})
    # a disabled rule reads nothing
    assert apply_rules(frame, {"misinformation_demotion": spec("misinformation_demotion", enabled=False)}).height == 2


def test_unknown_rule_is_an_error():
    with pytest.raises(FeedlabError, match="unknown rule"):
        rule_factors(items(1), {"shadowban": RuleSpec("shadowban", True)})


# ---------------------------------------------------------------------------------------------
# author diversity


def three_by_a_and_one_by_b(scores=(1.0, 0.9, 0.8, 0.5)) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [1] * 4, "post_id": [1, 2, 3, 4], "author_id": [7, 7, 7, 8], "score": list(scores)}
    )


def test_decay_discounts_an_authors_later_posts_by_hand():
    # floor .25, decay .5: factors 1, .75 * .5 + .25 = .625, .75 * .25 + .25 = .4375
    out = author_diversity(three_by_a_and_one_by_b(), diversity("decay"))
    assert out.select("post_id", "position").rows() == [(1, 0), (2, 1), (4, 2), (3, 3)]
    assert out["score"].to_list() == pytest.approx([1.0, 0.5625, 0.5, 0.35])
    assert out["rules"].to_list() == [
        [],
        [{"rule": "author_diversity", "effect": "demoted x0.62: 2nd post of this author in your list", "factor": 0.625}],
        [],
        [{"rule": "author_diversity", "effect": "demoted x0.44: 3rd post of this author in your list", "factor": 0.4375}],
    ]


def test_decay_on_negative_scores_lowers_them():
    out = author_diversity(three_by_a_and_one_by_b((-1.0, -2.0, -3.0, -9.0)), diversity("decay"))
    assert out.sort("post_id")["score"].to_list() == pytest.approx([-1.0, -2.0 / 0.625, -3.0 / 0.4375, -9.0])


def test_max_in_row_reorders_greedily_by_hand():
    frame = pl.DataFrame({"user_id": [1] * 3, "post_id": [1, 2, 3], "author_id": [7, 7, 8], "score": [0.9, 0.8, 0.7]})
    out = author_diversity(frame, diversity("max_in_row", max_in_row=1))
    assert out.select("post_id", "position").rows() == [(1, 0), (3, 1), (2, 2)]
    assert out["score"].to_list() == [0.9, 0.7, 0.8]  # scores untouched
    assert out["rules"].to_list() == [
        [],
        [],
        [{"rule": "author_diversity", "effect": "moved down from 2 to 3: too many posts of this author in a row", "factor": 1.0}],
    ]


def test_max_in_row_allows_runs_up_to_the_limit_and_takes_the_best_when_forced():
    frame = three_by_a_and_one_by_b()
    assert author_diversity(frame, diversity("max_in_row", max_in_row=2))["post_id"].to_list() == [1, 2, 4, 3]
    # only A's posts left after B: the best of them anyway
    assert author_diversity(frame, diversity("max_in_row", max_in_row=1))["post_id"].to_list() == [1, 4, 2, 3]
    assert author_diversity(frame, diversity("max_in_row", max_in_row=3))["rules"].to_list() == [[]] * 4
    with pytest.raises(FeedlabError, match="max_in_row"):
        author_diversity(frame, diversity("max_in_row", max_in_row=0))


def test_disabled_diversity_only_sorts():
    frame = three_by_a_and_one_by_b()
    for mode in ("decay", "max_in_row"):
        out = author_diversity(frame.reverse(), diversity(mode, enabled=False))
        assert out["post_id"].to_list() == [1, 2, 3, 4] and out["score"].to_list() == [1.0, 0.9, 0.8, 0.5]
        assert out["rules"].to_list() == [[]] * 4


def test_removed_items_take_no_slot_in_diversity():
    frame = three_by_a_and_one_by_b().with_columns(removed=pl.Series([False, True, False, False]))
    out = author_diversity(frame, diversity("decay"))
    assert out.select("post_id", "position").rows() == [(1, 0), (3, 1), (4, 2), (2, None)]
    assert out["score"].to_list() == pytest.approx([1.0, 0.5, 0.5, 0.9])  # post 3 is A's 2nd post in the list


def test_ties_break_by_post_id_whatever_the_input_order():
    frame = pl.DataFrame({"user_id": [1] * 4, "post_id": [4, 2, 3, 1], "author_id": [7, 7, 8, 8], "score": [0.5] * 4})
    for mode in ("decay", "max_in_row"):
        first = author_diversity(frame, diversity(mode))
        again = author_diversity(frame.reverse(), diversity(mode))
        assert_frame_equal(first, again)
    assert author_diversity(frame, diversity("max_in_row"))["post_id"].to_list() == [1, 2, 3, 4]
    # decay: 1 and 2 keep factor 1 (first of their authors), 3 and 4 are second
    assert author_diversity(frame, diversity("decay"))["post_id"].to_list() == [1, 2, 3, 4]


def test_ties_after_the_rules_break_by_post_id_not_by_the_score_before():
    # post 1: 0.5 boosted x1.5 = 0.75, tied with post 2's plain 0.75
    frame = items(3, score=[0.5, 0.75, 0.1], close_friend=[True, False, False], muted=[False, False, True])
    rules = {"close_friends_boost": spec("close_friends_boost"), "mute_removal": spec("mute_removal")}
    for order in (frame, frame.reverse()):
        assert apply_rules(order, rules)["post_id"].to_list() == [1, 2, 3]


def reference_greedy(rows: list[tuple[int, int]], max_in_row: int) -> list[int]:
    """The brief's walk, slot by slot: rows are (post_id, author) best first."""
    left, out, authors = list(rows), [], []
    while left:
        run_author = authors[-1] if authors and len(authors) >= max_in_row and len(set(authors[-max_in_row:])) == 1 else None
        pick = next((r for r in left if r[1] != run_author), left[0])
        left.remove(pick)
        out.append(pick[0])
        authors.append(pick[1])
    return out


viewers = st.lists(
    st.tuples(
        st.integers(1, 3),  # viewer
        st.integers(1, 3),  # author
        st.sampled_from([-0.5, -0.1, 0.0, 0.2, 0.2, 0.7, 1.0]),  # ties on purpose
        st.booleans(),  # muted
    ),
    max_size=14,
)


def _candidates(rows) -> pl.DataFrame:
    return items(
        len(rows),
        user_id=[r[0] for r in rows],
        author_id=[r[1] for r in rows],
        score=[r[2] for r in rows],
        muted=[r[3] for r in rows],
    )


@settings(max_examples=30, deadline=None)
@given(rows=viewers, mode=st.sampled_from(["decay", "max_in_row"]), max_in_row=st.integers(1, 2))
def test_many_viewers_at_once_match_one_at_a_time(rows, mode, max_in_row):
    frame = _candidates(rows)
    rules = {"mute_removal": spec("mute_removal"), "author_diversity": diversity(mode, max_in_row=max_in_row)}
    together = apply_rules(frame, rules)
    alone = [apply_rules(frame.filter(pl.col("user_id") == u), rules) for u in sorted(set(frame["user_id"]))]
    assert_frame_equal(together, pl.concat(alone) if alone else together.clear())
    if mode == "max_in_row":
        for u in sorted(set(frame["user_id"])):
            live = together.filter((pl.col("user_id") == u) & ~pl.col("removed"))
            best_first = live.sort(["score", "post_id"], descending=[True, False])
            assert live["post_id"].to_list() == reference_greedy(best_first.select("post_id", "author_id").rows(), max_in_row)
    # positions are 0..n-1 per viewer among the kept items
    for u in sorted(set(frame["user_id"])):
        pos = together.filter(pl.col("user_id") == u)["position"].drop_nulls().to_list()
        assert pos == list(range(len(pos)))


# ---------------------------------------------------------------------------------------------
# inputs from the store


def _insert(con: duckdb.DuckDBPyConnection, table: str, row: dict) -> None:
    cols = ", ".join(f'"{k}"' for k in row)
    con.execute(f"insert into {table} ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))


def _store() -> duckdb.DuckDBPyConnection:
    """Viewer 1 and 4, authors 2 and 3; events at 10:00 sit exactly at the time asked about."""
    con = duckdb.connect()
    for stmt in schema_ddl():
        con.execute(stmt)
    con.executemany("insert into users values (?, ?, ?)", [(u, T0 - timedelta(days=5), False) for u in (1, 2, 3, 4)])
    con.executemany(
        "insert into follows values (?, ?, ?, ?, ?)",
        [
            (1, 2, h(-24), True, False),
            (1, 3, h(10), False, True),  # at the time asked about: not yet
            (4, 3, h(0), False, True),
        ],
    )
    posts = [
        dict(post_id=10, author_id=2, created_at=h(0), format="photo", topic=3, is_reshare=False, misinformation=True),
        dict(post_id=11, author_id=2, created_at=h(1), format="reel", topic=5, is_reshare=True, misinformation=True),
        dict(post_id=12, author_id=2, created_at=h(10), format="photo", topic=5, is_reshare=False, misinformation=True),
        dict(post_id=13, author_id=3, created_at=h(2), format="photo", topic=3, is_reshare=False, sensitive=True),
        dict(post_id=14, author_id=3, created_at=h(3), format="story", topic=7, is_reshare=False),
    ]
    for p in posts:
        defaults = {"duration_s": None, "audio_id": None, "has_location": False, **{f: False for f in CONTENT_FLAGS}}
        _insert(con, "posts", {**defaults, **p})
    impressions = [
        (1, 1, 13, h(5), True),  # viewer 1: not interested in author 3 and topic 3
        (2, 1, 11, h(10), True),  # at the time asked about: not yet
        (3, 1, 14, h(6), False),
        (4, 4, 10, h(1), True),  # another viewer's feedback
    ]
    for iid, user, post, ts, ni in impressions:
        labels = {a: (ni if a == "not_interested" else False) for a in ACTIONS}
        row = {"impression_id": iid, "user_id": user, "post_id": post, "surface": "explore", "ts": ts, "position": 0}
        _insert(con, "impressions", {**row, "device": "ios", **labels})
    return con


def _asked() -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [1, 1, 1, 4], "post_id": [10, 11, 14, 10], "author_id": [2, 2, 3, 2], "extra": ["a", "b", "c", "d"]}
    )


def test_rule_inputs_by_hand():
    out = rule_inputs(_store(), _asked(), at=h(10))
    assert out.columns == ["user_id", "post_id", "author_id", "extra", *RULE_INPUT_COLUMNS]
    assert out["extra"].to_list() == ["a", "b", "c", "d"]
    assert out["format"].to_list() == ["photo", "reel", "story", "photo"]
    assert out["topic"].to_list() == [3, 5, 7, 3]
    assert out["is_reshare"].to_list() == [False, True, False, False]
    assert out["misinformation"].to_list() == [True, True, False, True]
    assert out["sensitive"].to_list() == [False] * 4
    assert out["close_friend"].to_list() == [True, True, False, False]
    assert out["muted"].to_list() == [False, False, False, False]  # 1 -> 3 muted only at 10:00
    assert out["ni_author"].to_list() == [False, False, True, True]
    assert out["ni_topic"].to_list() == [True, False, False, True]  # topic 5 marked only at 10:00
    assert out["author_misinfo_posts"].to_list() == [2, 2, 0, 2]  # post 12 created at 10:00
    assert out["author_misinfo_posts"].dtype == pl.Int64 and out["topic"].dtype == pl.Int32


def test_rule_inputs_count_events_strictly_before_the_time():
    later = rule_inputs(_store(), _asked(), at=h(10) + timedelta(microseconds=1))
    assert later["muted"].to_list() == [False, False, True, False]
    assert later["ni_topic"].to_list() == [True, True, False, True]
    assert later["author_misinfo_posts"].to_list() == [3, 3, 0, 3]
    earlier = rule_inputs(_store(), _asked(), at=h(4))
    assert earlier["ni_author"].to_list() == [False, False, False, True]
    assert earlier["ni_topic"].to_list() == [False, False, False, True]


def test_rule_inputs_reject_posts_not_yet_created_and_keep_empty_frames_typed():
    asked = pl.DataFrame({"user_id": [1], "post_id": [12], "author_id": [2]})
    with pytest.raises(FeedlabError, match="12"):
        rule_inputs(_store(), asked, at=h(10))
    empty = rule_inputs(_store(), asked.clear(), at=h(10))
    assert empty.height == 0 and empty.columns[-1] == "author_misinfo_posts"
    with pytest.raises(FeedlabError, match="author_id"):
        rule_inputs(_store(), asked.drop("author_id"), at=h(10))


def test_rule_inputs_feed_the_surface_rules():
    con = _store()
    frame = rule_inputs(con, _asked(), at=h(10)).with_columns(score=pl.Series([1.0, 0.8, 0.6, 0.4]))
    out = apply_rules(frame, resolve_rules("explore"))
    by_post = {(r["user_id"], r["post_id"]): r for r in out.iter_rows(named=True)}
    assert by_post[(1, 14)]["removed"]  # not interested in author 3
    assert by_post[(1, 10)]["removed"]  # misinformation is not recommended on Explore
    assert by_post[(4, 10)]["removed"]


# ---------------------------------------------------------------------------------------------
# a simulated world


def test_smoke_on_the_small_world(small_world):
    at = small_world.sql("select max(ts) + interval 1 hour from impressions").fetchall()[0][0]
    frame = small_world.sql(
        """
        select i.user_id, i.post_id, p.author_id, hash(i.impression_id) % 1000 / 1000.0 - 0.2 as score
        from impressions i join posts p using (post_id)
        where i.user_id in (select distinct user_id from impressions order by user_id limit 6)
        qualify row_number() over (partition by i.user_id, i.post_id order by i.impression_id) = 1
        """
    ).pl()
    assert frame.height > 0
    inputs = rule_inputs(small_world, frame, at=at)
    for surface in ("feed", "stories", "explore", "reels"):
        out = apply_rules(inputs, resolve_rules(surface))
        assert out.height == frame.height
        for _, viewer in out.group_by("user_id"):
            kept = viewer.filter(~pl.col("removed"))
            assert sorted(kept["position"].to_list()) == list(range(kept.height))
            assert viewer.filter(pl.col("removed"))["position"].null_count() == viewer["removed"].sum()
        assert out.filter(pl.col("guideline_violation"))["removed"].all()
        assert out["user_id"].is_sorted()
    everything_off = {n: RuleSpec(n, False, s.params) for n, s in resolve_rules("feed").items()}
    plain = apply_rules(inputs, everything_off)
    assert plain["score"].to_list() == plain["base_score"].to_list()
    assert plain["rules"].list.len().sum() == 0
