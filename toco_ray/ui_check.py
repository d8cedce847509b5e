"""The MLflow UI as a user meets it: a headless Chromium opens the links our commands print and reads what renders.

MLflow 3 opens an experiment on its GenAI pages unless the link asks for the runs view (:func:`~toco_ray.tracking.
runs_view_url`), and its runs table nests a sweep's trial runs under the parent's row, collapsed. The check opens the
runs link in a new browser profile (a first visit: no saved table state), reads the page, expands the parent's row as
a user would, and opens one trial's run page (:func:`~toco_ray.tracking.run_url`, the report's links). The verdicts
are pure functions of the page's HTML (:func:`check_runs_view`, :func:`check_names`, :func:`check_run_page`); only
:class:`Browser` needs Chromium, chromedriver and ``selenium`` (the ``[ui]`` extra), imported when it starts.

Example:
    >>> browser_paths("/usr/bin/chromium", "chromedriver")     # raises UICheckError naming the apt line if missing
    >>> with Browser(paths, profile_dir, window_size(runs=3)) as browser:
    ...     html = browser.open(url, ready=lambda page: "sweep-quick_demo" in text_nodes(page))
    >>> check_runs_view(html).passed
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from toco_ray.errors import TocoError
from toco_ray.tracking_names import ui_base

INSTALL_BROWSER = "apt-get install chromium chromium-driver"
INSTALL_SELENIUM = "pip install -e '.[ui]'"
# Without the background-networking flags Chromium keeps dialling Google's services, refused on a closed network;
# a new profile each time: the runs table saves its expanded rows and columns in the profile's local storage.
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
WINDOW_WIDTH = 1600
MIN_WINDOW_HEIGHT = 1000
# The runs table renders only the rows in view: the window grows with the runs, the page's chrome above and below the
# table (toolbar, filters, footer, the browser's own) is about 420 px and a row 32 px (MLflow 3.x, measured).
PAGE_CHROME_PX = 420
ROW_PX = 32
PAGE_TIMEOUT_S = 60.0  # a page's data arrives in about 3 s on two idle cores; a sweep beside it slows it tenfold
# Text that only MLflow 3's GenAI pages show: their sidebar's sections (the model-training sidebar lists Runs,
# Models, Traces); "Traces" alone is in both.
GENAI_MARKERS = ("Observability", "Evaluation runs")
# The runs table's name column and its footer ("3 matching runs")
RUNS_VIEW_MARKERS = ("Run Name", "matching runs")
# MLflow's expand/collapse button in a parent run's name cell (its data-component-id names the cell renderer)
EXPANDER_SELECTOR = 'div[role="row"][row-id="{run_id}"] button[data-component-id*="runnamecellrenderer"]'
SKIPPED_TAGS = ("script", "style", "noscript")


class UICheckError(TocoError, RuntimeError):
    """The check cannot run (no browser, no selenium, no sweep); the message says what to install or pass."""


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, whether it held, and what was seen."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


# --- reading a page ------------------------------------------------------------------------------------------------
class _TextNodes(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skipping = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.skipping += tag in SKIPPED_TAGS

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping and data.strip():
            self.texts.append(data.strip())


def text_nodes(html: str) -> set[str]:
    """The page's text, one entry per text node, stripped (scripts and styles left out).

    Names are matched against whole nodes, not substrings: the parent run ``sweep-quick_demo`` is a substring of the
    experiment ``toco-sweep-quick_demo``, which every page of the experiment shows.
    """
    parser = _TextNodes()
    parser.feed(html)
    parser.close()
    return set(parser.texts)


# --- verdicts ------------------------------------------------------------------------------------------------------
def genai_markers(texts: Iterable[str]) -> list[str]:
    found = set(texts)
    return [marker for marker in GENAI_MARKERS if marker in found]


def check_runs_view(html: str) -> Check:
    """The page is the experiment's runs table, not MLflow 3's GenAI pages (whose sidebar it names if it is)."""
    texts = text_nodes(html)
    genai = genai_markers(texts)
    if genai:
        return Check("runs view", False, f"MLflow opened its GenAI pages (sidebar shows {', '.join(genai)}), not the "
                                         "runs table")
    missing = [marker for marker in RUNS_VIEW_MARKERS if marker not in texts]
    if missing:
        return Check("runs view", False, f"no runs table on the page (missing {', '.join(map(repr, missing))})")
    return Check("runs view", True, "the link opens the runs table (Model training), not the GenAI pages")


def check_names(html: str, names: Iterable[str], what: str, how: str = "") -> Check:
    """Every name in ``names`` is a text node of the page; the detail lists the missing ones, or those seen."""
    texts, wanted = text_nodes(html), sorted(set(names))
    if not wanted:
        return Check(what, False, "none in the MLflow store to look for")
    missing = [name for name in wanted if name not in texts]
    suffix = f" ({how})" if how else ""
    if missing:
        return Check(what, False, f"{len(wanted) - len(missing)}/{len(wanted)} shown{suffix}; missing "
                                  f"{', '.join(map(repr, missing))}")
    return Check(what, True, f"{len(wanted)}/{len(wanted)} shown{suffix}: {', '.join(map(repr, wanted))}")


def check_run_page(html: str, run_name: str) -> Check:
    """A run's page shows its name, in the model-training section rather than the GenAI one."""
    texts = text_nodes(html)
    if run_name not in texts:
        return Check("run page", False, f"{run_name!r} is not on its page")
    genai = genai_markers(texts)
    if genai:
        return Check("run page", False, f"{run_name!r} opens among the GenAI pages (sidebar shows "
                                        f"{', '.join(genai)}); its link lacks the runs view's workflowType")
    return Check("run page", True, f"{run_name!r} opens in the model-training section")


def names_shown(names: Iterable[str]) -> Callable[[str], bool]:
    """A readiness test for :meth:`Browser.open`: every one of ``names`` is on the page."""
    wanted = set(names)
    return lambda html: wanted <= text_nodes(html)


def landed(parent_name: str) -> Callable[[str], bool]:
    """A readiness test for the runs link: the parent's row has rendered, or MLflow went to its GenAI pages."""
    return lambda html: parent_name in (texts := text_nodes(html)) or bool(genai_markers(texts))


# --- links -----------------------------------------------------------------------------------------------------------
def printed_link(output: str) -> str:
    """The last ``MLflow: <url>`` link in a command's output (:func:`~toco_ray.tracking.ui_hint`'s line).

    Raises:
        UICheckError: the output has no such line.
    """
    links = [line.split("MLflow: ", 1)[1].split()[0] for line in output.splitlines() if "MLflow: http" in line]
    if not links:
        raise UICheckError("the command printed no 'MLflow: <url>' line; see its output above")
    return links[-1]


def served(link: str, store_uri: str, ui: str) -> str:
    """``link`` (printed for the store ``store_uri``) on the UI actually serving it, ``ui``: for a local store the
    printed link names ``mlflow ui``'s default address, and the check serves the store on a free port instead."""
    base = ui_base(store_uri)
    if not link.startswith(base):
        raise UICheckError(f"printed link {link} does not start with the UI of {store_uri} ({base})")
    return ui.rstrip("/") + link[len(base):]


# --- the browser -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrowserPaths:
    chromium: str
    chromedriver: str


def browser_paths(chromium: str, chromedriver: str) -> BrowserPaths:
    """The Chromium and chromedriver executables (names are looked up on ``PATH``).

    Raises:
        UICheckError: one is missing, naming the apt packages that provide them.
    """
    found = {name: shutil.which(path) for name, path in (("chromium", chromium), ("chromedriver", chromedriver))}
    missing = [f"{name} ({(chromium, chromedriver)[i]})" for i, (name, path) in enumerate(found.items()) if not path]
    if missing:
        raise UICheckError(f"{' and '.join(missing)} not found; install them: {INSTALL_BROWSER} (or pass --chromium/"
                           "--chromedriver)")
    return BrowserPaths(found["chromium"], found["chromedriver"])


def window_size(runs: int) -> tuple[int, int]:
    """A window tall enough for the runs table to render ``runs`` rows at once."""
    return WINDOW_WIDTH, max(MIN_WINDOW_HEIGHT, PAGE_CHROME_PX + ROW_PX * runs)


def chromium_flags(profile_dir: str | Path, size: tuple[int, int]) -> list[str]:
    """Chromium's command-line flags: headless, quiet on the network, a new profile, the window size."""
    return [*HEADLESS_FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={size[0]},{size[1]}"]


def import_selenium():
    try:
        from selenium import webdriver
    except ImportError:
        raise UICheckError(f"the UI check drives Chromium with selenium, which is not installed: {INSTALL_SELENIUM}"
                           ) from None
    return webdriver


class Browser:
    """Headless Chromium under chromedriver; a context manager that quits the browser however the block ends.

    Args:
        paths: the executables (:func:`browser_paths`).
        profile_dir: an empty folder for the browser's profile.
        size: window width and height in px (:func:`window_size`).
        log_path: chromedriver's log.
        timeout_s: how long :meth:`open` and :meth:`expand` wait for a page to be ready.
    """

    def __init__(self, paths: BrowserPaths, profile_dir: Path, size: tuple[int, int], log_path: Path,
                 timeout_s: float = PAGE_TIMEOUT_S):
        self.paths, self.profile_dir, self.size, self.log_path, self.timeout_s = (paths, profile_dir, size, log_path,
                                                                                  timeout_s)
        self.driver = None

    def __enter__(self) -> Browser:
        webdriver = import_selenium()
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = self.paths.chromium
        for flag in chromium_flags(self.profile_dir, self.size):
            options.add_argument(flag)
        # a driver path given: selenium does not look for (or download) one
        service = Service(executable_path=self.paths.chromedriver, log_output=str(self.log_path))
        try:
            self.driver = webdriver.Chrome(options=options, service=service)
        except Exception as err:  # selenium's WebDriverException and OSError: the browser did not start
            raise UICheckError(f"Chromium ({self.paths.chromium}) did not start under {self.paths.chromedriver}: "
                               f"{str(err).strip().splitlines()[0]}; see {self.log_path}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.driver is not None:
            self.driver.quit()

    @property
    def version(self) -> str:
        return self.driver.capabilities.get("browserVersion", "?")

    def open(self, url: str, ready: Callable[[str], bool]) -> str:
        """Loads ``url`` afresh and returns the page's HTML once ``ready(html)`` holds, or when the timeout passes
        (the verdicts then say what is missing)."""
        # a new document: a link differing from the current page only after '#' would change the route in place,
        # and until the new route renders the old page's text is still there
        self.driver.get("about:blank")
        self.driver.get(url)
        return self.wait(ready)

    def wait(self, ready: Callable[[str], bool]) -> str:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        with contextlib.suppress(TimeoutException):  # not ready in time: the verdicts say what is missing
            WebDriverWait(self.driver, self.timeout_s).until(lambda driver: ready(driver.page_source))
        return self.driver.page_source

    def expand(self, run_id: str, ready: Callable[[str], bool]) -> str | None:
        """Clicks the expander of run ``run_id``'s row and returns the page once ``ready`` holds; None when the row
        has no expander."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        locator = (By.CSS_SELECTOR, EXPANDER_SELECTOR.format(run_id=run_id))
        try:
            button = WebDriverWait(self.driver, self.timeout_s).until(expected_conditions.element_to_be_clickable(
                locator))
        except TimeoutException:
            return None
        button.click()
        return self.wait(ready)

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path
