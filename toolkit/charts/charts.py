"""Chart functions for the toolkit's analyses: plain frames and dicts in, altair charts out.

Each function checks its input (a missing column, an unknown option or an empty frame is a
:class:`~toolkit.errors.FeedlabError`; empty input is an error rather than an empty chart, so a
widget never silently shows a blank panel), aggregates in polars/numpy to at most
:data:`~toolkit.charts.style.MAX_ROWS` rows, and returns a chart with the shared feedlab look.
Pass ``configure=False`` to get the chart without the look, to concat or layer it yourself
(then call :func:`~toolkit.charts.style.finish` on the result).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import polars as pl

from toolkit.charts.style import (
    FAMILY_COLORS,
    MAX_ROWS,
    ChartLike,
    check_choice,
    check_int,
    family_label,
    family_scale,
    finish,
    is_number,
    label as readable,
    require_frame,
)
from toolkit.errors import FeedlabError
from toolkit.integrity.enforcement import WORLDS
from toolkit.rank.population import flatten_metrics

IMPORTANCE_METRICS = ("gain", "mean_abs_shap")
IMPORTANCE_BY = ("feature", "family")
# SHAP's own colours: pushes the prediction up / down
UP, DOWN, NEUTRAL = "#ff0051", "#008bfb", "#8c8c8c"


# --------------------------------------------------------------------------- importance


def _importance_shares(importance: pl.DataFrame, *, action: str | None, by: str, metric: str) -> pl.DataFrame:
    """Rows ``key, family, value, share`` sorted by share: one action's, or the mean share over actions."""
    check_choice(by, "by", IMPORTANCE_BY)
    check_choice(metric, "metric", IMPORTANCE_METRICS)
    need = [metric, "family"] + (["feature"] if by == "feature" else [])
    if by == "feature" and isinstance(importance, pl.DataFrame) and "feature" not in importance.columns:
        raise FeedlabError(
            "by='feature' needs the per-feature table (TrainedSurface.importance); "
            "this one has no feature column (use by='family' for family_importance)"
        )
    require_frame(importance, need, "importance")
    frame = importance
    if "action" in frame.columns:
        if action is not None:
            actions = frame["action"].unique(maintain_order=True).to_list()
            if action not in actions:
                raise FeedlabError(f"unknown action {action!r}; the importance table has {actions}")
            frame = frame.filter(pl.col("action") == action)
    elif action is not None:
        raise FeedlabError("action given, but the importance table has no action column")
    else:
        frame = frame.with_columns(pl.lit("all").alias("action"))
    key = by
    value = pl.col(metric).cast(pl.Float64).fill_nan(None).fill_null(0.0)
    if (frame[metric].cast(pl.Float64).fill_nan(0.0).fill_null(0.0) < 0).any():
        raise FeedlabError(f"importance {metric} must not be negative")
    frame = frame.with_columns(pl.col("family").alias("_family"))
    per = frame.group_by("action", key, maintain_order=True).agg(
        value.sum().alias("value"), pl.col("_family").first()
    )
    # shares within each action, then the mean over actions: each action counts equally, so an
    # action whose trees have large total gain does not drown the others
    # an action whose model never split (a rare label) has total 0: no shares, left out of the mean
    per = per.with_columns(pl.col("value").sum().over("action").alias("_total"))
    n_actions = per.filter(pl.col("_total") > 0)["action"].n_unique()
    if n_actions == 0:
        raise FeedlabError(f"every {metric} is 0{'' if action is None else f' for action {action!r}'}: there is nothing to chart")
    per = per.with_columns(pl.when(pl.col("_total") > 0).then(pl.col("value") / pl.col("_total")).otherwise(0.0).alias("share"))
    out = (
        per.group_by(key, maintain_order=True)
        .agg(pl.col("value").sum(), (pl.col("share").sum() / n_actions).alias("share"), pl.col("_family").first())
        .select(
            (pl.col(key).map_elements(family_label, return_dtype=pl.String) if by == "family" else pl.col(key).cast(pl.String)).alias("key"),
            pl.col("_family").map_elements(family_label, return_dtype=pl.String).fill_null("other").alias("family"),
            "value",
            "share",
        )
        .sort(["share", "key"], descending=[True, False])
    )
    return out


def importance_chart(
    importance: pl.DataFrame,
    *,
    action: str | None = None,
    by: str = "feature",
    metric: str = "gain",
    top: int = 15,
    width: int = 360,
    configure: bool = True,
) -> ChartLike:
    """Bars of each feature's (or signal family's) share of a model's importance, top ``top``.

    ``importance`` is ``TrainedSurface.importance`` (action, feature, family, gain,
    mean_abs_shap) or, for ``by="family"``, ``TrainedSurface.family_importance``. ``metric`` is
    ``"gain"`` (total gain) or ``"mean_abs_shap"``. Values are shown as shares of the total so
    that gain and SHAP are comparable; with ``action=None`` each action's shares are averaged
    (every action counts equally; an action whose total is 0, a model that never split, is left
    out). Bars are coloured by signal family. All zero is a FeedlabError.

    Example
    -------
    >>> import polars as pl
    >>> imp = pl.DataFrame({"action": ["like", "like"], "feature": ["a", "b"], "family": ["post", "author"],
    ...                     "gain": [3.0, 1.0], "mean_abs_shap": [0.2, 0.2]})
    >>> c = importance_chart(imp, metric="gain")
    >>> [r["share"] for r in list(c.to_dict()["datasets"].values())[0]]
    [0.75, 0.25]
    """
    top = check_int(top, "top", minimum=1, maximum=MAX_ROWS)
    shares = _importance_shares(importance, action=action, by=by, metric=metric)
    total = shares.height
    shown = shares.head(top)
    what = "features" if by == "feature" else "signal families"
    subtitle = f"top {shown.height} of {total} {what}" if total > shown.height else f"{total} {what}"
    scope = f"action: {action}" if action is not None else "mean over actions"
    data = shown.select(
        pl.col("key"),
        pl.col("family"),
        pl.col("share"),
        pl.col("value"),
    )
    y_title = "feature" if by == "feature" else "signal family"
    chart = (
        alt.Chart(data, title=alt.Title(f"Importance by {y_title}: {readable(metric)}", subtitle=f"{subtitle}; {scope}"))
        .mark_bar()
        .encode(
            x=alt.X("share:Q", title=f"share of total {readable(metric)}", axis=alt.Axis(format="%")),
            y=alt.Y("key:N", title=y_title, sort=alt.EncodingSortField("share", order="descending")),
            color=alt.Color("family:N", title="signal family", scale=family_scale()),
            tooltip=[
                alt.Tooltip("key:N", title=y_title),
                alt.Tooltip("family:N", title="signal family"),
                alt.Tooltip("share:Q", title="share", format=".1%"),
                alt.Tooltip("value:Q", title=readable(metric), format=".4g"),
            ],
        )
        .properties(width=width, height=alt.Step(16))
    )
    return finish(chart, configure=configure)


def importance_panel(
    importance: pl.DataFrame,
    *,
    action: str | None = None,
    top: int = 15,
    family_importance: pl.DataFrame | None = None,
    width: int = 260,
    configure: bool = True,
) -> ChartLike:
    """Gain and mean |SHAP| side by side, by feature (top row) and by signal family (bottom row).

    ``importance`` is the per-feature table (``TrainedSurface.importance``); the family row is
    summed from it unless ``family_importance`` is given.

    Example
    -------
    >>> panel = importance_panel(trained.importance, action="like")  # doctest: +SKIP
    """
    fam = importance if family_importance is None else family_importance
    parts = [
        [importance_chart(importance, action=action, by="feature", metric=m, top=top, width=width, configure=False) for m in IMPORTANCE_METRICS],
        [importance_chart(fam, action=action, by="family", metric=m, top=top, width=width, configure=False) for m in IMPORTANCE_METRICS],
    ]  # fmt: skip
    scope = f"action: {action}" if action is not None else "mean over actions"
    panel = alt.vconcat(
        alt.hconcat(*parts[0]), alt.hconcat(*parts[1]), title=alt.Title("Feature importance: gain vs mean |SHAP|", subtitle=scope)
    ).resolve_scale(color="shared")
    return finish(panel, configure=configure)


# --------------------------------------------------------------------------- rank change


def _top_positions(frame: pl.DataFrame, what: str, k: int) -> pl.DataFrame:
    require_frame(frame, ["post_id", "position"], what, allow_empty=True)
    if frame["post_id"].is_duplicated().any():
        raise FeedlabError(f"{what} lists a post_id more than once")
    if frame["position"].null_count() or (frame.height and frame["position"].min() < 0):
        raise FeedlabError(f"{what}: position must be a 0-based number for every row")
    return frame.filter(pl.col("position") < k)


def rank_change_chart(
    before: pl.DataFrame,
    after: pl.DataFrame,
    *,
    k: int = 10,
    label: str = "post_id",
    before_name: str = "before",
    after_name: str = "after",
    width: int = 320,
    configure: bool = True,
) -> ChartLike:
    """A slope chart of how the top ``k`` changed: each post's position before (left) and after (right).

    ``before`` and ``after`` have ``post_id`` and ``position`` (0-based; shown 1-based) and
    optionally the ``label`` column (an author, say) that names each post. Every post in
    either top k is drawn; one outside a top k sits on the "not in top k" row. Lines are
    coloured up / down / same / new (not in the top k before) / dropped (not after).

    Example
    -------
    >>> import polars as pl
    >>> b = pl.DataFrame({"post_id": [1, 2, 3], "position": [0, 1, 2]})
    >>> a = pl.DataFrame({"post_id": [3, 1, 2], "position": [0, 1, 2]})
    >>> rows = list(rank_change_chart(b, a, k=3).to_dict()["datasets"].values())[0]
    >>> sorted({(r["post_id"], r["status"]) for r in rows})
    [(1, 'down'), (2, 'down'), (3, 'up')]
    """
    k = check_int(k, "k", minimum=1, maximum=MAX_ROWS // 4)
    b = _top_positions(before, "before", k)
    a = _top_positions(after, "after", k)
    if b.height == 0 and a.height == 0:
        raise FeedlabError("before and after are both empty: there is nothing to chart")
    if label != "post_id" and label not in before.columns and label not in after.columns:
        raise FeedlabError(f"label column {label!r} is in neither before nor after")
    names = {}
    for frame in (b, a):  # after's label wins: it is the newer view of the post
        if label in frame.columns:
            names.update(zip(frame["post_id"].to_list(), frame[label].to_list()))
    pb = dict(zip(b["post_id"].to_list(), b["position"].to_list()))
    pa = dict(zip(a["post_id"].to_list(), a["position"].to_list()))
    out_row = f"not in top {k}"
    slots = [str(i) for i in range(1, k + 1)] + [out_row]
    rows = []
    for post in sorted(set(pb) | set(pa), key=lambda p: (min(pb.get(p, k), pa.get(p, k)), str(p))):
        x, y = pb.get(post), pa.get(post)
        if x is None:
            status = "new"
        elif y is None:
            status = "dropped"
        else:
            status = "up" if y < x else "down" if y > x else "same"
        moved = None if x is None or y is None else int(x) - int(y)
        name = str(names.get(post, post))
        for side, pos in ((before_name, x), (after_name, y)):
            rows.append(
                {
                    "post_id": post,
                    "name": name,
                    "side": side,
                    "slot": out_row if pos is None else str(int(pos) + 1),
                    "rank": None if pos is None else int(pos) + 1,
                    "before": None if x is None else int(x) + 1,
                    "after": None if y is None else int(y) + 1,
                    "moved": moved,
                    "status": status,
                }
            )
    data = pl.DataFrame(rows, schema_overrides={"rank": pl.Int64, "before": pl.Int64, "after": pl.Int64, "moved": pl.Int64})
    statuses = ["up", "down", "same", "new", "dropped"]
    colors = ["#2ca02c", "#d62728", "#8c8c8c", "#1f77b4", "#ff7f0e"]
    who = "post" if label == "post_id" else readable(label)
    base = alt.Chart(data).encode(
        x=alt.X("side:N", title=None, scale=alt.Scale(domain=[before_name, after_name]), axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("slot:O", title="position", scale=alt.Scale(domain=slots)),
        color=alt.Color("status:N", title="change", scale=alt.Scale(domain=statuses, range=colors)),
        detail="post_id:N",
        tooltip=[
            alt.Tooltip("name:N", title=who),
            alt.Tooltip("post_id:N", title="post"),
            alt.Tooltip("before:Q", title=f"position {before_name}"),
            alt.Tooltip("after:Q", title=f"position {after_name}"),
            alt.Tooltip("moved:Q", title="places moved up"),
            alt.Tooltip("status:N", title="change"),
        ],
    )
    lines = base.mark_line(strokeWidth=2, opacity=0.8)
    points = base.mark_point(filled=True, size=50, opacity=1)
    shown = alt.datum.rank != None  # noqa: E711 - a Vega expression, not a Python comparison
    left = base.transform_filter((alt.datum.side == before_name) & shown).mark_text(align="right", dx=-8).encode(text="name:N")
    right = base.transform_filter((alt.datum.side == after_name) & shown).mark_text(align="left", dx=8).encode(text="name:N")
    chart = alt.layer(lines, points, left, right).properties(
        title=alt.Title(f"How the top {k} changed", subtitle=f"{before_name} → {after_name}; positions 1-based"),
        width=width,
        height=alt.Step(22),
    )
    return finish(chart, configure=configure)


# --------------------------------------------------------------------------- score distribution


def score_distribution_chart(
    frame: pl.DataFrame,
    *,
    score: str = "score",
    by: str | None = None,
    bins: int = 40,
    normalize: bool = False,
    max_series: int = 12,
    width: int = 420,
    height: int = 220,
    configure: bool = True,
) -> ChartLike:
    """A histogram of ``score`` (equal-width bins shared by every series), one series per ``by`` value.

    Counted in numpy (``np.histogram`` over the finite values; null and NaN are left out), so
    the chart embeds ``bins`` rows per series. ``normalize`` shows each series' share of its
    rows instead of counts, to compare groups of different sizes. At most ``max_series``
    values of ``by``.

    Example
    -------
    >>> import polars as pl
    >>> c = score_distribution_chart(pl.DataFrame({"score": [0.0, 0.1, 0.9, 1.0]}), bins=2)
    >>> [r["count"] for r in list(c.to_dict()["datasets"].values())[0]]
    [2, 2]
    """
    bins = check_int(bins, "bins", minimum=1, maximum=500)
    max_series = check_int(max_series, "max_series", minimum=1, maximum=50)
    require_frame(frame, [score] + ([by] if by is not None else []), "frame")
    if not frame[score].dtype.is_numeric():
        raise FeedlabError(f"column {score!r} must be numeric (it is {frame[score].dtype})")
    values = frame.select(
        pl.col(score).cast(pl.Float64).alias("_v"), *([pl.col(by).cast(pl.String).fill_null("(none)").alias("_g")] if by else [])
    ).filter(pl.col("_v").is_finite())
    if values.height == 0:
        raise FeedlabError(f"column {score!r} has no finite values: there is nothing to chart")
    lo, hi = float(values["_v"].min()), float(values["_v"].max())
    if lo == hi:  # one value: a unit-wide range around it, as numpy does
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    groups = [("all", values["_v"].to_numpy())]
    if by is not None:
        sizes = values.group_by("_g").len().sort(["len", "_g"], descending=[True, False])
        if sizes.height > max_series:
            raise FeedlabError(f"{by!r} has {sizes.height} values; chart at most {max_series} series (raise max_series, or filter first)")
        groups = [(g, values.filter(pl.col("_g") == g)["_v"].to_numpy()) for g in sizes["_g"].to_list()]
    parts = []
    for name, v in groups:
        counts, _ = np.histogram(v, bins=edges)
        parts.append(
            pl.DataFrame(
                {
                    "series": [name] * bins,
                    "bin_start": edges[:-1],
                    "bin_end": edges[1:],
                    "count": counts.astype(np.int64),
                    "share": counts / max(v.size, 1),
                }
            )
        )
    data = pl.concat(parts)
    y = "share" if normalize else "count"
    y_title = "share of rows" if normalize else "rows"
    enc: dict[str, Any] = {
        "x": alt.X("bin_start:Q", title=readable(score), bin="binned", scale=alt.Scale(zero=False)),
        "x2": "bin_end:Q",
        "y": alt.Y(f"{y}:Q", title=y_title, stack=None, axis=alt.Axis(format="%" if normalize else "~s")),
        "tooltip": [
            *([alt.Tooltip("series:N", title=readable(by))] if by else []),
            alt.Tooltip("bin_start:Q", title="from", format=".4g"),
            alt.Tooltip("bin_end:Q", title="to", format=".4g"),
            alt.Tooltip("count:Q", title="rows", format=","),
            alt.Tooltip("share:Q", title="share of rows", format=".1%"),
        ],
    }
    if by is not None:
        enc["color"] = alt.Color("series:N", title=readable(by), sort=[g for g, _ in groups])
    n = int(values.height)
    dropped = frame.height - n
    subtitle = f"{n:,} rows, {bins} bins" + (f"; {dropped:,} null/NaN left out" if dropped else "")
    chart = (
        alt.Chart(data, title=alt.Title(f"Distribution of {readable(score)}", subtitle=subtitle))
        .mark_bar(opacity=0.55 if by else 0.9, binSpacing=0)
        .encode(**enc)
        .properties(width=width, height=height)
    )
    return finish(chart, configure=configure)


# --------------------------------------------------------------------------- reliability


def reliability_chart(
    tables: pl.DataFrame | Mapping[str, pl.DataFrame],
    *,
    zoom: bool = True,
    size: int = 320,
    configure: bool = True,
) -> ChartLike:
    """Calibration curves: mean predicted probability against the observed rate, per bin.

    ``tables`` is :func:`toolkit.predict.metrics.reliability_table` output (bin,
    mean_predicted, fraction_positive, count) or a dict action -> such a table (one line per
    action). Empty bins are left out; point size is the bin's row count; the dashed diagonal is
    perfect calibration. ``zoom`` fits both axes to the largest value shown (rare actions live
    near 0); ``zoom=False`` shows [0, 1].

    Example
    -------
    >>> from toolkit.predict import reliability_table
    >>> c = reliability_chart({"like": reliability_table([0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95])})
    >>> spec = c.to_dict()
    >>> len(spec["datasets"][spec["layer"][1]["data"]["name"]])  # three non-empty bins
    3
    """
    if isinstance(tables, pl.DataFrame):
        tables = {"model": tables}
    if not isinstance(tables, Mapping) or not tables:
        raise FeedlabError("tables must be a reliability table or a non-empty dict action -> reliability table")
    parts = []
    for name, t in tables.items():
        require_frame(t, ["bin", "mean_predicted", "fraction_positive", "count"], f"reliability table {name!r}")
        parts.append(
            t.filter((pl.col("count") > 0) & pl.col("mean_predicted").is_not_null() & pl.col("fraction_positive").is_not_null())
            .select(
                pl.lit(str(name)).alias("action"),
                pl.col("bin").cast(pl.Int64),
                pl.col("mean_predicted").cast(pl.Float64),
                pl.col("fraction_positive").cast(pl.Float64),
                pl.col("count").cast(pl.Int64),
            )
        )
    data = pl.concat(parts)
    if data.height == 0:
        raise FeedlabError("every bin of the reliability table(s) is empty: there is nothing to chart")
    if data.height > MAX_ROWS:
        raise FeedlabError(f"{data.height} non-empty bins: use fewer bins or actions (at most {MAX_ROWS})")
    top = 1.0
    if zoom:
        top = float(max(data["mean_predicted"].max(), data["fraction_positive"].max()))
        top = min(1.0, top * 1.05) if top > 0 else 1.0
    scale = alt.Scale(domain=[0, top], clamp=True)
    diagonal = (
        alt.Chart(pl.DataFrame({"x": [0.0, top], "y": [0.0, top]}))
        .mark_line(strokeDash=[4, 4], color="#888", strokeWidth=1)
        .encode(x=alt.X("x:Q", scale=scale), y=alt.Y("y:Q", scale=scale))
    )
    many = len(tables) > 1
    color = alt.Color("action:N", title="action") if many else alt.value("#4c78a8")
    tooltip = [
        alt.Tooltip("action:N", title="action"),
        alt.Tooltip("bin:Q", title="bin"),
        alt.Tooltip("mean_predicted:Q", title="mean predicted", format=".3f"),
        alt.Tooltip("fraction_positive:Q", title="observed rate", format=".3f"),
        alt.Tooltip("count:Q", title="rows", format=","),
    ]
    base = alt.Chart(data).encode(
        x=alt.X("mean_predicted:Q", title="mean predicted probability", scale=scale),
        y=alt.Y("fraction_positive:Q", title="observed rate", scale=scale),
        color=color,
        detail="action:N",
        order="bin:Q",
        tooltip=tooltip,
    )
    curves = base.mark_line(opacity=0.8)
    points = base.mark_circle(opacity=0.9).encode(size=alt.Size("count:Q", title="rows in bin", scale=alt.Scale(range=[15, 300])))
    chart = alt.layer(diagonal, curves, points).properties(
        title=alt.Title("Calibration", subtitle="dashed: perfectly calibrated"), width=size, height=size
    )
    return finish(chart, configure=configure)


# --------------------------------------------------------------------------- policies


#: Entries of policy_metrics that are counts or parameters, not outcomes: left out by default.
DEFAULT_EXCLUDE = ("sessions", "ndcg_sessions", "small_creator_threshold")


def policy_comparison_chart(
    metrics: Mapping[str, Mapping[str, Any]],
    *,
    baseline: str | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    columns: int = 3,
    configure: bool = True,
) -> ChartLike:
    """Policies side by side on every metric, or each policy's relative change against ``baseline``.

    ``metrics`` maps a policy name to its metrics (as :func:`toolkit.rank.evaluate.policy_metrics`
    returns them; flattened by :func:`flatten_metrics`). Without ``baseline``: one small bar
    chart per metric (independent scales), a bar per policy. With ``baseline``: grouped bars of
    ``(value - baseline) / |baseline|`` per metric for every other policy; a metric the
    baseline lacks or has at 0 is left out (its change is undefined). Entries named in
    ``exclude`` (counts and parameters) are left out.

    Example
    -------
    >>> c = policy_comparison_chart({"a": {"ndcg_at_k": 0.5}, "b": {"ndcg_at_k": 0.6}}, baseline="a")
    >>> [round(r["change"], 6) for r in list(c.to_dict()["datasets"].values())[0]]
    [0.2]
    """
    columns = check_int(columns, "columns", minimum=1)
    if not isinstance(metrics, Mapping) or not metrics:
        raise FeedlabError("metrics must be a non-empty dict policy -> metrics")
    flat = {}
    for policy, m in metrics.items():
        if not isinstance(m, Mapping):
            raise FeedlabError(f"metrics of policy {policy!r} must be a dict metric -> value (got {type(m).__name__})")
        flat[str(policy)] = {k: v for k, v in flatten_metrics(m).items() if k not in set(exclude)}
    policies = list(flat)
    order = list(dict.fromkeys(k for p in policies for k in flat[p]))
    if not order:
        raise FeedlabError("no numeric metrics to chart")
    if baseline is None:
        rows = [
            {"policy": p, "metric": k, "metric_label": readable(k), "value": flat[p][k]}
            for k in order
            for p in policies
            if k in flat[p]
        ]
        data = pl.DataFrame(rows)
        chart = (
            alt.Chart(data)
            .mark_bar()
            .encode(
                x=alt.X("value:Q", title=None, axis=alt.Axis(format="~g")),
                y=alt.Y("policy:N", title=None, sort=policies),
                color=alt.Color("policy:N", title="policy", sort=policies),
                tooltip=[
                    alt.Tooltip("policy:N", title="policy"),
                    alt.Tooltip("metric_label:N", title="metric"),
                    alt.Tooltip("value:Q", title="value", format=".4g"),
                ],
            )
            .properties(width=200, height=alt.Step(18))
            .facet(facet=alt.Facet("metric_label:N", title=None, sort=[readable(k) for k in order]), columns=columns)
            .resolve_scale(x="independent")
            .properties(title=alt.Title("Policy comparison", subtitle="each metric on its own scale"))
        )
        return finish(chart, configure=configure)

    if baseline not in flat:
        raise FeedlabError(f"unknown baseline {baseline!r}; the policies are {policies}")
    if len(policies) < 2:
        raise FeedlabError("a comparison against a baseline needs at least one other policy")
    base = flat[baseline]
    others = [p for p in policies if p != baseline]
    rows = []
    for k in order:
        b = base.get(k)
        if b is None or b == 0:
            continue
        for p in others:
            if k in flat[p]:
                v = flat[p][k]
                rows.append(
                    {"policy": p, "metric": k, "metric_label": readable(k), "value": v, "baseline": b, "change": (v - b) / abs(b)}
                )
    if not rows:
        raise FeedlabError(f"no metric is shared with the baseline {baseline!r} at a non-zero value")
    data = pl.DataFrame(rows)
    chart = (
        alt.Chart(data, title=alt.Title(f"Change against {baseline}", subtitle="(policy − baseline) / |baseline|"))
        .mark_bar()
        .encode(
            x=alt.X("change:Q", title=f"relative change vs {baseline}", axis=alt.Axis(format="+%")),
            y=alt.Y("metric_label:N", title=None, sort=[readable(k) for k in order]),
            yOffset=alt.YOffset("policy:N", sort=others),
            color=alt.Color("policy:N", title="policy", sort=others),
            tooltip=[
                alt.Tooltip("policy:N", title="policy"),
                alt.Tooltip("metric_label:N", title="metric"),
                alt.Tooltip("value:Q", title="value", format=".4g"),
                alt.Tooltip("baseline:Q", title=baseline, format=".4g"),
                alt.Tooltip("change:Q", title="change", format="+.1%"),
            ],
        )
        .properties(width=360, height=alt.Step(max(6, 18 // len(others))))
    )
    rule = alt.Chart().mark_rule(color="#666").encode(x=alt.datum(0))
    return finish(alt.layer(chart, rule), configure=configure)


# --------------------------------------------------------------------------- exposure


def _gini(x: np.ndarray) -> float:
    """Population Gini of sorted non-negative values: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    n, total = x.size, float(x.sum())
    if n == 0 or total <= 0:
        return math.nan
    return 2.0 * float(np.sum(np.arange(1, n + 1) * x)) / (n * total) - (n + 1) / n


def lorenz_points(values: Any, *, max_points: int = 200) -> tuple[pl.DataFrame, float]:
    """The Lorenz curve of non-negative amounts (at most ``max_points + 1`` points) and their Gini.

    Points ``author_share, exposure_share`` run from (0, 0) to (1, 1) over the amounts sorted
    ascending; downsampling keeps exact points of the curve, both ends included. The Gini is
    the same population formula as :func:`toolkit.rank.evaluate.gini`.

    Example
    -------
    >>> curve, g = lorenz_points([0, 0, 0, 1])
    >>> g, curve.rows()[-2:]
    (0.75, [(0.75, 0.0), (1.0, 1.0)])
    """
    max_points = check_int(max_points, "max_points", minimum=2, maximum=MAX_ROWS - 1)
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if x.size == 0:
        raise FeedlabError("no exposure values: there is nothing to chart")
    if not np.isfinite(x).all() or x[0] < 0:
        raise FeedlabError("exposure values must be finite and non-negative")
    total = float(x.sum())
    if total <= 0:
        raise FeedlabError("every exposure is 0: the Lorenz curve and Gini are undefined")
    n = x.size
    cum = np.concatenate([[0.0], np.cumsum(x) / total])
    idx = np.unique(np.linspace(0, n, min(n, max_points) + 1).round().astype(np.int64))
    curve = pl.DataFrame({"author_share": idx / n, "exposure_share": cum[idx]})
    return curve, _gini(x)


def exposure_concentration_chart(
    exposure: pl.DataFrame | Mapping[str, pl.DataFrame],
    *,
    author: str = "author_id",
    value: str = "exposure",
    max_points: int = 200,
    size: int = 320,
    configure: bool = True,
) -> ChartLike:
    """Lorenz curves of exposure per author, with the equality diagonal and each curve's Gini.

    ``exposure`` has one or more rows per author (summed per ``author``) with a non-negative
    ``value``; a dict policy -> such a frame draws one curve per policy. Each curve is cut to
    at most ``max_points`` + 1 exact points. The Gini (0 = equal, towards 1 = one author takes
    all) is in the title for one curve and in the legend for several.

    Example
    -------
    >>> import polars as pl
    >>> c = exposure_concentration_chart(pl.DataFrame({"author_id": [1, 2, 3, 4], "exposure": [0, 0, 0, 1]}))
    >>> c.to_dict()["title"]["text"]
    'Exposure concentration: Gini 0.750'
    """
    single = isinstance(exposure, pl.DataFrame)
    frames = {"exposure": exposure} if single else exposure
    if not isinstance(frames, Mapping) or not frames:
        raise FeedlabError("exposure must be a frame or a non-empty dict policy -> frame")
    parts, ginis = [], {}
    for name, frame in frames.items():
        what = "exposure" if single else f"exposure of {name!r}"
        require_frame(frame, [author, value], what)
        if not frame[value].dtype.is_numeric():
            raise FeedlabError(f"{what}: column {value!r} must be numeric")
        per_author = frame.group_by(author).agg(pl.col(value).cast(pl.Float64).fill_null(0.0).sum())
        try:
            curve, g = lorenz_points(per_author[value].to_numpy(), max_points=max_points)
        except FeedlabError as e:
            raise FeedlabError(f"{what}: {e}") from None
        ginis[str(name)] = g
        series = f"{name} (Gini {g:.3f})"
        parts.append(curve.with_columns(pl.lit(series).alias("series"), pl.lit(g).alias("gini"), pl.lit(per_author.height).alias("authors")))
    data = pl.concat(parts)
    series_order = [f"{n} (Gini {g:.3f})" for n, g in ginis.items()]
    scale = alt.Scale(domain=[0, 1])
    diagonal = (
        alt.Chart(pl.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="#888", strokeWidth=1)
        .encode(x=alt.X("x:Q", scale=scale), y=alt.Y("y:Q", scale=scale))
    )
    color = alt.value("#4c78a8") if single else alt.Color("series:N", title="policy", sort=series_order)
    curves = (
        alt.Chart(data)
        .mark_line()
        .encode(
            x=alt.X("author_share:Q", title="share of authors (least exposed first)", scale=scale, axis=alt.Axis(format="%")),
            y=alt.Y("exposure_share:Q", title="share of exposure", scale=scale, axis=alt.Axis(format="%")),
            color=color,
            detail="series:N",
            order="author_share:Q",
            tooltip=[
                *([] if single else [alt.Tooltip("series:N", title="policy")]),
                alt.Tooltip("author_share:Q", title="share of authors", format=".1%"),
                alt.Tooltip("exposure_share:Q", title="share of exposure", format=".1%"),
                alt.Tooltip("gini:Q", title="Gini", format=".3f"),
                alt.Tooltip("authors:Q", title="authors", format=","),
            ],
        )
    )
    title = f"Exposure concentration: Gini {next(iter(ginis.values())):.3f}" if single else "Exposure concentration by policy"
    chart = alt.layer(diagonal, curves).properties(
        title=alt.Title(title, subtitle="Lorenz curve of exposure per author; dashed: every author equal"), width=size, height=size
    )
    return finish(chart, configure=configure)


# --------------------------------------------------------------------------- contributions


def _rules_text(value: Any) -> str:
    if not value:
        return ""
    parts = []
    for r in value:
        if isinstance(r, Mapping):
            factor = r.get("factor")
            f = f" ×{factor:.3g}" if is_number(factor) else ""
            parts.append(f"{r.get('rule', '?')}: {r.get('effect', '')}{f}".strip())
        else:
            parts.append(str(r))
    return "; ".join(parts)


def contributions_chart(
    ranking: pl.DataFrame,
    *,
    top: int = 10,
    label: str = "post_id",
    width: int = 380,
    configure: bool = True,
) -> ChartLike:
    """What each top post's score is made of: stacked bars of its ``contribution_<action>`` columns.

    ``ranking`` is :func:`toolkit.rank.rank` output (position, post_id, contribution_<action>
    per weighted action; optionally score, base_score, author_id and rules). Posts are ordered
    by position (shown 1-based) and named by the ``label`` column; a negative contribution
    stacks to the left of 0. A black tick marks the score after rules when ``score`` is given.

    Example
    -------
    >>> import polars as pl
    >>> r = pl.DataFrame({"position": [0], "post_id": [7], "contribution_like": [0.4], "contribution_hide": [-0.1]})
    >>> rows = list(contributions_chart(r).to_dict()["datasets"].values())[0]
    >>> sorted((x["action"], x["contribution"]) for x in rows)
    [('hide', -0.1), ('like', 0.4)]
    """
    top = check_int(top, "top", minimum=1, maximum=500)
    require_frame(ranking, ["position", "post_id", label], "ranking")
    contrib = [c for c in ranking.columns if c.startswith("contribution_")]
    if not contrib:
        raise FeedlabError("ranking has no contribution_<action> columns (as toolkit.rank.rank returns)")
    shown = ranking.sort("position").head(top)
    extra = [c for c in ("score", "base_score", "author_id") if c in shown.columns and c != label]
    who = readable(label)
    names = [f"#{int(p) + 1}  {v}" for p, v in zip(shown["position"].to_list(), shown[label].to_list())]
    posts = shown.select(
        pl.Series("post", names),
        pl.col("position").cast(pl.Int64) + 1,
        pl.col("post_id"),
        *(pl.col(c).cast(pl.Float64) if c != "author_id" else pl.col(c) for c in extra),
        pl.Series("rules_text", [_rules_text(v) for v in shown["rules"].to_list()]) if "rules" in shown.columns else pl.lit("").alias("rules_text"),
    )
    long = (
        shown.select(pl.Series("post", names), *contrib)
        .unpivot(index="post", on=contrib, variable_name="action", value_name="contribution")
        .with_columns(pl.col("action").str.strip_prefix("contribution_"), pl.col("contribution").cast(pl.Float64).fill_nan(None).fill_null(0.0))
        .join(posts, on="post", how="left")
    )
    actions = [c.removeprefix("contribution_") for c in contrib]
    common_tip = [
        alt.Tooltip("post:N", title=who),
        alt.Tooltip("post_id:N", title="post id"),
        *([alt.Tooltip("author_id:N", title="author")] if "author_id" in extra else []),
        *([alt.Tooltip("score:Q", title="score (after rules)", format=".4g")] if "score" in extra else []),
        *([alt.Tooltip("base_score:Q", title="score before rules", format=".4g")] if "base_score" in extra else []),
        alt.Tooltip("rules_text:N", title="rules"),
    ]
    y = alt.Y("post:N", title=f"{who} (by position)", sort=names)
    bars = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("sum(contribution):Q", title="contribution to score (weight × P(action))", stack="zero"),
            y=y,
            color=alt.Color("action:N", title="action", sort=actions),
            tooltip=[alt.Tooltip("action:N", title="action"), alt.Tooltip("contribution:Q", title="contribution", format=".4g"), *common_tip],
        )
    )
    layers = [bars, alt.Chart().mark_rule(color="#666").encode(x=alt.datum(0))]
    if "score" in extra:
        layers.append(
            alt.Chart(posts).mark_tick(color="black", thickness=2, size=14).encode(x=alt.X("score:Q"), y=y, tooltip=common_tip)
        )
    chart = alt.layer(*layers).properties(
        title=alt.Title(f"Score contributions of the top {shown.height}", subtitle="black tick: score after rules" if "score" in extra else ""),
        width=width,
        height=alt.Step(22),
    )
    return finish(chart, configure=configure)


# --------------------------------------------------------------------------- SHAP waterfall


def _value_text(v: Any) -> str:
    if v is None:
        return "missing"
    if isinstance(v, float):
        return "missing" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def shap_waterfall_chart(
    contributions: pl.DataFrame,
    *,
    base_value: float,
    top: int = 12,
    title: str | None = None,
    width: int = 380,
    configure: bool = True,
) -> ChartLike:
    """A waterfall of one prediction's SHAP values, in log-odds, from the base value to the prediction.

    ``contributions`` has ``feature`` and ``shap`` (and optionally ``value``, ``family``): one
    row per feature of one prediction (XGBoost ``pred_contribs``, as
    :func:`toolkit.explain.explain_post` lists them). The ``top`` features by |shap| get a step
    each, largest first; the rest are summed into one "other features" step. The last bar is
    the prediction: ``base_value + sum(shap)``. Tooltips give each feature's value and the
    probability after each step.

    Example
    -------
    >>> import polars as pl
    >>> c = shap_waterfall_chart(pl.DataFrame({"feature": ["a", "b"], "shap": [0.5, -0.2]}), base_value=-1.0)
    >>> rows = list(c.to_dict()["datasets"].values())[0]
    >>> [(r["name"], round(r["end"], 6)) for r in rows]
    [('base value', -1.0), ('a', -0.5), ('b', -0.7), ('prediction', -0.7)]
    """
    top = check_int(top, "top", minimum=1, maximum=500)
    if not is_number(base_value):
        raise FeedlabError(f"base_value must be a finite number (got {base_value!r})")
    require_frame(contributions, ["feature", "shap"], "contributions")
    if not contributions["shap"].dtype.is_numeric():
        raise FeedlabError("contributions: column 'shap' must be numeric")
    if contributions["feature"].is_duplicated().any():
        raise FeedlabError("contributions list a feature more than once: pass one prediction's SHAP values")
    shap = contributions["shap"].cast(pl.Float64)
    if shap.null_count() or not shap.is_finite().all():
        raise FeedlabError("contributions: every shap value must be a finite number")
    frame = contributions.with_columns(shap.alias("shap"), shap.abs().alias("_abs")).sort(["_abs", "feature"], descending=[True, False])
    listed, rest = frame.head(top), frame.slice(top)
    values = listed["value"].to_list() if "value" in listed.columns else [None] * listed.height
    families = listed["family"].to_list() if "family" in listed.columns else [None] * listed.height
    steps = [
        (str(f), float(s), _value_text(v) if "value" in listed.columns else "", family_label(fam) if fam is not None else "")
        for f, s, v, fam in zip(listed["feature"].to_list(), listed["shap"].to_list(), values, families)
    ]
    if rest.height:
        steps.append((f"other features ({rest.height})", float(rest["shap"].sum()), "", ""))

    def prob(m: float) -> float:
        return 1.0 / (1.0 + math.exp(-m)) if m > -700 else 0.0

    base = float(base_value)
    rows = [{"step": 0, "name": "base value", "start": 0.0, "end": base, "shap": base, "kind": "base", "value": "", "family": "", "probability": prob(base)}]
    cum = base
    for i, (name, s, v, fam) in enumerate(steps, start=1):
        rows.append(
            {"step": i, "name": name, "start": cum, "end": cum + s, "shap": s, "kind": "raises" if s >= 0 else "lowers",
             "value": v, "family": fam, "probability": prob(cum + s)}
        )  # fmt: skip
        cum += s
    rows.append({"step": len(rows), "name": "prediction", "start": 0.0, "end": cum, "shap": cum, "kind": "prediction", "value": "", "family": "", "probability": prob(cum)})
    data = pl.DataFrame(rows)
    order = [r["name"] for r in rows]
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("start:Q", title="log-odds", scale=alt.Scale(zero=True)),
            x2="end:Q",
            y=alt.Y("name:N", title=None, sort=order),
            color=alt.Color(
                "kind:N",
                title=None,
                scale=alt.Scale(domain=["raises", "lowers", "base", "prediction"], range=[UP, DOWN, "#bbbbbb", NEUTRAL]),
            ),
            tooltip=[
                alt.Tooltip("name:N", title="feature"),
                alt.Tooltip("value:N", title="value"),
                alt.Tooltip("family:N", title="signal family"),
                alt.Tooltip("shap:Q", title="SHAP (log-odds)", format="+.3f"),
                alt.Tooltip("end:Q", title="log-odds after", format=".3f"),
                alt.Tooltip("probability:Q", title="probability after", format=".3f"),
            ],
        )
    )
    subtitle = f"base {base:.3f} → prediction {cum:.3f} log-odds (probability {prob(cum):.3f})"
    out = chart.properties(title=alt.Title(title or "Why this prediction (SHAP)", subtitle=subtitle), width=width, height=alt.Step(18))
    return finish(out, configure=configure)


def enforcement_chart(effect: dict[str, Any], *, by: str = "group", width: int = 360, configure: bool = True) -> ChartLike:
    """Bars of total top-k reach per group (or per boosting strategy) in the three worlds.

    ``effect`` is :func:`enforcement_effect` output; ``by`` is "group" or "strategy".

    Example
    -------
    >>> g = pl.DataFrame({"group": ["boosted"], "posts": [3], "reach_logged": [30], "reach_enforced": [12], "reach_counterfactual": [10]})
    >>> spec = enforcement_chart({"groups": g, "surface": "explore", "k": 20, "viewers": 100}).to_dict()
    >>> sorted(r["reach"] for r in list(spec["datasets"].values())[0])
    [10, 12, 30]
    """
    if by not in ("group", "strategy"):
        raise FeedlabError(f"unknown by {by!r}; choose one of ['group', 'strategy']")
    key = "groups" if by == "group" else "strategies"
    if not isinstance(effect, dict) or key not in effect:
        raise FeedlabError(f"effect must be enforcement_effect(...) output with a {key!r} frame")
    frame = require_frame(effect[key], [by, *(f"reach_{w}" for w in WORLDS)], f"effect[{key!r}]")
    data = frame.unpivot(index=by, on=[f"reach_{w}" for w in WORLDS], variable_name="world", value_name="reach").with_columns(
        pl.col("world").str.strip_prefix("reach_")
    )
    colors = ["#d62728", "#1f77b4", "#8c8c8c"]
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y(f"{by}:N", title=None, sort=list(frame[by])),
            yOffset=alt.YOffset("world:N", sort=list(WORLDS)),
            x=alt.X("reach:Q", title=f"viewers with the post in their top {effect.get('k', 'k')} (summed over posts)"),
            color=alt.Color("world:N", title="world", scale=alt.Scale(domain=list(WORLDS), range=colors)),
            tooltip=[alt.Tooltip(f"{by}:N"), alt.Tooltip("world:N"), alt.Tooltip("reach:Q")],
        )
        .properties(
            title=alt.Title(
                f"Reach on {effect.get('surface', '')} before and after enforcement",
                subtitle=f"{effect.get('viewers', '?')} viewers; counterfactual = bought engagement never counted",
            ),
            width=width,
        )
    )
    return finish(chart, configure=configure)


def model_comparison_chart(table: pl.DataFrame, *, metric: str = "auc", width: int = 360, configure: bool = True) -> ChartLike:
    """Grouped bars of one metric per action, a bar per model: a predictor against its baselines.

    ``table`` has one row per (action, model) with the ``metric`` column, as
    :func:`toolkit.predict.compare_with_baselines` returns it; actions and models keep their
    order of first appearance.

    Example
    -------
    >>> t = pl.DataFrame({"action": ["like", "like"], "model": ["feedlab", "history_rates"], "auc": [0.8, 0.7]})
    >>> [r["auc"] for r in list(model_comparison_chart(t).to_dict()["datasets"].values())[0]]
    [0.8, 0.7]
    """
    frame = require_frame(table, ["action", "model", metric], "table")
    if not frame[metric].dtype.is_numeric():
        raise FeedlabError(f"metric {metric!r} must be a numeric column of table (got {frame[metric].dtype})")
    actions = list(dict.fromkeys(frame["action"].to_list()))
    models = list(dict.fromkeys(frame["model"].to_list()))
    data = frame.select("action", "model", metric)
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("action:N", title=None, sort=actions),
            yOffset=alt.YOffset("model:N", sort=models),
            x=alt.X(f"{metric}:Q", title=readable(metric), scale=alt.Scale(zero=False) if metric == "auc" else alt.Undefined),
            color=alt.Color("model:N", title="model", sort=models),
            tooltip=[alt.Tooltip("action:N"), alt.Tooltip("model:N"), alt.Tooltip(f"{metric}:Q", format=".4f")],
        )
        .properties(title=alt.Title(f"{readable(metric)} per action", subtitle="same test rows for every model"), width=width)
    )
    return finish(chart, configure=configure)


__all__ = [
    "DEFAULT_EXCLUDE",
    "FAMILY_COLORS",
    "contributions_chart",
    "enforcement_chart",
    "exposure_concentration_chart",
    "flatten_metrics",
    "importance_chart",
    "importance_panel",
    "lorenz_points",
    "model_comparison_chart",
    "policy_comparison_chart",
    "rank_change_chart",
    "reliability_chart",
    "score_distribution_chart",
    "shap_waterfall_chart",
]
