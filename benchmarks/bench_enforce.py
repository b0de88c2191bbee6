"""How much of bought engagement's rank advantage survives enforcement, on Explore and Reels.

On the default world (``data/feedlab.duckdb``, opened read-only; its saved models are used in
every world): the logged world, the counterfactual where no bought engagement ever counted, and
enforced copies (the simulator's truth as the detector, so detection errors are left out) for
several cutoffs before the ranking time. Target (issue 6): boosted posts keep at most 10% of
their bought rank advantage in Explore after enforcement. Prints JSON (``--out FILE`` too).

    .venv/bin/python benchmarks/bench_enforce.py [--viewers 500] [--k 20] [--scores detector] [--keep-graph]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from common import machine, report

TARGET = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="store (default: data/feedlab.duckdb)")
    parser.add_argument("--viewers", type=int, default=500)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--surfaces", default="explore,reels")
    parser.add_argument("--cutoff-days", default="start,7,3,1", help="days before the ranking time, or 'start' (first engagement)")
    parser.add_argument("--scores", choices=["truth", "detector"], default="truth", help="who is flagged")
    parser.add_argument("--keep-graph", action="store_true", help="flagged accounts stay in the co-engagement graph (exclude_from_graph=False)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from toolkit.integrity.enforcement import counterfactual_store, enforce, enforcement_effect, truth_scores
    from toolkit.predict import load_models
    from toolkit.rank import as_time
    from toolkit.store import connect, default_store

    db = args.db or default_store()
    con = connect(db, read_only=True)
    at = as_time(None, con)
    start = con.sql("select min(ts) from engagements").fetchall()[0][0]
    con.close()
    if args.scores == "truth":
        scores = truth_scores(db)
    else:
        from toolkit.integrity import score_accounts

        scores = score_accounts(db, seed=0)
    results = {"machine": machine(), "store": str(db), "at": at, "viewers": args.viewers, "k": args.k, "scores": args.scores,
               "exclude_from_graph": not args.keep_graph,
               "flagged_accounts": int(scores["flagged"].sum()), "target_remaining_share": TARGET, "surfaces": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        clean = counterfactual_store(db, out=Path(tmp) / "counterfactual.duckdb", models=False)
        results["counterfactual_build_s"] = round(time.perf_counter() - t, 2)
        enforced = {}
        for spec in args.cutoff_days.split(","):
            cutoff = start if spec == "start" else at - timedelta(days=float(spec))
            t = time.perf_counter()
            enforced[spec] = (cutoff, enforce(db, cutoff=cutoff, scores=scores, out=Path(tmp) / f"enforced_{spec}.duckdb", models=False,
                                              exclude_from_graph=not args.keep_graph))
            results.setdefault("enforce_build_s", {})[spec] = round(time.perf_counter() - t, 2)
        for surface in args.surfaces.split(","):
            models = load_models(db, surface)
            tops, rows = None, {}
            for spec, (cutoff, path) in enforced.items():
                t = time.perf_counter()
                e = enforcement_effect(db, path, clean, surface=surface, viewers=args.viewers, k=args.k, at=at, models=models, tops=tops)
                tops = {w: e["tops"][w] for w in ("logged", "counterfactual")}
                g = {r["group"]: r for r in e["groups"].iter_rows(named=True)}
                s = {r["strategy"]: r for r in e["strategies"].iter_rows(named=True)}
                rows[spec] = {
                    "cutoff": cutoff,
                    "days_enforced_before_ranking": round((at - cutoff).total_seconds() / 86400, 2),
                    "boosted_reach": {w: g["boosted"][f"reach_{w}"] for w in ("logged", "enforced", "counterfactual")},
                    "boosted_mean_position": {w: _r(g["boosted"][f"mean_position_{w}"]) for w in ("logged", "enforced", "counterfactual")},
                    "advantage": e["advantage"],
                    "remaining_share": _r(e["remaining_share"]),
                    "remaining_share_by_strategy": {
                        k: _r((v["reach_enforced"] - v["reach_counterfactual"]) / (v["reach_logged"] - v["reach_counterfactual"]))
                        if v["reach_logged"] > v["reach_counterfactual"] else None
                        for k, v in s.items()
                    },
                    "genuine_reach": {w: g["genuine"][f"reach_{w}"] for w in ("logged", "enforced", "counterfactual")},
                    "collateral": {k: {kk: _r(vv) for kk, vv in v.items()} for k, v in e["collateral"].items()},
                    "target_met": bool(e["remaining_share"] <= TARGET) if surface == "explore" else None,
                    "seconds": round(time.perf_counter() - t, 1),
                }
            results["surfaces"][surface] = rows
    report(results, args.out)


def _r(x):
    return None if x is None or x != x else round(float(x), 4)


if __name__ == "__main__":
    main()
