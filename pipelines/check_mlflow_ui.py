r"""Checks in a headless Chromium that the MLflow link our commands print opens a sweep's runs table with its trials.

Copy-paste:

    python -m pipelines.check_mlflow_ui                                  # a smoke sweep in a new temp folder, checked
    python -m pipelines.check_mlflow_ui --output-dir /tmp/uicheck        # ... in that folder (run again: it resumes)
    python -m pipelines.check_mlflow_ui --output-dir outputs --sweep quick_demo   # a sweep that ran already
    python -m pipelines.check_mlflow_ui --shots /tmp/ui-shots            # the screenshots there

It needs Chromium, chromedriver and selenium, which CI does not have: ``apt-get install chromium chromium-driver`` and
``pip install -e '.[ui]'``. Without ``--sweep`` it runs ``python -m pipelines.sweep <space> --smoke`` and takes the
``MLflow: <url>`` link that command prints; with it, the link :func:`~toco_ray.tracking.ui_hint` builds for that
sweep (the line every command prints). It serves the store on a free port (a local store's link names ``mlflow ui``'s
default address), opens the link there and checks that (a) it is the runs table, not MLflow 3's GenAI pages, (b) the
parent run and every trial run (the store's runs tagged with the parent) are listed, and (c) a trial's run page
opens in the model-training section. One PASS/FAIL line per check, the screenshots' paths; exit status 0 when all
pass, 1 when one fails, 2 when the check cannot run (no Chromium, no sweep). Logs (the sweep's, the server's,
chromedriver's) go to ``<output-dir>/ui_check/``, the screenshots too unless ``--shots`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.tracking_names import HTTP_SCHEMES, missing_store, resolve_tracking_uri
from toco_ray.ui_check import (
    PAGE_TIMEOUT_S,
    Browser,
    Check,
    UICheckError,
    browser_paths,
    check_names,
    check_run_page,
    check_runs_view,
    import_selenium,
    landed,
    names_shown,
    printed_link,
    served,
    window_size,
)

DEFAULT_SPACE = "search_spaces/quick_demo.yaml"
WORK_DIR = "ui_check"  # under --output-dir: logs, and the screenshots unless --shots
SWEEP_LOG = "sweep.log"
DRIVER_LOG = "chromedriver.log"
LOG_TAIL_LINES = 15
INTERRUPTED = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.check_mlflow_ui", __doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="",
                        help="the sweep's output folder and MLflow store (default: outputs/ with --sweep, else a new "
                             "temporary folder, kept)")
    parser.add_argument("--sweep", default="",
                        help="check this sweep (a name, experiment or run id, as pipelines.report takes) instead of "
                             "running a smoke sweep")
    parser.add_argument("--space", default=DEFAULT_SPACE, help="search space of the smoke sweep")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    parser.add_argument("--chromedriver", default="chromedriver", help="chromedriver executable (same version)")
    parser.add_argument("--shots", default="", help=f"screenshot folder (default: <output-dir>/{WORK_DIR}/)")
    parser.add_argument("--timeout", type=float, default=PAGE_TIMEOUT_S,
                        help="seconds each page gets to show what is checked")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM as Ctrl-C: the server and browser stop again
    try:
        checks = run(args)
    except TocoError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STATUS
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    passed = sum(check.passed for check in checks)
    print(f"MLflow UI check: {passed}/{len(checks)} passed")
    return 0 if passed == len(checks) else 1


def run(args: argparse.Namespace) -> list[Check]:
    """Finds the browser, runs (or finds) the sweep, serves its store and checks the pages; returns the verdicts."""
    from mlflow import MlflowClient  # here, not at the top: --help answers at once

    from toco_ray.tracking import ui_hint
    from toco_ray.tuning import runs
    paths = browser_paths(args.chromium, args.chromedriver)  # before the sweep: a missing browser fails at once
    import_selenium()
    output_dir = Path(args.output_dir or ("outputs" if args.sweep else tempfile.mkdtemp(prefix="toco-ui-check-")))
    work = output_dir / WORK_DIR
    shots = Path(args.shots) if args.shots else work
    work.mkdir(parents=True, exist_ok=True)
    shots.mkdir(parents=True, exist_ok=True)
    uri = resolve_tracking_uri(output_dir)
    if args.sweep:
        problem = missing_store(uri, str(output_dir))
        if problem:
            raise UICheckError(problem)
        client = MlflowClient(tracking_uri=uri)
        parent = runs.find_parent(client, args.sweep)
        output = ui_hint(uri, parent.info.experiment_id)
    else:
        output = run_smoke_sweep(args.space, output_dir, work / SWEEP_LOG)
        client = MlflowClient(tracking_uri=uri)
        parent = runs.find_parent(client, Path(args.space).stem)
    trials = runs.children(client, parent)
    link = printed_link(output)
    print(f"sweep: {parent.info.run_name} ({len(trials)} trial run(s)) in {uri}; link: {link}", flush=True)
    with serving(uri, output_dir, work) as ui, tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        browser = Browser(paths, Path(profile), window_size(runs=len(trials) + 1), work / DRIVER_LOG, args.timeout)
        with browser:
            print(f"browser: Chromium {browser.version}, headless; opening {served(link, uri, ui)}", flush=True)
            checks, pictures = check_pages(browser, served(link, uri, ui), ui, parent, trials, shots)
        for check in checks:
            print(check.line(), flush=True)
        print("screenshots: " + ", ".join(str(p) for p in pictures), flush=True)
    return checks


def run_smoke_sweep(space: str, output_dir: Path, log_path: Path) -> str:
    """Runs ``pipelines.sweep <space> --smoke`` into ``output_dir`` (its output to ``log_path``); returns that output.

    Raises:
        UICheckError: the sweep failed (the tail of its log in the message).
    """
    command = [sys.executable, "-m", "pipelines.sweep", space, "--smoke", "--output-dir", str(output_dir)]
    print(f"sweep: {shlex.join(['python', *command[1:]])} (log: {log_path})", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    output = log_path.read_text(errors="replace")
    if code != 0:
        tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
        raise UICheckError(f"the smoke sweep exited with status {code}; last lines of {log_path}:\n{tail}")
    print(f"sweep: finished in {time.monotonic() - started:.0f} s", flush=True)
    return output


@contextlib.contextmanager
def serving(uri: str, output_dir: Path, work: Path) -> Iterator[str]:
    """The UI serving the store ``uri``: a tracking server is its own; a database gets an MLflow server on a free port
    for the block, stopped however the block ends."""
    from toco_ray.processes import LOOPBACK, stop_session
    from toco_ray.tracking_server import LOG_FILE, ServerSpec, pick_port, start_server

    if uri.split("://", 1)[0] in HTTP_SCHEMES:
        yield uri
        return
    spec = ServerSpec.in_folder(output_dir, port=pick_port(LOOPBACK), backend_store_uri=uri)
    print(f"server: starting MLflow on {spec.uri} (log: {work / LOG_FILE})", flush=True)
    proc = start_server(spec, work)
    try:
        yield spec.uri
    finally:
        stop_session(proc.pid)
        print("server: stopped", flush=True)


def check_pages(browser: Browser, url: str, ui: str, parent, trials: list, shots: Path) -> tuple[list[Check], list]:
    """Opens the runs link, expands the parent's row if the trials are nested under it, and opens a trial's page."""
    from toco_ray.tracking import run_url
    names = [run.info.run_name for run in trials]
    page = browser.open(url, landed(parent.info.run_name))
    pictures = [browser.screenshot(shots / "runs.png")]
    checks = [check_runs_view(page), check_names(page, [parent.info.run_name], "parent run", "as the page opens")]
    if not checks[0].passed:
        return [*checks, Check("child runs", False, "not looked for: the runs table did not open")], pictures
    how = "as the page opens"
    if names and not names_shown(names)(page):
        expanded = browser.expand(parent.info.run_id, names_shown(names))
        if expanded is None:
            return [*checks, Check("child runs", False, "collapsed under the parent's row, which has no expander")], \
                pictures
        page, how = expanded, "nested under the parent's row, collapsed as the page opens; shown once expanded"
        pictures.append(browser.screenshot(shots / "runs-expanded.png"))
    checks.append(check_names(page, names, "child runs", how))
    if trials:
        first = trials[0]
        link = run_url(ui, parent.info.experiment_id, first.info.run_id)
        page = browser.open(link, names_shown([first.info.run_name]))
        pictures.append(browser.screenshot(shots / "run.png"))
        checks.append(check_run_page(page, first.info.run_name))
    return checks, pictures


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
