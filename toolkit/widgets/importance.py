"""Which signals a surface's action models lean on: overall (gain, mean |SHAP|), and for one post of one viewer.

:class:`SignalImportance` pairs the models' importances (saved with them at training time,
:attr:`toolkit.predict.TrainedSurface.importance`) with one viewer's ranking: pick an action
and a post, and see the SHAP waterfall of that post's predicted action (in log-odds) and what
each action contributed to its score.

Example
-------
>>> from toolkit.widgets import SignalImportance
>>> panel = SignalImportance("data/feedlab.duckdb", "explore")  # doctest: +SKIP
>>> panel  # doctest: +SKIP
>>> panel.action.value = "save"; panel.shap.head(3)  # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
import os
from datetime import date, datetime
from typing import Any

import duckdb
import ipywidgets as W
import polars as pl

from toolkit.charts import chart_outputs, importance_panel, shap_waterfall_chart
from toolkit.errors import FeedlabError
from toolkit.explain.shap import SHAP_SCHEMA, post_features, shap_frame
from toolkit.predict.model import TrainedSurface
from toolkit.rank.ranker import _models, as_time, open_store, rank
from toolkit.widgets.tuner import _message_html, html_table, most_active_viewers, rules_text

__all__ = ["SignalImportance"]


class SignalImportance:
    """Importance of the signals behind a surface's predicted actions, overall and for one ranked post.

    ``action`` (a Dropdown of the models' actions) picks the action; the chart of ``importance``
    (the models' importance rows of that action: feature, family, gain, mean |SHAP|) is drawn
    by :func:`toolkit.charts.importance_panel`. ``post`` (a Dropdown) picks one of ``user``'s top
    ``k`` posts (default viewer: the surface's most active one) as :func:`toolkit.rank.rank`
    ranks them at ``at``; ``shap`` is then that post's SHAP values for the action
    (:func:`toolkit.explain.shap.shap_frame`, log-odds, base value in ``base_value``), drawn as a
    waterfall, and ``contributions`` (HTML) lists each action's weight x probability. Features
    are computed once for the ranked posts; switching action or post only runs TreeSHAP on one
    row. ``widget`` is the whole layout; a notebook shows the object itself.

    Example
    -------
    >>> panel = SignalImportance("data/feedlab.duckdb", "explore", user=17)  # doctest: +SKIP
    >>> panel.post.value = panel.post.options[2][1]  # doctest: +SKIP
    >>> panel.shap.head()  # doctest: +SKIP
    """

    def __init__(
        self,
        store: str | os.PathLike | duckdb.DuckDBPyConnection,
        surface: str,
        *,
        models: TrainedSurface | None = None,
        user: int | None = None,
        at: str | date | datetime | None = None,
        k: int = 20,
        top: int = 15,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FeedlabError(f"k must be a whole number >= 1 (got {k!r})")
        self.surface, self.top = surface, top
        with open_store(store) as con:
            self.models = _models(store, con, surface, models)
            self.at = as_time(at, con)
            self.user = int(user) if user is not None else most_active_viewers(con, surface, 1, at=self.at)[0]
            self.ranking = rank(con, surface, self.user, at=self.at, models=self.models, k=k)
            posts = self.ranking["post_id"].to_list()
            self._features = post_features(con, self.models, self.user, posts, at=self.at) if posts else None
        self._row_of = {int(p): i for i, p in enumerate(posts)}
        self.importance = pl.DataFrame()
        self.shap = pl.DataFrame(schema=SHAP_SCHEMA)
        self.base_value = math.nan
        self._problems: dict[str, str] = {}

        self.message = W.HTML()
        self.action = W.Dropdown(options=list(self.models.actions), value=self.models.actions[0], description="action")
        options = [
            (f"#{r['position'] + 1}: post {r['post_id']} by {r['author_id']}", int(r["post_id"]))
            for r in self.ranking.select("position", "post_id", "author_id").iter_rows(named=True)
        ]
        self.post = W.Dropdown(options=options, value=options[0][1] if options else None, description="post")
        self.importance_chart = W.Output()
        self.shap_chart = W.Output()
        self.contributions = W.HTML()
        self.action.observe(lambda _: self._refresh(), names="value")
        self.post.observe(lambda _: self._guarded(self._refresh_post), names="value")
        self.widget = W.VBox(
            [
                W.HTML(f"<b>{html.escape(surface)}</b>: signals behind the predicted actions; viewer {self.user} at {self.at:%Y-%m-%d %H:%M}"),
                W.HBox([self.action, self.post]),
                self.message,
                self.importance_chart,
                W.HBox([self.shap_chart, self.contributions]),
            ]
        )
        self._refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _guarded(self, *steps) -> None:
        """Run refresh steps; an error becomes the message line instead of escaping an observer, and later steps still run.

        Each step's last problem is kept until that step runs again, so a post change does not
        hide why the importance chart is missing.
        """
        for step in steps:
            try:
                step()
                self._problems.pop(step.__name__, None)
            except FeedlabError as exc:
                self._problems[step.__name__] = str(exc)
            except Exception as exc:  # noqa: BLE001 - an observer must not raise into the widget machinery
                self._problems[step.__name__] = f"unexpected error: {type(exc).__name__}: {exc}"
        self.message.value = _message_html("; ".join(self._problems.values()), "error")

    def _refresh(self) -> None:
        self._guarded(self._refresh_importance, self._refresh_post)

    def _refresh_importance(self) -> None:
        action = self.action.value
        importance = self.models.importance
        self.importance = importance.filter(pl.col("action") == action) if importance.height else importance
        self.importance_chart.outputs = ()
        if self.importance.height == 0:
            raise FeedlabError(f"the {self.surface} models were saved without importances for {action}")
        self.importance_chart.outputs = chart_outputs(importance_panel(importance, action=action, top=self.top))

    def _refresh_post(self) -> None:
        post = self.post.value
        if post is None or self._features is None:
            self.shap, self.base_value = pl.DataFrame(schema=SHAP_SCHEMA), math.nan
            self.shap_chart.outputs = ()
            self.contributions.value = ""
            raise FeedlabError(f"viewer {self.user} has nothing ranked on {self.surface} at {self.at:%Y-%m-%d %H:%M}: no post to explain")
        action = self.action.value
        self.shap, self.base_value = shap_frame(self.models, self._features, action, row=self._row_of[int(post)])
        self.contributions.value = self._contributions_html(int(post), action)
        title = f"post {post}: predicted {action}, log-odds"
        self.shap_chart.outputs = chart_outputs(shap_waterfall_chart(self.shap, base_value=self.base_value, title=title))

    def _contributions_html(self, post: int, action: str) -> str:
        row = self.ranking.filter(pl.col("post_id") == post).row(0, named=True)
        actions = [c.removeprefix("contribution_") for c in self.ranking.columns if c.startswith("contribution_")]
        rows = [
            {"action": ("▶ " if a == action else "") + a, "p": row[f"p_{a}"], "contribution": row[f"contribution_{a}"]}
            for a in actions
        ]
        rows.sort(key=lambda r: -abs(r["contribution"]))
        table = html_table(
            rows, [("action", "action", None), ("p", "probability", ".4f"), ("contribution", "weight x p", ".4f")],
            title=f"Score of post {post}: {row['base_score']:.4f} before rules, {row['score']:.4f} after",
        )  # fmt: skip
        rules = rules_text(row["rules"])
        return table + (f"<div>rules: {html.escape(rules)}</div>" if rules else "")
