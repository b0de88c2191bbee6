"""Where the predictors' AUC gap to the oracle goes: retrain with one true latent input added.

On a simulated store, each run trains a surface's models on the registered signals plus one of
the simulator's own inputs, with the same booster and split as ``train_on_frame``. The drop in
the mean AUC gap is what the signals lose on that latent. Prints JSON. The inputs (``--latents``):

- ``topic_match``, ``quality``, ``tie``: the viewer's true topic interest, the post's true
  quality, the follow's true closeness;
- ``propensity``: the viewer's true taste for the action being predicted;
- ``shared``: the viewer's true engagement level shared by all actions (the mean of their tastes);
- ``shared_estimate``: that level as well as the viewer's earlier labels can tell it, every other
  input of the truth being known (``shared_estimate``): the most history alone could give.

    python benchmarks/ablate_signals.py --db data/feedlab.duckdb --surfaces stories,explore

Training and test rows start where the store's history-only days end, if it has any;
``--start DATE`` moves that start, and ``--latents none`` runs the plain signals alone. What more
history is worth (docs/predictors.md):

    feedlab synth --db /tmp/h14.duckdb --days 28 --history-days 14
    python benchmarks/ablate_signals.py --db /tmp/h14.duckdb --surfaces feed,stories,explore,reels --latents none
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine, report

MIN_TEST_POSITIVES = 1000
LATENTS = ("topic_match", "quality", "tie", "propensity", "shared", "shared_estimate")
#: Prior information (1 / variance on the logit scale) of the one-step engagement estimates.
SHARED_PRIOR_INFO = 5.0


def with_latents(con, frame, *, estimate: bool = True):
    """The training frame plus ``true_<latent>`` columns (propensity per action); ``estimate``: with ``shared_estimate``."""
    import polars as pl

    from toolkit.store.schema import ACTIONS

    inputs = con.sql("select impression_id, topic_match, quality, tie from sim_impression_inputs").pl()
    tastes = con.sql("select * from sim_accounts").pl().select(
        "user_id", *(pl.col(f"propensity_{a}").alias(f"true_propensity_{a}") for a in ACTIONS)
    )
    inputs = inputs.rename({c: f"true_{c}" for c in ("topic_match", "quality", "tie")})
    shared = tastes.select("user_id", pl.mean_horizontal(pl.exclude("user_id")).alias("true_shared"))
    frame = (
        frame.join(inputs, on="impression_id", how="left", maintain_order="left")
        .join(tastes, on="user_id", how="left", maintain_order="left")
        .join(shared, on="user_id", how="left", maintain_order="left")
    )
    # the estimate reads every impression's labels and truth: only when asked for
    return frame.join(shared_estimate(con), on="impression_id", how="left", maintain_order="left") if estimate else frame


def shared_estimate(con):
    """Each viewer's shared engagement level as well as their labels before each impression can tell it.

    One Newton step of a logistic random effect from 0: the viewer's earlier labels minus what
    was expected of them, summed over every observable action, over the information plus a prior
    of ``SHARED_PRIOR_INFO``. Here the expectation knows every other input of the truth (each
    earlier impression's true probability without the viewer's taste): the most a viewer's
    history can tell.
    """
    import numpy as np
    import polars as pl

    from toolkit.store.schema import ACTIONS, SURFACES
    from toolkit.synth.truth import examination

    cols = ", ".join(f'"{a}", p_{a}, propensity_{a}' for a in ACTIONS)
    imp = con.sql(
        f"select i.impression_id, i.user_id, i.surface, i.position, {cols} "
        "from impressions i join sim_accounts using (user_id) order by i.user_id, i.ts, i.impression_id"
    ).pl()
    exam = np.ones(imp.height)
    for s in SURFACES:
        rows = (imp["surface"] == s).to_numpy()
        exam[rows] = examination(imp["position"].to_numpy()[rows].astype(float), s)
    u_true = np.zeros(imp.height)
    i_true = np.zeros(imp.height)
    for a in ACTIONS:
        y = imp[a].cast(pl.Float64).to_numpy()
        p = imp[f"p_{a}"].to_numpy()
        seen = ~np.isnan(y) & ~np.isnan(p)
        # the truth is exam * sigmoid(z); take the viewer's taste out of z
        sig = np.clip(np.where(seen, p, 0.5) / exam, 1e-9, 1 - 1e-9)
        s0 = 1 / (1 + np.exp(-(np.log(sig / (1 - sig)) - imp[f"propensity_{a}"].to_numpy())))
        p0 = exam * s0
        slope = exam * s0 * (1 - s0)
        var = np.clip(p0 * (1 - p0), 1e-9, None)
        u_true += np.where(seen, (np.nan_to_num(y) - p0) * slope / var, 0.0)
        i_true += np.where(seen, slope * slope / var, 0.0)
    per_row = imp.select("impression_id", "user_id", pl.Series("u", u_true), pl.Series("i", i_true))
    # totals before each impression, in log order (the rows are ordered by viewer and time)
    before = per_row.with_columns((pl.col(c).cum_sum() - pl.col(c)).over("user_id") for c in ("u", "i"))
    return before.select("impression_id", (pl.col("u") / (pl.col("i") + SHARED_PRIOR_INFO)).alias("true_shared_estimate"))


def gaps(frame, surface: str, extra: list[str] | None) -> dict[str, float]:
    """AUC gap to the oracle per judged action, training on the signals plus ``extra`` columns.

    ``extra=None`` is the plain signals; ``["propensity"]`` adds each action's own true taste.
    """
    import numpy as np
    import polars as pl
    import xgboost as xgb

    from toolkit.predict.metrics import roc_auc
    from toolkit.predict.train import DEFAULT_PARAMS, EARLY_STOPPING_ROUNDS, MAX_ROUNDS, split_times
    from toolkit.signals.registry import feature_names
    from toolkit.store.schema import ACTIONS

    frame = frame.sort("ts", maintain_order=True)
    bounds = split_times(frame["ts"])
    T, V = bounds["train_until"], bounds["valid_start"]
    parts = {
        "fit": frame.filter(pl.col("ts") < V),
        "valid": frame.filter((pl.col("ts") >= V) & (pl.col("ts") < T)),
        "test": frame.filter(pl.col("ts") >= T),
    }
    out = {}
    for action in ACTIONS:
        if action not in frame.columns or parts["test"][action].sum() < MIN_TEST_POSITIVES:
            continue
        extra_cols = [f"true_propensity_{action}" if e == "propensity" else f"true_{e}" for e in (extra or [])]
        cols = feature_names() + extra_cols
        data = {}
        for name, df in parts.items():
            df = df.filter(pl.col(action).is_not_null())
            data[name] = (df.select(cols).cast(pl.Float32).to_numpy(), df[action].cast(pl.Float32).to_numpy(), df)
        dfit = xgb.QuantileDMatrix(data["fit"][0], data["fit"][1], missing=np.nan)
        dvalid = xgb.QuantileDMatrix(data["valid"][0], data["valid"][1], missing=np.nan, ref=dfit)
        booster = xgb.train(
            {**DEFAULT_PARAMS, "seed": 0}, dfit, num_boost_round=MAX_ROUNDS, evals=[(dvalid, "valid")],
            early_stopping_rounds=EARLY_STOPPING_ROUNDS, verbose_eval=False,
        )  # fmt: skip
        X, y, test = data["test"]
        p = booster.inplace_predict(X, iteration_range=(0, booster.best_iteration + 1))
        out[action] = round(roc_auc(y, test[f"p_{action}"].to_numpy()) - roc_auc(y, p), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a simulated store (feedlab synth)")
    parser.add_argument("--surfaces", default="stories,explore")
    parser.add_argument("--start", help="train and test on impressions from this date on (features read all history; default: where the store's history-only days end)")
    parser.add_argument("--latents", default=",".join(LATENTS), help=f"true inputs to add one at a time, or none (default {','.join(LATENTS)})")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from toolkit.predict import parse_time
    from toolkit.signals import training_frame
    from toolkit.store import connect

    latents = [] if args.latents == "none" else args.latents.split(",")
    unknown = sorted(set(latents) - set(LATENTS))
    if unknown:
        parser.error(f"unknown latents {unknown}; choose from {', '.join(LATENTS)} or none")
    start = parse_time(args.start) if args.start else None
    con = connect(args.db, read_only=True)
    results: dict = {"benchmark": "ablate_signals", "machine": machine(), "db": str(args.db), "start": args.start, "surfaces": {}}
    for surface in args.surfaces.split(","):
        frame = with_latents(con, training_frame(con, surface, start=start), estimate="shared_estimate" in latents)
        runs = {"signals": gaps(frame, surface, None)}
        for latent in latents:
            runs[f"signals+true_{latent}"] = gaps(frame, surface, [latent])
        results["surfaces"][surface] = {
            name: {"mean_auc_gap": round(sum(g.values()) / len(g), 4) if g else None, "auc_gap": g} for name, g in runs.items()
        }
        print(json.dumps({surface: {k: v["mean_auc_gap"] for k, v in results["surfaces"][surface].items()}}), flush=True)
    report(results, args.out)


if __name__ == "__main__":
    main()
