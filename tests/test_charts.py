"""toolkit.charts: each chart's spec has the marks, encodings and aggregated values expected."""

from __future__ import annotations

import math

import altair as alt
import nbformat
import numpy as np
import polars as pl
import pytest

from toolkit.charts import (
    FEEDLAB_CONFIG,
    JUPYTERLAB_MIME_TYPE,
    MAX_ROWS,
    chart_mimebundle,
    contributions_chart,
    embedded_rows,
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
    use_offline_renderer,
)
from toolkit.errors import FeedlabError


def rows_of(spec: dict, layer: int | None = None) -> list[dict]:
    """The embedded rows of a top-level chart (or of one layer of a layered chart)."""
    node = spec if layer is None else spec["layer"][layer]
    name = node.get("data", {}).get("name") or spec["data"]["name"]
    return spec["datasets"][name]


def marks(spec: dict) -> list[str]:
    def kind(node):
        m = node["mark"]
        return m["type"] if isinstance(m, dict) else m

    return [kind(layer) for layer in spec["layer"]] if "layer" in spec else [kind(spec)]


def assert_styled(spec: dict) -> None:
    assert spec["config"]["font"] == FEEDLAB_CONFIG["font"]
    assert spec["config"]["title"]["anchor"] == "start"


IMPORTANCE = pl.DataFrame(
    {
        "action": ["like"] * 3 + ["save"] * 3,
        "feature": ["post_likes_1h", "author_followers", "va_follows"] * 2,
        "family": ["post", "author", "viewer_author"] * 2,
        "gain": [6.0, 3.0, 1.0, 10.0, 30.0, 60.0],
        "mean_abs_shap": [0.5, 0.25, 0.25, 0.1, 0.1, 0.2],
    }
)


# --------------------------------------------------------------------------- importance


def test_importance_by_feature_one_action_shares():
    spec = importance_chart(IMPORTANCE, action="like", metric="gain", top=2).to_dict()
    assert_styled(spec)
    assert marks(spec) == ["bar"]
    rows = rows_of(spec)
    assert [(r["key"], r["family"], r["share"]) for r in rows] == [
        ("post_likes_1h", "post", 0.6),
        ("author_followers", "author", 0.3),
    ]
    enc = spec["encoding"]
    assert enc["x"]["field"] == "share" and enc["x"]["title"] == "share of total gain"
    assert enc["color"]["field"] == "family"
    assert {t["field"] for t in enc["tooltip"]} == {"key", "family", "share", "value"}
    assert "top 2 of 3 features" in spec["title"]["subtitle"]


def test_importance_mean_over_actions_and_shap_title():
    spec = importance_chart(IMPORTANCE, metric="mean_abs_shap").to_dict()
    shares = {r["key"]: r["share"] for r in rows_of(spec)}
    # like: .5/.25/.25; save: .25/.25/.5 -> each action counts equally
    assert shares == pytest.approx({"post_likes_1h": 0.375, "author_followers": 0.25, "va_follows": 0.375})
    assert spec["encoding"]["x"]["title"] == "share of total mean |SHAP|"
    assert "mean_abs_shap" not in str(spec["encoding"]["x"]["title"])


def test_importance_by_family_reads_family_table():
    fam = IMPORTANCE.group_by("action", "family", maintain_order=True).agg(pl.col("gain").sum(), pl.col("mean_abs_shap").sum())
    spec = importance_chart(fam, action="save", by="family").to_dict()
    assert [(r["key"], r["share"]) for r in rows_of(spec)] == [("viewer × author", 0.6), ("author", 0.3), ("post", 0.1)]
    assert [r["family"] for r in rows_of(spec)] == ["viewer × author", "author", "post"]


def test_importance_panel_has_four_charts():
    spec = importance_panel(IMPORTANCE, action="like").to_dict()
    assert_styled(spec)
    assert [len(row["hconcat"]) for row in spec["vconcat"]] == [2, 2]
    titles = [c["encoding"]["x"]["title"] for row in spec["vconcat"] for c in row["hconcat"]]
    assert titles == ["share of total gain", "share of total mean |SHAP|"] * 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "cover"}, "unknown metric 'cover'"),
        ({"by": "author"}, "unknown by 'author'"),
        ({"action": "comment"}, "unknown action 'comment'"),
        ({"top": 0}, "top must be"),
    ],
)
def test_importance_bad_options(kwargs, message):
    with pytest.raises(FeedlabError, match=message):
        importance_chart(IMPORTANCE, **kwargs)


def test_importance_missing_column_and_empty():
    with pytest.raises(FeedlabError, match="no feature column"):
        importance_chart(IMPORTANCE.drop("feature"))
    with pytest.raises(FeedlabError, match=r"lacks column\(s\) \['gain'\]"):
        importance_chart(IMPORTANCE.drop("gain"))
    with pytest.raises(FeedlabError, match="empty"):
        importance_chart(IMPORTANCE.clear())
    with pytest.raises(FeedlabError, match="polars DataFrame"):
        importance_chart({"gain": [1.0]})
    with pytest.raises(FeedlabError, match="every gain is 0 for action 'like'"):
        importance_chart(IMPORTANCE.with_columns(pl.lit(0.0).alias("gain")), action="like")


def test_importance_leaves_out_actions_that_never_split():
    never = pl.DataFrame({"action": ["report"] * 3, "feature": IMPORTANCE["feature"][:3], "family": IMPORTANCE["family"][:3],
                          "gain": [0.0] * 3, "mean_abs_shap": [0.0] * 3})  # fmt: skip
    rows = rows_of(importance_chart(pl.concat([IMPORTANCE.head(3), never])).to_dict())
    assert [r["share"] for r in rows] == [0.6, 0.3, 0.1]


def test_importance_of_real_models(ranked_world):
    from toolkit.predict import load_models

    trained = load_models(ranked_world, "feed")
    spec = importance_chart(trained.importance, top=5).to_dict()
    rows = rows_of(spec)
    assert len(rows) == 5
    assert all(0 <= r["share"] <= 1 for r in rows)
    assert [r["share"] for r in rows] == sorted((r["share"] for r in rows), reverse=True)
    fam = importance_chart(trained.family_importance, by="family", metric="mean_abs_shap").to_dict()
    assert sum(r["share"] for r in rows_of(fam)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- rank change


def test_rank_change_statuses_and_positions():
    before = pl.DataFrame({"post_id": [10, 11, 12, 13], "position": [0, 1, 2, 3], "author": ["a", "b", "c", "d"]})
    after = pl.DataFrame({"post_id": [12, 10, 14, 11], "position": [0, 1, 2, 3], "author": ["c", "a", "e", "b"]})
    spec = rank_change_chart(before, after, k=3, label="author").to_dict()
    assert_styled(spec)
    assert marks(spec) == ["line", "point", "text", "text"]
    rows = rows_of(spec)
    status = {r["post_id"]: r["status"] for r in rows}
    # 12 moved from position 2 to 0; 10 from 0 to 1; 14 entered; 11 fell out of the top 3
    assert status == {12: "up", 10: "down", 14: "new", 11: "dropped"}
    slots = {(r["post_id"], r["side"]): r["slot"] for r in rows}
    assert slots[(12, "before")] == "3" and slots[(12, "after")] == "1"
    assert slots[(14, "before")] == "not in top 3" and slots[(11, "after")] == "not in top 3"
    assert {r["name"] for r in rows} == {"a", "b", "c", "e"}
    moved = {r["post_id"]: r["moved"] for r in rows}
    assert moved[12] == 2 and moved[10] == -1 and moved[14] is None
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == ["1", "2", "3", "not in top 3"]
    assert len(rows) == 8  # two ends per post; post 13 is in neither top 3


def test_rank_change_bad_input():
    ok = pl.DataFrame({"post_id": [1], "position": [0]})
    with pytest.raises(FeedlabError, match="more than once"):
        rank_change_chart(pl.DataFrame({"post_id": [1, 1], "position": [0, 1]}), ok)
    with pytest.raises(FeedlabError, match="lacks column"):
        rank_change_chart(ok.drop("position"), ok)
    with pytest.raises(FeedlabError, match="both empty"):
        rank_change_chart(ok.clear(), ok.clear())
    with pytest.raises(FeedlabError, match="label column 'author'"):
        rank_change_chart(ok, ok, label="author")


# --------------------------------------------------------------------------- score distribution


def test_histogram_counts_equal_numpy_and_aggregate_big_input():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=20_000)
    frame = pl.DataFrame({"score": scores, "surface": rng.choice(["feed", "reels"], size=scores.size)})
    spec = score_distribution_chart(frame, bins=25).to_dict()
    assert_styled(spec)
    assert marks(spec) == ["bar"]
    counts, edges = np.histogram(scores, bins=25)
    rows = rows_of(spec)
    assert [r["count"] for r in rows] == counts.tolist()
    assert [r["bin_start"] for r in rows] == pytest.approx(edges[:-1].tolist())
    assert embedded_rows(spec) == 25 <= MAX_ROWS
    assert spec["encoding"]["x"]["title"] == "score" and spec["encoding"]["y"]["title"] == "rows"

    by = score_distribution_chart(frame, by="surface", bins=10, normalize=True).to_dict()
    rows = rows_of(by)
    assert len(rows) == 20
    feed = frame.filter(pl.col("surface") == "feed")["score"].to_numpy()
    expect, _ = np.histogram(feed, bins=np.linspace(scores.min(), scores.max(), 11))
    assert [r["count"] for r in rows if r["series"] == "feed"] == expect.tolist()
    assert sum(r["share"] for r in rows if r["series"] == "reels") == pytest.approx(1.0)
    assert by["encoding"]["color"]["field"] == "series" and by["encoding"]["y"]["field"] == "share"


def test_histogram_drops_nulls_and_rejects_bad_input():
    frame = pl.DataFrame({"score": [1.0, None, float("nan"), 3.0]})
    spec = score_distribution_chart(frame, bins=2).to_dict()
    assert [r["count"] for r in rows_of(spec)] == [1, 1]
    assert "2 null/NaN left out" in spec["title"]["subtitle"]
    with pytest.raises(FeedlabError, match="lacks column"):
        score_distribution_chart(frame, score="p_like")
    with pytest.raises(FeedlabError, match="no finite values"):
        score_distribution_chart(pl.DataFrame({"score": [None, None]}, schema={"score": pl.Float64}))
    with pytest.raises(FeedlabError, match="bins must be"):
        score_distribution_chart(frame, bins=0)
    with pytest.raises(FeedlabError, match="at most 2 series"):
        score_distribution_chart(pl.DataFrame({"score": [1, 2, 3], "g": ["a", "b", "c"]}), by="g", max_series=2)


# --------------------------------------------------------------------------- reliability


def test_reliability_lines_per_action_with_diagonal():
    from toolkit.predict import reliability_table

    like = reliability_table([0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95])
    save = reliability_table([0, 0, 1], [0.1, 0.1, 0.3])
    spec = reliability_chart({"like": like, "save": save}).to_dict()
    assert_styled(spec)
    assert marks(spec) == ["line", "line", "circle"]
    diag = rows_of(spec, 0)
    assert (diag[0]["x"], diag[0]["y"]) == (0.0, 0.0) and diag[1]["x"] == diag[1]["y"]
    rows = rows_of(spec, 1)
    assert [(r["action"], r["bin"], r["fraction_positive"], r["count"]) for r in rows] == [
        ("like", 0, 0.0, 1),
        ("like", 1, 0.5, 2),
        ("like", 9, 1.0, 1),
        ("save", 1, 0.0, 2),
        ("save", 3, 1.0, 1),
    ]
    assert spec["layer"][1]["encoding"]["x"]["title"] == "mean predicted probability"
    assert spec["layer"][2]["encoding"]["size"]["field"] == "count"


def test_reliability_bad_input():
    with pytest.raises(FeedlabError, match="lacks column"):
        reliability_chart(pl.DataFrame({"bin": [0]}))
    with pytest.raises(FeedlabError, match="non-empty dict"):
        reliability_chart({})
    empty = pl.DataFrame({"bin": [0], "mean_predicted": [None], "fraction_positive": [None], "count": [0]})
    with pytest.raises(FeedlabError, match="every bin"):
        reliability_chart(empty)


# --------------------------------------------------------------------------- policies

POLICIES = {
    "current": {
        "ndcg_at_k": 0.5,
        "expected_actions_per_session": {"like": 0.2, "save": 0.0},
        "author_exposure_gini": 0.4,
        "small_creator_exposure_share": float("nan"),
        "sessions": 100,
        "note": "text",
    },
    "more saves": {
        "ndcg_at_k": 0.45,
        "expected_actions_per_session": {"like": 0.25, "save": 0.1},
        "author_exposure_gini": 0.3,
        "sessions": 100,
    },
}


def test_flatten_metrics():
    assert flatten_metrics(POLICIES["current"]) == {
        "ndcg_at_k": 0.5,
        "expected_like": 0.2,
        "expected_save": 0.0,
        "author_exposure_gini": 0.4,
        "sessions": 100.0,
    }


def test_policy_comparison_facets_metrics():
    spec = policy_comparison_chart(POLICIES).to_dict()
    assert_styled(spec)
    assert spec["resolve"]["scale"]["x"] == "independent"
    assert spec["facet"]["field"] == "metric_label"
    rows = rows_of(spec)
    got = {(r["policy"], r["metric"]): r["value"] for r in rows}
    assert got[("current", "expected_like")] == 0.2 and got[("more saves", "ndcg_at_k")] == 0.45
    assert ("current", "sessions") not in got  # a count, not an outcome
    assert ("current", "note") not in got and ("current", "small_creator_exposure_share") not in got
    assert {r["metric_label"] for r in rows} >= {"NDCG@k", "expected like / session", "author exposure Gini"}


def test_policy_comparison_relative_change():
    spec = policy_comparison_chart(POLICIES, baseline="current").to_dict()
    layer = spec["layer"][0]
    assert layer["mark"]["type"] == "bar" and layer["encoding"]["yOffset"]["field"] == "policy"
    change = {r["metric"]: r["change"] for r in rows_of(spec, 0)}
    # expected_save has baseline 0: its relative change is undefined and left out
    assert change == pytest.approx({"ndcg_at_k": -0.1, "expected_like": 0.25, "author_exposure_gini": -0.25})
    with pytest.raises(FeedlabError, match="unknown baseline 'nope'"):
        policy_comparison_chart(POLICIES, baseline="nope")
    with pytest.raises(FeedlabError, match="no numeric metrics"):
        policy_comparison_chart({"a": {"x": "text"}})


# --------------------------------------------------------------------------- exposure


def test_lorenz_end_points_and_hand_computed_gini():
    # values 1, 2, 3, 4: sum |x_i - x_j| over ordered pairs = 20, n = 4, mean 2.5 -> 20 / (2 * 16 * 2.5) = 0.25
    curve, g = lorenz_points([4, 1, 3, 2])
    assert g == pytest.approx(0.25)
    assert curve["author_share"].to_list() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["exposure_share"].to_list() == pytest.approx([0.0, 0.1, 0.3, 0.6, 1.0])


def test_exposure_chart_single_and_downsampled_per_policy():
    frame = pl.DataFrame({"author_id": [1, 2, 3, 4, 4], "exposure": [1.0, 2.0, 3.0, 1.0, 3.0]})  # author 4: 4
    spec = exposure_concentration_chart(frame).to_dict()
    assert_styled(spec)
    assert spec["title"]["text"] == "Exposure concentration: Gini 0.250"
    assert marks(spec) == ["line", "line"]
    rows = rows_of(spec, 1)
    assert (rows[0]["author_share"], rows[0]["exposure_share"]) == (0.0, 0.0)
    assert (rows[-1]["author_share"], rows[-1]["exposure_share"]) == pytest.approx((1.0, 1.0))

    rng = np.random.default_rng(0)
    n = 50_000
    big = pl.DataFrame({"author": np.arange(n), "att": rng.pareto(1.5, n)})
    equal = pl.DataFrame({"author": np.arange(n), "att": np.ones(n)})
    spec = exposure_concentration_chart({"ranked": big, "chronological": equal}, author="author", value="att").to_dict()
    assert embedded_rows(spec) <= MAX_ROWS
    rows = rows_of(spec, 1)
    assert len(rows) == 2 * 201
    series = {r["series"] for r in rows}
    assert "chronological (Gini 0.000)" in series
    x = np.sort(big["att"].to_numpy())
    expect = np.abs(x[:2000, None] - x[None, :2000]).sum() / (2 * 2000**2 * x[:2000].mean())
    _, g_small = lorenz_points(x[:2000])
    assert g_small == pytest.approx(expect)  # the O(n log n) formula equals the pairwise definition


def test_exposure_bad_input():
    with pytest.raises(FeedlabError, match="non-negative"):
        exposure_concentration_chart(pl.DataFrame({"author_id": [1, 2], "exposure": [1.0, -1.0]}))
    with pytest.raises(FeedlabError, match="every exposure is 0"):
        exposure_concentration_chart(pl.DataFrame({"author_id": [1], "exposure": [0.0]}))
    with pytest.raises(FeedlabError, match="lacks column"):
        exposure_concentration_chart({"a": pl.DataFrame({"author_id": [1]})})


# --------------------------------------------------------------------------- contributions


def test_contributions_stacked_by_position():
    ranking = pl.DataFrame(
        {
            "position": [1, 0],
            "post_id": [501, 500],
            "author_id": [7, 8],
            "score": [0.3, 0.9],
            "base_score": [0.3, 1.0],
            "p_like": [0.2, 0.5],
            "contribution_like": [0.2, 0.5],
            "contribution_hide": [-0.1, 0.0],
            "contribution_save": [0.2, 0.5],
            "rules": [[], [{"rule": "author_diversity", "effect": "demoted", "factor": 0.9}]],
        }
    )
    spec = contributions_chart(ranking, label="author_id").to_dict()
    assert_styled(spec)
    assert marks(spec) == ["bar", "rule", "tick"]
    bars = spec["layer"][0]
    assert bars["encoding"]["y"]["sort"] == ["#1  8", "#2  7"]  # ordered by position, 1-based
    assert bars["encoding"]["x"]["stack"] == "zero"
    rows = rows_of(spec, 0)
    got = {(r["post"], r["action"]): r["contribution"] for r in rows}
    assert got == {
        ("#1  8", "like"): 0.5, ("#1  8", "hide"): 0.0, ("#1  8", "save"): 0.5,
        ("#2  7", "like"): 0.2, ("#2  7", "hide"): -0.1, ("#2  7", "save"): 0.2,
    }  # fmt: skip
    assert {r["rules_text"] for r in rows} == {"", "author_diversity: demoted ×0.9"}
    assert [r["score"] for r in rows_of(spec, 2)] == [0.9, 0.3]
    with pytest.raises(FeedlabError, match="no contribution_"):
        contributions_chart(ranking.select("position", "post_id"))
    assert len(rows_of(contributions_chart(ranking, top=1).to_dict(), 0)) == 3


# --------------------------------------------------------------------------- SHAP waterfall


def test_waterfall_ends_at_base_plus_sum_and_folds_the_rest():
    contrib = pl.DataFrame(
        {
            "feature": ["a", "b", "c", "d"],
            "shap": [0.1, -0.8, 0.5, 0.05],
            "value": [1.5, 0.0, 3.0, None],
            "family": ["post", "viewer_author", "author", "post"],
        }
    )
    spec = shap_waterfall_chart(contrib, base_value=-2.0, top=2, title="like: post 7").to_dict()
    assert_styled(spec)
    assert marks(spec) == ["bar"]
    rows = rows_of(spec)
    assert [r["name"] for r in rows] == ["base value", "b", "c", "other features (2)", "prediction"]
    assert [r["kind"] for r in rows] == ["base", "lowers", "raises", "raises", "prediction"]
    assert rows[1]["start"] == -2.0 and rows[1]["end"] == pytest.approx(-2.8)
    assert rows[3]["shap"] == pytest.approx(0.15)
    assert rows[-1]["end"] == pytest.approx(-2.0 + 0.1 - 0.8 + 0.5 + 0.05)
    assert rows[-2]["end"] == pytest.approx(rows[-1]["end"])
    assert rows[-1]["probability"] == pytest.approx(1 / (1 + math.exp(2.15)))
    assert rows[1]["value"] == "0" and rows[1]["family"] == "viewer × author"
    assert spec["title"]["text"] == "like: post 7" and spec["encoding"]["x"]["title"] == "log-odds"
    assert {t["title"] for t in spec["encoding"]["tooltip"]} >= {"value", "SHAP (log-odds)"}


def test_waterfall_bad_input():
    ok = pl.DataFrame({"feature": ["a"], "shap": [0.1]})
    with pytest.raises(FeedlabError, match="base_value"):
        shap_waterfall_chart(ok, base_value=float("nan"))
    with pytest.raises(FeedlabError, match="more than once"):
        shap_waterfall_chart(pl.concat([ok, ok]), base_value=0.0)
    with pytest.raises(FeedlabError, match="lacks column"):
        shap_waterfall_chart(ok.drop("shap"), base_value=0.0)


# --------------------------------------------------------------------------- display


def test_mimebundle_and_offline_renderer():
    chart = score_distribution_chart(pl.DataFrame({"score": [0.1, 0.5]}), bins=2)
    bundle = chart_mimebundle(chart)
    spec = bundle[JUPYTERLAB_MIME_TYPE]
    assert JUPYTERLAB_MIME_TYPE == "application/vnd.vegalite.v5+json"
    assert spec["$schema"].endswith("/vega-lite/v5.json")
    assert {k: v for k, v in spec.items() if k != "$schema"} == {k: v for k, v in chart.to_dict().items() if k != "$schema"}
    # every key holding JSON is a *+json mimetype: nbformat (and so nbclient, nbconvert) accept it
    nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("display_data", data=bundle)])]))  # fmt: skip
    assert bundle["text/plain"] == "<feedlab chart: Distribution of score>"
    with pytest.raises(FeedlabError, match="altair chart"):
        chart_mimebundle({"mark": "bar"})

    before = alt.renderers.active
    try:
        use_offline_renderer()
        assert alt.renderers.active == "feedlab"
        shown = chart._repr_mimebundle_()
        shown = shown[0] if isinstance(shown, tuple) else shown
        assert JUPYTERLAB_MIME_TYPE in shown
    finally:
        alt.renderers.enable(before)


def test_import_changes_no_altair_setting():
    import importlib

    import toolkit.charts
    import toolkit.charts.charts
    import toolkit.charts.style

    before = (alt.renderers.active, alt.theme.active, alt.data_transformers.active)
    for module in (toolkit.charts.style, toolkit.charts.charts, toolkit.charts):
        importlib.reload(module)  # runs the module's top level again
    assert (alt.renderers.active, alt.theme.active, alt.data_transformers.active) == before


def test_model_comparison_keeps_every_model_per_action_in_order():
    t = pl.DataFrame({
        "action": ["like", "like", "like", "dwell", "dwell", "dwell"],
        "model": ["feedlab", "history_rates", "pre_impression"] * 2,
        "auc": [0.9, 0.85, 0.6, 0.7, 0.72, 0.55],
        "rce": [40.0, 30.0, 2.0, 10.0, 11.0, 1.0],
    })
    spec = model_comparison_chart(t).to_dict()
    rows = list(spec["datasets"].values())[0]
    assert [(r["action"], r["model"], r["auc"]) for r in rows] == list(zip(t["action"], t["model"], t["auc"]))
    assert spec["encoding"]["y"]["sort"] == ["like", "dwell"]
    assert spec["encoding"]["yOffset"]["sort"] == ["feedlab", "history_rates", "pre_impression"]
    assert spec["encoding"]["x"]["field"] == "auc"
    assert model_comparison_chart(t, metric="rce").to_dict()["encoding"]["x"]["field"] == "rce"
    with pytest.raises(FeedlabError, match="lacks column"):
        model_comparison_chart(t, metric="pr_auc")
    with pytest.raises(FeedlabError, match="must be a numeric column"):
        model_comparison_chart(t, metric="model")
    with pytest.raises(FeedlabError, match="is empty"):
        model_comparison_chart(t.clear())
