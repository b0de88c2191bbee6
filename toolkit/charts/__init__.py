"""Charts of the toolkit's analyses: altair (Vega-Lite) charts from plain frames and dicts.

Every function takes data as arguments (the frames and dicts that :mod:`toolkit.predict`,
:mod:`toolkit.rank` and :mod:`toolkit.explain` return), aggregates it to at most 5,000 rows,
and returns a chart with one shared look (:data:`FEEDLAB_CONFIG`). Bad input (an unknown option,
a missing column, an empty frame) is a :class:`~toolkit.errors.FeedlabError`. Importing this
module changes no altair setting; notebooks call :func:`use_offline_renderer` once so that
JupyterLab draws charts with its bundled Vega (the default renderer needs a CDN), and widgets
show a chart in an ``ipywidgets.Output`` by setting its ``outputs`` to a
:func:`chart_mimebundle`.

This layer may import :mod:`toolkit.predict`; it never imports :mod:`toolkit.rank` or the widgets.

Example
-------
>>> import polars as pl
>>> from toolkit.charts import score_distribution_chart
>>> chart = score_distribution_chart(pl.DataFrame({"score": [0.1, 0.2, 0.9]}), bins=4)
>>> chart.to_dict()["mark"]["type"]
'bar'
"""

from toolkit.charts.charts import (
    DEFAULT_EXCLUDE,
    contributions_chart,
    enforcement_chart,
    exposure_concentration_chart,
    flatten_metrics,
    importance_chart,
    importance_panel,
    lorenz_points,
    model_comparison_chart,
    policy_comparison_chart,
    rank_change_chart,
    reliability_chart,
    score_distribution_chart,
    shap_waterfall_chart,
)
from toolkit.charts.style import (
    ALTAIR_MIME_TYPE,
    FAMILY_COLORS,
    FEEDLAB_CONFIG,
    JUPYTERLAB_MIME_TYPE,
    MAX_ROWS,
    ChartLike,
    chart_mimebundle,
    chart_outputs,
    embedded_rows,
    finish,
    label,
    use_offline_renderer,
)

__all__ = [
    "ALTAIR_MIME_TYPE",
    "DEFAULT_EXCLUDE",
    "FAMILY_COLORS",
    "FEEDLAB_CONFIG",
    "JUPYTERLAB_MIME_TYPE",
    "MAX_ROWS",
    "ChartLike",
    "chart_mimebundle",
    "chart_outputs",
    "contributions_chart",
    "enforcement_chart",
    "embedded_rows",
    "exposure_concentration_chart",
    "finish",
    "flatten_metrics",
    "importance_chart",
    "importance_panel",
    "label",
    "lorenz_points",
    "model_comparison_chart",
    "policy_comparison_chart",
    "rank_change_chart",
    "reliability_chart",
    "score_distribution_chart",
    "shap_waterfall_chart",
    "use_offline_renderer",
]
