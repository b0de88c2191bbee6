"""Surfaces as data (toolkit.rank.config) and the value model (toolkit.rank.value)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from toolkit.errors import FeedlabError
from toolkit.rank.config import (
    CONFIG_PATH,
    RULE_PARAMS,
    load_surfaces,
    parse_weights,
    resolve_rules,
    resolve_weights,
    surface_config,
)
from toolkit.rank.value import value_scores, weight_vector
from toolkit.store.schema import SURFACES


def test_every_surface_is_configured_with_reasons():
    surfaces = load_surfaces()
    assert list(surfaces) == list(SURFACES)
    for cfg in surfaces.values():
        assert cfg.candidate_sources and cfg.max_candidates > 0
        assert all(w.reason for w in cfg.weights.values())
        # negative actions take negative weights
        for action in ("not_interested", "report"):
            if action in cfg.weights:
                assert cfg.weights[action].weight < 0
        assert list(cfg.rules) == [r for r in RULE_PARAMS if r in cfg.rules]  # application order


def _top(surface: str, n: int) -> set[str]:
    weights = surface_config(surface).default_weights()
    return set(sorted(weights, key=lambda a: -weights[a] * (a not in ("not_interested", "report")))[:n])


def test_default_weights_lean_on_the_seeds_key_predictions():
    # Feed: "spend a few seconds, comment, like, reshare, tap the profile photo"
    feed = surface_config("feed").default_weights()
    assert _top("feed", 3) <= {"comment", "share", "profile_tap"}
    assert feed["dwell"] > 0 and feed["like"] > 0
    # Explore: like, save, share; Reels: watch-through, like, entertaining, audio page
    assert _top("explore", 3) <= {"like", "save", "share", "follow"}
    assert _top("reels", 3) <= {"watch_complete", "entertaining", "audio_page"}
    assert "entertaining" not in surface_config("feed").weights  # the survey runs on Reels only


def test_weight_overrides_are_plain_dicts_and_checked():
    assert resolve_weights("explore", {"save": 0}) == {**surface_config("explore").default_weights(), "save": 0.0}
    with pytest.raises(FeedlabError, match="does not weigh 'entertaining'"):
        resolve_weights("feed", {"entertaining": 1})
    with pytest.raises(FeedlabError, match="not an action"):
        resolve_weights("feed", {"likes": 1})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(FeedlabError, match="finite"):
            resolve_weights("feed", {"like": bad})
    with pytest.raises(FeedlabError, match="must be a number"):
        resolve_weights("feed", {"like": "2"})
    with pytest.raises(FeedlabError, match="unknown surface"):
        resolve_weights("timeline")


def test_rule_overrides_switch_and_parametrise():
    rules = resolve_rules("feed", {"author_diversity": False, "misinformation_demotion": {"factor": 0.1}})
    assert not rules["author_diversity"].enabled
    assert rules["misinformation_demotion"].params["factor"] == 0.1 and rules["misinformation_demotion"].enabled
    # a rule the surface does not configure can be switched on with its defaults
    assert resolve_rules("feed", {"reels_quality_filters": True})["reels_quality_filters"].params["flags"]
    with pytest.raises(FeedlabError, match="unknown rule 'shadowban'"):
        resolve_rules("feed", {"shadowban": True})
    with pytest.raises(FeedlabError, match="has no parameter"):
        resolve_rules("feed", {"close_friends_boost": {"boost": 2}})
    with pytest.raises(FeedlabError, match="finite"):
        resolve_rules("feed", {"close_friends_boost": {"factor": math.nan}})
    with pytest.raises(FeedlabError, match="mode"):
        resolve_rules("feed", {"author_diversity": {"mode": "shuffle"}})
    with pytest.raises(FeedlabError, match="content flags"):
        resolve_rules("reels", {"reels_quality_filters": {"flags": ["blurry"]}})


def test_a_broken_config_file_is_a_clear_error(tmp_path):
    text = CONFIG_PATH.read_text()
    bad = tmp_path / "s.toml"
    bad.write_text(text.replace('like = { weight = 2.0, reason = "one of Feed', 'likes = { weight = 2.0, reason = "one of Feed'))
    with pytest.raises(FeedlabError, match="unknown action 'likes'"):
        load_surfaces(bad)
    bad.write_text(text + "\n[timeline]\n")
    with pytest.raises(FeedlabError, match="unknown surface"):
        load_surfaces(bad)
    bad.write_text("[feed\n")
    with pytest.raises(FeedlabError, match="not valid TOML"):
        load_surfaces(bad)
    with pytest.raises(FeedlabError, match="no surface configuration"):
        load_surfaces(tmp_path / "missing.toml")


def test_parse_weights():
    assert parse_weights("like=2,comment=5") == {"like": 2.0, "comment": 5.0}
    assert parse_weights("") == {}
    with pytest.raises(FeedlabError, match="action=number"):
        parse_weights("like:2")
    with pytest.raises(FeedlabError, match="must be a number"):
        parse_weights("like=lots")


def test_value_scores_match_hand_computation():
    preds = pl.DataFrame({"p_like": [0.2, 0.5, None], "p_comment": [0.1, 0.0, 0.3], "p_report": [0.01, 0.0, 0.0]})
    out = value_scores(preds, {"like": 2.0, "comment": 5.0, "report": -100.0})
    assert out["score"].to_list() == pytest.approx([0.4 + 0.5 - 1.0, 1.0, 1.5])
    assert out["contribution_report"].to_list() == pytest.approx([-1.0, 0.0, 0.0])
    assert out["contribution_like"][2] == 0.0  # a null probability contributes nothing
    with pytest.raises(FeedlabError, match="no predictions for save"):
        value_scores(preds, {"save": 1.0})
    with pytest.raises(FeedlabError, match="at least one"):
        value_scores(preds, {})
    assert weight_vector({"comment": 5.0}, ["like", "comment"]).tolist() == [0.0, 5.0]
