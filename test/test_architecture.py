"""What may import what (docs/architecture.md): the engine is a leaf library, the backends sit on
it, the ROS layer on both; no import cycles; the embedded backend and the ROS layer load no torch."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "acr_ros"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """acr_ros modules imported anywhere in a file (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def test_the_graph_covers_the_package():
    assert {"acr_ros.acr.pipeline", "acr_ros.backends", "acr_ros.backends.acr", "acr_ros.hands_node"} <= set(GRAPH)
    assert "acr_ros.acr.pipeline" in GRAPH["acr_ros.backends.acr"]


def test_the_engine_imports_nothing_above_it():
    upward = {module: sorted(d for d in deps if not d.startswith("acr_ros.acr"))
              for module, deps in GRAPH.items() if module.startswith("acr_ros.acr")}
    assert {m: d for m, d in upward.items() if d} == {}


def test_the_backends_import_only_the_engine_and_each_other():
    upward = {module: sorted(d for d in deps if not d.startswith(("acr_ros.acr", "acr_ros.backends")))
              for module, deps in GRAPH.items() if module.startswith("acr_ros.backends")}
    assert {m: d for m, d in upward.items() if d} == {}


def test_there_is_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def _loaded_after(imports: str, of: str) -> str:
    """What `print(...)` of the expression `of` says in a fresh interpreter after `import sys, <imports>`."""
    result = subprocess.run([sys.executable, "-c", f"import sys, {imports}; print({of})"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_embedded_backend_and_the_ros_layer_load_no_torch():
    assert _loaded_after("acr_ros.backends, acr_ros.backends.mediapipe, acr_ros.hands_node, acr_ros.offline, "
                         "acr_ros.render, acr_ros.ros_messages, acr_ros.recordings, acr_ros.acr.runtime",
                         "'torch' in sys.modules") == "False"


def test_importing_leaves_openmp_alone():
    """Only the executables make idle OpenMP threads sleep (acr_ros.acr.runtime.passive_openmp_waits,
    called by their entry points; test_load.py checks the node's process); importing anything of the
    package, the engine included, does not."""
    env = {name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"}
    code = ("import os, acr_ros.acr.pipeline, acr_ros.acr.onnx_export, acr_ros.acr.runtime, acr_ros.hands_node, "
            "acr_ros.image_source, acr_ros.offline, acr_ros.export, acr_ros.ros_runtime; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_building_the_engine_changes_no_process_wide_setting(tmp_path):
    """The library leaves cuDNN/TF32 and the allocator alone; entry points opt in (acr_ros.acr.runtime)."""
    code = """
import torch
from acr_ros.acr.mano import ManoLayer
from acr_ros.acr.network import ACRNet
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline
from support.synthetic_mano import write_synthetic_mano
flags = lambda: (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
before = flags()
ACRPipeline(ACRNet(), ManoLayer.from_directory(write_synthetic_mano(%r)), EngineOptions(device="cpu"))
print(before == flags())
""" % str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_the_frame_path_shared_live_and_offline_needs_no_ros():
    """acr_ros.frame_processor is what the node and acr_offline share: it loads neither rclpy nor any
    ROS message package, so that it runs the same wherever the frames come from."""
    assert _loaded_after("acr_ros.frame_processor, acr_ros.frame_inputs, acr_ros.backends.mediapipe",
                         "sorted(m for m in sys.modules if m.startswith('acr_ros.msg') or m.split('.')[0] in "
                         "('rclpy', 'rosbags', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'torch'))") == "[]"
