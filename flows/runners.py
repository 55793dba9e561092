"""Where a flow's tasks run, chosen at run time from matflow's settings.

``task_runner = "local"`` keeps tasks in the flow's own process, one at a time: CHGNet and the
featurizers are CPU-bound Python, so threads would only share one GIL and one torch model (and
lazily built featurizer state is not guarded for concurrent threads).
``task_runner = "dask"`` runs them on Dask (prefect-dask's ``DaskTaskRunner``): a ``LocalCluster`` of
``dask_workers`` single-threaded worker processes, or the existing cluster at ``dask_address``.

Flows are defined without a runner; callers pick it per run with ``with_settings_runner(flow)``,
which is ``flow.with_options(task_runner=task_runner_from_settings())``.
"""

from __future__ import annotations

import flows._prefect_env  # noqa: F401  (sets Prefect defaults; must precede the prefect import)

# isort: split
import math
from collections.abc import Sequence
from typing import TypeVar

from prefect import Flow
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from matflow.settings import Settings, get_settings

T = TypeVar("T")
CHUNKS_PER_WORKER = 4  # enough tasks to balance uneven structures, few enough to keep overhead small


def dask_worker_env(settings: Settings) -> dict[str, str]:
    """Environment of each Dask worker process: one BLAS/OpenMP/torch thread unless configured."""
    threads = str(settings.torch_threads or 1)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "NUMBA_NUM_THREADS": threads, "MATFLOW_TORCH_THREADS": threads,
            "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


def local_task_runner() -> ThreadPoolTaskRunner:
    """Tasks one at a time in the flow's process: the default of matflow's batch flows."""
    return ThreadPoolTaskRunner(max_workers=1)


def task_runner_from_settings(settings: Settings | None = None) -> TaskRunner:
    """The task runner the settings ask for (``get_settings()`` when not given).

    Dask with no address starts a ``LocalCluster`` when the flow starts and closes it when the flow
    ends: ``dask_workers`` processes with one thread each, no dashboard (no port to collide on a
    shared machine).
    """
    settings = settings or get_settings()
    if settings.task_runner == "local":
        return local_task_runner()
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    import dask

    # the featurizer isolates crashes in child processes: LocalCluster workers must be allowed to
    # have children (Dask makes them daemonic by default). Read by the nannies in this process.
    dask.config.set({"distributed.worker.daemon": False})
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                        "processes": True, "dashboard_address": None,
                        "env": dask_worker_env(settings)},
    )


def with_settings_runner(flow: Flow, settings: Settings | None = None) -> Flow:
    """``flow`` with the task runner the settings ask for (chosen now, at run time)."""
    return flow.with_options(task_runner=task_runner_from_settings(settings))


def current_parallelism() -> int:
    """How many tasks the running flow's task runner executes at once (1 outside a flow run)."""
    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx else None
    if isinstance(runner, ThreadPoolTaskRunner):
        return max(1, runner._max_workers or 1)
    if runner is not None and type(runner).__name__ == "DaskTaskRunner":
        return max(1, sum(runner.client.nthreads().values()))
    return 1


def runs_distributed() -> bool:
    """True when the running flow's tasks execute in other processes (Dask workers), which already
    use every core they were given: a task there should not start a process pool of its own."""
    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"


def chunk(items: Sequence[T], chunk_size: int | None = None) -> list[list[T]]:
    """Split ``items`` in order into chunks of ``chunk_size``; None gives about
    ``CHUNKS_PER_WORKER`` chunks per parallel slot of the running flow's task runner."""
    items = list(items)
    if not items:
        return []
    if chunk_size is None:
        chunk_size = math.ceil(len(items) / (CHUNKS_PER_WORKER * current_parallelism()))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
