"""How each stage's time and memory grow with the log: simulate, featurize, train, at several sizes.

For each size (multiples of the default world's 5,000 accounts; x1 is about 1.1M impressions),
each stage runs in its own child process so that its peak resident memory is its own:

- ``synth``: build the world (``feedlab synth``);
- ``features``: featurize ``--surface`` (or, with ``--all-surfaces``, every surface together:
  ``write_training_frames``) ``--chunk-hours`` at a time into Parquet: the out-of-core path,
  memory follows one chunk;
- ``train``: train one action from that file batch by batch (``train_on_parquet`` with
  XGBoost's external memory: binned pages on disk, not the floats in memory; or the in-memory
  binned matrix with ``--in-memory-matrix``) for a fixed number of rounds, so that time per row
  is comparable across sizes.

Prints JSON (``--out FILE`` too) with, per size and stage, rows, seconds, rows per second and
peak memory, and per stage the growth between the smallest and the largest size: the ratio of
seconds per row (1.0 = linear; below 1, better than linear).

    .venv/bin/python benchmarks/bench_scale.py --scales 1,5,20      # about 1M, 5M and 20M impressions
    .venv/bin/python benchmarks/bench_scale.py --scales 1,2 --surface stories   # a quick look
    .venv/bin/python benchmarks/bench_scale.py --scales 46 --surface stories    # 50M impressions
    .venv/bin/python benchmarks/bench_scale.py --scales 1 --all-surfaces       # every surface featurized
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import machine, report, run_stage


def stage(name: str, params: list[str]) -> dict:
    """The body of one stage, inside the child process."""
    if name == "synth":
        from toolkit.synth import SynthConfig, build_world

        users, db = int(params[0]), params[1]
        summary = build_world(db, SynthConfig(n_users=users), overwrite=True, progress=False)
        n = summary["rows"]["impressions"]
        return {"rows": n, "seconds": round(summary["seconds"], 2)}
    if name == "features":
        from datetime import timedelta

        from toolkit.signals import write_training_frame, write_training_frames
        from toolkit.store import connect

        db, surface, out, hours = params
        chunk = timedelta(hours=float(hours))
        con = connect(db, read_only=True)
        try:
            started = time.perf_counter()
            if surface == "all":  # every surface together, one file each in the folder ``out``
                per_surface = write_training_frames(con, out, chunk=chunk, progress=False)
                return {"rows": sum(per_surface.values()), "per_surface": per_surface, "seconds": round(time.perf_counter() - started, 2)}
            rows = write_training_frame(con, surface, out, chunk=chunk, progress=False)
            return {"rows": rows, "seconds": round(time.perf_counter() - started, 2)}
        finally:
            con.close()
    if name == "train":
        from toolkit.predict import train_on_parquet

        path, surface, action, rounds, external = params
        started = time.perf_counter()
        trained = train_on_parquet(
            path, surface=surface, actions=[action], max_rounds=int(rounds), early_stopping_rounds=int(rounds),
            external_memory=external == "external",
        )
        return {
            "rows": trained.rows["fit"] + trained.rows["valid"],
            "seconds": round(time.perf_counter() - started, 2),
            "rounds": trained.best_iteration[action] + 1,
            "auc": round(trained.metrics[action]["auc"], 4),
        }
    raise SystemExit(f"unknown stage {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,5,20", help="world sizes as multiples of 5,000 accounts")
    parser.add_argument("--surface", default="feed")
    parser.add_argument("--action", default="like")
    parser.add_argument("--rounds", type=int, default=100, help="boosting rounds, fixed (no early stopping)")
    parser.add_argument("--chunk-hours", type=float, default=24, help="featurize this many hours of impressions at a time")
    parser.add_argument(
        "--in-memory-matrix", action="store_true",
        help="train from XGBoost's in-memory QuantileDMatrix instead of its external memory (as before 2026-12-01)",
    )  # fmt: skip
    parser.add_argument(
        "--all-surfaces", action="store_true",
        help="featurize every surface (together, write_training_frames), not only --surface; training still uses --surface",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="where the worlds go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage[0], args.stage[1:])))
        return

    results: dict = {
        "benchmark": "scale", "surface": args.surface, "action": args.action, "rounds": args.rounds,
        "chunk_hours": args.chunk_hours, "matrix": "in memory" if args.in_memory_matrix else "external memory", "featurized": "all surfaces" if args.all_surfaces else args.surface, "scales": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for scale in [int(s) for s in args.scales.split(",")]:
            db, features = Path(tmp) / f"world{scale}.duckdb", Path(tmp) / f"features{scale}.parquet"
            # with --all-surfaces the features stage writes a folder of one file per surface
            featurized, out, trained_on = args.surface, features, features
            if args.all_surfaces:
                featurized, out = "all", features.with_suffix("")
                trained_on = out / f"{args.surface}.parquet"
            row = {"users": 5000 * scale}
            for name, params in (
                ("synth", [str(5000 * scale), str(db)]),
                ("features", [str(db), featurized, str(out), str(args.chunk_hours)]),
                ("train", [str(trained_on), args.surface, args.action, str(args.rounds), "in-memory" if args.in_memory_matrix else "external"]),
            ):
                r = run_stage(__file__, [name, *params])
                r["rows_per_s"] = round(r["rows"] / r["seconds"]) if r["seconds"] else None
                row[name] = r
            row["db_size_mb"] = round(db.stat().st_size / 2**20, 1)
            results["scales"][f"x{scale}"] = row
            db.unlink()
            shutil.rmtree(out) if out.is_dir() else out.unlink()
    sizes = list(results["scales"].values())
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        results["growth"] = {
            name: {
                "rows_ratio": round(large[name]["rows"] / small[name]["rows"], 2),
                "seconds_per_row_ratio": round((large[name]["seconds"] / large[name]["rows"]) / (small[name]["seconds"] / small[name]["rows"]), 2),
                "peak_memory_ratio": round(large[name]["peak_rss_mb"] / small[name]["peak_rss_mb"], 2),
            }
            for name in ("synth", "features", "train")
        }
    results["machine"] = machine()
    report(results, args.out)


if __name__ == "__main__":
    main()
