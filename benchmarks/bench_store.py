"""Benchmark the store and the simulator: impressions generated/s, import rows/s, peak memory.

Runs each stage (simulate into a store, export to Parquet, import into a new store) in its own
child process, so that the peak resident memory reported is that stage's alone, for the default
world (scale 1: 5,000 accounts, 14 days) and larger ones (scale 10: 50,000 accounts). Prints one
JSON document with the machine and library versions, and writes it to ``--out`` when given.

    python benchmarks/bench_store.py                 # scales 1 and 10 (about 10 minutes on 2 cores)
    python benchmarks/bench_store.py --scales 1      # the default world only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import machine, report
from common import run_stage as common_run_stage


def run_stage(args: list[str]) -> dict:
    """Run one stage of this script in a child process (see common.run_stage)."""
    return common_run_stage(__file__, args)


def stage(name: str, params: list[str]) -> dict:
    """The body of one stage, run inside the child process."""
    if name == "synth":
        from toolkit.synth import SynthConfig, build_world

        users, db = int(params[0]), params[1]
        summary = build_world(db, SynthConfig(n_users=users), overwrite=True, progress=False)
        return {
            "impressions": summary["rows"]["impressions"],
            "rows": sum(v for k, v in summary["rows"].items() if not k.startswith("sim_")),
            "seconds": summary["seconds"],
            "impressions_per_s": round(summary["rows"]["impressions"] / summary["seconds"]),
        }
    if name == "export":
        from toolkit.store.io import export_dir

        started = time.perf_counter()
        summary = export_dir(params[0], params[1])
        seconds = time.perf_counter() - started
        return {"rows": sum(summary["rows"].values()), "seconds": round(seconds, 2)}
    if name == "import":
        from toolkit.store.io import import_dir

        started = time.perf_counter()
        summary = import_dir(params[0], params[1], progress=False)
        seconds = time.perf_counter() - started
        rows = sum(summary["rows_added"].values())
        return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}
    raise SystemExit(f"unknown stage {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10", help="world sizes as multiples of 5,000 accounts")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the stores (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage[0], args.stage[1:])))
        return

    # machine() imports the libraries; it runs after the stages so that the children, which
    # start as copies of this process, do not count this process's memory in their peak.
    results = {"benchmark": "store", "machine": {}, "scales": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for scale in [int(s) for s in args.scales.split(",")]:
            users = 5000 * scale
            db, parquet, copy = (Path(tmp) / f"world{scale}.duckdb", Path(tmp) / f"export{scale}", Path(tmp) / f"copy{scale}.duckdb")
            synth = run_stage(["synth", str(users), str(db)])
            export = run_stage(["export", str(db), str(parquet)])
            imported = run_stage(["import", str(copy), str(parquet)])
            results["scales"][f"x{scale}"] = {
                "users": users,
                "impressions": synth["impressions"],
                "synth_impressions_per_s": synth["impressions_per_s"],
                "synth_seconds": synth["seconds"],
                "synth_peak_rss_mb": synth["peak_rss_mb"],
                "export_seconds": export["seconds"],
                "export_peak_rss_mb": export["peak_rss_mb"],
                "import_rows": imported["rows"],
                "import_rows_per_s": imported["rows_per_s"],
                "import_seconds": imported["seconds"],
                "import_peak_rss_mb": imported["peak_rss_mb"],
                "db_size_mb": round(db.stat().st_size / 2**20, 1),
            }
            for p in (db, copy):
                p.unlink()
    results["machine"] = machine()
    report(results, args.out)


if __name__ == "__main__":
    main()
