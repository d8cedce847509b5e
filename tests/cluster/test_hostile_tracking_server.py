"""The tracking server command against hostile input: ``--port 0`` (case 52)."""

import re

import pytest

from pipelines import tracking_server as server_cli
from toco_ray.tracking_server import PID_FILE, is_healthy


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
