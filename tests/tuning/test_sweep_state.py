"""One driver per sweep (case 47) and a session record that a killed driver leaves counted (D11)."""

from __future__ import annotations

import os

import pytest

from pipelines.sweep import main as sweep_main
from toco_ray.tuning.state import (
    LOCK_FILE,
    Session,
    SweepError,
    SweepState,
    close_session,
    open_session,
    read_state,
    sweep_lock,
    write_state,
)
from toco_ray.tuning.tuner import SessionClock

pytestmark = pytest.mark.unit


def test_a_held_lock_refuses_a_second_holder_naming_the_first_and_is_free_again_after(tmp_path):
    with sweep_lock(tmp_path / "demo"):
        with pytest.raises(SweepError) as caught, sweep_lock(tmp_path / "demo"):
            pass
        assert str(caught.value) == (
            f"sweep 'demo' is running already (driver pid {os.getpid()}, lock {tmp_path / 'demo' / LOCK_FILE}); "
            "wait for it to end, or start another sweep with --name or --no-resume")
    with sweep_lock(tmp_path / "demo"):  # released when the first holder's block ended
        pass


def test_case47_a_second_sweep_of_one_name_is_refused_before_ray_starts(tmp_path, write_space, capsys, monkeypatch):
    def ray_must_not_start(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("toco_ray.tuning.sweep.start_ray", ray_must_not_start)
    space = write_space("demo", "kind: grid\ngrid: {loss.w_ptc: [0.1]}\n")
    out = tmp_path / "outputs"
    with sweep_lock(out / "sweeps" / "demo"):  # the first sweep's driver, running
        rc = sweep_main([str(space), "--smoke", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: sweep 'demo' is running already (driver pid {os.getpid()}, lock ")
    assert err.count("\n") == 1
    assert sorted(p.name for p in (out / "sweeps" / "demo").iterdir()) == [LOCK_FILE]  # nothing else written


def test_a_session_left_running_by_a_killed_driver_is_marked_killed_and_still_counted():
    state = SweepState(sessions=[Session(start=100.0, end=145.0, status="RUNNING", pid=1)])  # killed at its 45 s mark
    open_session(state, started=1000.0)
    assert state.sessions[0].status == "KILLED"
    assert state.sessions[1] == Session(start=1000.0, end=1000.0, status="RUNNING", pid=os.getpid())
    total = close_session(state, "FINISHED")
    assert state.sessions[1].status == "FINISHED" and state.sessions[1].end > 1000.0
    assert total == 45.0 + (state.sessions[1].end - 1000.0)


def test_the_session_clock_moves_the_running_sessions_end_and_leaves_a_closed_one(tmp_path):
    write_state(tmp_path, SweepState(sessions=[Session(start=0.0, end=0.0, status="RUNNING", pid=1)]))
    SessionClock(tmp_path).tick()
    assert read_state(tmp_path).sessions[0].end > 0.0
    write_state(tmp_path, SweepState(sessions=[Session(start=0.0, end=5.0, status="FINISHED", pid=1)]))
    SessionClock(tmp_path).tick()
    assert read_state(tmp_path).sessions[0].end == 5.0
