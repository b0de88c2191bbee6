"""A real browser drives JupyterLab: run a notebook, move a weight slider, see the ranking change.

The harness starts JupyterLab on a free port with a random token, serving a temporary copy of
``notebooks/`` (autosave can never write outputs into the repository's notebooks), with its own
settings, workspace and runtime folders (so nothing from the user's Jupyter set-up leaks in and the
kernels it starts can be found by their connection files). Headless Chromium, driven by
Playwright, opens a notebook, runs all cells from the Run menu, waits for the kernel to be idle,
moves a slider with the keyboard and checks that the ranking table shown in the widget changed.

Two cases share one server: a tiny generated notebook, which proves the harness on its own, and
``04_tuning_weights.ipynb`` with ``toolkit.widgets.WeightTuner``. Screenshots go to
``tests/artifacts/`` (git-ignored). Chromium is Debian's (``make test`` installs it); this never
downloads a browser. ``FEEDLAB_CHROMIUM`` points it at another Chromium binary.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
JUPYTER = Path(sys.executable).parent / "jupyter"
CHROMIUM = Path(os.environ.get("FEEDLAB_CHROMIUM", "/usr/bin/chromium"))
PROBE = "_browser_probe.ipynb"

# What a user would wait for at most; the whole module stays well under 3 minutes when it passes.
SERVER_START_S = 60
KERNEL_START_S = 60


@dataclass(frozen=True)
class TunerCase:
    """One notebook to run in the browser and the widget parts to find in it."""

    name: str  # names the screenshot: tests/artifacts/browser-<name>.png
    notebook: str  # a file name in notebooks/ (or the generated probe)
    slider: str  # the ipywidgets description label of the slider to move
    table: str = ".widget-html-content table.feedlab-ranking"  # the ranking table (in an ipywidgets.HTML)
    keys: tuple[str, ...] = ("End",)  # what to press on the focused slider handle
    run_timeout_s: float = 120.0  # Run All until the kernel is idle again


CASES = [
    pytest.param(TunerCase("probe", PROBE, slider="comment", run_timeout_s=60), id="probe"),
    pytest.param(TunerCase("tuning_weights", "04_tuning_weights.ipynb", slider="comment"), id="tuning_weights"),
]


# --- the generated notebook -----------------------------------------------------------------


def probe_notebook() -> nbformat.NotebookNode:
    """A two-cell notebook whose slider (``continuous_update=False``) rewrites an HTML ranking table."""
    code = '''\
import ipywidgets as widgets

POSTS = {"p1": (0.9, 0.1), "p2": (0.5, 0.5), "p3": (0.1, 0.9)}  # post -> (p_like, p_comment)


def ranking_html(w_comment: float) -> str:
    scores = {post: p_like + w_comment * p_comment for post, (p_like, p_comment) in POSTS.items()}
    rows = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    body = "".join(f"<tr><td>{i}</td><td>{post}</td><td>{score:.2f}</td></tr>" for i, (post, score) in enumerate(rows))
    return f'<table class="feedlab-ranking"><tr><th>position</th><th>post</th><th>score</th></tr>{body}</table>'


slider = widgets.FloatSlider(value=0.0, min=-5.0, max=5.0, step=0.5, description="comment", continuous_update=False)
table = widgets.HTML(ranking_html(slider.value))
slider.observe(lambda change: setattr(table, "value", ranking_html(change["new"])), names="value")
widgets.VBox([slider, table])'''
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Browser probe"), nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


# --- JupyterLab ---------------------------------------------------------------------------------


@dataclass
class Lab:
    """A running JupyterLab: where it serves from, how to reach it, and its log."""

    proc: subprocess.Popen
    url: str
    token: str
    root: Path  # the temporary copy of notebooks/ it serves
    runtime: Path  # its runtime dir: every kernel it starts has a connection file here
    log: Path

    def api(self, method: str, path: str, *, timeout: float = 5.0):
        """Call the server's REST API; the parsed JSON answer (None when empty)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_pids(runtime: Path) -> list[int]:
    """Processes whose command line names a connection file in this server's runtime dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if str(runtime) in cmdline and "kernel" in cmdline:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait() is missing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _start_lab(base: Path) -> Lab:
    if not JUPYTER.exists():
        pytest.fail(f"{JUPYTER} is missing: run `make install` (JupyterLab is a project dependency)", pytrace=False)
    root, runtime, settings = base / "notebooks", base / "runtime", base / "settings"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nbformat.write(probe_notebook(), root / PROBE)
    # Quiet, deterministic UI: no news or update toasts over the widgets.
    apputils = settings / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(24)
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "OMP_WAIT_POLICY": "PASSIVE",  # the kernel runs XGBoost on a shared machine
    }
    cmd = [
        str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = base / "jupyter.log"
    with log.open("wb") as out:
        # Its own process group, so teardown can end the server and anything it spawned at once.
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(proc, f"http://127.0.0.1:{port}", token, root, runtime, log)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with status {proc.returncode} on start:\n{lab.log_tail()}", pytrace=False)
        try:
            lab.api("GET", "/api/status", timeout=2)
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            _stop_lab(lab)
            pytest.fail(f"JupyterLab did not answer /api/status within {SERVER_START_S} s:\n{lab.log_tail()}", pytrace=False)
        time.sleep(0.3)


def _stop_lab(lab: Lab) -> list[int]:
    """Shut the server and its kernels down; the pids of kernels that had to be killed."""
    kernels = _kernel_pids(lab.runtime)
    try:  # the graceful way: the server shuts its kernels down, then exits
        lab.api("POST", "/api/shutdown", timeout=10)
        lab.proc.wait(timeout=20)
    except Exception:  # noqa: BLE001 - whatever went wrong, the signals below still end it
        pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if lab.proc.poll() is not None:
            break
        try:
            os.killpg(lab.proc.pid, sig)
            lab.proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # Kernels run in sessions of their own (jupyter_client starts them so), outside the group.
    kernels = sorted(set(kernels) | set(_kernel_pids(lab.runtime)))
    leftover = _wait_gone(kernels, timeout=10)
    for pid in leftover:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftover


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab serving a temporary copy of notebooks/ (plus the probe), shut down afterwards."""
    server = _start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        leftover = _stop_lab(server)
    assert not leftover, f"kernels {leftover} outlived the JupyterLab shutdown and were killed"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium from the system (Playwright never downloads one here)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `make test` (it installs Debian's chromium), or "
            "`sudo apt-get install -y --no-install-recommends chromium`, or set FEEDLAB_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            # --no-sandbox: Chromium's sandbox refuses to run as root (containers, CI). The rest stop
            # its calls home, which a closed network refuses many at a time (slow, noisy starts).
            quiet = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", *quiet], timeout=30_000)
        except Error as e:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {e.message.splitlines()[0]}", pytrace=False)
        try:
            yield chromium
        finally:
            chromium.close()


# --- driving the page ---------------------------------------------------------------------------


PROMPTS_JS = """
() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')].map(cell => {
    const prompt = cell.querySelector('.jp-InputPrompt');
    const output = cell.querySelector('.jp-OutputArea');
    // textContent: innerText is empty for cells the browser skips rendering (content-visibility)
    return [prompt ? prompt.textContent.trim() : '', output ? output.textContent : ''];
})
"""


def _session(lab: Lab, notebook: str) -> dict | None:
    return next((s for s in lab.api("GET", "/api/sessions") if s.get("path") == notebook), None)


def _wait_kernel_idle(page, lab: Lab, notebook: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = _session(lab, notebook)
        if session and session["kernel"]["execution_state"] == "idle":
            return session
        # A notebook stored without a kernelspec asks for a kernel: take the default (Python 3).
        accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        time.sleep(0.3)
    session = _session(lab, notebook)
    state = session["kernel"]["execution_state"] if session else "no session"
    pytest.fail(f"{notebook}: kernel not idle after {timeout:.0f} s ({state})\n{lab.log_tail(15)}", pytrace=False)


def _click_menu(page, menu: str, item: str) -> None:
    """Open a menu of the menu bar and click one of its items, as a user does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-content .lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def _run_all(page, lab: Lab, case: TunerCase) -> list[tuple[str, str]]:
    """Run every cell from the Run menu; the (prompt, output text) of each code cell once idle."""
    _click_menu(page, "Run", "Run All Cells")
    deadline = time.monotonic() + case.run_timeout_s
    while True:
        cells = page.evaluate(PROMPTS_JS)
        queued = any("*" in prompt for prompt, _ in cells)
        session = _session(lab, case.notebook)
        if not queued and session and session["kernel"]["execution_state"] == "idle":
            break
        if time.monotonic() > deadline:
            pending = sum("*" in prompt for prompt, _ in cells)
            pytest.fail(f"{case.notebook}: still running after {case.run_timeout_s:.0f} s ({pending} cells queued)", pytrace=False)
        time.sleep(0.5)
    not_run = [i for i, (prompt, _) in enumerate(cells) if not re.fullmatch(r"\[\d+\]:", prompt)]
    if not_run:
        # Run All stops at the first error: the cell before the first one not run holds the traceback.
        failed = max(not_run[0] - 1, 0)
        pytest.fail(
            f"{case.notebook}: code cell {failed + 1} of {len(cells)} failed, cells {[i + 1 for i in not_run]} did not run:\n"
            f"{cells[failed][1][-3000:]}",
            pytrace=False,
        )
    return cells


def _slider_handle(page, label: str):
    slider = page.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )
    count = slider.count()
    if count != 1:
        pytest.fail(f"expected one slider labelled {label!r} in the widget, found {count}", pytrace=False)
    return slider.locator(".noUi-handle")


@pytest.mark.parametrize("case", CASES)
def test_slider_changes_the_displayed_ranking(browser, lab: Lab, case: TunerCase) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    if not (lab.root / case.notebook).exists():
        pytest.fail(f"notebooks/{case.notebook} is missing (renamed? update CASES in {Path(__file__).name})", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"browser-{case.name}.png"
    failed_shot = shot.with_name(f"{shot.stem}-failed.png")
    for old in (shot, failed_shot):  # what is there afterwards is this run's
        old.unlink(missing_ok=True)
    console: list[str] = []
    timings: dict[str, float] = {}  # seconds per phase, printed (shown with -s, or on failure)
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        page.goto(f"{lab.url}/lab/tree/{case.notebook}?token={lab.token}", timeout=60_000)
        page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=60_000)
        phase("open")
        _wait_kernel_idle(page, lab, case.notebook, KERNEL_START_S)
        phase("kernel")
        _run_all(page, lab, case)
        phase("run all")

        table = page.locator(case.table)
        try:
            table.first.wait_for(state="attached", timeout=30_000)
            rendered = True
        except PlaywrightTimeout:
            rendered = False
        if not rendered:  # failing outside the except keeps Playwright's call log out of the report
            pytest.fail(f"{case.notebook} ran, but no {case.table!r} was rendered in 30 s", pytrace=False)
        assert table.count() == 1, f"expected one {case.table!r}, found {table.count()}"
        table.scroll_into_view_if_needed()
        before = table.inner_text()
        assert before.strip(), "the ranking table is empty"
        phase("widget")

        handle = _slider_handle(page, case.slider)
        handle.scroll_into_view_if_needed()
        value_before = handle.get_attribute("aria-valuenow")
        handle.focus()
        for key in case.keys:
            page.keyboard.press(key)
        value_after = handle.get_attribute("aria-valuenow")
        assert value_after != value_before, f"pressing {case.keys} did not move the {case.slider!r} slider ({value_before})"

        # The kernel answers the slider's new value by rewriting the table.
        try:
            expect(table).not_to_have_text(before, use_inner_text=True, timeout=30_000)
            changed = True
        except AssertionError:
            changed = False
        if not changed:
            pytest.fail(
                f"{case.slider!r} moved {value_before} -> {value_after}, but the ranking table did not change in 30 s:\n{before}",
                pytrace=False,
            )
        phase("update")
        after = table.inner_text()
        assert after.strip() and after != before
        table.scroll_into_view_if_needed()
        page.screenshot(path=shot)
        # One kernel for the notebook: running it must not start others (an earlier case's kernel
        # may still be shutting down; the lab fixture's teardown checks that none outlives it)
        assert [s["path"] for s in lab.api("GET", "/api/sessions")].count(case.notebook) == 1
    except BaseException:
        try:
            page.screenshot(path=failed_shot)
        except Exception:  # noqa: BLE001 - a failed screenshot must not hide the real failure
            pass
        if console:
            print("browser console errors:\n" + "\n".join(console[-20:]))
        raise
    finally:
        print(f"{case.name}: {timings}")
        context.close()
        try:  # free the kernel's memory before the next notebook runs
            if session := _session(lab, case.notebook):
                lab.api("DELETE", f"/api/sessions/{session['id']}", timeout=10)
        except OSError as e:  # the server is gone: the lab fixture's teardown reports leftovers
            print(f"could not shut the kernel of {case.notebook} down: {e}")
    if console:
        print("browser console errors:\n" + "\n".join(console[-20:]))
