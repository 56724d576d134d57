"""acr_offline --ray: the inputs fanned out over a Ray cluster (docs/cluster.md).

The driver (run) plans the inputs (longest first, those finished before left out with
--skip-existing), starts one InputWorker actor per GPU (or CPU) it may use, hands each idle worker
the next input and reports. A worker loads the backend once and processes whole inputs with the
code of a local run (acr_ros.offline_unit.process_spec): one input in order, so its tracks and
smoothing, and so its outputs, are those of a local run with the same thread settings.

Where outputs go: an input is processed into OUTPUT/.acr_staging/NAME.PID/, then its outputs are
moved into OUTPUT (renames on one file system) and its completion marker NAME_done.json is written
last (itself by a rename), naming the model and the options: an input without a marker is not
finished, whatever files it left. A worker killed mid-input is restarted by Ray and the input done
again (MAX_RETRIES); the staging folder of the dead attempt is removed by the next.

Ray is imported only here, and only when --ray is given (scripts/requirements-cluster.txt).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Optional

from acr_ros.offline_unit import (RunContext, engine_options, input_frames, input_name, load_backend,
                                  process_spec, report)

INSTALL = 'pip install "ray[default]==2.60.0" opentelemetry-proto==1.27.0'
STAGING = ".acr_staging"   # inside the output folder: its renames stay on one file system
MAX_RETRIES = 2            # attempts after the first when a worker dies during an input
PROGRESS_EVERY_S = 0.5     # how often a worker tells the driver its frames
# The command line options that do not change an input's outputs (left out of its marker).
NOT_OPTIONS = {"inputs", "output_dir", "quiet", "ray", "gpus_per_worker", "workers", "skip_existing"}


def missing_ray() -> Optional[str]:
    """Why --ray cannot run here (one line naming the install command), or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return f"--ray needs Ray, which is not installed: {INSTALL} (scripts/requirements-cluster.txt)"
    return None


def run_options(args: Namespace) -> dict:
    """The options that shape an input's outputs, as JSON values: what its marker names. The files of
    --params-file and --calibration by their contents too (the model files by their paths only)."""
    options = {key: value for key, value in sorted(vars(args).items()) if key not in NOT_OPTIONS}
    for option in ("params_file", "calibration"):
        path = Path(str(options[option]).removeprefix("file://")) if options[option] else None
        if path is not None and path.is_file():
            options[f"{option}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return json.loads(json.dumps(options, default=str))


def marker_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}_done.json"


def finished_before(output_dir: Path, name: str, options: dict) -> Optional[dict]:
    """The marker of an input finished before with these options, or None (none, or other options)."""
    try:
        marker = json.loads(marker_path(output_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return marker if marker.get("options") == options else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _commit(staging: Path, output_dir: Path, marker: dict) -> list[str]:
    """Moves a finished input's outputs from its staging folder into place and writes its marker last;
    the names of the outputs moved. An earlier marker goes first: a commit cut short leaves none."""
    marker_file = marker_path(output_dir, marker["name"])
    try:  # an earlier run's outputs of this input, with other options: not left beside the new ones
        stale = json.loads(marker_file.read_text()).get("outputs", [])
    except (OSError, ValueError):
        stale = []
    marker_file.unlink(missing_ok=True)
    for name in stale:
        if isinstance(name, str) and name and Path(name).name == name:  # a name in output_dir, nothing else
            _remove(output_dir / name)
    moved = []
    for entry in sorted(staging.iterdir()):
        target = output_dir / entry.name
        _remove(target)  # an earlier run's output of this input (other options)
        os.replace(entry, target)
        moved.append(entry.name)
    written = staging.with_suffix(".json")
    written.write_text(json.dumps({**marker, "outputs": moved}, indent=1) + "\n")
    os.replace(written, marker_file)
    staging.rmdir()
    return moved


class FrameCounter:
    """Frames done per input, told by the workers (an attempt that is retried starts again at 0)."""

    def __init__(self):
        self.frames: dict[str, int] = {}

    def tell(self, name: str, frames: int) -> None:
        self.frames[name] = frames

    def total(self) -> int:
        return sum(self.frames.values())


class InputWorker:
    """A Ray actor: the backend loaded once, then whole inputs one at a time into the shared output folder."""

    def __init__(self, args: Namespace):
        args = Namespace(**{**vars(args), "quiet": True})  # one progress bar, the driver's
        self.args = args
        self.context = RunContext.create(args)
        self.backend, self.reason = load_backend(args, engine_options(args))
        from acr_ros.acr.runtime import tune_cpu_allocator

        tune_cpu_allocator()  # as a local run with recordings (an archive's inputs): heap, not an mmap per image

    def backend_line(self) -> str:
        """What a local run says of its backend."""
        backend = self.backend
        return (f"backend: {backend.name} ({self.reason}); model {backend.model}"
                + (f", weights {backend.checkpoint}" if backend.checkpoint else ""))

    def process(self, spec: str, options: dict, counter) -> dict:
        """process_spec into a staging folder, then _commit; the summary, with the attempt it was."""
        output_dir = Path(self.args.output_dir)
        name = input_name(spec)
        stage_root = output_dir / STAGING
        stage_root.mkdir(parents=True, exist_ok=True)
        earlier = [p for p in stage_root.iterdir() if p.name.startswith(f"{name}.")]
        for path in earlier:  # what a dead worker (or an interrupted run) left of this input
            _remove(path)
        attempt = 1 + len(earlier)
        staging = stage_root / f"{name}.{os.getpid()}"
        staging.mkdir()
        done, told = 0, time.monotonic()
        counter.tell.remote(name, 0)

        def progress(frames: int) -> None:
            nonlocal done, told
            done += frames
            if time.monotonic() - told >= PROGRESS_EVERY_S:
                counter.tell.remote(name, done)
                told = time.monotonic()

        summary = process_spec(self.backend, spec, self.context, staging, progress)
        counter.tell.remote(name, done)
        summary = {**summary, "attempt": attempt, "outputs": [], "backend": self.backend_line(),
                   "unreadable": [str(p) for p in summary["unreadable"]]}
        if not summary["opened"] or summary["interrupted"] or not any(staging.iterdir()):
            shutil.rmtree(staging)  # nothing finished to keep: no marker, a later run does it again
            return summary
        marker = {"input": spec, "name": name, "backend": self.backend.name, "model": self.backend.model,
                  "checkpoint": self.backend.checkpoint, "options": options, "frames": summary["frames"],
                  "hands": summary["hands"], "problems": summary["problems"], "unreadable": summary["unreadable"]}
        moved = _commit(staging, output_dir, marker)
        return {**summary, "outputs": [str(output_dir / entry) for entry in moved]}


def _worker_count(ray, args: Namespace, inputs: int) -> tuple[int, float, str]:
    """(workers, GPUs each, what the cluster offers) for this run; 0 workers: it offers too little."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    slots = int(gpus // per_worker) if per_worker else int(cpus)
    count = min(slots, inputs, args.workers or slots)
    offered = f"{gpus:g} GPU(s), {cpus:g} CPU(s)"
    return count, per_worker, offered


def _failed_summary(spec: str, problem: str) -> dict:
    return {"input": spec, "name": input_name(spec), "frames": 0, "hands": 0, "seconds": 0.0, "outputs": [],
            "interrupted": False, "unreadable": [], "problems": [problem], "ran": False, "opened": False}


def _result_line(summary: dict) -> str:
    if summary.get("skipped"):
        result = "done before (--skip-existing)"
    elif not summary["opened"]:
        result = "failed"
    else:
        result = "done with problems" if summary["problems"] else "done"
        if summary.get("attempt", 1) > 1:
            result += f" (attempt {summary['attempt']}: the earlier one did not finish)"
    return f"  {summary['name']}: {summary['frames']} frame(s), {summary['hands']} hand(s), {result}"


def run(args: Namespace, inputs: list[str], status: int) -> int:
    """The driver: every input on the cluster; the exit code as acr_offline's (status: what was said before)."""
    import ray
    from tqdm import tqdm

    webcams = [spec for spec in inputs if spec.strip().isdigit()]
    if webcams:
        print(f"acr_offline: --ray: webcam {', '.join(webcams)} is on this machine, not on the workers: "
              "run it without --ray", file=sys.stderr)
        return 2
    names: dict[str, str] = {}
    for spec in inputs:
        other = names.setdefault(input_name(spec), spec)
        if other != spec:
            print(f"acr_offline: {other} and {spec} would both write the outputs {input_name(spec)}_*: "
                  "give inputs of distinct names (or run them into distinct -o folders)", file=sys.stderr)
            return 2
    options = run_options(args)
    done: list[dict] = []
    todo: list[tuple[int, str]] = []
    for spec in inputs:
        marker = finished_before(args.output_dir, input_name(spec), options) if args.skip_existing else None
        if marker is not None:
            done.append({**_failed_summary(spec, ""), "frames": marker["frames"], "hands": marker["hands"],
                         "problems": [f"{problem} (in the earlier run)" for problem in marker["problems"]],
                         "ran": True, "opened": True, "skipped": True})
        else:
            todo.append((input_frames(spec, args), spec))
    todo.sort(key=lambda item: -item[0])  # longest first: the last inputs to finish are short ones

    started_ray = not ray.is_initialized()
    if started_ray:  # a program that already called ray.init uses its own instance
        if args.ray:  # an existing cluster: its own settings
            ray.init(address=args.ray, logging_level="warning")
        else:
            ray.init(include_dashboard=False, logging_level="warning")
    try:
        return _drive(ray, tqdm, args, todo, done, options, status)
    finally:
        if started_ray:
            ray.shutdown()


def _drive(ray, tqdm, args: Namespace, todo: list, done: list, options: dict, status: int) -> int:
    count, per_worker, offered = _worker_count(ray, args, len(todo))
    if todo and count == 0:
        print(f"acr_offline: --ray: the cluster has {offered}: no room for a worker with "
              f"--gpus-per-worker {per_worker:g}", file=sys.stderr)
        return 2
    if todo:
        print(f"ray: {count} worker(s) of {per_worker:g} GPU(s) each on {offered}, {len(todo)} input(s) to do"
              + (f", {len(done)} done before" if done else ""))
    counter = ray.remote(num_cpus=0)(FrameCounter).remote()
    worker_class = ray.remote(num_cpus=1, num_gpus=per_worker, max_restarts=MAX_RETRIES,
                              max_task_retries=MAX_RETRIES)(InputWorker)
    workers = [worker_class.remote(args) for _ in range(count)]
    idle = list(workers)
    running: dict = {}  # ObjectRef -> (worker, spec)
    queue = [spec for _, spec in todo]
    total_frames = sum(frames for frames, _ in todo)
    bar = tqdm(total=total_frames or None, unit="frame", disable=True if args.quiet else None,
               desc=f"inputs {len(done)}/{len(done) + len(todo)}")
    shown = 0
    try:
        while queue or running:
            while queue and idle:
                worker, spec = idle.pop(), queue.pop(0)
                running[worker.process.remote(spec, options, counter)] = (worker, spec)
            if not running:  # every worker died for good: the rest cannot run
                done.extend(_failed_summary(spec, f"{spec}: not processed: no worker left") for spec in queue)
                break
            finished, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY_S)
            frames = ray.get(counter.total.remote())
            bar.update(max(0, frames - shown))
            shown = max(shown, frames)
            for ref in finished:
                worker, spec = running.pop(ref)
                try:
                    summary = ray.get(ref)
                    idle.append(worker)
                except ray.exceptions.RayActorError as error:  # died (or failed to start) too often: given up
                    summary = _failed_summary(spec, f"{spec}: not processed: its worker is gone after "
                                                    f"{MAX_RETRIES} restart(s): {_last_line(error)}")
                except ray.exceptions.RayTaskError as error:  # a bug, not bad data: said, the rest goes on
                    summary = _failed_summary(spec, f"{spec}: failed: {_last_line(error)}")
                    idle.append(worker)
                done.append(summary)
                report(summary, say=bar.write, warn=lambda line: bar.write(line, file=sys.stderr))
                bar.set_description(f"inputs {len(done)}/{len(done) + len(queue) + len(running)}")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (acr_offline.interrupt_once): nothing half-written stays
        bar.close()
        finished = _stop(ray, workers, running, Path(args.output_dir))
        print(f"acr_offline: stopped: {len(done) + finished} input(s) finished, {len(running) + len(queue) - finished} "
              "not (--skip-existing resumes)", file=sys.stderr)
        return 130
    bar.close()
    for worker in workers:
        ray.kill(worker)
    _remove_empty(Path(args.output_dir) / STAGING)
    for line in sorted({summary["backend"] for summary in done if "backend" in summary}):
        print(line)  # one line, unless the workers' nodes chose differently (e.g. a device)
    print(f"summary ({len(done)} input(s)):")
    for summary in sorted(done, key=lambda s: s["name"]):
        print(_result_line(summary))
        if summary["problems"]:
            status = max(status, 1)
    for summary in done:  # said as they finished, except those of the inputs done before
        for problem in summary["problems"] if summary.get("skipped") else ():
            print(f"acr_offline: {problem}", file=sys.stderr)
    if done and not any(summary["ran"] for summary in done):
        print("acr_offline: no input could run", file=sys.stderr)
        return 2
    return status


def _stop(ray, workers: list, running: dict, output_dir: Path) -> int:
    """Ends the workers (no restart), waits for their tasks to end, removes their staging folders; how
    many of the running inputs had finished all the same (their outputs and markers are complete)."""
    for worker in workers:
        ray.kill(worker, no_restart=True)
    finished = 0
    if running:
        ray.wait(list(running), num_returns=len(running), timeout=30)
        for ref in running:
            try:
                finished += bool(ray.get(ref, timeout=0)["opened"])
            except Exception:  # noqa: BLE001 - killed before it ended (the usual case)
                pass
    stage_root = output_dir / STAGING
    for _, spec in running.values():
        for path in stage_root.glob(f"{input_name(spec)}.*"):
            _remove(path)
    _remove_empty(stage_root)
    return finished


def _remove_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _last_line(error: BaseException) -> str:
    """The last line of a Ray error (its cause, after the traceback it carries)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
