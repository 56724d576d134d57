"""scripts/gpu_check.sh in its dry-run mode (what CI runs so that it cannot rot before a GPU comes):
every section runs on the CPU and the report comes out; its figures measure nothing."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow(seconds=70)  # the dry run (its ros section starts the node)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def gpu_check(*args, timeout=600):
    env = dict(os.environ, ACR_ROS_PYTHON=sys.executable)
    env.pop("OUT", None)
    return subprocess.run([str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd="/")


@pytest.fixture(scope="module")
def module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check_module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check_module  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check_module)
    yield gpu_check_module
    del sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    result = gpu_check("--out", str(out))
    report = json.loads((out / "gpu_check.json").read_text())
    return result, out, report


def table(section: dict, title_start: str) -> dict:
    return next(t for t in section["tables"] if t["title"].startswith(title_start))


def test_every_section_runs_and_the_report_is_written_and_printed(dry_run):
    result, out, report = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("# GPU check (DRY RUN") and markdown in result.stdout
    assert "RANDOM" in markdown and "SYNTHETIC MANO" in markdown
    assert {name: s["status"] for name, s in report["sections"].items()} == {
        name: "ok" for name in ("tests", "fidelity", "bench", "onnx", "cpu", "ros", "aot", "compile")}
    assert (out / "pytest.log").exists() and (out / "sections.log").exists()
    assert all(row[2] is None for row in report["targets"])  # nothing measured on the CPU


def test_the_cuda_tests_run_without_ros(dry_run):
    tests = dry_run[2]["sections"]["tests"]
    assert any("rclpy imported during the run: no" in note for note in tests["notes"])
    rows = table(tests, "CUDA tests")["rows"]
    names = {row[0].split("::")[0] for row in rows}
    assert {"test_network", "test_pipeline", "test_gpu", "test_mano", "test_preprocess"} <= names
    assert {row[1] for row in rows} == {"skipped"}  # no CUDA here


def test_fidelity_onnx_and_cpu_sections_compare_within_the_suite_tolerances(dry_run):
    sections = dry_run[2]["sections"]
    fidelity = table(sections["fidelity"], "fp32 on the device")
    assert fidelity["rows"] and all(row[fidelity["columns"].index("within")] for row in fidelity["rows"])
    onnx = table(sections["onnx"], "onnxruntime (CPU provider) against torch")
    assert onnx["rows"] and all(row[onnx["columns"].index("within")] for row in onnx["rows"])
    runtimes = table(sections["onnx"], "torch and onnxruntime side by side")["rows"]
    assert [row[0] for row in runtimes] == ["torch", "onnxruntime"]
    assert any(note.startswith("CPU: ") and "AVX2" in note for note in sections["cpu"]["notes"])
    assert any(note.startswith("precision auto on this CPU: auto") for note in sections["cpu"]["notes"])
    assert table(sections["bench"], "cpu stages and throughput")["rows"]
    first = table(sections["bench"], "ACRBackend in a fresh process")
    assert [row[:2] for row in first["rows"]] == [["fp32", "cpu"]] and all(v > 0 for v in first["rows"][0][2:])
    preprocessing = table(sections["fidelity"], "device preprocessing against the CPU's")
    assert preprocessing["rows"] and all(row[preprocessing["columns"].index("within")] for row in preprocessing["rows"])
    assert table(sections["fidelity"], "what rounding does to this random network")["rows"]
    assert table(sections["compile"], "torch.compile")["rows"]


def test_the_ros_section_runs_the_node_over_ros(dry_run):
    """Here ROS comes from the venv; on the device machine from the carried wheels (not in CI: 50 MiB)."""
    ros = dry_run[2]["sections"]["ros"]
    assert any(note.startswith("ROS 2 from this Python") for note in ros["notes"])
    assert any(note.startswith("command: python benchmarks/latency.py --backend acr --device cpu --precision fp32 "
                               "--sizes 64x48 --frames 2 --warmup 1 --rate 30") for note in ros["notes"])
    rows = table(ros, "the node on cpu: image stamp to ~/hands, 64x48 published at 30 Hz")["rows"]
    # The CPU takes longer than a frame: the node may drop one (it keeps the newest).
    assert len(rows) == 1 and rows[0][1] == 2 and 1 <= rows[0][2] <= 2 and 0 < rows[0][3] <= rows[0][4]


def test_without_ros_or_carried_wheels_the_ros_section_is_skipped_in_one_line(module, tmp_path, monkeypatch):
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(module, "ROS_CARRY", module.REPO / ".gpu_carry" / "none_here")
    rec = module.Recorder(tmp_path / "ros.json")
    assert module.section_ros(rec, tmp_path, module.DRY_RUN_PLAN, time.time() + 60) == "skipped"
    assert rec.data["notes"] == ["skipped: no ROS 2 in this Python and no wheels in .gpu_carry/none_here (run "
                                 "scripts/prepare_gpu_carry.sh before the device call and carry .gpu_carry)"]


def test_a_section_past_its_time_box_is_stopped(module, tmp_path, monkeypatch):
    """A GPU run's section runs in a process of its own and is killed at its box (a dry run's sections run in
    the orchestrator's process): the tests section, whose pytest takes longer than a second."""
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{REPO / 'test'}")
    with open(tmp_path / "sections.log", "w") as log:
        section = module.run_in_process("tests", 1, tmp_path, log, dry_run=True)
    assert section["status"] == "partial" and "stopped at its time box of 1 s" in section["notes"], section


def test_a_section_without_time_left_is_skipped(tmp_path):
    result = gpu_check("--out", str(tmp_path), "--sections", "bench", "--box", "bench=0", timeout=300)
    report = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert result.returncode == 1
    assert report == {"bench": {"status": "skipped", "notes": ["no time left in the budget"], "tables": [],
                                "seconds": report["bench"]["seconds"], "box": 0}}


def test_test_files_needing_ros_or_missing_modules_are_left_out(module, tmp_path):
    files = {
        "test_engine.py": "import torch\nimport pytest\n@pytest.mark.gpu\ndef test_a(): pass\n",
        "test_node.py": "from rclpy.node import Node\nimport pytest\n@pytest.mark.gpu\ndef test_b(): pass\n",
        "test_harness.py": "from support.ros_harness import Probe\nimport pytest\npytest.mark.gpu\n",
        "test_other.py": "import not_a_module_here\nimport pytest\n@pytest.mark.gpu\ndef test_c(): pass\n",
        "test_cpu_only.py": "import torch\ndef test_d(): pass\n",
    }
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    chosen, left_out = module.engine_test_files(tmp_path)
    assert chosen == ["test_engine.py"]
    assert left_out["test_node.py"].startswith("needs ROS (rclpy.node)")
    assert left_out["test_harness.py"].startswith("needs ROS (support.ros_harness)")
    assert left_out["test_other.py"].startswith("not_a_module_here not installed")
    assert "test_cpu_only.py" not in left_out


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would be the full GPU run")
def test_without_cuda_a_real_run_refuses(tmp_path):
    env = dict(os.environ, ACR_ROS_PYTHON=sys.executable)
    result = subprocess.run([str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 2 and "use --dry-run" in result.stderr
