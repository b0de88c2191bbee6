"""Integrity detection on a store: scoring time and the issue's targets (PR-AUC, recall per strategy, genuine flagged).

Usage: ``python benchmarks/bench_integrity.py --db data/feedlab.duckdb [--seed 0] [--out FILE.json]``.
Targets (issue 6): PR-AUC >= 0.95 on accounts whose label was withheld from training, recall >=
0.9 at 1% FPR for the bots of each strategy, buyers per strategy with counts, <= 1% of genuine
accounts flagged. Reads the store read-only; writes nothing into it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("data/feedlab.duckdb"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from toolkit.integrity import account_signals, integrity_metrics, lockstep_scores, score_accounts
    from toolkit.store import connect

    con = connect(args.db, read_only=True)
    try:
        t = time.perf_counter()
        signals = account_signals(con)
        t_signals = time.perf_counter() - t
        t = time.perf_counter()
        lock = lockstep_scores(con)
        t_lock = time.perf_counter() - t
        t = time.perf_counter()
        scores = score_accounts(con, seed=args.seed)
        t_score = time.perf_counter() - t
        m = integrity_metrics(scores, con)
    finally:
        con.close()
    by = m["by_strategy"]
    bots = {k: v for k, v in by.items() if k.startswith("bot/")}
    targets = {
        "pr_auc_heldout_ge_0.95": m["overall"]["pr_auc"] >= 0.95,
        "bot_recall_at_1pct_fpr_ge_0.9_each_strategy": all(v["recall_at_1pct_fpr"] >= 0.9 for v in bots.values()),
        "genuine_flagged_le_1pct": m["genuine_flagged_share"] <= 0.01,
        "heldout_fpr_le_1pct": m["overall"]["false_positive_rate"] <= 0.01,
    }
    report(
        {
            "benchmark": "integrity",
            "db": str(args.db),
            "accounts": scores.height,
            "seconds": {"account_signals": round(t_signals, 2), "lockstep_scores": round(t_lock, 2),
                        "score_accounts_total": round(t_score, 2)},
            "flagged": int(scores["flagged"].sum()),
            "lockstep_flagged": int(lock["flagged"].sum()),
            "signals": signals.width - 1,
            "metrics": m,
            "buyers_per_strategy": {k: {"heldout_count": v["positives"], "recall": v["recall"],
                                        "recall_at_1pct_fpr": v["recall_at_1pct_fpr"]}
                                    for k, v in by.items() if k.startswith("buyer/")},
            "targets_met": targets,
            "machine": machine(),
        },
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
