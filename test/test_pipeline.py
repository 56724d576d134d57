"""The fast ACR pipeline against a plain transcription of the official flow (test/support/reference.py),
and the HandBackend built on it. Random weights + synthetic MANO: structure and numerics only.

The official 512 network input is compared through the pipeline's own entry point; where resolution
does not matter, the same stages run on that input downsampled to 256 (center maps of 32 cells)."""
import dataclasses
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acr_ros.acr.camera import intrinsics_tensor
from acr_ros.acr.checkpoint import CheckpointError
from acr_ros.acr.hands import LEFT, RIGHT, CameraIntrinsics, FrameResult, HandResult, default_intrinsics
from acr_ros.acr.mano import ManoFileError, ManoLayer
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import EngineOptions
from acr_ros.acr.pipeline import ACRPipeline, HandRows
from acr_ros.acr.precision import fp32_without_tf32
from acr_ros.acr.preprocess import letterbox, letterbox_tensor
from acr_ros.acr.smoothing import HandSmoother
from acr_ros.backends.acr import ACRBackend
from support import reference as ref
from support.random_weights import random_acr_network

pytestmark = pytest.mark.slow(seconds=40)  # network runs

REPO = Path(__file__).resolve().parents[1]
OFFICIAL, REDUCED = 512, 256                   # network input sizes; center maps of size / 8 cells
FAR = {"left": (0, 63), "right": (63, 0)}      # corners of the 64 grid, 89 cells apart: no prior
NEAR = {"left": (15, 15), "right": (17, 16)}   # 2.2 cells apart in the 32 grid: a duplicate candidate
CPU = EngineOptions(device="cpu", precision="fp32")


def smooth_image(height, width, seed):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)


def network_input(x, size):
    """The normalised 512 network input, area-downsampled to size x size."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def reference(net, mano, img, size, intrinsics=None):
    """The reference flow on one image, its network input at size."""
    x, lb = ref.preprocess(img)
    return ref.reconstruct_input(net, mano, network_input(x, size), lb, intrinsics)


def fast(pipe, images, size, intrinsics=None):
    """The pipeline on images: its own entry point at the official size, else the same stages with
    the network input downsampled to size."""
    if size == OFFICIAL:
        return pipe(images, intrinsics)
    x, lbs = pipe.preprocess(images)
    k = intrinsics_tensor(intrinsics or [None] * len(images), lbs, pipe.device)
    return pipe.readback(pipe.run(network_input(x, size), letterbox_tensor(lbs, pipe.device), k)), lbs


@pytest.fixture(scope="module")
def mano(mano_dir):
    return ManoLayer.from_directory(mano_dir)


def compare_with_reference(pipe_arr, i, expected, shown=""):
    """Hands of image i of a pipeline run against the reference's, within the issue's tolerances."""
    detected = [s for s in (0, 1) if pipe_arr.detected[i, s]]
    assert detected == [h["side"] for h in expected["hands"]], shown
    assert bool(pipe_arr.prior_applied[i]) == expected["prior_applied"], shown
    for h in expected["hands"]:
        s = h["side"]
        assert pipe_arr.cells[i, s] == h["cell"], shown
        assert abs(pipe_arr.scores[i, s] - h["score"]) < 1e-5
        np.testing.assert_allclose(pipe_arr.cam[i, s], h["cam"].numpy(), atol=1e-4, rtol=0, err_msg=shown)
        np.testing.assert_allclose(pipe_arr.keypoints[i, s], h["keypoints"], atol=0.5, rtol=0, err_msg=shown)
        np.testing.assert_allclose(pipe_arr.joints[i, s], h["joints_rel"], atol=1e-4, rtol=0, err_msg=shown)
        np.testing.assert_allclose(pipe_arr.vertices[i, s], h["vertices_rel"], atol=1e-4, rtol=0, err_msg=shown)
        np.testing.assert_allclose(pipe_arr.translation[i, s], h["translation"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pipe_arr.finger_pose[i, s], h["finger_pose"].numpy(), atol=2e-3)
        np.testing.assert_allclose(pipe_arr.betas[i, s], h["betas"].numpy(), atol=1e-3)


CASES = [
    # detect, cells, (height, width), network input: prior on / off, every detection pattern, image shapes
    ("both", None, (480, 640), OFFICIAL),            # landscape, prior applied (25.3 cells)
    ("both", FAR, (640, 360), OFFICIAL),             # portrait, prior not applied, cells at the grid corners
    ("left", None, (301, 211), REDUCED),             # odd portrait
    ("right", None, (211, 301), REDUCED),            # odd landscape
    ("none", None, (480, 640), REDUCED),
]


@pytest.mark.parametrize("detect,cells,shape,size", CASES, ids=lambda v: str(v))
def test_fast_pipeline_matches_the_official_flow(mano, detect, cells, shape, size):
    grid = size // 8
    net = random_acr_network(0, detect, cells, grid)
    img = smooth_image(*shape, seed=shape[0])
    expected = reference(net, mano, img, size)
    arr, lbs = fast(ACRPipeline(net, mano, CPU), [img], size)
    assert lbs[0] == expected["letterbox"]
    assert arr.detected.shape == (1, 2)
    compare_with_reference(arr, 0, expected, f"{detect} {shape} {size}")
    if detect == "none":
        assert not arr.detected.any() and expected["hands"] == []
    if cells is not None:
        # corner cells: the parameters were read right at the map border
        assert sorted(arr.cells[0].tolist()) == [grid - 1, (grid - 1) * grid]


@pytest.fixture(scope="module")
def both(mano):
    """The random network detecting both hands (prior applied) at the reduced size, and its pipeline."""
    net = random_acr_network(0, "both", grid=REDUCED // 8)
    return net, ACRPipeline(net, mano, CPU)


def test_a_batch_of_mixed_sizes_equals_single_images(both):
    _, pipe = both
    imgs = [smooth_image(480, 640, 1), smooth_image(333, 250, 2), smooth_image(100, 101, 3)]
    batch, lbs = fast(pipe, imgs, REDUCED)
    assert [lb.size for lb in lbs] == [640, 333, 101]
    for i, img in enumerate(imgs):
        single, _ = fast(pipe, [img], REDUCED)
        assert np.array_equal(batch.detected[i], single.detected[0])
        assert np.array_equal(batch.cells[i], single.cells[0])
        for key in ("keypoints", "joints", "vertices", "cam", "translation"):
            np.testing.assert_allclose(getattr(batch, key)[i], getattr(single, key)[0], atol=1e-4, rtol=1e-4)


def test_intrinsics_change_only_the_translation(mano, both):
    net, pipe = both
    img = smooth_image(480, 640, 4)
    k = CameraIntrinsics(fx=600.0, fy=610.0, cx=330.0, cy=250.0)
    expected = reference(net, mano, img, REDUCED, intrinsics=k)
    arr, _ = fast(pipe, [img], REDUCED, [k])
    compare_with_reference(arr, 0, expected, "intrinsics")
    # The root (joint 9 = origin of the root-aligned joints) projects onto its keypoint.
    for s in (0, 1):
        t = arr.translation[0, s]
        u = k.fx * t[0] / t[2] + k.cx
        v = k.fy * t[1] / t[2] + k.cy
        np.testing.assert_allclose(arr.keypoints[0, s, 9], [u, v], atol=1.0)  # fx != fy: 1 px


def test_duplicate_suppression_is_optional_and_keeps_the_higher_score(mano):
    net = random_acr_network(0, "both", NEAR, grid=REDUCED // 8)
    img = smooth_image(480, 640, 6)
    plain, _ = fast(ACRPipeline(net, mano, CPU), [img], REDUCED)
    assert plain.detected[0].tolist() == [True, True]  # the official behaviour
    assert plain.prior_applied[0]
    fixed, _ = fast(ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32",
                                                          suppress_duplicate_hands=True)), [img], REDUCED)
    keep = int(np.argmax(plain.scores[0]))
    assert fixed.detected[0].tolist() == [keep == 0, keep == 1]
    assert not fixed.prior_applied[0]
    far, _ = fast(ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32", suppress_duplicate_hands=True,
                                                        duplicate_distance=2.0)), [img], REDUCED)
    assert far.detected[0].tolist() == [True, True]  # 2.24 cells > 2


# --- the HandBackend ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(acr_checkpoint, mano_dir):
    return ACRBackend(acr_checkpoint, mano_dir, CPU)


def test_backend_fills_every_field(backend):
    assert backend.name == "acr" and backend.model == "ACR HRNet-W32 + MANO"
    assert backend.checkpoint.startswith("wild.pkl:") and len(backend.checkpoint) == len("wild.pkl:") + 12
    assert backend.faces(LEFT).shape == (1538, 3) and backend.faces(RIGHT).shape == (1538, 3)
    k = CameraIntrinsics(600.0, 600.0, 320.0, 240.0)
    frames = backend.reconstruct([smooth_image(480, 640, 7), smooth_image(360, 200, 8)], [k, None],
                                 [1.0, 1.0], ["cam0", "cam1"])
    assert len(frames) == 2 and all(isinstance(f, FrameResult) for f in frames)
    assert [f.default_intrinsics for f in frames] == [False, True]
    assert [f.intrinsics for f in frames] == [k, default_intrinsics(200, 360)]  # the K that placed the hands
    for f, lb, intr in zip(frames, [letterbox(480, 640), letterbox(360, 200)], [k, None]):
        assert [h.side for h in f.hands] == [LEFT, RIGHT]
        for h in f.hands:
            assert isinstance(h, HandResult) and h.score > 0.35
            shapes = dict(joints=(21, 3), keypoints=(21, 2), wrist_rotation=(3, 3), global_orient=(3,),
                          finger_pose=(45,), shape=(10,), weak_camera=(3,), vertices=(778, 3),
                          joint_rotations=(21, 3, 3))
            for name, shape in shapes.items():
                value = getattr(h, name)
                assert value.shape == shape and value.dtype == np.float32 and np.all(np.isfinite(value)), name
            # camera frame = root-aligned + translation; the root (middle MCP) sits at the translation
            np.testing.assert_allclose(h.joints[9], ref.translation_np(h.weak_camera, lb, intr), rtol=1e-5, atol=1e-6)
            # keypoints: the official weak-perspective projection (pj2d_org) of the root-aligned joints
            s, tx, ty = h.weak_camera
            uv = s * (h.joints - h.joints[9])[:, :2] + [tx, ty]
            np.testing.assert_allclose(h.keypoints, (uv + 1) * lb.size / 2 - [lb.pad_left, lb.pad_top], atol=1e-3)
            r = h.wrist_rotation
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
            np.testing.assert_allclose(h.joint_rotations[0], r, atol=1e-5)
            np.testing.assert_allclose(cv2.Rodrigues(h.global_orient.astype(np.float64))[0], r, atol=1e-4)
    assert backend.reconstruct([], [], [], []) == []


def test_backend_threshold_and_errors(backend, acr_checkpoint, tmp_path):
    img = smooth_image(240, 320, 9)
    backend.detection_threshold = 1.5  # above the random peaks (1.0)
    try:
        assert backend.reconstruct([img], [None], [0.0], ["s"])[0].hands == []
    finally:
        backend.detection_threshold = 0.35
    with pytest.raises(ValueError):
        backend.reconstruct([img, img], [None], [0.0], ["s"])
    with pytest.raises(CheckpointError, match="nowhere.pkl"):
        ACRBackend(tmp_path / "nowhere.pkl", tmp_path, EngineOptions(device="cpu"))
    with pytest.raises(ManoFileError, match="MANO_LEFT.pkl"):
        ACRBackend(acr_checkpoint, tmp_path, EngineOptions(device="cpu"))
    with pytest.raises(ValueError):
        EngineOptions(device="cpu", precision="fp8")


def test_backend_smoothing_is_per_stream_and_resettable(acr_checkpoint, mano_dir, backend):
    smooth = ACRBackend(acr_checkpoint, mano_dir, CPU, smoothing=SmoothingConfig())
    a, b = smooth_image(240, 320, 10), smooth_image(240, 320, 11)
    raw_a, raw_b = backend.reconstruct([a, b], [None, None], [0.0, 0.0], ["x", "y"])
    first = smooth.reconstruct([a], [None], [0.0], ["s"])[0]
    for h, r in zip(first.hands, raw_a.hands):  # the first sample passes through
        np.testing.assert_allclose(h.finger_pose, r.finger_pose, atol=1e-5)
    second = smooth.reconstruct([b], [None], [1 / 30], ["s"])[0]
    for h, ra, rb in zip(second.hands, raw_a.hands, raw_b.hands):
        assert not np.allclose(h.finger_pose, rb.finger_pose, atol=1e-4)   # pulled towards frame a
        assert np.all(np.isfinite(h.vertices))
        np.testing.assert_allclose(h.weak_camera, rb.weak_camera, atol=1e-6)  # the camera is not filtered
    other = smooth.reconstruct([b], [None], [1 / 30], ["t"])[0]           # a new stream starts fresh
    for h, rb in zip(other.hands, raw_b.hands):
        np.testing.assert_allclose(h.finger_pose, rb.finger_pose, atol=1e-5)
    smooth.reset()
    again = smooth.reconstruct([b], [None], [2 / 30], ["s"])[0]
    for h, rb in zip(again.hands, raw_b.hands):
        np.testing.assert_allclose(h.finger_pose, rb.finger_pose, atol=1e-5)
    smooth.set_smoothing(None)                                            # the node's runtime switch
    assert smooth.smoother is None
    off = smooth.reconstruct([a], [None], [3 / 30], ["s"])[0]
    for h, r in zip(off.hands, raw_a.hands):
        np.testing.assert_allclose(h.finger_pose, r.finger_pose, atol=1e-5)
    smooth.set_smoothing(SmoothingConfig(pose_min_cutoff=1.0))
    assert smooth.smoother.config.pose_min_cutoff == 1.0
    smooth.close()  # drops the model and the filters
    assert smooth.pipeline is None and smooth.smoother is None


def test_compile_failures_fall_back_to_eager(mano, both, monkeypatch):
    def broken_compile(model, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    net, _ = both
    monkeypatch.setattr(torch, "compile", broken_compile)
    pipe = ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32", compile=True))
    img = smooth_image(120, 160, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr, _ = fast(pipe, [img], REDUCED)
    assert any("torch.compile failed" in str(w.message) for w in caught)
    assert arr.detected[0].tolist() == [True, True]

    def refusing_compile(model, **kwargs):
        raise RuntimeError("unsupported platform")

    monkeypatch.setattr(torch, "compile", refusing_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        pipe = ACRPipeline(net, mano, EngineOptions(device="cpu", precision="fp32", compile=True))
    assert fast(pipe, [img], REDUCED)[0].detected[0].tolist() == [True, True]


def test_whole_device_stage_needs_no_host_synchronisation(mano, both):
    """network + decode + MANO + projection + translation on the meta device: no value is read."""
    pipe = ACRPipeline(both[0], mano, CPU)
    pipe.fast.to("meta")
    pipe.mano_layer.to("meta")
    pipe.device = torch.device("meta")
    res = pipe.run(torch.empty(2, 3, 512, 512, device="meta"), torch.empty(2, 3, device="meta"),
                   torch.empty(2, 4, device="meta"))
    assert res.vertices.shape == (2, 2, 778, 3) and res.translation.shape == (2, 2, 3)


def test_cuda_graphs_are_for_cuda_only(mano):
    net = random_acr_network(0, "both")
    pipe = ACRPipeline(net, mano, CPU)
    assert not pipe.cuda_graphs  # "auto": on a CUDA device only
    dropped = weakref.ref(pipe)
    del pipe
    assert dropped() is None  # no reference cycle keeps a pipeline (and its GPU memory) until a gc pass
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device, got device 'cpu'"):
        ACRPipeline(net, mano, EngineOptions(device="cpu", cuda_graphs=True))


def assert_rows_close(a: HandRows, b: HandRows, atol: float = 1e-4) -> None:
    for field in dataclasses.fields(HandRows):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, atol=atol, err_msg=field.name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=field.name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_pipeline_half_precision_and_cuda_graphs(mano):
    both_net = random_acr_network(0, "both")
    imgs = [smooth_image(480, 640, 13), smooth_image(1080, 1920, 14)]
    with fp32_without_tf32():
        fp32, _ = ACRPipeline(both_net, mano, EngineOptions(device="cuda", precision="fp32"))(imgs)
    cpu, _ = ACRPipeline(both_net, mano, EngineOptions(device="cpu", precision="fp32", preprocess="device"))(imgs)
    np.testing.assert_allclose(fp32.keypoints, cpu.keypoints, atol=0.5)
    # Half precision on this random model (emulated on the CPU: fp16 ~11 px at 1080p, bf16 ~60 px):
    # structure, dtypes and detection, not accuracy.
    for precision, px in (("fp16", 30.0), ("bf16", 200.0)):
        half, _ = ACRPipeline(both_net, mano, EngineOptions(device="cuda", precision=precision))(imgs)
        assert np.array_equal(half.detected, fp32.detected)
        assert all(np.all(np.isfinite(v)) for v in vars(half).values() if v.dtype.kind == "f")
        np.testing.assert_allclose(half.keypoints, fp32.keypoints, atol=px)
    graphs = ACRPipeline(both_net, mano, EngineOptions(device="cuda", precision="fp16"))
    eager = ACRPipeline(both_net, mano, EngineOptions(device="cuda", precision="fp16", cuda_graphs=False))
    assert graphs.cuda_graphs and not eager.cuda_graphs  # "auto" is on with CUDA
    b, _ = eager(imgs)
    for _ in range(2):  # the capture, then a replay
        a, _ = graphs(imgs)
        assert_rows_close(a, b)
    # A result outlives the next replay; another batch shape gets graphs of its own.
    first, _ = graphs(imgs[:1])
    graphs(imgs[1:])
    np.testing.assert_array_equal(graphs(imgs[:1])[0].keypoints, first.keypoints)
    # With smoothing, the smoother runs between the decoding's graph and MANO's.
    smoothed = [pipe(imgs, None, HandSmoother(SmoothingConfig()), ["a", "b"], [0.0, 0.0])[0]
                for pipe in (graphs, eager)]
    assert_rows_close(*smoothed)
    captured = len(graphs._network.graphs.graphs)
    graphs.detection_threshold = eager.detection_threshold = 5.0
    assert not graphs(imgs)[0].detected.any() and not eager(imgs)[0].detected.any()
    assert len(graphs._network.graphs.graphs) == captured  # the settings are graph inputs: nothing recaptured
    dropped = weakref.ref(graphs)
    del graphs
    assert dropped() is None  # no reference cycle keeps the graphs' GPU memory until a gc pass


def test_benchmark_runs_and_prints_a_table():
    """The documented command, as a user runs it (benchmarks/engine.py)."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "engine.py"), "--device", "cpu", "--batch", "1",
                             "--sizes", "64x48", "--iterations", "1", "--warmup", "0", "--baseline-iterations", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "RANDOM" in out and "SYNTHETIC MANO" in out
    assert "| cpu | fp32 | 1 | 64x48 | eager |" in out and "baseline (dense eager)" in out
