"""Benchmark signals and predictors on the default world: speed, and quality against the truth.

Prints one JSON document (and writes it to ``--out``) with, per surface:

- feature rows/s of :func:`toolkit.signals.training_frame`, and on one surface the ratio of a
  plain pandas implementation of the same features (``benchmarks/pandas_features.py``) run in
  the same process on the same requests (``pandas_over_polars`` > 1: polars is faster);
- training seconds per action (each surface's models also train on the earlier rows of the
  surface of the same kind, as ``train_surface`` does by default; ``--pool none`` trains on the
  surface's own rows, ``--pool all`` on every surface's), and predict rows/s with
  ``inplace_predict``;
- quality on the test days against the issue's targets: the AUC gap to the oracle (the ``p_``
  columns) over actions with at least 1,000 test positives (mean <= 0.02, none > 0.03), ECE
  (<= 0.01) and RCE (>= 70% of the oracle's), each with a pass flag;
- beside it, the AUC of the same XGBoost trained on the simulator's own inputs
  (``sim_impression_inputs``): the gap between the two is what the signals lose;
- on one action, XGBoost's training time over LightGBM's on the same matrix, with both AUCs.

    python benchmarks/bench_predict.py                    # builds the default world in a temp dir
    python benchmarks/bench_predict.py --db data/feedlab.duckdb --surfaces feed,reels
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, report

MIN_TEST_POSITIVES = 1000


def _pandas_baseline():
    spec = importlib.util.spec_from_file_location("pandas_features", ROOT / "benchmarks" / "pandas_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_features_pandas


def feature_speed(con, surface: str, *, with_pandas: bool) -> tuple[dict, object]:
    """Seconds and rows/s of the polars features (and of the pandas baseline on the same requests)."""
    from toolkit.signals import compute_features, training_frame

    started = time.perf_counter()
    frame = training_frame(con, surface)
    seconds = time.perf_counter() - started
    out = {"rows": frame.height, "seconds": round(seconds, 2), "rows_per_s": round(frame.height / seconds)}
    if with_pandas:
        requests = con.sql(
            "select impression_id, user_id, post_id, ts, device, position from impressions where surface = ? order by ts",
            params=[surface],
        )
        req_pl, req_pd = requests.pl(), requests.df()
        started = time.perf_counter()
        compute_features(con, req_pl)
        polars_s = time.perf_counter() - started
        started = time.perf_counter()
        _pandas_baseline()(con, req_pd)
        pandas_s = time.perf_counter() - started
        out.update(
            compute_features_seconds=round(polars_s, 2),
            pandas_seconds=round(pandas_s, 2),
            pandas_over_polars=round(pandas_s / polars_s, 2),
        )
    return out, frame


def predict_speed(trained, frame) -> dict:
    """Rows/s of inplace_predict over every action's model on the test rows."""
    import polars as pl

    from toolkit.predict.predict import feature_matrix

    test = frame.filter(pl.col("ts") >= trained.train_until)
    X = feature_matrix(test, trained.features)
    started = time.perf_counter()
    for booster in trained.boosters.values():
        booster.inplace_predict(X)
    seconds = time.perf_counter() - started
    return {"rows": test.height, "models": len(trained.boosters), "row_predictions_per_s": round(test.height * len(trained.boosters) / seconds)}


def truth_inputs_auc(con, trained, frame, actions: list[str]) -> dict[str, float]:
    """AUC of the same booster settings trained on the simulator's own inputs, same split."""
    import numpy as np
    import polars as pl
    import xgboost as xgb

    from toolkit.predict.metrics import roc_auc
    from toolkit.store.schema import CONTENT_FLAGS, DEVICES, FORMATS
    from toolkit.synth.simulate import _INPUT_FEATURES

    inputs = con.sql(
        "select x.* exclude (impression_id), i.impression_id, p.duration_s, "
        + ", ".join(f"a.propensity_{a}" for a in actions)
        + ", " + ", ".join(f"p.{f}::int as {f}" for f in CONTENT_FLAGS)
        + ", " + ", ".join(f"(p.format = '{f}')::int as format_{f}" for f in FORMATS)
        + ", " + ", ".join(f"(i.device = '{d}')::int as device_{d}" for d in DEVICES)
        + " from sim_impression_inputs x join impressions i using (impression_id) join posts p using (post_id) "
        "join sim_accounts a on a.user_id = i.user_id where i.surface = ?",
        params=[trained.surface],
    ).pl()
    joined = frame.select("impression_id", "ts", *actions).join(inputs, on="impression_id", how="left", maintain_order="left")
    static = ["duration_s", *_INPUT_FEATURES, "examination", *CONTENT_FLAGS, *(f"format_{f}" for f in FORMATS), *(f"device_{d}" for d in DEVICES)]
    w = trained.window
    fit = joined.filter(pl.col("ts") < w["valid_start"])
    valid = joined.filter((pl.col("ts") >= w["valid_start"]) & (pl.col("ts") < w["train_until"]))
    test = joined.filter(pl.col("ts") >= w["train_until"])
    params = {k: v for k, v in trained.params.items() if k not in ("max_rounds", "early_stopping_rounds")}
    out = {}
    for action in actions:
        cols = [*static, f"propensity_{action}"]

        def part(df):
            keep = df[action].is_not_null()
            return df.filter(keep).select(cols).to_numpy().astype(np.float32), df.filter(keep)[action].cast(pl.Float32).to_numpy()

        (Xf, yf), (Xv, yv), (Xt, yt) = part(fit), part(valid), part(test)
        dfit = xgb.QuantileDMatrix(Xf, yf)
        booster = xgb.train(
            params, dfit, num_boost_round=trained.params["max_rounds"],
            evals=[(xgb.QuantileDMatrix(Xv, yv, ref=dfit), "valid")],
            early_stopping_rounds=trained.params["early_stopping_rounds"], verbose_eval=False,
        )  # fmt: skip
        out[action] = roc_auc(yt, booster.inplace_predict(Xt, iteration_range=(0, booster.best_iteration + 1)))
    return out


def lightgbm_ratio(trained, frame, action: str, pooled=None) -> dict:
    """XGBoost's training seconds over LightGBM's for one action on the same matrix, with both AUCs.

    ``pooled`` is what ``train_on_frame`` got: its rows before the early-stopping day join the
    fit rows here too, so both libraries learn from the same rows.
    """
    import lightgbm as lgb
    import numpy as np
    import polars as pl

    from toolkit.predict.metrics import roc_auc
    from toolkit.predict.predict import feature_matrix

    w = trained.window
    fit = frame.filter(pl.col("ts") < w["valid_start"])
    if pooled is not None:  # in train_on_frame's order: the surface's rows, then the pooled ones
        columns = ["ts", *trained.features, action]
        fit = pl.concat([fit.select(columns), pooled.filter(pl.col("ts") < w["valid_start"]).select(columns)])
    parts = {
        "fit": fit,
        "valid": frame.filter((pl.col("ts") >= w["valid_start"]) & (pl.col("ts") < w["train_until"])),
        "test": frame.filter(pl.col("ts") >= w["train_until"]),
    }
    data = {}
    for name, df in parts.items():
        df = df.filter(pl.col(action).is_not_null())
        data[name] = (feature_matrix(df, trained.features), df[action].cast(pl.Float32).to_numpy())
    p = trained.params
    params = {
        "objective": "binary",
        "learning_rate": p["eta"],
        "max_depth": p["max_depth"],
        "num_leaves": 2 ** p["max_depth"] - 1,
        "feature_fraction": p["colsample_bytree"],
        "bagging_fraction": p["subsample"],
        "bagging_freq": 1,
        "min_sum_hessian_in_leaf": p["min_child_weight"],
        "lambda_l2": p["lambda"],
        "num_threads": p["nthread"],
        "seed": p["seed"],
        "verbose": -1,
    }
    started = time.perf_counter()
    dtrain = lgb.Dataset(data["fit"][0], data["fit"][1])
    model = lgb.train(
        params, dtrain, num_boost_round=p["max_rounds"],
        valid_sets=[lgb.Dataset(data["valid"][0], data["valid"][1], reference=dtrain)],
        callbacks=[lgb.early_stopping(p["early_stopping_rounds"], verbose=False)],
    )  # fmt: skip
    lgb_seconds = time.perf_counter() - started
    lgb_auc = roc_auc(data["test"][1], model.predict(data["test"][0], num_iteration=model.best_iteration))
    xgb_auc = trained.metrics[action]["auc"]
    # the XGBoost time includes only boosting: its QuantileDMatrix was built once for all actions
    xgb_seconds = trained.train_seconds[action]
    return {
        "action": action,
        "xgboost_seconds": round(xgb_seconds, 2),
        "lightgbm_seconds": round(lgb_seconds, 2),
        "xgboost_over_lightgbm": round(xgb_seconds / lgb_seconds, 2),
        "xgboost_auc": round(xgb_auc, 4),
        "lightgbm_auc": round(lgb_auc, 4),
        "matched_auc": bool(abs(xgb_auc - lgb_auc) <= 0.002),
        "xgboost_rounds": trained.best_iteration[action] + 1,
        "lightgbm_rounds": int(model.best_iteration),
        "note": "LightGBM's time includes building its Dataset; XGBoost's excludes the shared QuantileDMatrix",
        "matrix_rows": int(len(data["fit"][1])),
        "features": int(np.shape(data["fit"][0])[1]),
    }


def diagnostics(trained, frame, actions: list[str]) -> dict:
    """What bounds the scores: the oracle's own ECE on the same rows (sampling noise alone), and
    the AUC gap by how much history the viewer had (quartiles of viewer_impressions_total)."""
    import polars as pl

    from toolkit.predict import predict_actions
    from toolkit.predict.metrics import expected_calibration_error, roc_auc

    test = frame.filter(pl.col("ts") >= trained.train_until)
    predictions = predict_actions(trained, test).select(pl.col(f"p_{a}").alias(f"pred_{a}") for a in actions)
    test = pl.concat([test, predictions], how="horizontal")
    edges = test["viewer_impressions_total"].quantile(0.25), test["viewer_impressions_total"].quantile(0.5), test["viewer_impressions_total"].quantile(0.75)
    bucket = (
        pl.when(pl.col("viewer_impressions_total") < edges[0]).then(pl.lit(f"q1 <{edges[0]:.0f}"))
        .when(pl.col("viewer_impressions_total") < edges[1]).then(pl.lit(f"q2 <{edges[1]:.0f}"))
        .when(pl.col("viewer_impressions_total") < edges[2]).then(pl.lit(f"q3 <{edges[2]:.0f}"))
        .otherwise(pl.lit(f"q4 >={edges[2]:.0f}"))
    )  # fmt: skip
    test = test.with_columns(bucket.alias("_history"))
    out: dict = {"oracle_ece": {}, "auc_gap_by_viewer_history": {}}
    for action in actions:
        rows = test.filter(pl.col(action).is_not_null())
        y = rows[action].cast(pl.Float64).to_numpy()
        out["oracle_ece"][action] = round(expected_calibration_error(y, rows[f"p_{action}"].to_numpy()), 4)
        gaps = {}
        for name, part in sorted(rows.group_by("_history"), key=lambda kv: kv[0][0]):
            yy = part[action].cast(pl.Float64).to_numpy()
            gaps[name[0]] = round(roc_auc(yy, part[f"p_{action}"].to_numpy()) - roc_auc(yy, part[f"pred_{action}"].to_numpy()), 4)
        out["auc_gap_by_viewer_history"][action] = gaps
    return out


def quality(trained, truth_auc: dict[str, float]) -> dict:
    """The issue's targets on the actions with enough test positives, with pass flags."""
    rows = {}
    for action, m in trained.metrics.items():
        rows[action] = {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
        if action in truth_auc:
            rows[action]["truth_inputs_auc"] = round(truth_auc[action], 4)
    judged = [a for a, m in trained.metrics.items() if m.get("positives", 0) >= MIN_TEST_POSITIVES and not math.isnan(m.get("oracle_auc", math.nan))]
    if not judged:
        return {"actions": rows, "judged": []}
    gaps = [trained.metrics[a]["auc_gap"] for a in judged]
    eces = [trained.metrics[a]["ece"] for a in judged]
    rce_share = [trained.metrics[a]["rce"] / trained.metrics[a]["oracle_rce"] for a in judged]
    return {
        "actions": rows,
        "judged": judged,
        "mean_auc_gap": round(sum(gaps) / len(gaps), 4),
        "max_auc_gap": round(max(gaps), 4),
        "max_ece": round(max(eces), 4),
        "min_rce_share_of_oracle": round(min(rce_share), 3),
        "targets_met": {
            "mean_auc_gap<=0.02": sum(gaps) / len(gaps) <= 0.02,
            "max_auc_gap<=0.03": max(gaps) <= 0.03,
            "ece<=0.01": max(eces) <= 0.01,
            "rce>=70%_of_oracle": min(rce_share) >= 0.7,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a simulated store (default: build the default world in a temp dir)")
    parser.add_argument("--surfaces", default="feed,stories,explore,reels")
    parser.add_argument("--pandas-surface", default="reels", help="surface on which to time the pandas baseline")
    parser.add_argument("--lightgbm-action", default="like")
    parser.add_argument("--pool", choices=["default", "all", "none"], default="default",
                        help="whose earlier rows train each surface's models: the same kind's (default), every surface's, or its own")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from toolkit.predict import default_pool, pooled_rows, train_on_frame
    from toolkit.store import SURFACES, connect
    from toolkit.synth import SynthConfig, build_world

    results: dict = {"benchmark": "predict", "surfaces": {}}
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        if db is None:
            db = Path(tmp) / "default.duckdb"
            results["world"] = build_world(db, SynthConfig(), progress=False)
        con = connect(db, read_only=True)
        try:
            surfaces = args.surfaces.split(",")
            pools = {s: {"default": default_pool(s), "all": list(SURFACES), "none": [s]}[args.pool] for s in surfaces}
            # every frame first: each surface's models train on the pooled surfaces' rows too
            speeds, frames = {}, {}
            for surface in surfaces + [s for s in SURFACES if s not in surfaces and any(s in p for p in pools.values())]:
                speeds[surface], frames[surface] = feature_speed(con, surface, with_pandas=surface == args.pandas_surface)
            for surface in surfaces:
                speed, frame = speeds[surface], frames[surface]
                pooled = pooled_rows(frames, surface, pools[surface])
                started = time.perf_counter()
                trained = train_on_frame(frame, surface=surface, pooled=pooled)
                total = time.perf_counter() - started
                judged = [a for a, m in trained.metrics.items() if m.get("positives", 0) >= MIN_TEST_POSITIVES]
                entry = {
                    "features": speed,
                    "train_seconds_total": round(total, 1),
                    "train_seconds_per_action": {a: round(s, 2) for a, s in trained.train_seconds.items()},
                    "rows": trained.rows,
                    "pooled_surfaces": trained.pooled_surfaces,
                    "predict": predict_speed(trained, frame),
                    "quality": quality(trained, truth_inputs_auc(con, trained, frame, judged) if judged else {}),
                    "diagnostics": diagnostics(trained, frame, judged),
                }
                if surface == args.surfaces.split(",")[0]:
                    entry["lightgbm"] = lightgbm_ratio(trained, frame, args.lightgbm_action, pooled)
                results["surfaces"][surface] = entry
                print(json.dumps({surface: entry["quality"].get("targets_met")}), flush=True)
                if args.out:  # after each surface, so a long run that stops still leaves figures
                    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        finally:
            con.close()
    results["machine"] = machine()
    report(results, args.out)


if __name__ == "__main__":
    main()
