"""acr_offline --ray (acr_ros/cluster.py) on a local Ray instance of 2 CPUs started here, shared by the
module: outputs byte-identical to a serial run, a worker killed during an input, a damaged recording
among good ones, --skip-existing after an interrupted run. MediaPipe runs its real embedded model.

Both runs use one CPU thread (--threads 1): a Ray worker has one by default, and results on the CPU
may differ in the last bits between thread counts.
"""
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from acr_ros import cluster, offline
from acr_ros.media import SAMPLES_DIR
from support.bags import clip_frames, write_bag

ray = pytest.importorskip("ray", reason="scripts/requirements-cluster.txt (scripts/setup.sh installs it)")

pytestmark = pytest.mark.slow(seconds=40)  # Ray's start, 6 runs of 2 workers loading MediaPipe (52 s at load 12)


def run_cli(*args):
    return offline.main([*map(str, args), "--backend", "mediapipe", "--threads", "1", "-q"])


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for the module: 2 CPUs, no dashboard; its sockets under a short temporary path
    (a unix socket's path has at most 107 characters)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage to its servers unless told not to
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="warning")
        yield
        ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, local_ray):
    """Four small inputs (two recordings, an image, a folder) and their outputs from a serial run."""
    root = tmp_path_factory.mktemp("archive")
    frames = clip_frames(16, start=8)
    photos = root / "photos"
    photos.mkdir()
    for name in ("two_hands.jpg", "portrait.jpg"):
        shutil.copy(SAMPLES_DIR / name, photos / name)
    inputs = [write_bag(root / "grasp_long", frames, "mcap").path, write_bag(root / "grasp_short", frames[:4],
                                                                             "sqlite3").path,
              SAMPLES_DIR / "magic.jpg", photos]
    serial = root / "serial"
    assert run_cli("--inputs", *inputs, "-o", serial) == 0
    return inputs, serial


def files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_outputs(serial: Path, out: Path, names) -> None:
    """Every output of the named inputs byte for byte as the serial run's, each with its marker."""
    expected = {k: p for k, p in files(serial).items() if k.split("/")[0].startswith(tuple(names))}
    got = files(out)
    assert set(expected) <= set(got)
    for key, path in expected.items():
        assert got[key].read_bytes() == path.read_bytes(), key
    for name in names:
        assert (out / f"{name}_done.json").is_file()
    assert not (out / cluster.STAGING).exists()


def test_four_inputs_equal_a_serial_run(tmp_path, archive, capsys):
    inputs, serial = archive
    out = tmp_path / "out"
    assert run_cli("--ray", "--inputs", *inputs, "-o", out) == 0
    assert_same_outputs(serial, out, ["grasp_long", "grasp_short", "magic", "photos"])
    assert {p.name for p in (out / "photos").iterdir()} == {"two_hands_output.jpg", "portrait_output.jpg"}
    said = capsys.readouterr().out
    assert "2 worker(s)" in said and said.count("backend: mediapipe (backend mediapipe requested)") == 1
    for line in ("grasp_long: 16 frame(s)", "grasp_short: 4 frame(s)", "magic: 1 frame(s)", "photos: 2 frame(s)"):
        assert line in said


def kill_when_started(out: Path, name: str, killed: list) -> None:
    """Kills (SIGKILL) the worker whose staging folder for the input `name` appears (NAME.PID)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not killed:
        for path in (out / cluster.STAGING).glob(f"{name}.*") if (out / cluster.STAGING).is_dir() else ():
            pid = int(path.suffix[1:])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.002)


def test_a_worker_killed_during_an_input_is_redone_and_written_once(tmp_path, archive, capsys):
    inputs, serial = archive
    out = tmp_path / "out"
    killed: list = []
    killer = threading.Thread(target=kill_when_started, args=(out, "grasp_long", killed), daemon=True)
    killer.start()
    assert run_cli("--ray", "--inputs", inputs[0], inputs[2], "-o", out) == 0
    killer.join()
    assert killed, "the worker was not killed"
    said = capsys.readouterr().out
    assert "grasp_long: 16 frame(s), 16 hand(s), done (attempt 2: the earlier one did not finish)" in said
    assert_same_outputs(serial, out, ["grasp_long", "magic"])
    assert sorted(p.name for p in (out / "grasp_long_hands").iterdir()) == ["grasp_long_hands.mcap",
                                                                          "metadata.yaml"]


def test_damaged_recordings_are_reported_and_the_others_complete(tmp_path, archive, capsys):
    inputs, serial = archive
    garbage = tmp_path / "broken.mcap"
    garbage.write_bytes(os.urandom(4096))
    cut = shutil.copytree(inputs[0], tmp_path / "grasp_cut")
    storage = next(cut.glob("*.mcap"))
    os.truncate(storage, storage.stat().st_size * 7 // 10)  # a recording cut short: read up to the damage
    out = tmp_path / "out"
    assert run_cli("--ray", "--inputs", inputs[1], garbage, cut, inputs[2], "-o", out) == 1
    said = capsys.readouterr()
    assert f"acr_offline: {garbage}: cannot read it as a rosbag2 recording" in said.err
    assert f"acr_offline: {storage}: unreadable after" in said.err
    assert "  broken: 0 frame(s), 0 hand(s), failed" in said.out
    assert "hand(s), done with problems" in next(line for line in said.out.splitlines()
                                                 if line.startswith("  grasp_cut: "))
    assert_same_outputs(serial, out, ["grasp_short", "magic"])
    assert not list(out.glob("broken*"))
    assert (out / "grasp_cut_done.json").is_file() and (out / "grasp_cut_hands" / "metadata.yaml").is_file()


def test_skip_existing_resumes_an_interrupted_run(tmp_path, archive, capsys):
    inputs, serial = archive
    out = tmp_path / "out"

    def interrupt_after_the_first_input():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("*_done.json")):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C does to acr_offline

    stopper = threading.Thread(target=interrupt_after_the_first_input, daemon=True)
    stopper.start()
    handlers = {number: signal.getsignal(number) for number in offline.STOP_SIGNALS}
    try:
        assert run_cli("--ray", "--inputs", *inputs, "-o", out) == 130
    finally:  # acr_offline ignores later signals once stopped (its exit is not cut short): not this process's
        for number, handler in handlers.items():
            signal.signal(number, handler)
    stopper.join()
    finished = sorted(p.name.removesuffix("_done.json") for p in out.glob("*_done.json"))
    assert 1 <= len(finished) < 4
    assert not (out / cluster.STAGING).exists()  # nothing half-written stays
    names = {"grasp_long", "grasp_short", "magic", "photos"}
    left = {p.name for p in out.iterdir()} - {f"{n}_done.json" for n in finished}
    assert all(any(entry.startswith(n) for n in finished) for entry in left), left
    capsys.readouterr()

    assert run_cli("--ray", "--skip-existing", "--inputs", *inputs, "-o", out) == 0
    said = capsys.readouterr().out
    summary = said.split("summary")[1].splitlines()
    for name in names:
        line = next(line for line in summary if line.startswith(f"  {name}: "))
        assert line.endswith("done before (--skip-existing)") == (name in finished), line
    assert f"{len(names) - len(finished)} input(s) to do, {len(finished)} done before" in said
    assert_same_outputs(serial, out, names)

    # Other options: the marker names them, so the input is done again.
    assert run_cli("--ray", "--skip-existing", "--inputs", inputs[2], "-o", out, "--no-render") == 0
    said = capsys.readouterr().out
    assert "magic: 1 frame(s), 1 hand(s), done" in said and "done before" not in said
    assert not (out / "magic_output.jpg").exists()  # replaced by the outputs of these options
    with np.load(out / "magic_results.npz") as results:
        assert len(results["frame_name"]) == 1


def test_without_ray_installed_the_option_names_the_install_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray raises ImportError
    assert offline.main(["--ray", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and cluster.INSTALL in err


def test_refusals_before_ray_starts(tmp_path, capsys):
    """Model files missing at the driver, and two inputs that would write the same outputs: one line, code 2."""
    assert offline.main(["--ray", "--backend", "acr", "--checkpoint", str(tmp_path / "wild.pkl"), "--mano-dir",
                         str(tmp_path), "--inputs", str(SAMPLES_DIR / "magic.jpg"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "wild.pkl" in err and "--checkpoint" in err
    (tmp_path / "a").mkdir()
    shutil.copy(SAMPLES_DIR / "magic.jpg", tmp_path / "a" / "magic.jpg")
    assert run_cli("--ray", "--inputs", SAMPLES_DIR / "magic.jpg", tmp_path / "a" / "magic.jpg", "-o",
                   tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "would both write the outputs magic_*" in err and not list((tmp_path / "o").iterdir())
    assert run_cli("--ray", "--inputs", "0", "-o", tmp_path / "o") == 2
    assert "webcam 0 is on this machine, not on the workers" in capsys.readouterr().err
