"""The MLflow UI check's verdicts, links and browser set-up, on small pages shaped like MLflow 3.17's; no browser.

The pages below keep the parts the verdicts read: the sidebar (GenAI pages list Observability and Evaluation runs),
the breadcrumb with the experiment's name, the runs table's header, rows and footer.
"""

import stat

import pytest

from pipelines import check_mlflow_ui
from toco_ray.errors import EXIT_STATUS
from toco_ray.tracking import ui_hint
from toco_ray.ui_check import (
    HEADLESS_FLAGS,
    MIN_WINDOW_HEIGHT,
    UICheckError,
    browser_paths,
    check_names,
    check_run_page,
    check_runs_view,
    chromium_flags,
    landed,
    names_shown,
    printed_link,
    served,
    text_nodes,
    window_size,
)

pytestmark = pytest.mark.unit

PARENT, CHILDREN = "sweep-quick_demo", ["+PTC s0 · p01", "+L_cls^m s0 · p00"]
TRAINING_SIDEBAR = ('<div role="button"><span>GenAI</span></div><div role="button"><span>Model training</span></div>'
                    '<nav><a href="#/experiments"><span>toco-sweep-quick_demo</span></a>'
                    "<a><span>Runs</span></a><a><span>Models</span></a><a><span>Traces</span></a></nav>")
GENAI_SIDEBAR = ('<div role="button"><span>GenAI</span></div><div role="button"><span>Model training</span></div>'
                 '<nav><a><span>Overview</span></a><span>Observability</span><a><span>Traces</span></a>'
                 "<a><span>Sessions</span></a><span>Evaluation</span><a><span>Evaluation runs</span></a></nav>")


def row(name: str) -> str:
    return f'<div role="row"><div role="gridcell"><a href="#/experiments/1/runs/x"><span>{name}</span></a></div></div>'


def runs_page(names: list[str], sidebar: str = TRAINING_SIDEBAR) -> str:
    rows = "".join(row(name) for name in names)
    return (f"<html><head><title>Runs - Experiment 1 - MLflow</title><script>var s = '{PARENT}';</script></head>"
            f"<body>{sidebar}<h2>Runs</h2><div role=\"grid\"><span>Run Name</span><span>Created</span>{rows}</div>"
            f'<span><strong>{len(names)}</strong> matching runs</span></body></html>')


GENAI_PAGE = (f"<html><head><title>Overview - Experiment 1 - MLflow</title></head><body>{GENAI_SIDEBAR}"
              "<h2>Overview</h2><span>Traces</span><span>No data available for the selected time range</span>"
              "</body></html>")


def run_page(name: str, sidebar: str) -> str:
    return f"<html><body>{sidebar}<h2>{name}</h2><span>About this run</span><a>{PARENT}</a></body></html>"


# --- reading a page ---------------------------------------------------------------------------------------------------
def test_text_nodes_are_whole_stripped_nodes_without_scripts():
    texts = text_nodes(runs_page([PARENT]))
    assert PARENT in texts and "toco-sweep-quick_demo" in texts
    assert "matching runs" in texts and "1" in texts  # <strong>1</strong> matching runs: two nodes
    assert not any("var s" in text for text in texts)
    assert text_nodes("<p>+L_cls^m s0 &middot; p00</p>") == {"+L_cls^m s0 · p00"}


# --- verdicts ---------------------------------------------------------------------------------------------------------
def test_runs_view_passes_on_the_runs_table():
    check = check_runs_view(runs_page([PARENT]))
    assert check.passed and check.line().startswith("PASS runs view: ")


def test_runs_view_fails_on_the_genai_landing_and_names_what_it_saw():
    check = check_runs_view(GENAI_PAGE)
    assert not check.passed
    assert check.line() == ("FAIL runs view: MLflow opened its GenAI pages (sidebar shows Observability, Evaluation "
                            "runs), not the runs table")


def test_runs_view_fails_when_the_runs_table_is_missing_even_in_the_training_section():
    check = check_runs_view(f"<html><body>{TRAINING_SIDEBAR}<h2>Models</h2></body></html>")
    assert not check.passed and "'Run Name', 'matching runs'" in check.detail


def test_names_pass_only_when_every_child_is_on_the_page():
    everything = check_names(runs_page([PARENT, *CHILDREN]), CHILDREN, "child runs", "expanded")
    assert everything.passed
    assert everything.detail == "2/2 shown (expanded): '+L_cls^m s0 · p00', '+PTC s0 · p01'"
    collapsed = check_names(runs_page([PARENT]), CHILDREN, "child runs")
    assert not collapsed.passed and collapsed.detail.startswith("0/2 shown; missing ")
    one = check_names(runs_page([PARENT, CHILDREN[0]]), CHILDREN, "child runs")
    assert not one.passed and one.detail == "1/2 shown; missing '+L_cls^m s0 · p00'"


def test_a_name_inside_a_longer_text_is_not_found():
    # the experiment toco-sweep-quick_demo is on every page; the parent's row is not
    page = runs_page([])
    assert "toco-sweep-quick_demo" in text_nodes(page)
    assert not check_names(page, [PARENT], "parent run").passed


def test_no_names_to_look_for_is_a_failure_not_a_vacuous_pass():
    check = check_names(runs_page([PARENT]), [], "child runs")
    assert not check.passed and "none in the MLflow store" in check.detail


def test_run_page_must_show_the_run_in_the_model_training_section():
    name = CHILDREN[0]
    assert check_run_page(run_page(name, TRAINING_SIDEBAR), name).passed
    genai = check_run_page(run_page(name, GENAI_SIDEBAR), name)
    assert not genai.passed and "workflowType" in genai.detail
    assert not check_run_page(run_page(CHILDREN[1], TRAINING_SIDEBAR), name).passed


def test_readiness_tests():
    assert landed(PARENT)(runs_page([PARENT])) and landed(PARENT)(GENAI_PAGE)  # either outcome is final
    assert not landed(PARENT)(runs_page([]))  # the table has not loaded its rows yet
    assert names_shown(CHILDREN)(runs_page([PARENT, *CHILDREN]))
    assert not names_shown(CHILDREN)(runs_page([PARENT, CHILDREN[1]]))


# --- links ------------------------------------------------------------------------------------------------------------
def test_printed_link_is_taken_from_the_line_commands_print():
    store = "sqlite:////tmp/out/mlflow.db"
    output = f"sweep quick_demo: 2 trial(s)\n  report: python -m pipelines.report quick_demo\n  {ui_hint(store, '4')}\n"
    assert printed_link(output) == "http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning"
    with pytest.raises(UICheckError, match="no 'MLflow: <url>' line"):
        printed_link("sweep quick_demo: 2 trial(s)\n")


def test_served_moves_a_local_stores_link_to_the_port_that_serves_it():
    link = "http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning"
    assert (served(link, "sqlite:////tmp/out/mlflow.db", "http://127.0.0.1:41151")
            == "http://127.0.0.1:41151/#/experiments/4/runs?workflowType=machine_learning")
    server_link = "http://10.0.0.5:5000/#/experiments/4/runs?workflowType=machine_learning"
    assert served(server_link, "http://10.0.0.5:5000", "http://10.0.0.5:5000") == server_link
    with pytest.raises(UICheckError, match="does not start with"):
        served(server_link, "sqlite:////tmp/out/mlflow.db", "http://127.0.0.1:41151")


# --- the browser ------------------------------------------------------------------------------------------------------
def test_chromium_flags_are_headless_quiet_on_the_network_and_use_the_given_profile(tmp_path):
    flags = chromium_flags(tmp_path / "profile", (1600, 1000))
    assert flags[: len(HEADLESS_FLAGS)] == list(HEADLESS_FLAGS)
    assert {"--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update"} <= set(flags)
    assert f"--user-data-dir={tmp_path / 'profile'}" in flags and "--window-size=1600,1000" in flags


def test_the_window_grows_with_the_runs_the_table_must_render_at_once():
    assert window_size(runs=3) == (1600, MIN_WINDOW_HEIGHT)
    assert window_size(runs=61) == (1600, 420 + 32 * 61)  # a 60-trial sweep and its parent: 2372 px


def executable(path):
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_browser_paths_names_the_apt_packages_when_chromium_is_missing(tmp_path):
    driver = executable(tmp_path / "chromedriver")
    with pytest.raises(UICheckError) as err:
        browser_paths(str(tmp_path / "chromium"), str(driver))
    assert str(err.value) == (f"chromium ({tmp_path / 'chromium'}) not found; install them: apt-get install chromium "
                              "chromium-driver (or pass --chromium/--chromedriver)")
    chromium = executable(tmp_path / "chromium")
    found = browser_paths(str(chromium), str(driver))
    assert (found.chromium, found.chromedriver) == (str(chromium), str(driver))


def test_the_command_exits_2_with_one_line_before_any_sweep_when_chromium_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(check_mlflow_ui, "run_smoke_sweep", lambda *a: pytest.fail("ran a sweep without a browser"))
    code = check_mlflow_ui.main(["--chromium", str(tmp_path / "no-chromium"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_STATUS == 2
    assert err.count("\n") == 1 and err.startswith("error: chromium (")
    assert "apt-get install chromium chromium-driver" in err
