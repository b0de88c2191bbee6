"""What the jointly fitted latent effects (toolkit.signals.latent) add to the predictors.

On a simulated store, trains each surface's models twice with the toolkit's own settings
(``train_on_frame``: the default pool, eta 0.05 unless ``--eta``): on the registered signals, and
on the signals plus the columns of ``latent_effects`` (each impression's effects fitted on the
labels of the days before its day). Reports, per run, the issue's quality figures over the
actions with at least 1,000 test positives: mean and max AUC gap to the oracle, max ECE, min RCE
as a share of the oracle's. Prints JSON.

    python benchmarks/ablate_latent.py --db data/feedlab.duckdb --surfaces explore,reels

``--columns`` keeps only the latent columns starting with the given prefixes (``latent_score``,
``latent_taste``, ...), to see which part does the work; ``--effects FILE`` keeps the fitted
effects in a Parquet file and reads them from there on the next run (the fits take minutes).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

from common import machine, report

MIN_TEST_POSITIVES = 1000


@contextmanager
def registered(columns: list[str]):
    """The latent columns registered as features (viewer family) while the block runs.

    They are not registered signals yet: ``train_on_frame`` trains on the registry's features,
    so this benchmark adds them for its own runs only and takes them away again.
    """
    from toolkit.signals import registry

    before = dict(registry.FEATURES)
    registry.FEATURES.update({c: registry.Feature(c, "viewer", "latent effect (benchmark only)") for c in columns})
    try:
        yield
    finally:
        registry.FEATURES.clear()
        registry.FEATURES.update(before)


def quality(trained) -> dict:
    """The issue's figures over the actions with enough test positives."""
    judged = {a: m for a, m in trained.metrics.items() if m["positives"] >= MIN_TEST_POSITIVES}
    gaps = {a: round(m["oracle_auc"] - m["auc"], 4) for a, m in judged.items()}
    return {
        "mean_auc_gap": round(sum(gaps.values()) / len(gaps), 4),
        "max_auc_gap": max(gaps.values()),
        "max_ece": round(max(m["ece"] for m in judged.values()), 4),
        "min_rce_share": round(min(m["rce"] / m["oracle_rce"] for m in judged.values()), 3),
        "auc_gap": gaps,
        "fit_rows": trained.rows["fit"],
        "train_seconds": round(sum(trained.train_seconds.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a simulated store (feedlab synth)")
    parser.add_argument("--surfaces", default="explore,reels")
    parser.add_argument("--eta", type=float, help="XGBoost's eta (default: the toolkit's)")
    parser.add_argument("--columns", help="latent column prefixes to keep, separated by commas (default: all)")
    parser.add_argument("--skip-base", action="store_true", help="train only with the latent effects")
    parser.add_argument("--effects", type=Path, help="Parquet file of latent_effects: read when it exists, else written")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import polars as pl

    from toolkit.predict.train import default_pool, pooled_rows, train_on_frame
    from toolkit.signals import training_frames
    from toolkit.signals.latent import latent_effects
    from toolkit.store import connect
    from toolkit.store.schema import SURFACES

    surfaces = args.surfaces.split(",")
    con = connect(args.db, read_only=True)
    needed = [s for s in SURFACES if any(s in default_pool(t) for t in surfaces)]
    frames = training_frames(con, needed, progress=False)
    started = time.perf_counter()
    if args.effects and args.effects.exists():
        effects, effect_seconds = pl.read_parquet(args.effects), None  # fitted by an earlier run
    else:
        effects = latent_effects(con, progress=True)
        effect_seconds = round(time.perf_counter() - started, 1)
        if args.effects:
            effects.write_parquet(args.effects)
    columns = [c for c in effects.columns if c != "impression_id"]
    if args.columns:
        columns = [c for c in columns if c.startswith(tuple(args.columns.split(",")))]
    with_effects = {s: f.join(effects.select("impression_id", *columns), on="impression_id", how="left") for s, f in frames.items()}
    params = None if args.eta is None else {"eta": args.eta}
    results: dict = {
        "benchmark": "ablate_latent", "machine": machine(), "db": str(args.db), "eta": args.eta or "toolkit default",
        "latent_columns": columns, "latent_effects_seconds": effect_seconds, "surfaces": {},
    }  # fmt: skip
    for surface in surfaces:
        runs = {}
        if not args.skip_base:
            runs["signals"] = quality(train_on_frame(frames[surface], surface=surface, pooled=pooled_rows(frames, surface), params=params))
        with registered(columns):
            trained = train_on_frame(with_effects[surface], surface=surface, pooled=pooled_rows(with_effects, surface), params=params)
        runs["signals+latent"] = quality(trained)
        results["surfaces"][surface] = runs
        print({surface: {k: (v["mean_auc_gap"], v["max_auc_gap"]) for k, v in runs.items()}}, flush=True)
    report(results, args.out)


if __name__ == "__main__":
    main()
