"""Surfaces as data: candidate sources, action weights with reasons, and rule parameters.

Everything a surface's ranking depends on is read from ``surfaces.toml`` in this package into
typed, frozen objects. A study changes weights or rules with plain dicts, checked here so that a
typo is a clear error rather than a silently ignored key.

Example
-------
>>> from toolkit.rank.config import surface_config, resolve_weights, resolve_rules
>>> feed = surface_config("feed")
>>> feed.candidate_sources
('followed_recent',)
>>> feed.weights["comment"].weight, feed.weights["comment"].reason.split(";")[0]
(6.0, "one of Feed's five key predictions")
>>> resolve_weights("feed", {"like": 5})["like"]
5.0
>>> resolve_rules("feed", {"author_diversity": False})["author_diversity"].enabled
False
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Mapping

from toolkit.errors import FeedlabError
from toolkit.store.schema import ACTIONS, CONTENT_FLAGS, SURFACES

CONFIG_PATH = Path(__file__).with_name("surfaces.toml")

#: Every rule, in the order the ranker applies them, with the parameters it takes and their types.
#: (``enabled`` is common to all.) ``toolkit.rank.rules`` implements each; a test keeps both equal.
RULE_PARAMS: dict[str, dict[str, type]] = {
    "guideline_removal": {},
    "recommendation_guidelines": {"flags": list},
    "reels_quality_filters": {"flags": list},
    "mute_removal": {},
    "not_interested_suppression": {"author_factor": float, "topic_factor": float},
    "misinformation_demotion": {"factor": float},
    "repeat_offender_demotion": {"min_labelled_posts": int, "factor": float},
    "reshare_multiplier": {"factor": float},
    "close_friends_boost": {"factor": float},
    "author_diversity": {"mode": str, "decay": float, "floor": float, "max_in_row": int},
}
#: Defaults of parameters a surface's TOML may leave out.
RULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "recommendation_guidelines": {"flags": ["sensitive", "misinformation"]},
    "reels_quality_filters": {
        "flags": ["low_resolution", "watermarked", "muted_audio", "has_borders", "mostly_text", "political"]
    },
    "not_interested_suppression": {"author_factor": 0.0, "topic_factor": 0.5},
    "misinformation_demotion": {"factor": 0.3},
    "repeat_offender_demotion": {"min_labelled_posts": 2, "factor": 0.5},
    "reshare_multiplier": {"factor": 1.0},
    "close_friends_boost": {"factor": 1.5},
    "author_diversity": {"mode": "decay", "decay": 0.5, "floor": 0.25, "max_in_row": 1},
}
AUTHOR_DIVERSITY_MODES = ("decay", "max_in_row")
#: Candidate sources a surface may name (``toolkit.rank.candidates`` implements each).
CANDIDATE_SOURCES = ("followed_recent", "followed_stories", "coengaged_accounts", "audio_coengaged", "popular_recent")


@dataclass(frozen=True)
class ActionWeight:
    """The weight of one predicted action in a surface's score, and why."""

    weight: float
    reason: str


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a surface: whether it runs, and its parameters."""

    name: str
    enabled: bool
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SurfaceConfig:
    """How one surface sources candidates, scores them and applies its rules."""

    name: str
    description: str
    candidate_sources: tuple[str, ...]
    candidate_window_hours: float
    max_candidates: int
    weights: Mapping[str, ActionWeight]
    rules: Mapping[str, RuleSpec]
    #: further candidate parameters (coengagement_lookback_days, popular_posts, ...)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the position-attention model policies are scored with: P(look at position k) = 1 / (1 + k / tau) ** power
    attention: Mapping[str, float] = field(default_factory=lambda: {"tau": 10.0, "power": 0.8})

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions this surface weighs, in :data:`ACTIONS` order."""
        return tuple(a for a in ACTIONS if a in self.weights)

    def default_weights(self) -> dict[str, float]:
        """The surface's weights as a plain dict."""
        return {a: self.weights[a].weight for a in self.actions}


def load_surfaces(path: str | Path | None = None) -> dict[str, SurfaceConfig]:
    """Every surface's configuration from a TOML file (default: the package's ``surfaces.toml``)."""
    path = Path(path) if path is not None else CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FeedlabError(f"no surface configuration at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FeedlabError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(SURFACES))
    if unknown:
        raise FeedlabError(f"{path}: unknown surface(s) {', '.join(unknown)}; surfaces are {', '.join(SURFACES)}")
    return {name: _surface(name, raw[name], path) for name in SURFACES if name in raw}


def _surface(name: str, raw: dict, path: Path) -> SurfaceConfig:
    where = f"{path.name} [{name}]"
    raw = dict(raw)
    try:
        weights_raw = raw.pop("weights")
        rules_raw = raw.pop("rules", {})
        sources = tuple(raw.pop("candidate_sources"))
        window = float(raw.pop("candidate_window_hours"))
        max_candidates = int(raw.pop("max_candidates"))
        description = str(raw.pop("description", ""))
        attention_raw = raw.pop("attention", {"tau": 10.0, "power": 0.8})
        attention = {key: _finite(attention_raw[key], f"{where} attention.{key}") for key in ("tau", "power")}
    except KeyError as exc:
        raise FeedlabError(f"{where}: missing {exc.args[0]!r}") from None
    bad_sources = [s for s in sources if s not in CANDIDATE_SOURCES]
    if bad_sources:
        raise FeedlabError(f"{where}: unknown candidate source(s) {bad_sources}; choose from {', '.join(CANDIDATE_SOURCES)}")
    weights = {}
    for action, spec in weights_raw.items():
        if action not in ACTIONS:
            raise FeedlabError(f"{where}: unknown action {action!r} in weights; actions are {', '.join(ACTIONS)}")
        if not isinstance(spec, dict) or "weight" not in spec or not spec.get("reason"):
            raise FeedlabError(f"{where}: the weight of {action} needs a number 'weight' and a one-line 'reason'")
        weights[action] = ActionWeight(_finite(spec["weight"], f"{where} weight of {action}"), str(spec["reason"]))
    rules = {}
    for rule, spec in rules_raw.items():
        spec = dict(spec)
        enabled = spec.pop("enabled", True)
        rules[rule] = _rule(rule, bool(enabled), {**RULE_DEFAULTS.get(rule, {}), **spec}, where)
    return SurfaceConfig(
        name=name,
        description=description,
        candidate_sources=sources,
        candidate_window_hours=window,
        max_candidates=max_candidates,
        weights=weights,
        rules={n: rules[n] for n in RULE_PARAMS if n in rules},  # in the order they are applied
        options=raw,
        attention=attention,
    )


def _rule(rule: str, enabled: bool, params: dict, where: str) -> RuleSpec:
    if rule not in RULE_PARAMS:
        raise FeedlabError(f"{where}: unknown rule {rule!r}; rules are {', '.join(RULE_PARAMS)}")
    expected = RULE_PARAMS[rule]
    unknown = sorted(set(params) - set(expected))
    if unknown:
        known = ", ".join(expected) or "none"
        raise FeedlabError(f"{where}: rule {rule} has no parameter(s) {', '.join(unknown)} (parameters: {known})")
    missing = sorted(set(expected) - set(params))
    if missing:
        raise FeedlabError(f"{where}: rule {rule} needs parameter(s) {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key, kind in expected.items():
        value = params[key]
        if kind is float:
            value = _finite(value, f"{where} {rule}.{key}")
            if value < 0:
                raise FeedlabError(f"{where}: {rule}.{key} must be >= 0 (got {value})")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FeedlabError(f"{where}: {rule}.{key} must be a whole number >= 0 (got {value!r})")
        elif kind is list:
            if not isinstance(value, (list, tuple)) or any(v not in CONTENT_FLAGS for v in value):
                raise FeedlabError(f"{where}: {rule}.{key} must list content flags from {', '.join(CONTENT_FLAGS)}")
            value = list(value)
        else:
            value = str(value)
        out[key] = value
    if rule == "author_diversity" and out["mode"] not in AUTHOR_DIVERSITY_MODES:
        raise FeedlabError(f"{where}: author_diversity.mode must be one of {', '.join(AUTHOR_DIVERSITY_MODES)}")
    if rule == "author_diversity" and out["max_in_row"] < 1:
        raise FeedlabError(f"{where}: author_diversity.max_in_row must be at least 1 (got {out['max_in_row']})")
    return RuleSpec(rule, enabled, out)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FeedlabError(f"{what} must be a number (got {value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise FeedlabError(f"{what} must be a finite number (got {value})")
    return value


@cache
def _default_surfaces() -> dict[str, SurfaceConfig]:
    return load_surfaces()


def surface_config(surface: str, *, config: Mapping[str, SurfaceConfig] | None = None) -> SurfaceConfig:
    """One surface's configuration (from ``config``, by default the package's ``surfaces.toml``)."""
    surfaces = _default_surfaces() if config is None else config
    if surface not in surfaces:
        raise FeedlabError(f"unknown surface {surface!r}; choose one of {', '.join(surfaces)}")
    return surfaces[surface]


def resolve_weights(surface: str | SurfaceConfig, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The surface's default weights updated with ``overrides`` (action -> weight), checked.

    An action the surface does not weigh, a non-number, NaN or infinity is a FeedlabError.
    """
    cfg = surface if isinstance(surface, SurfaceConfig) else surface_config(surface)
    weights = cfg.default_weights()
    for action, value in (overrides or {}).items():
        if action not in weights:
            hint = "" if action in ACTIONS else " (not an action)"
            raise FeedlabError(
                f"{cfg.name} does not weigh {action!r}{hint}; its actions are {', '.join(cfg.actions)}"
            )
        weights[action] = _finite(value, f"the weight of {action}")
    return weights


def resolve_rules(
    surface: str | SurfaceConfig, overrides: Mapping[str, bool | Mapping[str, Any]] | None = None
) -> dict[str, RuleSpec]:
    """The surface's rules updated with ``overrides``, in the order they are applied.

    An override is ``rule: False`` / ``True`` (switch it off or on) or ``rule: {param: value}``
    (may include ``enabled``). A rule the surface does not configure can be switched on with
    its default parameters. Unknown rules or parameters are a FeedlabError.
    """
    cfg = surface if isinstance(surface, SurfaceConfig) else surface_config(surface)
    rules = dict(cfg.rules)
    for rule, change in (overrides or {}).items():
        if rule not in RULE_PARAMS:
            raise FeedlabError(f"unknown rule {rule!r}; rules are {', '.join(RULE_PARAMS)}")
        current = rules.get(rule) or RuleSpec(rule, False, dict(RULE_DEFAULTS.get(rule, {})))
        if isinstance(change, bool):
            rules[rule] = replace(current, enabled=change)
            continue
        if not isinstance(change, Mapping):
            raise FeedlabError(f"the override of rule {rule} must be True, False or a dict of parameters (got {change!r})")
        change = dict(change)
        enabled = bool(change.pop("enabled", True))
        rules[rule] = _rule(rule, enabled, {**current.params, **change}, "rule override")
    return {name: rules[name] for name in RULE_PARAMS if name in rules}


def parse_weights(text: str) -> dict[str, float]:
    """``"like=2,comment=5"`` as ``{"like": 2.0, "comment": 5.0}`` (the command line's --weights).

    Example
    -------
    >>> parse_weights("like=2, comment=-0.5")
    {'like': 2.0, 'comment': -0.5}
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise FeedlabError(f"weights are action=number pairs separated by commas, like like=2,comment=5 (got {part!r})")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise FeedlabError(f"the weight of {name.strip()} must be a number (got {value.strip()!r})") from None
    return out
