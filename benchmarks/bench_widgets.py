"""Benchmark the WeightTuner: how long the Python side of one interactive update takes.

Builds a :class:`toolkit.widgets.WeightTuner` for the most active viewers of a surface, then sets
its controls from Python, as a browser would, ``--repeats`` times each, and prints one JSON
document (also written to ``--out``) with p50 / p95 / max milliseconds of:

- ``weight_update``: one weight slider moved to a random value in its range (the population's
  metrics and the viewer's table re-ranked before the assignment returns);
- ``rule_toggle``: one of the surface's rules switched on or off (order-free rule factors
  recomputed for the items it can act on, then the same refresh);
- ``viewer_change``: another viewer picked (only that viewer's table);
- ``chart``: the rank-change chart drawn by the tuner's worker thread after an update (not part
  of the three above: the benchmark waits for it between updates, untimed);

plus the seconds to build the tuner (candidates, features, XGBoost for every viewer) and the
machine (``benchmarks/common.py``). Target: ``weight_update`` p95 < 100 ms.

    python benchmarks/bench_widgets.py --db data/feedlab.duckdb --surface explore --viewers 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, report

TARGET_P95_MS = 100.0


def _summary(ms: list[float]) -> dict:
    import numpy as np

    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"repeats": 0}
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "max_ms": round(float(a.max()), 1),
        "repeats": int(a.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a store with saved models for the surface")
    parser.add_argument("--surface", default="explore")
    parser.add_argument("--viewers", type=int, default=200, help="viewers in the tuner's cache (the most active ones)")
    parser.add_argument("--repeats", type=int, default=40, help="updates of each kind")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import numpy as np

    from toolkit.widgets import WeightTuner

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    tuner = WeightTuner(args.db, args.surface, n_users=args.viewers, k=args.k, seed=args.seed, progress=False)
    build_s = time.perf_counter() - started
    tuner.wait_for_chart()
    charts: list[float] = []

    def timed(change) -> float:
        """Milliseconds of one assignment to a control; then the chart it started, untimed."""
        before = tuner.timings.get("chart")
        t0 = time.perf_counter()
        change()
        ms = (time.perf_counter() - t0) * 1000
        tuner.wait_for_chart()
        if tuner.timings.get("chart") is not before:
            charts.append(tuner.timings["chart"] * 1000)
        if tuner.message_level == "error":
            raise SystemExit(f"the tuner refused a benchmark change: {tuner.message.value}")
        return ms

    actions = list(tuner.sliders)
    weight_ms = []
    for _ in range(args.repeats):
        slider = tuner.sliders[actions[rng.integers(len(actions))]]
        value = float(rng.uniform(slider.min, slider.max))
        weight_ms.append(timed(lambda: setattr(slider, "value", value)))

    rules = [r for r in tuner.cache.config.rules]  # the surface's own rules
    rule_ms = []
    for _ in range(args.repeats):
        box = tuner.rule_controls[rules[rng.integers(len(rules))]].enabled
        rule_ms.append(timed(lambda: setattr(box, "value", not box.value)))

    viewers = [v for _, v in tuner.viewer.options]
    viewer_ms = []
    for _ in range(args.repeats):
        others = [v for v in viewers if v != tuner.viewer.value]
        user = others[rng.integers(len(others))]
        viewer_ms.append(timed(lambda: setattr(tuner.viewer, "value", user)))

    results = {
        "benchmark": "widgets",
        "machine": machine(),
        "surface": args.surface,
        "viewers": len(viewers),
        "candidates_per_viewer_max": int(tuner.cache.probs.shape[1]),
        "actions": len(actions),
        "k": args.k,
        "build_seconds": round(build_s, 2),
        "weight_update": _summary(weight_ms),
        "rule_toggle": _summary(rule_ms),
        "viewer_change": _summary(viewer_ms),
        "chart": {"note": "drawn by the worker thread after an update, not part of the update", **_summary(charts)},
        "target_ms": {"weight_update_p95": TARGET_P95_MS},
        "target_met": _summary(weight_ms).get("p95_ms", float("inf")) < TARGET_P95_MS,
    }
    report(results, args.out)


if __name__ == "__main__":
    main()
