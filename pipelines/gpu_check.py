"""GPU check: ToCo's training step, losses, inference and torch.distributed on one device, with torch and timm only.

Needs torch, timm, numpy, Pillow and PyYAML: no Ray, MLflow or pydensecrf, so it runs on a bare GPU box before a
cluster is paid for. Prints one table and writes every figure to a JSON file (see ``toco_ray/device_check.py`` for
what each check measures and its tolerance). Weights are random; nothing is downloaded. At the voc preset (ViT-B/16,
448, global batch 4) the checks took 14 s on one H200 after start-up; ``--compile`` adds minutes of compilation,
and a compiler failure is reported as a row of the table.

Copy-paste:

    python -m pipelines.gpu_check                                   # CUDA, voc preset, table + gpu_check.json
    python -m pipelines.gpu_check --json /tmp/gpu.json --compile    # also the step under torch.compile
    python -m pipelines.gpu_check --device cpu --tiny               # same code, synthetic preset, < 1 min on CPU
    python -m pipelines.bench_loader --gpu-check gpu_check.json     # loader cores one GPU needs at this step rate

Exit status: 0 when every check passed, 1 when one failed (the table says which), 2 when the device is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from toco_ray.atomic import atomic_write
from toco_ray.cli import command_parser

if TYPE_CHECKING:
    import torch

    from toco_ray import device_check as dc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.gpu_check", __doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to run")
    parser.add_argument("--tiny", action="store_true", help="synthetic preset, one timed step: a CPU smoke run")
    parser.add_argument("--json", default="gpu_check.json", help="where to write the figures")
    parser.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """``cuda`` → the current CUDA device; exits with status 2 and one line when there is none."""
    import torch  # here, not at the top: --help answers without loading torch

    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        reason = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        print(f"gpu_check: --device cuda but {reason} (torch {torch.__version__}); use --device cpu", file=sys.stderr)
        raise SystemExit(2)
    return torch.device("cuda", torch.cuda.current_device())


def run_checks(plan: dc.CheckPlan) -> dict:
    """Runs every check in order, printing one line as each finishes; returns ``{section: results}``."""
    from toco_ray import device_check as dc  # here, as in main: it loads torch and timm

    steps: list[tuple[str, Callable[[], dict]]] = [
        ("training", lambda: dc.check_training(plan)),
        ("cpu_vs_device", lambda: dc.check_cpu_vs_device(plan)),
        ("energy", lambda: dc.check_energy(plan)),
        ("inference", lambda: dc.check_inference(plan)),
        ("distributed", lambda: dc.check_distributed(plan)),
        ("rng", lambda: dc.check_rng(plan.device)),
    ]
    results: dict = {"environment": dc.environment(plan.device), "preset": plan.preset}
    for name, check in steps:
        start = time.perf_counter()
        results[name] = check()
        results[name]["check_s"] = time.perf_counter() - start
        print(f"  {name} done in {results[name]['check_s']:.1f} s", flush=True)
    return results


def run_compile_check(plan: dc.CheckPlan) -> dict:
    """The step under ``torch.compile``. A compiler that fails is reported in the table, not raised: it says
    what this torch build can do, not whether ToCo's step is right, and the other verdicts stand."""
    from toco_ray import device_check as dc

    start = time.perf_counter()
    try:
        result = dc.check_compile(plan)
    except Exception as exc:  # inductor raises many types (InductorError, BackendCompilerFailed, Triton's)
        lines = str(exc).strip().splitlines() or [""]
        result = {"backend": plan.compile_backend, "error": f"{type(exc).__name__}: {lines[-1][:160]}"}
    result["check_s"] = time.perf_counter() - start
    return result


def table(results: dict) -> str:
    """The one table: check, figure, target and verdict."""
    t, c, e, i, d = (results[k] for k in ("training", "cpu_vs_device", "energy", "inference", "distributed"))
    mem = _memory(t)
    rows = [
        ("step fp32", f"{t['fp32_images_per_s']:.2f} img/s, {t['fp32_vs_reference']:.2f}x ref{mem('fp32')}", "", ""),
        ("step bf16", f"{t['bf16_images_per_s']:.2f} img/s, {t['bf16_vs_reference']:.2f}x ref{mem('bf16')}",
         ">= 3x ref (GPU)", ""),
        ("step reference fp32", f"{t['reference_fp32_images_per_s']:.2f} img/s{mem('reference_fp32')}", "", ""),
        ("bf16 vs fp32 loss", f"total {t['bf16_total_rel_diff']:.2%}; worst term {t['bf16_worst_term']} "
         f"{t['bf16_max_term_rel_diff']:.2%} (abs {t['bf16_worst_term_abs_diff']:.1e})", "total <= 2%",
         _verdict(t["bf16_ok"])),
        ("fused attention", f"{t['fused_attention_layers']} timm attention layers use SDPA", "all",
         _verdict(t["fused_attention_layers"].split("/")[0] == t["fused_attention_layers"].split("/")[1])),
        (f"losses {c['compared']}", f"worst rel diff {c['max_rel_diff']:.1e}", "1e-6 + 1e-3*|a|", _verdict(c["ok"])),
        (f"energy {e['compared']} ({e['size']})",
         f"value {e['value_rel_diff']:.1e}, grad {e['grad_rel_diff']:.1e}, {e['seconds'] * 1e3:.0f} ms fwd+bwd",
         "1e-4 / 1e-3", _verdict(e["ok"])),
        (f"final inference {i['image_size']}", f"{i['final_images_per_s']:.2f} img/s, scales "
         f"{','.join(f'{s:g}' for s in i['final_scales'])} + flip", "", ""),
        ("CAM pseudo labels", f"{i['cam_pseudo_labels_images_per_s']:.2f} img/s", "", ""),
        (f"torch.distributed {d['backend']}, world 1", f"init {d['init_s']:.2f} s, all-reduce, DDP step "
         f"(loss {d['ddp_step_loss']:.3f})", "works", _verdict(d["ok"])),
        ("RNG state capture/restore", "same draws after restore", "equal", _verdict(results["rng"]["ok"])),
    ]
    if "compile" in results:
        rows.append(_compile_row(results["compile"]))
    env = results["environment"]
    head = (f"{env['device']} · torch {env['torch']} · timm {env['timm']} · preset {results['preset']} "
            f"(batch {t['global_batch']}, crop {t['crop_size']})")
    widths = [max(len(r[k]) for r in rows + [("check", "result", "target", "")]) for k in range(4)]
    lines = [head, _row(("check", "result", "target", "ok"), widths), _row(tuple("-" * w for w in widths), widths)]
    return "\n".join(lines + [_row(r, widths) for r in rows])


def failed(results: dict) -> list[str]:
    """Sections whose verdict is false."""
    verdicts = {
        "bf16 vs fp32 loss": results["training"]["bf16_ok"],
        "cpu vs device losses": results["cpu_vs_device"]["ok"],
        "energy": results["energy"]["ok"],
        "distributed": results["distributed"]["ok"],
        "rng": results["rng"]["ok"],
    }
    return [name for name, ok in verdicts.items() if not ok]


def _compile_row(k: dict) -> tuple[str, str, str, str]:
    if "error" in k:
        return (f"torch.compile ({k['backend']})", f"failed after {k['check_s']:.0f} s: {k['error']}", "", "")
    return (f"torch.compile ({k['backend']}, {k['precision']})",
            f"first step {k['first_step_s']:.1f} s, then {k['images_per_s']:.2f} img/s", "", "")


def _memory(t: dict) -> Callable[[str], str]:
    def fmt(name: str) -> str:
        peak = t[f"{name}_peak_memory_gib"]
        return "" if peak is None else f", peak {peak:.1f} GiB"

    return fmt


def _verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()


def write_json(results: dict, path: str) -> None:
    text = json.dumps(results, indent=2).encode()
    atomic_write(path, lambda fh: fh.write(text))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from toco_ray import device_check as dc  # once the command line is read: it loads torch and timm

    device = resolve_device(args.device)
    plan = dc.CheckPlan.tiny(device) if args.tiny else dc.CheckPlan(device)
    plan.compile_backend = args.compile_backend
    print(f"gpu_check on {dc.device_name(device)}, preset {plan.preset}", flush=True)
    results = run_checks(plan)
    write_json(results, args.json)
    if args.compile:  # after the JSON of the other checks is safe: compiling can take minutes, or fail
        print(table(results), flush=True)
        results["compile"] = run_compile_check(plan)
        write_json(results, args.json)
        print(f"  compile done in {results['compile']['check_s']:.1f} s")
    print(table(results))
    print(f"figures written to {args.json}")
    bad = failed(results)
    if bad:
        print(f"FAILED: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
