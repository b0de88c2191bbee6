"""What every benchmark reports beside its figures: the machine and the library versions."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # XGBoost's OpenMP spin-wait slows 2 cores 4-6x
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict:
    """CPU model, cores, memory, Python and the versions of the libraries that do the work."""
    import duckdb
    import numpy
    import polars
    import xgboost

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "polars": polars.__version__,
        "numpy": numpy.__version__,
        "xgboost": xgboost.__version__,
    }


def report(results: dict, out: Path | None = None) -> None:
    """Print a benchmark's results as JSON, and write them to ``out`` too when given."""
    import json

    text = json.dumps(results, indent=2, default=str)
    print(text)
    if out:
        out.write_text(text + "\n")


def run_stage(script: str, args: list[str]) -> dict:
    """Run ``script --stage ARGS`` in a child process: its JSON result plus wall seconds and peak RSS.

    The child prints one JSON document; ``os.wait4`` gives that process's own peak resident
    memory, so each stage is measured alone.
    """
    import json
    import subprocess
    import time

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, "--stage", *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"stage {args[0]} failed with status {status}")
    result = json.loads(out)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    return result
