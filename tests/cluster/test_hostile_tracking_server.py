"""The tracking server command against hostile input: ``--port 0`` (case 52) and a pid record whose pid now names
another process (case 53)."""

import json
import re
import subprocess
import sys

import pytest

from pipelines import tracking_server as server_cli
from toco_ray.processes import pid_alive, process_start_time
from toco_ray.tracking_server import PID_FILE, ServerSpec, is_healthy, record, recorded


@pytest.fixture
def impostor():
    """A live process of the test's own whose command line holds ``mlflow`` and ``server``, as a process given a
    recorded server's pid later might; it runs until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "mlflow", "server"],
                            stdin=subprocess.PIPE, start_new_session=True)
    yield proc
    proc.stdin.close()  # end of input ends it, if --stop did not
    proc.wait(timeout=30)


def write_record(folder, pid: int, **changes) -> None:
    """A pid record as ``--detach`` writes it, naming ``pid``, with ``changes`` applied (None removes a key)."""
    path = record(folder, ServerSpec.in_folder(folder), pid)
    entry = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in entry.items() if v is not None}))


@pytest.mark.integration
def test_case52_port_0_serves_on_a_free_port_that_the_uri_names(tmp_path, capsys):
    # the port used to stay 0 in the URI, and /health was polled at :0 until the 90 s timeout
    assert server_cli.main(["--smoke", "--port", "0", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    found = re.search(r"answered at (http://127\.0\.0\.1:(\d+)) and stopped", out)
    assert found and 0 < int(found[2]) <= 65535, out
    assert not is_healthy(found[1]) and not (tmp_path / PID_FILE).exists()


@pytest.mark.unit
def test_port_0_on_an_address_not_of_this_machine_is_refused_naming_host(tmp_path, capsys):
    host = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never a local address
    assert server_cli.main(["--smoke", "--port", "0", "--host", host, "--output-dir", str(tmp_path / "db")]) == 2
    assert capsys.readouterr().err == (f"error: cannot listen on {host} (Cannot assign requested address): the "
                                       "address is not this machine's; pick another --host\n")
    assert not (tmp_path / "db").exists()


@pytest.mark.unit
def test_the_record_holds_the_start_time_of_the_recorded_process(tmp_path, impostor):
    write_record(tmp_path, impostor.pid)
    entry = json.loads((tmp_path / PID_FILE).read_text())
    assert entry["pid"] == impostor.pid and entry["start_time"] == process_start_time(impostor.pid) > 0


@pytest.mark.unit
def test_case53_stop_leaves_alone_a_process_that_reuses_the_recorded_pid(tmp_path, impostor, capsys):
    # its command line holds mlflow and server, which was all the record was checked against
    write_record(tmp_path, impostor.pid, start_time=process_start_time(impostor.pid) + 1)
    assert server_cli.main(["--stop", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no MLflow server started from {tmp_path} is running\n"
    assert impostor.poll() is None and pid_alive(impostor.pid)
    assert not (tmp_path / PID_FILE).exists()  # the stale record is gone


@pytest.mark.unit
def test_stop_stops_the_recorded_process_whose_start_time_matches(tmp_path, impostor, capsys):
    write_record(tmp_path, impostor.pid)
    assert server_cli.main(["--stop", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"stopped the MLflow server at http://127.0.0.1:5000 (session {impostor.pid})\n"
    assert not pid_alive(impostor.pid)


@pytest.mark.unit
def test_a_record_without_a_start_time_is_checked_by_the_command_line(tmp_path, impostor, capsys):
    # records written before start times were: their pid counts while it runs `mlflow server`
    write_record(tmp_path, impostor.pid, start_time=None)
    assert "start_time" not in json.loads((tmp_path / PID_FILE).read_text())
    assert server_cli.main(["--stop", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("stopped the MLflow server")
    assert not pid_alive(impostor.pid)


@pytest.mark.parametrize("text", ["[1, 2]", '{"pid": "not a number"}', "{not json"])
def test_a_pid_record_that_is_not_ours_counts_as_no_server(tmp_path, text):
    (tmp_path / PID_FILE).write_text(text)
    assert recorded(tmp_path) is None
