"""Tune a surface's ranking policy by hand: action weights and rules, with what they change, at once.

:class:`WeightTuner` predicts once for a population of viewers (a :class:`toolkit.rank.RankingCache`)
and then, on every change of a weight, a rule or the viewer, re-ranks in numpy only: one
viewer's top ``k`` with every contribution and rule, how its order moved against the default
policy, and population metrics (:func:`toolkit.rank.population.population_metrics`) against
the defaults. Every control is an ipywidgets object whose observers run synchronously, so a
script (or a test) can set ``tuner.sliders["comment"].value = 10`` and read ``tuner.metrics``
on the next line, with no browser.

Example
-------
>>> from toolkit.widgets import WeightTuner
>>> tuner = WeightTuner("data/feedlab.duckdb", "explore", n_users=200)  # doctest: +SKIP
>>> tuner  # doctest: +SKIP
>>> tuner.sliders["save"].value = 12.0  # doctest: +SKIP
>>> tuner.metrics["expected_actions_per_session"]["save"]  # doctest: +SKIP
>>> text = tuner.export_policy()  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import ipywidgets as W
import numpy as np
import polars as pl
from traitlets import validate

from toolkit.charts import chart_outputs, rank_change_chart
from toolkit.errors import FeedlabError
from toolkit.predict.model import TrainedSurface
from toolkit.rank.config import AUTHOR_DIVERSITY_MODES, RULE_DEFAULTS, RULE_PARAMS, RuleSpec, surface_config
from toolkit.rank.population import author_followers, compare_metrics, flatten_metrics, population_metrics
from toolkit.rank.ranker import RankingCache, as_time, open_store

Store = str | os.PathLike | duckdb.DuckDBPyConnection

#: The slider of an action whose default weight is w spans [-WEIGHT_SPAN * |w|, WEIGHT_SPAN * |w|] ([-WEIGHT_SPAN, WEIGHT_SPAN] for w = 0).
WEIGHT_SPAN = 5.0
#: Rank-change charts kept for reuse (one per pair of orders).
_CHART_MEMO = 64
#: Choices of rule parameters that are words rather than numbers.
PARAM_CHOICES: dict[str, tuple[str, ...]] = {"mode": AUTHOR_DIVERSITY_MODES}

__all__ = ["PARAM_CHOICES", "WEIGHT_SPAN", "RuleControl", "WeightTuner", "most_active_viewers", "viewer_ranking"]


def most_active_viewers(
    store: Store, surface: str, n: int, *, at: str | date | datetime | None = None, seed: int = 0
) -> list[int]:
    """The ``n`` viewers with the most impressions on ``surface`` before ``at`` (default: all), most active first.

    Viewers with equal counts are ordered by a shuffle drawn with ``seed``, so the choice is
    deterministic and does not favour low user ids.

    Example
    -------
    >>> most_active_viewers("data/feedlab.duckdb", "explore", 3)  # doctest: +SKIP
    [812, 17, 4410]
    """
    surface_config(surface)  # an unknown surface is an error here, not an empty list
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FeedlabError(f"the number of viewers must be a whole number >= 1 (got {n!r})")
    with open_store(store) as con:
        when = as_time(at, con)
        counts = con.sql(
            "select user_id, count(*) as n from impressions where surface = ? and ts < ? group by user_id order by user_id",
            params=[surface, when],
        ).fetchnumpy()
    users, impressions = np.asarray(counts["user_id"], dtype=np.int64), np.asarray(counts["n"], dtype=np.int64)
    shuffled = np.random.default_rng(seed).permutation(users.size)
    order = shuffled[np.argsort(-impressions[shuffled], kind="stable")]
    return [int(u) for u in users[order[: int(n)]]]


# ---------------------------------------------------------------------------------------------
# controls that refuse bad values instead of clamping them


class _Guarded:
    """A bounded slider that refuses NaN and values outside [min, max] (ipywidgets clamps them silently).

    A refused value leaves the slider where it was, so no observer runs, and calls
    ``refused(slider, value)`` so that the owner can say why.
    """

    refused: Callable[[Any, Any], None] | None = None

    @validate("value")
    def _validate_value(self, proposal):
        value = proposal["value"]
        if value != value or value < self.min or value > self.max:  # NaN is not equal to itself
            if self.refused is not None:
                self.refused(self, value)
            return self.value
        return value


class GuardedFloatSlider(_Guarded, W.FloatSlider):
    """A FloatSlider that refuses NaN and out-of-range values rather than clamping them."""


class GuardedIntSlider(_Guarded, W.IntSlider):
    """An IntSlider that refuses out-of-range values rather than clamping them."""


@dataclass
class RuleControl:
    """The controls of one rule: ``enabled`` (a Checkbox) and a widget per parameter (``params``), laid out in ``box``."""

    enabled: W.Checkbox
    params: dict[str, W.ValueWidget]
    box: W.Box


def _check_sizes(k: Any, session: Any) -> None:
    for name, value in (("k", k), ("session", session)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FeedlabError(f"{name} must be a whole number >= 1 (got {value!r})")


def _weight_range(default: float) -> tuple[float, float, float]:
    """Slider min, max and step for an action whose default weight is ``default``."""
    span = WEIGHT_SPAN * (abs(default) or 1.0)
    return -span, span, _nice_step(2 * span / 200)


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``: steps a person can read."""
    exponent = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10**exponent >= raw:
            return float(m * 10**exponent)
    return float(10 ** (exponent + 1))


def _param_widget(name: str, kind: type, value: Any, rule: str) -> W.ValueWidget | None:
    """A control for one rule parameter, from its type in :data:`RULE_PARAMS`; None for lists (content flags)."""
    style = {"description_width": "90px"}
    layout = W.Layout(width="260px")
    if kind is float:
        top = max(1.0, 3.0 * float(value))
        return GuardedFloatSlider(
            value=float(value), min=0.0, max=top, step=0.05, description=name, continuous_update=False,
            tooltip=f"{rule}.{name}", style=style, layout=layout, readout_format=".2f",
        )  # fmt: skip
    if kind is int:
        top = max(5, 3 * int(value))
        return GuardedIntSlider(
            value=int(value), min=0, max=top, step=1, description=name, continuous_update=False,
            tooltip=f"{rule}.{name}", style=style, layout=layout,
        )  # fmt: skip
    if kind is str and name in PARAM_CHOICES:
        return W.Dropdown(options=list(PARAM_CHOICES[name]), value=value, description=name, style=style, layout=layout)
    return None


def viewer_ranking(cache: RankingCache, user_id: int, weights: Mapping[str, float] | None = None, *, k: int = 10) -> pl.DataFrame:
    """One cached viewer's top ``k`` (:meth:`RankingCache.rank`) with each post's ``format``.

    Example
    -------
    >>> viewer_ranking(cache, 17, {"save": 8.0}, k=10)  # doctest: +SKIP
    """
    if user_id not in cache._row_of:
        raise FeedlabError(f"viewer {user_id} is not in this cache")
    top = cache.rank(user_id, weights, k=k)
    if "format" not in cache.items.columns:
        return top.with_columns(pl.lit(None, dtype=pl.String).alias("format"))
    formats = cache.items.filter(pl.col("user_id") == user_id).select("post_id", "format")
    return top.join(formats, on="post_id", how="left", maintain_order="left")


# ---------------------------------------------------------------------------------------------
# HTML


def _cell(value: Any, fmt: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if fmt and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return format(value, fmt)
    return html.escape(str(value))


def html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, str | None]],
    *,
    title: str | None = None,
    css_class: str = "feedlab-table",
) -> str:
    """An HTML table of ``rows`` (dicts); ``columns`` are (key, header, format spec or None).

    Example
    -------
    >>> html_table([{"a": 1.23456}], [("a", "A", ".2f")])
    '<table class="feedlab-table" style="border-collapse:collapse;font-size:12px"><thead><tr><th style="padding:2px 6px;text-align:right">A</th></tr></thead><tbody><tr><td style="padding:2px 6px;text-align:right">1.23</td></tr></tbody></table>'
    """
    cell = "padding:2px 6px;text-align:right"
    head = "".join(f'<th style="{cell}">{html.escape(h)}</th>' for _, h, _ in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{cell}">{_cell(row.get(key), fmt)}</td>' for key, _, fmt in columns) + "</tr>"
        for row in rows
    )
    caption = f"<caption style=\"text-align:left;font-weight:bold\">{html.escape(title)}</caption>" if title else ""
    return (
        f'<table class="{css_class}" style="border-collapse:collapse;font-size:12px">{caption}'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def rules_text(entries: Iterable[Mapping[str, Any]] | None) -> str:
    """A ``rules`` list in short words: each rule and what it did, without the reason.

    Example
    -------
    >>> rules_text([{"rule": "misinformation_demotion", "effect": "demoted x0.30: labelled misinformation", "factor": 0.3}])
    'misinformation_demotion: demoted x0.30'
    """
    return "; ".join(f"{e['rule']}: {str(e['effect']).partition(': ')[0]}" for e in entries or [])


def _message_html(text: str, level: str) -> str:
    if not text:
        return ""
    color = {"error": "#b00020", "warning": "#8a5a00", "info": "#333"}[level]
    return f'<span style="color:{color}">{html.escape(text)}</span>'


# ---------------------------------------------------------------------------------------------
# the tuner


class WeightTuner:
    """Sliders for a surface's action weights and rules, with one viewer's ranking and population metrics.

    Builds one :class:`~toolkit.rank.RankingCache` for ``users`` (default: the ``n_users`` most
    active viewers of the surface, :func:`most_active_viewers` with ``seed``) at ``at`` (default:
    just after the store's last event), with a progress bar; XGBoost never runs again. Then every
    change re-ranks from the cache:

    * ``sliders[action]``: a FloatSlider per predicted action, spanning ``WEIGHT_SPAN`` times the
      default weight either side of 0 (the tooltip gives the weight's reason);
    * ``rule_controls[rule]``: a :class:`RuleControl` per rule (a Checkbox and a slider per numeric
      parameter, a Dropdown for ``author_diversity.mode``);
    * ``viewer``: a Dropdown of the cached viewers; ``reset_button``; ``policy_text`` with
      ``export_button`` / ``import_button`` for the policy as JSON.

    What they show, refreshed before an assignment to a control returns: ``ranking`` (the
    viewer's top ``k`` as :meth:`RankingCache.rank` gives it, plus ``format`` and ``rules_text``),
    ``table`` (it as HTML), ``chart`` (an Output holding the rank changes against the default
    policy, :func:`toolkit.charts.rank_change_chart`), ``metrics`` (population metrics over the
    cached viewers, top ``session`` slots), ``changes`` (their change against the defaults),
    ``metrics_table`` (both as HTML) and ``message`` (an HTML line for errors and warnings). A
    NaN, an infinite or an out-of-range value is refused with a message, and everything stays
    as it was. ``widget`` is the whole layout; a notebook shows the tuner itself.

    The chart is the one part not redrawn before an assignment returns: building an altair
    chart costs more than the rest of an update together, so with ``background_chart`` (the
    default) a worker thread draws it just after (the latest change wins); charts of orders
    already seen are reused. :meth:`wait_for_chart` waits for it; ``background_chart=False``
    draws it in the observer. ``timings`` holds the seconds of the last update of each kind
    (``weight``, ``rule``, ``viewer``; ``chart`` for the last chart drawn).

    Example
    -------
    >>> tuner = WeightTuner("data/feedlab.duckdb", "explore", n_users=200)  # doctest: +SKIP
    >>> tuner.set_weights({"comment": 10.0})  # doctest: +SKIP
    >>> tuner.rule_controls["author_diversity"].enabled.value = False  # doctest: +SKIP
    >>> tuner.ranking.select("position", "post_id", "rules_text")  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        surface: str,
        *,
        users: Iterable[int] | None = None,
        n_users: int = 200,
        at: str | date | datetime | None = None,
        k: int = 10,
        seed: int = 0,
        models: TrainedSurface | None = None,
        session: int = 50,
        progress: bool = True,
        background_chart: bool = True,
    ) -> None:
        _check_sizes(k, session)
        surface_config(surface)
        started = time.perf_counter()
        with open_store(store) as con:
            viewers = list(users) if users is not None else most_active_viewers(con, surface, n_users, at=at, seed=seed)
            if not viewers:
                raise FeedlabError("no viewers to tune for: pass users, or a store with impressions on this surface")
            cache = RankingCache.build(con, surface, viewers, at=at, models=models, progress=progress)
            authors = np.unique(cache.author_ids[cache.post_ids >= 0])
            followers = author_followers(con, authors.tolist(), cache.at)
        self._start(cache, cache, followers, k=k, session=session, background_chart=background_chart)
        self.build_seconds = time.perf_counter() - started

    @classmethod
    def from_cache(
        cls,
        cache: RankingCache,
        *,
        followers: pl.DataFrame | Mapping[int, int] | None = None,
        k: int = 10,
        session: int = 50,
        background_chart: bool = True,
    ) -> WeightTuner:
        """A tuner over a cache already built (its viewers, predictions and current rules); no store needed.

        The defaults that Reset returns to and that changes are measured against are the
        surface's default weights and rules. ``followers`` (author_id, followers; see
        :func:`~toolkit.rank.population.author_followers`) gives the small-creator share, NaN
        without it.

        Example
        -------
        >>> cache = RankingCache.build("data/feedlab.duckdb", "explore", viewers)  # doctest: +SKIP
        >>> tuner = WeightTuner.from_cache(cache)  # doctest: +SKIP
        """
        _check_sizes(k, session)
        cfg = surface_config(cache.surface)
        defaults: dict[str, Any] = {n: {"enabled": spec.enabled, **spec.params} for n, spec in cfg.rules.items()}
        defaults.update({n: False for n in cache.rules if n not in cfg.rules})
        tuner = cls.__new__(cls)
        tuner._start(cache.with_rules(defaults), cache, followers, k=k, session=session, background_chart=background_chart)
        tuner.build_seconds = 0.0
        return tuner

    def _start(self, default_cache, cache, followers, *, k: int, session: int, background_chart: bool) -> None:
        """Everything but the cache: defaults, state, widgets, the first drawing."""
        self.surface = cache.surface
        self.k, self.session = int(k), int(session)
        self._config = surface_config(cache.surface)
        self._default_cache = default_cache
        self._followers = followers
        self._cache = cache
        self._default_weights = default_cache.weights()
        self._weights = dict(self._default_weights)
        self._candidates = dict(cache.items.group_by("user_id").len().iter_rows()) if cache.items.height else {}
        self._default_metrics = population_metrics(
            default_cache, self._default_weights, k=self.k, session=self.session, followers=followers
        )
        threshold = self._default_metrics["small_creator_threshold"]
        self._threshold = None if math.isnan(threshold) else threshold
        self._default_rankings: dict[int, pl.DataFrame] = {}
        self._quiet = False
        self._chart_lock = threading.Lock()
        self._chart_generation = 0
        self._chart_memo: OrderedDict[tuple, tuple[dict[str, Any], ...]] = OrderedDict()
        self._chart_future: Future | None = None
        self._chart_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedlab-chart") if background_chart else None
        self.timings: dict[str, float] = {}
        self.ranking = pl.DataFrame()
        self.metrics: dict[str, Any] = {}
        self.changes: dict[str, float] = {}
        self._build_widgets()
        self._refresh()

    # -- widgets ------------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        cfg = self._config
        self.message = W.HTML(value="")
        self.message_level = ""  # "error", "warning" or "" (nothing to say)
        self.sliders: dict[str, GuardedFloatSlider] = {}
        for action, default in self._default_weights.items():
            low, high, step = _weight_range(default)
            slider = GuardedFloatSlider(
                value=default, min=low, max=high, step=step, description=action, continuous_update=False,
                tooltip=cfg.weights[action].reason, readout_format=".2f",
                style={"description_width": "110px"}, layout=W.Layout(width="340px"),
            )  # fmt: skip
            slider.refused = self._refused
            slider.observe(self._on_weight, names="value")
            self.sliders[action] = slider
        self.rule_controls: dict[str, RuleControl] = {}
        for rule, kinds in RULE_PARAMS.items():
            spec = self._cache.rules.get(rule) or RuleSpec(rule, False, dict(RULE_DEFAULTS.get(rule, {})))
            box = W.Checkbox(value=spec.enabled, description=rule, indent=False, layout=W.Layout(width="230px"))
            box.observe(self._on_rule, names="value")
            params: dict[str, W.ValueWidget] = {}
            for name, kind in kinds.items():
                widget = _param_widget(name, kind, spec.params[name], rule)
                if widget is None:
                    continue
                if isinstance(widget, _Guarded):
                    widget.refused = self._refused
                widget.observe(self._on_rule, names="value")
                params[name] = widget
            self.rule_controls[rule] = RuleControl(box, params, W.HBox([box, *params.values()]))
        options = [(f"user {u} ({self._candidates.get(int(u), 0)} candidates)", int(u)) for u in self._cache.user_ids]
        self.viewer = W.Dropdown(options=options, value=int(self._cache.user_ids[0]), description="viewer")
        self.viewer.observe(self._on_viewer, names="value")
        self.reset_button = W.Button(description="Reset to defaults", tooltip="default weights and rules of the surface")
        self.reset_button.on_click(lambda _: self._guarded(self.reset))
        self.policy_text = W.Textarea(placeholder='{"surface": ..., "weights": {...}, "rules": {...}}', layout=W.Layout(width="100%", height="120px"))
        self.export_button = W.Button(description="Export policy", tooltip="write the current policy as JSON into the box")
        self.import_button = W.Button(description="Import policy", tooltip="apply the JSON policy in the box")
        self.export_button.on_click(lambda _: self._guarded(lambda: setattr(self.policy_text, "value", self.export_policy())))
        self.import_button.on_click(lambda _: self._guarded(lambda: self.import_policy(self.policy_text.value)))
        self.table = W.HTML()
        self.chart = W.Output(layout=W.Layout(min_width="360px"))
        self.metrics_table = W.HTML()
        title = W.HTML(
            f"<b>{html.escape(self.surface)}</b>: {len(self._cache.user_ids)} viewers at {self._cache.at:%Y-%m-%d %H:%M}; "
            f"score = sum of weight x predicted probability, then the rules"
        )
        weights_box = W.VBox([W.HTML("<b>Weights</b>"), *self.sliders.values()])
        rules_box = W.VBox([W.HTML("<b>Rules</b>"), *(c.box for c in self.rule_controls.values())])
        policy_box = W.VBox([W.HBox([self.export_button, self.import_button]), self.policy_text])
        self.widget = W.VBox(
            [
                title,
                W.HBox([weights_box, rules_box]),
                W.HBox([self.viewer, self.reset_button]),
                self.message,
                W.HBox([self.table, self.chart]),
                self.metrics_table,
                policy_box,
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- state --------------------------------------------------------------------------------

    @property
    def weights(self) -> dict[str, float]:
        """The current weight of every predicted action."""
        return dict(self._weights)

    @property
    def rules(self) -> dict[str, dict[str, Any]]:
        """The current rules as plain data: rule -> {"enabled": ..., parameters}."""
        return {name: {"enabled": spec.enabled, **spec.params} for name, spec in self._cache.rules.items()}

    @property
    def policy(self) -> dict[str, Any]:
        """The current policy as plain data: {"surface", "weights", "rules"} (what :meth:`export_policy` writes)."""
        return {"surface": self.surface, "weights": self.weights, "rules": self.rules}

    @property
    def cache(self) -> RankingCache:
        """The ranking cache with the current rules."""
        return self._cache

    # -- changing the policy ------------------------------------------------------------------

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Change some weights (action -> number) at once, each checked; a bad one changes nothing and raises FeedlabError."""
        try:
            checked = self._check_weights(weights)
        except FeedlabError as exc:
            self._say(str(exc), "error")
            raise
        self._apply(weights={**self._weights, **checked})

    def set_rules(self, rules: Mapping[str, bool | Mapping[str, Any]]) -> None:
        """Change some rules, as :meth:`RankingCache.with_rules` takes them; a bad change changes nothing and raises FeedlabError."""
        try:
            cache = self._cache.with_rules(rules)
            self._check_rule_ranges(cache.rules)
        except FeedlabError as exc:
            self._say(str(exc), "error")
            raise
        self._apply(cache=cache)

    def reset(self) -> None:
        """Back to the surface's default weights and rules (the viewer stays)."""
        self._apply(weights=dict(self._default_weights), cache=self._default_cache)

    def export_policy(self, path: str | os.PathLike | None = None) -> str:
        """The current policy as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.policy, indent=2, sort_keys=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def import_policy(self, text_or_path: str | os.PathLike) -> None:
        """Apply a policy exported by :meth:`export_policy`: JSON text, or the path of a file holding it.

        Weights an import leaves out take their defaults, rules it leaves out keep the surface's
        configuration. Everything is checked first (the surface, known actions, finite numbers
        within the sliders' ranges, rules and parameters); bad input changes nothing and raises
        FeedlabError, with the reason in ``message`` too.
        """
        try:
            policy = self._read_policy(text_or_path)
            weights = {**self._default_weights, **self._check_weights(policy.get("weights") or {})}
            rules = policy.get("rules") or {}
            if not isinstance(rules, Mapping):
                raise FeedlabError("the policy's rules must be a JSON object: rule -> true, false or {parameters}")
            cache = self._default_cache.with_rules(rules)
            self._check_rule_ranges(cache.rules)
        except FeedlabError as exc:
            self._say(str(exc), "error")
            raise
        self._apply(weights=weights, cache=cache)

    def _read_policy(self, text_or_path: str | os.PathLike) -> dict[str, Any]:
        if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str) and not text_or_path.lstrip().startswith("{")):
            path = Path(text_or_path)
            if not path.is_file():
                raise FeedlabError(f"a policy is JSON text or the path of a JSON file; {str(text_or_path)[:80]!r} is neither")
            text = path.read_text()
        elif isinstance(text_or_path, str):
            text = text_or_path
        else:
            raise FeedlabError(f"a policy is JSON text or a path (got {type(text_or_path).__name__})")
        try:
            policy = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeedlabError(f"the policy is not valid JSON: {exc}") from None
        if not isinstance(policy, dict):
            raise FeedlabError("a policy is a JSON object with surface, weights and rules")
        unknown = sorted(set(policy) - {"surface", "weights", "rules"})
        if unknown:
            raise FeedlabError(f"a policy has only surface, weights and rules (got also {', '.join(unknown)})")
        if policy.get("surface") != self.surface:
            raise FeedlabError(f"the policy is for {policy.get('surface')!r}; this tuner ranks {self.surface}")
        if not isinstance(policy.get("weights") or {}, Mapping):
            raise FeedlabError("the policy's weights must be a JSON object: action -> number")
        return policy

    def _check_weights(self, weights: Mapping[str, Any]) -> dict[str, float]:
        """``weights`` as floats, each a known action with a finite value within its slider's range."""
        if not isinstance(weights, Mapping):
            raise FeedlabError(f"weights are a mapping action -> number (got {type(weights).__name__})")
        out = {}
        for action, value in weights.items():
            if action not in self.sliders:
                raise FeedlabError(f"{self.surface} has no predicted action {action!r}; actions: {', '.join(self.sliders)}")
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise FeedlabError(f"the weight of {action} must be a number (got {value!r})")
            value = float(value)
            slider = self.sliders[action]
            if not math.isfinite(value):
                raise FeedlabError(f"the weight of {action} must be a finite number (got {value}); kept {self._weights[action]:g}")
            if not slider.min <= value <= slider.max:
                raise FeedlabError(
                    f"the weight of {action} must lie in [{slider.min:g}, {slider.max:g}] (got {value:g}); kept {self._weights[action]:g}"
                )
            out[action] = value
        return out

    def _check_rule_ranges(self, specs: Mapping[str, RuleSpec]) -> None:
        """Every numeric rule parameter within its control's range (a control cannot show another value)."""
        for name, spec in specs.items():
            for param, widget in self.rule_controls[name].params.items():
                value = spec.params.get(param)
                if isinstance(widget, _Guarded) and not widget.min <= value <= widget.max:
                    raise FeedlabError(f"{name}.{param} must lie in [{widget.min:g}, {widget.max:g}] (got {value!r})")

    def _apply(self, *, weights: dict[str, float] | None = None, cache: RankingCache | None = None) -> None:
        """Take new weights and/or rules, move the controls to them (quietly) and refresh once."""
        if weights is not None:
            self._weights = dict(weights)
        if cache is not None:
            self._cache = cache
        with self._silenced():
            for action, slider in self.sliders.items():
                slider.value = self._weights[action]
            self._show_rules(self._cache.rules)
        self._refresh()

    def _show_rules(self, specs: Mapping[str, RuleSpec]) -> None:
        for name, control in self.rule_controls.items():
            spec = specs.get(name) or RuleSpec(name, False, dict(RULE_DEFAULTS.get(name, {})))
            control.enabled.value = spec.enabled
            for param, widget in control.params.items():
                widget.value = spec.params[param]

    @contextmanager
    def _silenced(self):
        """Controls set inside do not trigger a refresh each (the caller refreshes once)."""
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    # -- observers: never let an exception out, say it instead --------------------------------

    def _guarded(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except FeedlabError as exc:
            self._say(str(exc), "error")
        except Exception as exc:  # noqa: BLE001 - an observer must not raise into the widget machinery
            self._say(f"unexpected error: {type(exc).__name__}: {exc}", "error")

    def _refused(self, widget: Any, value: Any) -> None:
        what = f"the weight of {widget.description}" if widget in self.sliders.values() else widget.tooltip or widget.description
        self._say(f"refused {value!r} for {what}: it must be a number in [{widget.min:g}, {widget.max:g}]; kept {widget.value:g}", "error")

    def _on_weight(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        action = change["owner"].description
        started = time.perf_counter()
        self._guarded(lambda: self._apply(weights={**self._weights, action: float(change["new"])}))
        self.timings["weight"] = time.perf_counter() - started

    def _on_rule(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        started = time.perf_counter()

        def apply() -> None:
            try:
                cache = self._cache.with_rules(self._control_overrides())
            except FeedlabError:
                with self._silenced():  # put the control back where the rules still are
                    self._show_rules(self._cache.rules)
                raise
            self._apply(cache=cache)

        self._guarded(apply)
        self.timings["rule"] = time.perf_counter() - started

    def _on_viewer(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        started = time.perf_counter()
        self._guarded(lambda: self._refresh(population=False))
        self.timings["viewer"] = time.perf_counter() - started

    def _control_overrides(self) -> dict[str, dict[str, Any]]:
        """The rules whose controls differ from the current rules, as overrides."""
        out: dict[str, dict[str, Any]] = {}
        for name, control in self.rule_controls.items():
            spec = self._cache.rules.get(name)
            wanted = {"enabled": bool(control.enabled.value), **{p: w.value for p, w in control.params.items()}}
            current = {"enabled": spec.enabled, **spec.params} if spec is not None else None
            if current is None and not wanted["enabled"]:
                continue  # an unconfigured rule left off: nothing to add
            if current is None or any(current.get(key) != value for key, value in wanted.items()):
                out[name] = wanted
        return out

    # -- what the controls show ---------------------------------------------------------------

    def _say(self, text: str, level: str = "info") -> None:
        self.message.value = _message_html(text, level)
        self.message_level = level if text else ""

    def _refresh(self, *, population: bool = True) -> None:
        """Re-rank the viewer (and, unless only the viewer changed, the population) and redraw."""
        if population:
            self.metrics = population_metrics(
                self._cache, self._weights, k=self.k, session=self.session, followers=self._followers,
                small_creator_followers=self._threshold,
            )  # fmt: skip
            self.changes = compare_metrics(self._default_metrics, self.metrics)
            self.metrics_table.value = self._metrics_html()
        warning = self._refresh_viewer()
        self._say(warning, "warning")

    def _refresh_viewer(self) -> str:
        """Redraw the viewer's table and chart; returns a warning (empty when there is none)."""
        user = int(self.viewer.value)
        self.ranking = self._ranking(self._cache, self._weights, user)
        if self.ranking.height == 0:
            self.table.value = ""
            self._clear_chart()
            n = self._candidates.get(user, 0)
            if n == 0:
                return f"viewer {user} has no candidates on {self.surface} at {self._cache.at:%Y-%m-%d %H:%M}: nothing to rank"
            return f"every one of viewer {user}'s {n} candidates is removed by the rules: nothing to show"
        self.table.value = self._ranking_html(user)
        self._draw_chart(self._positions(self._default_ranking(user)), self._positions(self.ranking))
        return ""

    # -- the rank-change chart: off the observer's path ---------------------------------------
    #
    # Building an altair chart and its Vega-Lite spec takes 100-200 ms, more than the rest of an
    # update together, so a worker thread draws it after the observer returns (latest change
    # wins: a job that a newer change superseded is dropped), and charts already drawn for the
    # same two orders are reused.

    def _draw_chart(self, before: pl.DataFrame, after: pl.DataFrame) -> None:
        key = (tuple(before["post_id"].to_list()), tuple(after["post_id"].to_list()))
        with self._chart_lock:
            self._chart_generation += 1
            generation = self._chart_generation
            drawn = self._chart_memo.get(key)
            if drawn is not None:
                self._chart_memo.move_to_end(key)
        if drawn is not None:
            self._set_chart(generation, drawn)
        elif self._chart_pool is None:
            self._chart_job(generation, key, before, after)
        else:
            self._chart_future = self._chart_pool.submit(self._chart_job, generation, key, before, after)

    def _chart_job(self, generation: int, key: tuple, before: pl.DataFrame, after: pl.DataFrame) -> None:
        if generation != self._chart_generation:
            return  # a newer change will draw its own chart
        started = time.perf_counter()
        try:
            chart = rank_change_chart(before, after, k=self.k, label="label", before_name="default policy", after_name="this policy")
            outputs = chart_outputs(chart, validate=False)  # validation is most of the time; tests validate this chart
            with self._chart_lock:
                self._chart_memo[key] = outputs
                while len(self._chart_memo) > _CHART_MEMO:
                    self._chart_memo.popitem(last=False)
        except Exception as exc:  # noqa: BLE001 - a worker has no caller to raise to: show it instead
            outputs = ({"output_type": "display_data", "data": {"text/plain": f"no chart: {type(exc).__name__}: {exc}"}, "metadata": {}},)
        self.timings["chart"] = time.perf_counter() - started
        self._set_chart(generation, outputs)

    def _set_chart(self, generation: int, outputs: tuple[dict[str, Any], ...]) -> None:
        with self._chart_lock:
            if generation == self._chart_generation:
                self.chart.outputs = outputs

    def _clear_chart(self) -> None:
        with self._chart_lock:
            self._chart_generation += 1
            self.chart.outputs = ()

    def wait_for_chart(self, timeout: float | None = 30.0) -> None:
        """Block until the rank-change chart of the last change is drawn (scripts and tests; a notebook need not)."""
        future = self._chart_future
        if future is not None:
            future.result(timeout=timeout)

    def _ranking(self, cache: RankingCache, weights: Mapping[str, float], user: int) -> pl.DataFrame:
        top = viewer_ranking(cache, user, weights, k=self.k)
        texts = pl.Series("rules_text", [rules_text(r) for r in top["rules"].to_list()], dtype=pl.String)
        return top.with_columns(texts)

    def _default_ranking(self, user: int) -> pl.DataFrame:
        if user not in self._default_rankings:
            self._default_rankings[user] = self._ranking(self._default_cache, self._default_weights, user)
        return self._default_rankings[user]

    @staticmethod
    def _positions(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select(
            "post_id", "position", pl.format("post {} by {}", pl.col("post_id"), pl.col("author_id")).alias("label")
        )

    def _ranking_html(self, user: int) -> str:
        actions = list(self._weights)
        rows = [
            {**row, "rank": row["position"] + 1, **{f"c_{a}": row[f"contribution_{a}"] for a in actions}}
            for row in self.ranking.drop("rules").iter_rows(named=True)
        ]
        columns = [("rank", "#", None), ("post_id", "post", None), ("author_id", "author", None), ("format", "format", None),
                   ("score", "score", ".3f"), *((f"c_{a}", a, ".3f") for a in actions), ("rules_text", "rules", None)]  # fmt: skip
        title = f"Top {self.k} for viewer {user} (contributions = weight x predicted probability)"
        return html_table(rows, columns, title=title, css_class="feedlab-table feedlab-ranking")  # the browser test finds it by class

    def _metrics_html(self) -> str:
        default, current = flatten_metrics(self._default_metrics), flatten_metrics(self.metrics)
        rows = [
            {"metric": key, "default": default[key], "now": current[key], "change": self.changes.get(key)}
            for key in current
            if key in default and key not in ("viewers", "empty_viewers", "small_creator_threshold")
        ]
        title = f"Population: {self.metrics['viewers']} viewers, top {self.session} (attention-weighted) and top {self.k}"
        return html_table(rows, [("metric", "metric", None), ("default", "default", ".4g"), ("now", "now", ".4g"), ("change", "change", "+.4g")], title=title)
