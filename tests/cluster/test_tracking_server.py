"""The MLflow tracking server command: MLflow accepts the command line it builds, a taken port or an unusable folder
is refused before anything starts, and a server in the foreground stops with its whole session."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import tracking_server as server_cli
from toco_ray.processes import pid_alive, session_members
from toco_ray.ray_cluster import free_port
from toco_ray.tracking_server import (
    LOOPBACK,
    PID_FILE,
    READY_TIMEOUT_S,
    ServerSpec,
    TrackingServerError,
    check_spec,
    is_healthy,
    server_command,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def listening_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.unit
def test_defaults_serve_the_pipelines_own_store_on_loopback(tmp_path):
    spec = ServerSpec.in_folder(tmp_path / "out")
    assert spec.host == "127.0.0.1" and spec.port == 5000 and spec.uri == "http://127.0.0.1:5000"
    assert spec.backend_store_uri == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"  # what the pipelines write to
    assert spec.artifacts_destination == str(tmp_path / "out" / "mlartifacts")
    assert ServerSpec.in_folder(tmp_path, host="0.0.0.0", port=5001).uri == "http://127.0.0.1:5001"


@pytest.mark.unit
def test_mlflow_accepts_the_command_line(tmp_path):
    from mlflow.cli import server

    command = server_command(ServerSpec.in_folder(tmp_path, port=5001, workers=2))
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    context = server.make_context("mlflow server", command[4:])  # raises on an option MLflow does not know
    assert context.params["host"] == "127.0.0.1" and context.params["port"] == 5001
    assert context.params["backend_store_uri"].startswith("sqlite:///") and context.params["workers"] == "2"
    assert context.params["artifacts_destination"] == str(tmp_path / "mlartifacts")


@pytest.mark.unit
def test_a_taken_port_is_refused_naming_it(tmp_path, listening_port):
    with pytest.raises(TrackingServerError, match=f"cannot listen on 127.0.0.1:{listening_port}.*--port"):
        check_spec(ServerSpec.in_folder(tmp_path, port=listening_port))


@pytest.mark.unit
def test_an_unusable_database_folder_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = ServerSpec.in_folder(tmp_path, port=free_port(), backend_store_uri=f"sqlite:///{blocker}/db/mlflow.db")
    with pytest.raises(TrackingServerError, match=f"MLflow database folder {blocker}/db cannot be created"):
        check_spec(spec)


@pytest.mark.unit
def test_an_unusable_artifact_folder_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = ServerSpec.in_folder(tmp_path, port=free_port(), artifacts_destination=str(blocker / "art"))
    with pytest.raises(TrackingServerError, match=f"artifact folder {blocker}/art cannot be created"):
        check_spec(spec)


@pytest.mark.unit
def test_the_command_reports_a_taken_port_and_starts_nothing(tmp_path, listening_port, capsys):
    assert server_cli.main(["--output-dir", str(tmp_path), "--port", str(listening_port)]) == 2
    assert f"127.0.0.1:{listening_port}" in capsys.readouterr().err
    assert not (tmp_path / PID_FILE).exists()


@pytest.mark.unit
def test_stop_without_a_server_is_a_no_op(tmp_path, capsys):
    assert server_cli.main(["--stop", "--output-dir", str(tmp_path)]) == 0
    assert "no MLflow server" in capsys.readouterr().out


@pytest.mark.integration
def test_smoke_starts_a_server_that_answers_and_stops_it(tmp_path, capsys):
    port = free_port()
    assert server_cli.main(["--smoke", "--output-dir", str(tmp_path), "--port", str(port)]) == 0
    assert f"answered at http://127.0.0.1:{port} and stopped" in capsys.readouterr().out
    assert not is_healthy(f"http://127.0.0.1:{port}") and not (tmp_path / PID_FILE).exists()
    assert (tmp_path / "mlflow.db").is_file()


@pytest.mark.integration
def test_a_server_in_the_foreground_answers_and_stops_with_its_session(tmp_path):
    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "pipelines.tracking_server", "--output-dir", str(tmp_path),
                            "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        record = tmp_path / PID_FILE  # written once the server answers
        while not record.exists() and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert is_healthy(uri), f"no answer from {uri}"
        server_pid = int(json.loads(record.read_text())["pid"])
        assert session_members(server_pid)  # the server leads a session of its own
    finally:
        cli.send_signal(signal.SIGTERM)
        output, _ = cli.communicate(timeout=60)
    assert cli.returncode == 0, output
    assert f"MLflow tracking server at {uri}" in output and "mlflow.db" in output
    assert not session_members(server_pid) and not (tmp_path / PID_FILE).exists()
    assert (tmp_path / "mlflow.db").is_file() and not is_healthy(uri)


@pytest.mark.integration
def test_a_server_stopped_while_it_starts_leaves_nothing_behind(tmp_path):
    cli = subprocess.Popen([sys.executable, "-m", "pipelines.tracking_server", "--output-dir", str(tmp_path),
                            "--port", str(free_port())], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    # the log file is opened before the server process execs: wait for the process itself (on a loaded machine
    # the two are seconds apart)
    while not servers_in(tmp_path) and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers_in(tmp_path), "the server did not start"
    cli.send_signal(signal.SIGTERM)  # before it answers: the server starts in about 5 s
    output, _ = cli.communicate(timeout=60)
    assert cli.returncode == 130, output
    assert not servers_in(tmp_path) and not (tmp_path / PID_FILE).exists()


def servers_in(folder: Path) -> list[int]:
    """Live processes whose command line names ``folder`` (the test's own servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and str(folder) in argv and "mlflow" in argv and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
