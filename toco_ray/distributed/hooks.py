"""The worker loop's hook seam, after detectron2's ``HookBase``: what attaches to training without living in it.

:class:`~toco_ray.distributed.loop.WorkerLoop` calls each hook, in the order given, at these points of a run, on
every rank (a hook that only rank 0 should act on checks ``loop.worker.is_chief``)::

    before_train(loop, start)         set-up and restore done, before the first step (start: its iteration)
    before_step(loop, iteration)      before each training step (0-based iteration)
    after_log(loop, done, metrics)    every schedule.log_every iterations: loss terms, lr, throughput (all ranks
                                      averaged), keyed by their MLflow names
    after_eval(loop, evaluation)      every schedule.eval_every iterations and at the end: the Evaluation
    after_checkpoint(loop, done, report)  the evaluation's checkpoint is committed and its report sent

MLflow logging is a hook (:class:`~toco_ray.distributed.mlflow_hook.MLflowHook`, added by the launcher when the run
is tracked); tests pass in hooks that fail or hold a worker. Hooks reach the workers pickled inside the
``WorkerSpec``: they carry settings, and open whatever they need (a client, a file) in ``before_train``.

Example:
    >>> class Every100(TrainHook):
    ...     def before_step(self, loop, iteration):
    ...         if iteration % 100 == 0 and loop.worker.is_chief:
    ...             print("at", iteration)
    >>> launch(dataclasses.replace(job, hooks=(Every100(),)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from toco_ray.distributed.loop import Evaluation, WorkerLoop


class TrainHook:
    """Base of the worker loop's hooks: every stage does nothing until a subclass overrides it."""

    def before_train(self, loop: WorkerLoop, start: int) -> None:
        """After set-up and restore; ``start`` is the first iteration to train (0, or a checkpoint's)."""

    def before_step(self, loop: WorkerLoop, iteration: int) -> None:
        """Before the training step of 0-based ``iteration``."""

    def after_log(self, loop: WorkerLoop, done: int, metrics: dict[str, float]) -> None:
        """After ``done`` iterations, at a log period's end: its metrics, averaged over workers."""

    def after_eval(self, loop: WorkerLoop, evaluation: Evaluation) -> None:
        """After an evaluation, before its checkpoint is written."""

    def after_checkpoint(self, loop: WorkerLoop, done: int, report: dict[str, Any]) -> None:
        """After the checkpoint at ``done`` is committed and ``report`` (the keys of
        :data:`~toco_ray.metric_names.REPORT_METRICS`, the iteration, the loss) has been sent."""
