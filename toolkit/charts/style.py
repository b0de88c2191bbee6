"""The one look every feedlab chart shares, shared input checks, and offline display in JupyterLab.

Every chart function builds an unconfigured chart and passes it through :func:`finish`, which
applies :data:`FEEDLAB_CONFIG` with ``.configure(...)``. Nothing here touches altair's global
state on import: no theme and no renderer is enabled until a notebook calls
:func:`use_offline_renderer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Union

import altair as alt
import polars as pl
from altair.vegalite.v6.display import VEGALITE_MIME_TYPE

from toolkit.errors import FeedlabError

#: Anything a chart function may return: configured charts of every composition kind.
ChartLike = Union[alt.Chart, alt.LayerChart, alt.HConcatChart, alt.VConcatChart, alt.ConcatChart, alt.FacetChart]

#: The most rows any chart embeds; every function aggregates (bins, downsamples, takes a top N)
#: to stay under it, and altair's own data transformer refuses more at ``to_dict()`` anyway.
MAX_ROWS = 5_000

#: Mimetype JupyterLab 4.6 renders with its bundled Vega-Lite (5.6.1). JupyterLab has no renderer
#: for Vega-Lite v6 mimetypes (it knows vegalite v3/v4/v5+json and vega v5+json only), so the
#: bundle carries the spec under this key; the specs use nothing that needs Vega-Lite 6.
JUPYTERLAB_MIME_TYPE = "application/vnd.vegalite.v5+json"
#: What altair 6 itself emits (note ``.json``, not ``+json``). Not put in the bundle: nbformat
#: allows JSON objects only under ``*+json`` keys, so nbclient and nbconvert refuse such outputs.
ALTAIR_MIME_TYPE = VEGALITE_MIME_TYPE
_V5_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"

FONT = "Inter, Helvetica Neue, Arial, sans-serif"

#: The shared look, applied by every chart function with ``chart.configure(**FEEDLAB_CONFIG)``.
FEEDLAB_CONFIG: dict[str, Any] = {
    "font": FONT,
    "background": "white",
    "padding": 8,
    "title": {"fontSize": 14, "fontWeight": 600, "anchor": "start", "color": "#222", "subtitleColor": "#666"},
    "axis": {
        "labelFontSize": 11,
        "titleFontSize": 12,
        "titleFontWeight": 500,
        "titleColor": "#333",
        "labelColor": "#444",
        "gridColor": "#e6e6e6",
        "domainColor": "#999",
        "tickColor": "#999",
        "labelLimit": 220,
    },
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": 500, "labelLimit": 220},
    "header": {"labelFontSize": 12, "titleFontSize": 12, "labelFontWeight": 500},
    "view": {"stroke": None, "continuousWidth": 360, "continuousHeight": 240},
    "range": {"category": {"scheme": "tableau10"}},
    "bar": {"cornerRadiusEnd": 1},
    "line": {"strokeWidth": 2},
}

#: Signal families in a fixed order with fixed colours, so "author" is one colour in every chart.
FAMILY_LABELS: dict[str, str] = {
    "post": "post",
    "author": "author",
    "viewer": "viewer",
    "viewer_author": "viewer × author",
    "context": "context",
}
FAMILY_COLORS: dict[str, str] = {
    "post": "#4c78a8",
    "author": "#f58518",
    "viewer": "#54a24b",
    "viewer × author": "#b279a2",
    "context": "#9d755d",
    "other": "#bab0ac",
}

#: Readable names of metrics and columns that appear on axes and in legends.
LABELS: dict[str, str] = {
    "gain": "gain",
    "mean_abs_shap": "mean |SHAP|",
    "score": "score",
    "base_score": "score before rules",
    "ndcg_at_k": "NDCG@k",
    "expected_value_per_session": "expected value / session",
    "distinct_authors_at_k": "distinct authors in top k",
    "author_exposure_gini": "author exposure Gini",
    "small_creator_exposure_share": "small-creator exposure share",
    "small_creator_threshold": "small-creator threshold (followers)",
    "flagged_share_at_k": "flagged share of top k",
    "sessions": "sessions",
    "ndcg_sessions": "sessions in NDCG",
    "post_id": "post",
    "author_id": "author",
    "exposure": "exposure",
}


def label(name: str) -> str:
    """A readable axis or legend title for a column or metric name.

    Example
    -------
    >>> label("mean_abs_shap"), label("expected_like"), label("p_like")
    ('mean |SHAP|', 'expected like / session', 'P(like)')
    """
    if name in LABELS:
        return LABELS[name]
    if name.startswith("expected_"):
        return f"expected {name.removeprefix('expected_').replace('_', ' ')} / session"
    if name.startswith("p_"):
        return f"P({name.removeprefix('p_')})"
    if name.startswith("contribution_"):
        return f"contribution of {name.removeprefix('contribution_').replace('_', ' ')}"
    return name.replace("_", " ")


def finish(chart: Any, *, configure: bool = True) -> Any:
    """Apply the shared feedlab look (or return the chart as is, for the caller to compose).

    A configured chart cannot be put in a concat or layer, hence ``configure=False``.

    Example
    -------
    >>> import altair as alt
    >>> finish(alt.Chart().mark_point(), configure=True).to_dict()["config"]["font"].startswith("Inter")
    True
    """
    return chart.configure(**FEEDLAB_CONFIG) if configure else chart


def family_scale() -> alt.Scale:
    """The colour scale of signal families (fixed domain, fixed colours)."""
    return alt.Scale(domain=list(FAMILY_COLORS), range=list(FAMILY_COLORS.values()))


def family_label(family: Any) -> str:
    """The readable name of a signal family (an unknown one is shown as given)."""
    if family is None:
        return "other"
    return FAMILY_LABELS.get(str(family), str(family))


def require_frame(frame: Any, columns: Iterable[str], what: str, *, allow_empty: bool = False) -> pl.DataFrame:
    """``frame`` if it is a polars DataFrame with ``columns`` and (unless allowed) rows, else a FeedlabError."""
    if not isinstance(frame, pl.DataFrame):
        raise FeedlabError(f"{what} must be a polars DataFrame (got {type(frame).__name__})")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeedlabError(f"{what} lacks column(s) {missing}; it has {frame.columns}")
    if not allow_empty and frame.height == 0:
        raise FeedlabError(f"{what} is empty: there is nothing to chart")
    return frame


def check_int(value: Any, name: str, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int within bounds, else a FeedlabError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise FeedlabError(f"{name} must be a whole number {bounds} (got {value!r})")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a FeedlabError listing them."""
    choices = list(choices)
    if value not in choices:
        raise FeedlabError(f"unknown {name} {value!r}; choose one of {choices}")
    return value


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(float(value))


def chart_mimebundle(chart: Any, *, validate: bool = True) -> dict[str, Any]:
    """A chart as a display bundle that JupyterLab 4.6 renders offline, for ``Output.outputs``.

    Keys: ``application/vnd.vegalite.v5+json`` (the mimetype JupyterLab 4.6 renders with its
    bundled Vega-Lite; the spec's ``$schema`` points at v5) and ``text/plain`` (the chart's
    title). A widget shows it without printing::

        out.outputs = ({"output_type": "display_data", "data": chart_mimebundle(c), "metadata": {}},)

    ``validate=False`` skips altair's schema validation, most of the time it takes: for widgets
    that redraw on every change a chart whose function the tests validate.

    Example
    -------
    >>> import altair as alt, polars as pl
    >>> b = chart_mimebundle(alt.Chart(pl.DataFrame({"x": [1]})).mark_point().encode(x="x:Q"))
    >>> sorted(b)
    ['application/vnd.vegalite.v5+json', 'text/plain']
    """
    if not isinstance(chart, alt.TopLevelMixin):
        raise FeedlabError(f"chart_mimebundle needs an altair chart (got {type(chart).__name__})")
    return _bundle(chart.to_dict(validate=validate))


def chart_outputs(chart: Any, *, validate: bool = True) -> tuple[dict[str, Any], ...]:
    """A chart as the ``outputs`` of an ``ipywidgets.Output``: shown in JupyterLab, nothing printed.

    Example
    -------
    >>> import altair as alt, polars as pl
    >>> out = chart_outputs(alt.Chart(pl.DataFrame({"x": [1]})).mark_point().encode(x="x:Q"))
    >>> out[0]["output_type"]
    'display_data'
    """
    return ({"output_type": "display_data", "data": chart_mimebundle(chart, validate=validate), "metadata": {}},)


def _bundle(spec: dict[str, Any]) -> dict[str, Any]:
    v5 = dict(spec)
    v5["$schema"] = _V5_SCHEMA
    title = spec.get("title")
    if isinstance(title, dict):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(map(str, title))
    return {
        JUPYTERLAB_MIME_TYPE: v5,
        "text/plain": f"<feedlab chart: {title}>" if title else "<feedlab chart>",
    }


def _offline_renderer(spec: dict, **metadata: Any) -> dict[str, Any]:
    return _bundle(spec)


def use_offline_renderer() -> None:
    """Show altair charts in JupyterLab without the network: its bundled Vega renders them.

    Registers and enables an altair renderer named ``"feedlab"`` that emits
    :func:`chart_mimebundle`'s bundle. Altair's own ``"mimetype"`` renderer is not enough here:
    it emits ``application/vnd.vegalite.v6.json``, which JupyterLab 4.6 has no renderer for
    (it would show the chart's text repr), and the default ``"html"`` renderer loads Vega from a
    CDN. Notebooks call this once; it changes altair's renderer for the whole kernel.

    Example
    -------
    >>> use_offline_renderer()  # doctest: +SKIP
    """
    if "feedlab" not in alt.renderers.names():
        alt.renderers.register("feedlab", _offline_renderer)
    alt.renderers.enable("feedlab")


def embedded_rows(spec: Mapping[str, Any]) -> int:
    """How many data rows a chart spec embeds, over its named datasets and inline values.

    Example
    -------
    >>> embedded_rows({"datasets": {"a": [{"x": 1}, {"x": 2}]}, "data": {"values": [{"y": 1}]}})
    3
    """
    total = sum(len(v) for v in spec.get("datasets", {}).values())

    def walk(node: Any) -> int:
        n = 0
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and isinstance(data.get("values"), list):
                n += len(data["values"])
            for key, child in node.items():
                if key not in ("datasets", "data"):
                    n += walk(child)
        elif isinstance(node, list):
            n += sum(walk(c) for c in node)
        return n

    return total + walk(spec)
