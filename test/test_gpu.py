"""What the ACR backend promises on CUDA beyond the engine's own GPU tests: fp16 by default where it
stays close to fp32, fp32 without TF32, the batch-1 graphs captured while loading, and out-of-memory
as a typed error after which a smaller batch still runs (what the node's retry in halves relies on).
Skipped without CUDA; scripts/gpu_check.sh runs them."""
import numpy as np
import pytest
import torch

from acr_ros.acr.hands import LEFT, RIGHT
from acr_ros.acr.options import EngineOptions
from acr_ros.backends.acr import ACRBackend
from acr_ros.backends.base import BackendOutOfMemoryError

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


def test_precision_auto_is_measured_and_fp32_switches_tf32_off(acr_checkpoint, mano_dir):
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        auto = ACRBackend(acr_checkpoint, mano_dir, EngineOptions(device="cuda"))
        # fp16 moves these random weights by about 9 px (gpu_check's fidelity): auto measures it, keeps fp32.
        assert auto.precision == "fp32" and auto.device == f"cuda:{torch.cuda.current_device()}"
        assert auto.precision_reason.startswith("auto: fp16 would move the results beyond 1 px / 1 mm on 2 calibration")
        assert flags == (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                         torch.backends.cuda.matmul.allow_tf32)  # measuring left the process as it was
        auto.close()
        fp32 = ACRBackend(acr_checkpoint, mano_dir, EngineOptions(device="cuda", precision="fp32"), tune_process=True)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.benchmark
        fp32.close()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_out_of_memory_is_a_typed_error_and_a_single_frame_still_runs(acr_checkpoint, mano_dir):
    backend = ACRBackend(acr_checkpoint, mano_dir, EngineOptions(device="cuda", precision="fp16"))
    # The fused graph of batch 1 at the warm-up frame's size (pixels in the graph), captured while loading.
    assert len(backend.pipeline._pixels_network.graphs.graphs) == 1
    device = torch.device(backend.device)
    torch.cuda.reset_peak_memory_stats(device)
    one = backend.reconstruct([frame(0)], [None], [0.0], ["cam"])  # weights, workspaces and caches in place
    torch.cuda.synchronize(device)
    single_peak = torch.cuda.max_memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    # Room for one frame and half again: sixteen 1080p frames cannot fit.
    torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * single_peak / total), device)
    try:
        with pytest.raises(BackendOutOfMemoryError):
            backend.reconstruct([frame(i) for i in range(16)], [None] * 16, [0.0] * 16, ["cam"] * 16)
        again = backend.reconstruct([frame(0)], [None], [0.0], ["cam"])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        backend.close()
    assert [h.side for h in again[0].hands] == [h.side for h in one[0].hands] == [LEFT, RIGHT]
    for a, b in zip(again[0].hands, one[0].hands):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
