"""The benchmark scripts in their --smoke form: they run, and what they print is sane."""

import re

import pytest

from pipelines import bench_demo, bench_energy, bench_help, bench_step

pytestmark = pytest.mark.unit


def test_bench_energy_smoke(capsys):
    bench_energy.main(["--smoke"])
    out = capsys.readouterr().out.splitlines()
    # part 1: our lattice's energy against the exact sum, within 10 % on 12×12 noise and smooth images
    ratios = {line.split()[0]: float(line.split()[2]) for line in out if line.startswith(("noise ", "smooth "))}
    assert set(ratios) == {"noise", "smooth"}
    assert all(abs(r - 1) < 0.1 for r in ratios.values()), ratios
    # part 2: one row per available backend (torch, and numba where installed); part 3: the reg on/off ratio
    backends = 2 if bench_energy._numba is not None else 1
    assert sum(line.startswith("tiny ") for line in out) == backends
    assert any(line.startswith("reg on ") and "ratio" in line for line in out)


def test_bench_step_smoke(capsys):
    bench_step.main(["--smoke"])
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("synthetic "))
    assert row.split()[1:3] == ["2", "64"]  # batch and crop of the smoke config
    ours, reference, speed_up, no_reg, reg_ratio = row.split()[3:]
    # the printed ratios are those of the printed medians (up to their rounding to milliseconds)
    assert float(speed_up.rstrip("x")) == pytest.approx(float(reference) / float(ours), rel=0.02, abs=0.01)
    assert float(reg_ratio.rstrip("x")) == pytest.approx(float(ours) / float(no_reg), rel=0.02, abs=0.01)


def test_bench_demo_smoke(capsys, tiny_root):
    bench_demo.main(["--smoke", "--data-root", str(tiny_root)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("quick_demo: batch 2, crop 96, 200 iterations")
    rows = {line[:22].strip(): line[22:].split() for line in out[2:6]}
    assert list(rows) == ["+L_cls^m", "+L_cls^m [CAM 1.0]", "+PTC", "+PTC [CAM 1.0]"]
    for one, two, ratio in rows.values():  # the speed-up is the ratio of the printed medians
        assert float(ratio.rstrip("x")) == pytest.approx(float(one) / float(two), rel=0.05, abs=0.02)
    assert out[6].startswith("evaluation of 4 val images")
    found = re.search(r"2 threads (\d+) s, two at once with 1 thread each (\d+) s: (.+) is faster", out[7])
    serial, paired, verdict = int(found[1]), int(found[2]), found[3]
    assert out[7].startswith("sweep of 6 trials") and serial > 0 and paired > 0
    assert verdict == ("two at once" if paired < serial else "one at a time")


def test_bench_help_smoke(capsys):
    bench_help.main(["--smoke"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("python -m pipelines.<command> --help, median of 1 run(s)")
    rows = {line.split()[0]: float(line.split()[1]) for line in out[2:]}
    assert list(rows) == list(bench_help.SMOKE_COMMANDS)  # one row per command, in order, and nothing else
    assert all(seconds > 0 for seconds in rows.values())
