"""Benchmark feedlab's predictors on a real log (KuaiRand) against two honest baselines.

Imports the KuaiRand like/hate log (``FEEDLAB_KUAIRAND``, default
``../shared/datasets/kuairand-27k-like-hate/log_like_hate_kcore15.tsv``) into a temporary
store, featurizes every impression with the same signal pipeline as simulated data, trains the
Reels action models on a time split (the last 20% of days are the test) and scores them beside
(a) the viewer's and the video's historical rates (no model) and (b) XGBoost on the log's
pre-impression columns only, on the same test rows (``toolkit.predict.compare_with_baselines``).

Target (issue 8): for every action with at least ``--min-positives`` test positives (100:
below that a test AUC's standard error is above 0.03), feedlab's AUC matches (within 0.005) or
beats baseline (a). Prints JSON (``--out FILE`` too); ``benchmarks/run.py`` puts its table in
``RESULTS.md``.

    .venv/bin/python benchmarks/bench_real_data.py [--log FILE] [--learning-rate 0.05] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, report

MIN_POSITIVES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=None, help="the KuaiRand TSV (default: FEEDLAB_KUAIRAND or the shared copy)")
    parser.add_argument("--learning-rate", type=float, default=None, help="XGBoost's eta (default: the toolkit's)")
    parser.add_argument("--min-positives", type=int, default=MIN_POSITIVES, help="test positives an action needs to be judged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import polars as pl

    from toolkit.predict import compare_with_baselines, matches_or_beats_history, train_on_frame
    from toolkit.signals import training_frame
    from toolkit.store import connect
    from toolkit.store.io import import_dir
    from toolkit.store.kuairand import kuairand_path

    log = args.log or kuairand_path()
    params = {"eta": args.learning_rate} if args.learning_rate else None
    results: dict = {"benchmark": "real_data", "machine": machine(), "source": str(log), "min_positives": args.min_positives}
    with tempfile.TemporaryDirectory(prefix="feedlab-kuairand-") as tmp:
        db = Path(tmp) / "kuairand.duckdb"
        t = time.perf_counter()
        summary = import_dir(db, log, format="kuairand", progress=False)
        results["import_seconds"] = round(time.perf_counter() - t, 2)
        results["rows"] = summary["rows_added"]
        results["notes"] = summary.get("notes", [])
        con = connect(db, read_only=True)
        try:
            t = time.perf_counter()
            frame = training_frame(con, "reels")
            results["features_seconds"] = round(time.perf_counter() - t, 2)
        finally:
            con.close()
        t = time.perf_counter()
        trained = train_on_frame(frame, surface="reels", params=params, seed=args.seed)
        results["train_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        table = compare_with_baselines(frame, trained, seed=args.seed)
        results["baselines_seconds"] = round(time.perf_counter() - t, 2)
    verdict = matches_or_beats_history(table)
    results["window"] = trained.window
    results["test_rows"] = trained.rows["test"]
    results["params"] = {k: trained.params[k] for k in ("eta", "max_depth", "min_child_weight") if k in trained.params}
    results["actions"] = {}
    for row in verdict.iter_rows(named=True):
        a = row["action"]
        per_model = {r["model"]: r for r in table.filter(pl.col("action") == a).iter_rows(named=True)}
        judged = row["positives"] >= args.min_positives
        results["actions"][a] = {
            "positives": row["positives"],
            "judged": judged,
            **{f"{m}_{k}": per_model[m][k] for m in per_model for k in ("auc", "pr_auc", "rce", "ece")},
            "history_pseudocount": per_model["history_rates"]["pseudocount"],
            "auc_vs_history": row["auc_vs_history"],
            "matches_or_beats_history": row["matches_or_beats"],
        }
    judged = {a: m for a, m in results["actions"].items() if m["judged"]}
    results["target_met"] = bool(judged) and all(m["matches_or_beats_history"] for m in judged.values())
    results["not_judged"] = sorted(set(results["actions"]) - set(judged))
    report(results, args.out)


if __name__ == "__main__":
    main()
