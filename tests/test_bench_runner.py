"""benchmarks/run.py: how RESULTS.md is rendered from results.json (the benchmarks themselves run in make bench)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run  # noqa: E402


def _entry(result: dict | None, code: int = 0) -> dict:
    entry = {"command": "python benchmarks/bench_scale.py --scales 1,2", "seconds": 12.5, "peak_rss_mb": 2048.0,
             "returncode": code, "ran_at": "2026-12-01T18:00:00+00:00", "commit": "abc1234"}
    if result is not None:
        entry["result"] = result
    return entry


def test_render_shows_machine_commit_and_figures():
    scale = {
        "surface": "stories", "action": "like", "rounds": 100,
        "scales": {"x1": {"users": 5000, "synth": {"rows": 1000, "seconds": 2.0, "rows_per_s": 500, "peak_rss_mb": 600.0}}},
        "growth": {"synth": {"rows_ratio": 2.0, "seconds_per_row_ratio": 1.1, "peak_memory_ratio": 1.5}},
    }
    text = run.render({"machine": {"cpu": "Test CPU", "cores": 2, "memory_gb": 23.5}, "benchmarks": {"scale": _entry(scale)}})
    assert "| CPU | Test CPU |" in text and "| cores | 2 |" in text
    assert "at commit abc1234, 12.5 s, peak memory 2,048.0 MB" in text
    assert "| featurized, hours per chunk | stories, 24 |" in text
    assert "| x1 (5,000 accounts): synth | 1,000 rows, 2 s, 500 rows/s, peak 600 MB |" in text
    assert "| growth of synth, smallest to largest: seconds per row ratio (1 = linear), peak memory ratio | 1.1, 1.5 (rows x2) |" in text


def test_render_names_the_cpu_of_a_benchmark_run_elsewhere():
    here, elsewhere = {"machine": {"cpu": "CPU A"}}, {"machine": {"cpu": "CPU B"}}
    text = run.render({"machine": {"cpu": "CPU A"}, "benchmarks": {"rank": _entry(here), "widgets": _entry(elsewhere)}})
    assert "| CPU | CPU A |" in text
    assert "at commit abc1234, 12.5 s" in text  # rank ran on the machine in the table
    assert "at commit abc1234 on CPU B, 12.5 s" in text


def test_render_marks_a_failed_benchmark():
    text = run.render({"machine": {}, "benchmarks": {"rank": _entry(None, code=1)}})
    assert "**Failed** (exit status 1)" in text


def test_every_benchmark_script_is_registered():
    scripts = {p.name for p in (Path(run.__file__).parent).glob("bench_*.py")}
    assert scripts == {args[0] for args, _ in run.BENCHMARKS.values()}
