"""The Ray cluster a sweep runs on, and how its resources are split between concurrent trials.

A trial of several workers (or on GPUs) is a Tune function that only waits on its ``TorchTrainer``; the Train
workers hold the CPUs/GPUs. That trial function therefore asks for no CPU but for one unit of a custom
``trial_slot`` resource (Tune rejects a trial that asks for nothing), which a local cluster is started with. A
trial of one CPU worker trains in its Tune function's own process, which then asks for that worker's CPUs. On two
CPUs, two trials × one CPU each would leave nothing for their workers: the workers' CPUs are sized from the
cluster, never from constants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from toco_ray.errors import TocoError
from toco_ray.ray_cluster import init_ray

TRIAL_SLOT = "trial_slot"
# The trial function's CPU share on a joined cluster that has no trial_slot resource: it only waits.
WAITING_CPU = 0.01
MIN_CPUS_PER_WORKER = 2  # automatic concurrency: each worker gets at least this many CPUs (compute + loading)


class ClusterError(TocoError, RuntimeError):
    """The cluster cannot host the requested trials; the message says what to change."""


def start_ray(address: str = "", slots: int = 0) -> None:
    """Joins ``address`` / ``$RAY_ADDRESS``, or starts a local cluster with ``slots`` trial slots (default: one
    per CPU, an upper bound: concurrency is set by ``max_concurrent``). Does nothing if Ray is already up."""
    init_ray(address, resources={TRIAL_SLOT: slots or os.cpu_count() or 1})


@dataclass(frozen=True)
class TrialResources:
    """How one trial uses the cluster.

    Attributes:
        max_concurrent: trials running at once.
        workers: Ray Train workers per trial.
        cpus_per_worker: CPUs reserved by each worker (its torch threads).
        gpus_per_worker: GPUs per worker (0 = CPU with gloo).
        trial_fn: what a Tune function that waits on its ``TorchTrainer`` asks for.
    """

    max_concurrent: int
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    trial_fn: dict[str, float]

    @property
    def in_process(self) -> bool:
        """One CPU worker: the trial trains in its own process, with no trainer to start and tear down."""
        return self.workers == 1 and not self.gpus_per_worker

    def trial_request(self) -> dict[str, float]:
        """What the Tune function asks for (``tune.with_resources``): the worker's CPUs when it trains itself."""
        return {"CPU": self.cpus_per_worker} if self.in_process else dict(self.trial_fn)

    def describe(self) -> str:
        gpu = f" × {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.max_concurrent} trial(s) at a time, each {self.workers} worker(s) × "
                f"{self.cpus_per_worker:g} CPU{gpu}")


def plan_resources(total: dict[str, float], workers: int, gpus_per_worker: float = 0.0,
                   max_concurrent: int = 0, cpus_per_worker: float = 0.0) -> TrialResources:
    """Splits the cluster ``total`` (``ray.cluster_resources()``) between concurrent trials.

    ``max_concurrent = 0`` picks as many trials as the GPUs allow (``workers × gpus_per_worker`` each), or on CPU
    as many as give each worker ``MIN_CPUS_PER_WORKER`` CPUs — one trial on two cores. ``cpus_per_worker = 0``
    shares the CPUs equally between all workers of all concurrent trials.

    Raises:
        ClusterError: the cluster cannot host even one trial with these settings.
    """
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    if workers < 1:
        raise ClusterError(f"--workers-per-trial must be at least 1, got {workers}")
    if gpus_per_worker and gpus < workers * gpus_per_worker:
        raise ClusterError(f"a trial needs {workers} × {gpus_per_worker:g} GPUs; the Ray cluster has {gpus:g} "
                           "(use --gpus-per-worker 0 to train on CPU)")
    if not max_concurrent:
        by_cpu = int(cpus // (workers * (cpus_per_worker or MIN_CPUS_PER_WORKER)))
        by_gpu = int(gpus // (workers * gpus_per_worker)) if gpus_per_worker else by_cpu
        max_concurrent = max(1, min(by_cpu, by_gpu))
    slots = float(total.get(TRIAL_SLOT, 0))
    trial_fn = {"CPU": 0.0, TRIAL_SLOT: 1.0} if slots >= max_concurrent else {"CPU": WAITING_CPU}
    usable = cpus - max_concurrent * trial_fn["CPU"]
    if not cpus_per_worker:
        cpus_per_worker = float(max(1, int(usable // (max_concurrent * workers))))
    if max_concurrent * workers * cpus_per_worker > usable:
        raise ClusterError(
            f"{max_concurrent} concurrent trial(s) × {workers} worker(s) × {cpus_per_worker:g} CPUs need "
            f"{max_concurrent * workers * cpus_per_worker:g} CPUs; the Ray cluster has {usable:g} for workers "
            "(lower --max-concurrent or --workers-per-trial)"
        )
    return TrialResources(max_concurrent, workers, cpus_per_worker, gpus_per_worker, trial_fn)
