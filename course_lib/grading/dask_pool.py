"""Grading on Dask (``--dask``): the same jobs as the local pool of ``course_lib.grading.autograde``, run by
``distributed`` workers instead of the pipeline's own processes.

* ``--dask`` alone: a ``distributed.LocalCluster`` on this machine, ``--workers`` worker processes of one thread
  each (one submission at a time per process: nbgrader's execute step keeps per-process state);
* ``--dask tcp://host:port``: an existing scheduler; its workers must import the same ``course_lib`` and see the
  course folder, the submissions, the feedback folder and the run's working folder (made next to the CSV) at the
  same paths -- a shared file system. Give each worker one thread (``dask worker --nthreads 1``).

Each job is one call of ``course_lib.grading.job.grade_job`` in a worker, which grades in its own temporary course
copy with the kernel in the bubblewrap sandbox, exactly as the local pool does. Rows come back to this process as
jobs finish (``as_completed``), so the CSV, the course gradebook and ``--resume`` work the same. A worker that dies
costs only its job: the scheduler gives it to another worker once (``allowed-failures`` = 1 on the local cluster; an
external scheduler uses its own setting), then the job gets an error row.
"""
from __future__ import annotations

import logging

__all__ = ["run_dask"]


def run_dask(jobs: list, address: str | None, workers: int, emit, grade, failed_row, prepare_worker=None) -> None:
    """Grade ``jobs`` with ``grade(job) -> (row, log, record)`` on Dask; ``emit(job, row, log, record)`` in this
    process as each finishes. ``address``: a scheduler's address, or None for a local cluster of ``workers``
    (``prepare_worker()`` runs once in each of its processes). A job whose worker died twice gets
    ``failed_row(job, reason)``. The functions come from the caller (course_lib.grading.autograde), which
    imports this module only when asked for Dask."""
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        if address is None:
            cluster = LocalCluster(n_workers=max(1, min(workers, len(jobs))), threads_per_worker=1, processes=True,
                                   memory_limit=0, dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
            if prepare_worker is not None:
                client.run(prepare_worker)
        else:
            client = Client(address)
        try:
            futures = {client.submit(grade, job, key=f"grade-{index}-{job.submission.student_id}-"
                                     f"{job.submission.assignment}", pure=False): job
                       for index, job in enumerate(jobs)}
            for future in as_completed(futures):
                job = futures.pop(future)
                try:
                    row, log, record = future.result()
                except Exception as error:  # noqa: BLE001 - KilledWorker, a lost connection: one row, not the batch
                    row, log, record = failed_row(job, "the grading worker died twice on this submission "
                                                  f"({type(error).__name__}: {error})"[:500]), "", {}
                emit(job, row, log, record)
                future.release()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
