"""Benchmark ranking latency: re-weighting cached predictions, and the full pipeline for one viewer.

Prints one JSON document (and writes it to ``--out``) with, for a surface of a store:

- ``cache_build``: seconds to source candidates, compute features, run XGBoost and the order-free
  rules for N viewers (``RankingCache.build``), and candidates per viewer;
- ``rerank_all``: milliseconds to re-rank every cached viewer for a new weight vector (median of
  repeats, each with different random weights), on the real cache;
- ``rerank_10k_x_500``: the same on a 10,000-viewer x 500-candidate cache made by repeating the
  real cache's viewers and candidates until it has that shape (the issue's target: < 200 ms);
- ``rerank_one``: milliseconds to re-rank one viewer from the cache (target: < 5 ms), and the
  audited ranking of one viewer with every contribution and rule (``RankingCache.rank``);
- ``rank_cold``: milliseconds of :func:`toolkit.rank.rank` for one viewer, candidates to rules.

With no saved models for the surface it trains them first (and reports how long that took).

    python benchmarks/bench_rank.py --db data/feedlab.duckdb --surface explore --viewers 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import machine, report

TARGETS_MS = {"rerank_10k_x_500": 200.0, "rerank_one": 5.0}


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _summary(ms: list[float]) -> dict:
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2), "repeats": len(ms)}


def tiled(cache, viewers: int, candidates: int):
    """A cache of the given shape whose rows and columns repeat the real cache's."""
    import numpy as np

    from toolkit.rank import RankingCache

    rows = np.resize(np.arange(len(cache.user_ids)), viewers)
    cols = np.resize(np.arange(cache.probs.shape[1]), candidates)

    def grow(a):
        return np.ascontiguousarray(a[rows][:, cols])

    return RankingCache(
        surface=cache.surface, at=cache.at, actions=cache.actions, config=cache.config, rules=cache.rules,
        items=cache.items.head(0), user_ids=np.arange(viewers, dtype=np.int64), post_ids=grow(cache.post_ids),
        author_ids=grow(cache.author_ids), author_slot=grow(cache.author_slot), probs=grow(cache.probs),
        factor=grow(cache.factor), _row_of={i: i for i in range(viewers)},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a store (feedlab synth builds one)")
    parser.add_argument("--surface", default="explore")
    parser.add_argument("--viewers", type=int, default=1000, help="viewers in the real cache (the most active ones)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import numpy as np

    from toolkit.errors import FeedlabError
    from toolkit.predict import load_models, save_models, train_surface
    from toolkit.rank import RankingCache, rank
    from toolkit.store import connect

    results: dict = {"benchmark": "rank", "machine": machine(), "surface": args.surface, "targets_ms": TARGETS_MS}
    con = connect(args.db, read_only=True)
    try:
        try:
            models = load_models(args.db, args.surface)
        except FeedlabError:
            started = time.perf_counter()
            models = train_surface(con, args.surface, progress=False)
            save_models(models, args.db)
            results["trained_models_seconds"] = round(time.perf_counter() - started, 1)
        viewers = [
            r[0]
            for r in con.sql(
                "select user_id from impressions where surface = ? group by user_id order by count(*) desc, user_id limit ?",
                params=[args.surface, args.viewers],
            ).fetchall()
        ]
        started = time.perf_counter()
        cache = RankingCache.build(con, args.surface, viewers, models=models, progress=False)
        build_s = time.perf_counter() - started
        counts = cache.items.group_by("user_id").len()["len"]
        results["cache_build"] = {
            "viewers": len(viewers),
            "seconds": round(build_s, 2),
            "candidates_per_viewer_mean": round(float(counts.mean()), 1),
            "candidates_per_viewer_max": int(counts.max()),
            "predictions_per_s": round(cache.items.height * len(cache.actions) / build_s),
        }
        rng = np.random.default_rng(args.seed)
        defaults = cache.weights()

        def weights(i: int) -> dict[str, float]:
            return {a: w * float(rng.uniform(0.5, 2.0)) for a, w in defaults.items()}

        cache.top_posts(weights(0), k=50)  # warm up
        results["rerank_all"] = {
            "viewers": len(cache.user_ids), "candidates": int(cache.probs.shape[1]),
            **_summary(_timed(lambda i: cache.top_posts(weights(i), k=50), args.repeats)),
        }  # fmt: skip
        big = tiled(cache, 10_000, 500)
        big.top_posts(weights(0), k=50)
        results["rerank_10k_x_500"] = {
            "note": "the real cache's viewers and candidates repeated to 10,000 x 500",
            **_summary(_timed(lambda i: big.top_posts(weights(i), k=50), args.repeats)),
        }
        one = [viewers[0]]
        results["rerank_one"] = _summary(_timed(lambda i: cache.top_posts(weights(i), k=50, user_ids=one), max(args.repeats, 20)))
        results["rank_one_audited"] = _summary(_timed(lambda i: cache.rank(viewers[0], weights(i), k=50), args.repeats))
        results["rank_cold"] = _summary(
            _timed(lambda i: rank(con, args.surface, viewers[i % len(viewers)], models=models, at=cache.at, k=50), 3)
        )
        results["targets_met"] = {
            f"{name}<{limit:g}ms": results[name]["median_ms"] < limit for name, limit in TARGETS_MS.items()
        }
    finally:
        con.close()
    report(results, args.out)


if __name__ == "__main__":
    main()
