"""Sharded inference over a split with Ray Data: final segmentation (SPEC §8) or CAM pseudo labels.

Copy-paste:

    # final numbers: multi-scale + flip segmentation, dense CRF, on VOC val (latest checkpoint of a run)
    python -m pipelines.infer --checkpoint outputs/runs/toco-voc-20250101-120000-ab12 --split val \\
        --data-root /data/VOC2012 --crf
    # the same from the training run's MLflow id, two GPU workers sharing one GPU
    python -m pipelines.infer --checkpoint runs:/0123456789abcdef0123456789abcdef --split val --crf \\
        --workers 2 --gpus-per-worker 0.5
    # CAM pseudo labels for the training split (multi-stage use), with CRF
    python -m pipelines.infer --checkpoint outputs/runs/toco-voc-... --split train_aug --mode cam --crf
    # pipeline check on 4 generated images with a random network (CI); its numbers mean nothing
    python -m pipelines.infer --checkpoint random --smoke

An interrupted run is resumed by running the same command again: only images without outputs are processed
(``--no-resume`` starts over). Outputs (palette PNGs, per-image records, ``results.parquet``, ``summary.json``,
overlays) go to ``--out`` (default ``<output-dir>/inference/<run>-<checkpoint>/<split>-<mode>[-crf]``, with
``--output-dir`` default ``outputs``); the summary is also logged to MLflow as a run nested under the training run
(in the training run's experiment, unless ``--experiment`` or ``$MLFLOW_EXPERIMENT_NAME`` names another).
"""

from __future__ import annotations

import argparse
import sys

from toco_ray.cli import command_parser
from toco_ray.errors import EXIT_STATUS, TocoError
from toco_ray.tracking_names import DEFAULT_EXPERIMENT, EXPERIMENT_ENV, TRACKING_URI_ENV


def parse_scales(text: str) -> tuple[float, ...]:
    expected = f"--scales {text!r}: expected comma-separated positive numbers, e.g. 1.0,1.25,1.5"
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(expected)
    return scales


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser("pipelines.infer", __doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder, training run folder (latest checkpoint), MLflow run id "
                             "(runs:/<id>), or 'random' with --smoke")
    parser.add_argument("--split", default="val", help="split list name: val, train_aug, test, ...")
    parser.add_argument("--data-root", default="", help="dataset root (default: the checkpoint config's data.root)")
    parser.add_argument("--mode", choices=("seg", "cam"), default="seg",
                        help="seg: final segmentation; cam: CAM pseudo labels")
    parser.add_argument("--scales", type=parse_scales, default=(),
                        help="comma-separated image scales (default: eval.scales for seg, cam.scales for cam)")
    parser.add_argument("--crf", action="store_true", help="dense CRF as a separate CPU stage (eval.crf_*)")
    parser.add_argument("--out", default="",
                        help="output folder (default: <output-dir>/inference/<run>-<checkpoint>/<split>-<mode>[-crf])")
    parser.add_argument("--workers", type=int, default=None,
                        help="inference actors (default: one per GPU, or 1 on CPU)")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="GPUs per inference actor, fractions share a GPU (default: 1 with GPUs, else 0)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs reserved per inference actor (default: min(1, CPUs / (2·workers)))")
    parser.add_argument("--crf-cpus", type=float, default=None,
                        help="CPUs reserved per CRF/writing task (default: 1, or what the actors leave)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="record unreadable images in failures.jsonl and go on (default: fail naming the file)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="reprocess every image even if the output folder has results")
    parser.add_argument("--save-probs", action="store_true",
                        help="also write float16 probabilities (seg) or CAMs (cam) at reduced resolution")
    parser.add_argument("--probs-scale", type=float, default=0.25, help="resolution factor of --save-probs")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of the split (0 = all)")
    parser.add_argument("--serial", action="store_true", help="plain loop in this process instead of Ray Data")
    parser.add_argument("--no-mlflow", dest="mlflow", action="store_false", help="do not log to MLflow")
    parser.add_argument("--tracking-uri", default="",
                        help=f"MLflow tracking URI (default: ${TRACKING_URI_ENV}, else sqlite under --output-dir)")
    parser.add_argument("--experiment", default="",
                        help=f"MLflow experiment of the inference run (default: ${EXPERIMENT_ENV}, else the training "
                             f"run's, else {DEFAULT_EXPERIMENT})")
    parser.add_argument("--output-dir", "--output-root", dest="output_dir", default="outputs",
                        help="root of the default --out (inference/) and of the embedded MLflow store "
                             "(--output-root: its former name)")
    parser.add_argument("--ray-address", default="", help="Ray cluster to join (default: $RAY_ADDRESS or local)")
    parser.add_argument("--overlays", type=int, default=None,
                        help="prediction overlays to write and log (default: the config's eval.num_probe_images)")
    parser.add_argument("--smoke", action="store_true",
                        help="pipeline check: a few images (generated synthetic data unless --data-root)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # imported once the command line is read: torch, Ray Data and MLflow take seconds to load, --help needs none
    from toco_ray.inference import InferenceOptions, run_inference

    options = InferenceOptions(
        checkpoint=args.checkpoint,
        split=args.split,
        data_root=args.data_root,
        mode=args.mode,
        scales=args.scales,
        crf=args.crf,
        out=args.out,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        cpu_stage_cpus=args.crf_cpus,
        skip_bad=args.skip_bad,
        resume=args.resume,
        save_probs=args.save_probs,
        probs_scale=args.probs_scale,
        limit=args.limit,
        serial=args.serial,
        mlflow=args.mlflow,
        tracking_uri=args.tracking_uri,
        output_dir=args.output_dir,
        experiment=args.experiment,
        ray_address=args.ray_address,
        overlays=args.overlays,
        smoke=args.smoke,
        progress=args.progress,
    )
    try:
        summary = run_inference(options)
    except TocoError as err:  # a message for the user, not a traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_STATUS) from None
    print(f"outputs in {summary['out_dir']}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
