"""Where GLUE jobs run: serially in this process, or through a queue of GPU ids, one worker process per GPU.

The queue writes each job's ``JobSpec`` to ``<out_dir>/spec.json`` and starts
``python -m m2bert.glue.execute spec.json`` with ``CUDA_VISIBLE_DEVICES`` set to one GPU id; the worker
reads the spec back as the schema's dataclasses (type-checked by OmegaConf), runs the job and leaves
``<out_dir>/result.json``. Each worker's output goes to its job folder's ``log.txt``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import IO, Any, Optional

from omegaconf import OmegaConf

from m2bert.glue import jobs
from m2bert.glue.jobs import JobSpec, format_metrics
from m2bert.glue.start import Start

log = logging.getLogger(__name__)


def gpu_ids(gpus: Optional[list[int]], device: str) -> list[int]:
    """The GPU ids jobs may use: ``gpus`` if given, else every visible GPU (none for ``device=cpu``)."""
    if gpus is not None:
        return [int(g) for g in gpus]
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return []
    return list(range(torch.cuda.device_count()))


def run_serial(specs: list[JobSpec], start: Start, done: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Jobs one after the other in this process; each finished job's result is also appended to ``done`` at once."""
    results = []
    for i, spec in enumerate(specs, 1):
        log.info("job %d/%d: %s (round %d)", i, len(specs), spec.name, spec.round)
        results.append(jobs.run_job(spec, start))
        if done is not None:
            done.append(results[-1])
    return results


def save_spec(spec: JobSpec, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(asdict(spec), f, indent=2)


def load_spec(path: str) -> JobSpec:
    """A spec written by ``save_spec``, as dataclasses again (a wrong type or key fails here, naming it)."""
    with open(path) as f:
        data = json.load(f)
    spec: JobSpec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(JobSpec), data))  # type: ignore[assignment]
    return spec


def run_queue(specs: list[JobSpec], gpus: list[int], done: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """One worker process per GPU id at a time; a finished worker frees its GPU for the next job.

    The console shows only start/finish lines. A failed job does not stop the others; the queue raises at
    the end, naming the logs.
    """
    pending = list(specs)
    free = list(gpus)
    running: dict[int, tuple[JobSpec, subprocess.Popen, IO[str], float]] = {}
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and free:
            spec, gpu = pending.pop(0), free.pop(0)
            running[gpu] = (spec, *_start_worker(spec, gpu), time.perf_counter())
            log.info("[gpu %d] start %s (round %d) → %s", gpu, spec.name, spec.round, os.path.join(spec.out_dir, "log.txt"))
        time.sleep(0.5)
        for gpu, (spec, proc, logf, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del running[gpu]
            free.append(gpu)
            result_path = os.path.join(spec.out_dir, "result.json")
            if proc.returncode == 0 and os.path.isfile(result_path):
                with open(result_path) as f:
                    results[spec.name] = json.load(f)
                if done is not None:
                    done.append(results[spec.name])
                log.info("[gpu %d] done  %s in %.0f s: %s", gpu, spec.name, time.perf_counter() - t0,
                         format_metrics(results[spec.name]["metrics"]))
            else:
                failed.append(f"{spec.name} (exit {proc.returncode}; log {os.path.join(spec.out_dir, 'log.txt')})")
                log.error("[gpu %d] FAILED %s (exit %s); see %s", gpu, spec.name, proc.returncode,
                          os.path.join(spec.out_dir, "log.txt"))
    if failed:
        raise RuntimeError(f"{len(failed)} GLUE job(s) failed: " + "; ".join(failed))
    return [results[s.name] for s in specs]


def _start_worker(spec: JobSpec, gpu: int) -> tuple[subprocess.Popen, IO[str]]:
    spec_path = os.path.join(spec.out_dir, "spec.json")
    save_spec(spec, spec_path)
    logf = open(os.path.join(spec.out_dir, "log.txt"), "w")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), PYTHONUNBUFFERED="1")
    if spec.config.device == "cpu":  # CPU "slots" (tests): keep workers from oversubscribing the cores
        env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen([sys.executable, "-m", "m2bert.glue.execute", spec_path], stdout=logf,
                            stderr=subprocess.STDOUT, env=env)
    return proc, logf


def main(argv: Optional[list[str]] = None) -> int:
    """Worker: run the job in ``spec.json``; the result lands in ``<out_dir>/result.json``."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    jobs.run_job(load_spec(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
