"""Run feedlab's benchmarks and publish their figures: ``results.json`` and ``RESULTS.md``.

Each ``benchmarks/bench_*.py`` runs in its own process and prints (and writes) one JSON document
of what it measured, on which machine. This runner starts them one after another, records each
one's wall time and peak resident memory (``os.wait4``: that process and the children it waited
for), and writes:

- ``benchmarks/results.json``: ``{"machine": ..., "benchmarks": {name: {"command", "seconds",
  "peak_rss_mb", "returncode", "result"}}}``; a run with ``--only`` replaces only the named
  benchmarks and keeps the others' last results;
- ``benchmarks/RESULTS.md``: the machine and library versions, then one table per benchmark with
  its headline figures (each benchmark's JSON holds the rest).

    .venv/bin/python benchmarks/run.py                       # every benchmark but the scaling ones (make bench)
    .venv/bin/python benchmarks/run.py --only scale          # 1M, 5M and 20M impressions (about an hour)
    .venv/bin/python benchmarks/run.py --only scale_50m      # 50M impressions, out of core (about an hour)
    .venv/bin/python benchmarks/run.py --only real_data,rank # some, keeping the others' results
    .venv/bin/python benchmarks/run.py --render              # rewrite RESULTS.md from results.json

A benchmark that fails is reported (its return code and the end of its output) and the others
still run; the runner then exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from common import ROOT, machine

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
DB = ROOT / "data" / "feedlab.duckdb"

Row = tuple[str, str]  # (figure, value as text)


def _get(d: dict, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


# --------------------------------------------------------------------------- headline figures


def _store_rows(r: dict) -> list[Row]:
    rows = []
    for scale, s in _get(r, "scales", default={}).items():
        rows += [
            (f"{scale}: simulated impressions", _num(s.get("impressions"))),
            (f"{scale}: simulator impressions/s", _num(s.get("synth_impressions_per_s"))),
            (f"{scale}: simulator peak memory (MB)", _num(s.get("synth_peak_rss_mb"))),
            (f"{scale}: import rows/s", _num(s.get("import_rows_per_s"))),
            (f"{scale}: import peak memory (MB)", _num(s.get("import_peak_rss_mb"))),
        ]
    return rows


def _predict_rows(r: dict) -> list[Row]:
    rows = []
    for surface, s in _get(r, "surfaces", default={}).items():
        per_action = s.get("train_seconds_per_action") or {}
        rows += [
            (f"{surface}: feature rows/s", _num(_get(s, "features", "rows_per_s"))),
            (f"{surface}: training seconds per action (mean over {len(per_action)})",
             _num(sum(per_action.values()) / len(per_action) if per_action else None)),
            (f"{surface}: predictions (rows x models)/s", _num(_get(s, "predict", "row_predictions_per_s"))),
            (f"{surface}: mean AUC gap to the oracle (target <= 0.02)", _num(_get(s, "quality", "mean_auc_gap"))),
            (f"{surface}: max ECE (target <= 0.01)", _num(_get(s, "quality", "max_ece"))),
        ]
        if _get(s, "features", "pandas_over_polars") is not None:
            rows.append((f"{surface}: pandas time / polars time, same features", _num(_get(s, "features", "pandas_over_polars"))))
        if _get(s, "lightgbm", "void"):
            rows.append((f"{surface}: XGBoost / LightGBM training time", "void this run (results.json says why)"))
        elif s.get("lightgbm"):
            lg = s["lightgbm"]
            rows.append((
                f"{surface}: XGBoost / LightGBM training time ({lg.get('action')}, AUC {_num(lg.get('xgboost_auc'), 4)} vs {_num(lg.get('lightgbm_auc'), 4)})",
                _num(lg.get("xgboost_over_lightgbm")),
            ))
    return rows


def _rank_rows(r: dict) -> list[Row]:
    return [
        ("surface", str(r.get("surface"))),
        ("re-rank 10,000 viewers x 500 candidates, median ms (target < 200)", _num(_get(r, "rerank_10k_x_500", "median_ms"))),
        ("re-rank one viewer x 500, median ms (target < 5)", _num(_get(r, "rerank_one", "median_ms"))),
        ("one viewer, candidates to rules (cold), median ms", _num(_get(r, "rank_cold", "median_ms"))),
        ("cache build, seconds", _num(_get(r, "cache_build", "seconds"))),
    ]


def _widgets_rows(r: dict) -> list[Row]:
    return [
        ("weight update p50 / p95 ms (target p95 < 100)",
         f"{_num(_get(r, 'weight_update', 'p50_ms'))} / {_num(_get(r, 'weight_update', 'p95_ms'))}"),
        ("rule toggle p50 / p95 ms", f"{_num(_get(r, 'rule_toggle', 'p50_ms'))} / {_num(_get(r, 'rule_toggle', 'p95_ms'))}"),
        ("viewer change p50 / p95 ms", f"{_num(_get(r, 'viewer_change', 'p50_ms'))} / {_num(_get(r, 'viewer_change', 'p95_ms'))}"),
    ]


def _integrity_rows(r: dict) -> list[Row]:
    rows = [
        ("accounts scored", _num(r.get("accounts"))),
        ("scoring seconds (signals, lockstep, detector)", _num(_get(r, "seconds", "score_accounts_total"))),
        ("held-out PR-AUC (target >= 0.95)", _num(_get(r, "metrics", "overall", "pr_auc"))),
        ("genuine accounts flagged (target <= 1%)", _num(_get(r, "metrics", "genuine_flagged_share"))),
    ]
    for group, m in (_get(r, "metrics", "by_strategy", default={}) or {}).items():
        rows.append((f"{group}: recall at 1% FPR (held out: {m.get('positives')})", _num(m.get("recall_at_1pct_fpr"))))
    return rows


def _enforce_rows(r: dict) -> list[Row]:
    rows = [("flagged accounts", _num(r.get("flagged_accounts")))]
    for surface, cutoffs in (r.get("surfaces") or {}).items():
        for spec, c in (cutoffs or {}).items():
            if isinstance(c, dict) and "remaining_share" in c:
                when = "from the first engagement" if spec == "start" else f"cutoff {spec} days before ranking"
                rows.append((f"{surface}, {when}: bought advantage remaining (target <= 0.10 on Explore)", _num(c["remaining_share"])))
    return rows


def _real_data_rows(r: dict) -> list[Row]:
    actions = r.get("actions") or {}
    rows = [
        ("log", Path(str(r.get("source", "KuaiRand"))).name),
        ("test impressions (the last 20% of days)", _num(r.get("test_rows"))),
        ("XGBoost parameters", ", ".join(f"{k} {v}" for k, v in (r.get("params") or {}).items())),
    ]
    for action, m in actions.items():
        verdict = "matches or beats (a)" if m.get("matches_or_beats_history") else "below (a)"
        if not m.get("judged"):
            verdict += f", not judged: under {r.get('min_positives')} test positives"
        rows.append((
            f"{action} ({_num(m.get('positives'))} test positives): ROC-AUC feedlab / (a) history rates / (b) pre-impression; RCE feedlab / (a)",
            " / ".join(_num(m.get(f"{k}_auc"), 3) for k in ("feedlab", "history_rates", "pre_impression"))
            + f"; {_num(m.get('feedlab_rce'), 3)} / {_num(m.get('history_rates_rce'), 3)} ({verdict})",
        ))
    judged = [a for a, m in actions.items() if m.get("judged")]
    beaten = [a for a in judged if actions[a].get("matches_or_beats_history")]
    below = [a for a, m in actions.items() if not m.get("matches_or_beats_history")]
    rows.append((
        "finding",
        f"feedlab matches or beats the history rates on {len(beaten)} of {len(judged)} judged actions"
        + (f"; below them on {', '.join(below)}" if below else "")
        + ("; feedlab and (a) both beat (b) on every action" if all(
            min(m.get("feedlab_auc", 0), m.get("history_rates_auc", 0)) > m.get("pre_impression_auc", 1) for m in actions.values()
        ) else ""),
    ))
    return rows


def _scale_rows(r: dict) -> list[Row]:
    rows = [("surface trained, action, fixed rounds", f"{r.get('surface')}, {r.get('action')}, {r.get('rounds')}"),
            ("featurized, hours per chunk", f"{r.get('featurized', r.get('surface'))}, {_num(r.get('chunk_hours', 24))}"),
            ("training matrix", r.get("matrix", "in memory"))]
    for scale, s in (r.get("scales") or {}).items():
        for name in ("synth", "features", "train"):
            st = s.get(name) or {}
            rows.append((f"{scale} ({_num(s.get('users'))} accounts): {name}",
                         f"{_num(st.get('rows'))} rows, {_num(st.get('seconds'))} s, {_num(st.get('rows_per_s'))} rows/s, "
                         f"peak {_num(st.get('peak_rss_mb'))} MB"))
            if st.get("per_surface"):
                rows.append((f"{scale}: feature rows per surface", ", ".join(f"{k} {_num(v)}" for k, v in st["per_surface"].items())))
    for name, st in (r.get("also_measured") or {}).items():
        rows.append((f"also measured: {name.replace('_', ' ')}",
                     f"{_num(st.get('rows'))} rows, {_num(st.get('seconds'))} s, peak {_num(st.get('peak_rss_mb'))} MB"))
    for name, g in (r.get("growth") or {}).items():
        rows.append((f"growth of {name}, smallest to largest: seconds per row ratio (1 = linear), peak memory ratio",
                     f"{_num(g.get('seconds_per_row_ratio'))}, {_num(g.get('peak_memory_ratio'))} (rows x{_num(g.get('rows_ratio'))})"))
    return rows


# name -> (script and arguments, headline figures)
BENCHMARKS: dict[str, tuple[list[str], Callable[[dict], list[Row]]]] = {
    "store": (["bench_store.py", "--scales", "1"], _store_rows),
    "predict": (["bench_predict.py", "--db", str(DB)], _predict_rows),
    "rank": (["bench_rank.py", "--db", str(DB), "--surface", "explore"], _rank_rows),
    "widgets": (["bench_widgets.py", "--db", str(DB), "--surface", "explore"], _widgets_rows),
    "integrity": (["bench_integrity.py", "--db", str(DB)], _integrity_rows),
    "enforce": (["bench_enforce.py", "--db", str(DB), "--scores", "detector", "--surfaces", "explore"], _enforce_rows),
    "real_data": (["bench_real_data.py"], _real_data_rows),
    "scale": (["bench_scale.py", "--scales", "1,5,20", "--surface", "stories"], _scale_rows),
    # the out-of-core target: a world of 50M impressions (230,000 accounts) on one 2-core machine
    "scale_50m": (["bench_scale.py", "--scales", "46", "--all-surfaces", "--surface", "stories"], _scale_rows),
}
#: Benchmarks a plain run (make bench) leaves out: the scaling table builds worlds of 5M and 20M
#: impressions (about an hour on 2 cores) and scale_50m one of 50M (about as long); run them
#: with --only scale,scale_50m.
NOT_BY_DEFAULT = ("scale", "scale_50m")


def _commit() -> str | None:
    """The checked-out commit (with "+changes" when the tree differs from it), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def run_one(name: str) -> dict:
    """Run one benchmark in its own process; its JSON result, wall seconds and peak memory."""
    script, *args = BENCHMARKS[name][0]
    with tempfile.TemporaryDirectory(prefix=f"feedlab-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(HERE / script), *args, "--out", str(out)]
        log = Path(tmp) / "output.txt"
        started = time.perf_counter()
        with open(log, "w") as sink:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        entry = {
            "command": " ".join(["python", f"benchmarks/{script}", *[a.replace(str(ROOT) + "/", "") for a in args]]),
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
            "returncode": code,
            "ran_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(),
        }
        if code == 0 and out.exists():
            entry["result"] = json.loads(out.read_text())
        else:
            entry["output_tail"] = log.read_text()[-3000:]
    return entry


def render(results: dict) -> str:
    """RESULTS.md: the machine, then a table of headline figures per benchmark."""
    m = results.get("machine", {})
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run.py` (`make bench`) from `benchmarks/results.json`; each benchmark's",
        "JSON there holds every figure it measured. Figures come from the run dates shown, on this machine",
        "(that of the latest run; a benchmark that ran on another CPU names it):",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {m.get('cpu')} |",
        f"| cores | {m.get('cores')} |",
        f"| memory | {m.get('memory_gb')} GiB |",
        f"| Python | {m.get('python')} |",
        f"| libraries | duckdb {m.get('duckdb')}, polars {m.get('polars')}, xgboost {m.get('xgboost')}, numpy {m.get('numpy')} |",
        "",
    ]
    for name, entry in results.get("benchmarks", {}).items():
        commit = f" at commit {entry['commit']}" if entry.get("commit") else ""
        cpu = (entry.get("result") or {}).get("machine", {}).get("cpu")
        where = f" on {cpu}" if cpu and cpu != m.get("cpu") else ""
        lines += [f"## {name}", "", f"`{entry['command']}`: ran {entry.get('ran_at', '?')}{commit}{where}, {entry['seconds']} s, "
                  f"peak memory {entry['peak_rss_mb']:,} MB.", ""]
        if entry.get("returncode") != 0 or "result" not in entry:
            lines += [f"**Failed** (exit status {entry.get('returncode')}); see results.json for its output.", ""]
            continue
        summarise = BENCHMARKS.get(name, (None, lambda r: []))[1]
        lines += ["| figure | value |", "| --- | --- |"]
        lines += [f"| {figure} | {value} |" for figure, value in summarise(entry["result"])]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated benchmarks to run (of {', '.join(BENCHMARKS)})")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from results.json")
    args = parser.parse_args()
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {"benchmarks": {}}
    if not args.render:
        names = args.only.split(",") if args.only else [n for n in BENCHMARKS if n not in NOT_BY_DEFAULT]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        for name in names:
            print(f"[bench] {name} ...", flush=True)
            entry = run_one(name)
            results["benchmarks"][name] = entry
            print(f"[bench] {name}: exit {entry['returncode']}, {entry['seconds']} s, peak {entry['peak_rss_mb']} MB", flush=True)
        results["machine"] = machine()
        results["benchmarks"] = {n: results["benchmarks"][n] for n in BENCHMARKS if n in results["benchmarks"]}
        RESULTS_JSON.write_text(json.dumps(results, indent=2, default=str) + "\n")
    RESULTS_MD.write_text(render(results) + "\n")
    print(f"wrote {RESULTS_JSON.relative_to(ROOT)} and {RESULTS_MD.relative_to(ROOT)}")
    failed = [n for n, e in results["benchmarks"].items() if e.get("returncode") != 0]
    return 1 if failed and not args.render else 0


if __name__ == "__main__":
    sys.exit(main())
