"""The offline CLI (acr_offline) and its media iteration, on the bundled samples.

MediaPipe runs the real embedded model; ACR (when acr_ros.acr.pipeline exists) runs on the
synthetic fixtures of conftest.py, random weights: only the structure of its outputs is checked.
"""
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from acr_ros import offline, offline_unit
from acr_ros.media import FolderSource, VideoSource, WebcamSource, open_media

from acr_ros.media import SAMPLES_DIR as MEDIA
from support.video import decoded_frames

pytestmark = pytest.mark.slow(seconds=14)  # ACR on the CPU: about 12 s of network runs

CLIP = MEDIA / "magic_clip.mp4"

PER_HAND = {"hand_frame": (), "side": (), "score": (), "joints": (21, 3), "keypoints": (21, 2), "box": (4,),
            "wrist_position": (3,), "wrist_rotation": (3, 3), "wrist_quaternion": (4,), "global_orient": (3,),
            "finger_pose": (45,), "shape": (10,), "weak_camera": (3,), "vertices": (778, 3),
            "joint_rotations": (21, 3, 3), "depth_source": (), "depth_residual": (), "depth_samples": ()}
PER_FRAME = {"frame_name": (), "frame_timestamp": (), "frame_size": (2,), "default_intrinsics": (),
             "intrinsics": (4,)}


def load(path):
    with np.load(path) as data:  # no pickle needed
        return {k: data[k] for k in data.files}


def check_results(path, frames, backend):
    r = load(path)
    assert set(r) == set(PER_HAND) | set(PER_FRAME) | {"backend", "model", "checkpoint"}
    assert str(r["backend"]) == backend
    for key, shape in PER_FRAME.items():
        assert r[key].shape == (frames,) + shape, key
    n = len(r["hand_frame"])
    for key, shape in PER_HAND.items():
        assert r[key].shape == (n,) + shape, key
    if n:
        assert set(r["side"]) <= {"left", "right"}
        assert np.isfinite(r["joints"]).all() and (r["joints"][..., 2] > 0).all()
        assert np.allclose(r["wrist_position"], r["joints"][:, 0])
        assert np.allclose(np.linalg.norm(r["wrist_quaternion"], axis=1), 1, atol=1e-5)
        assert (r["hand_frame"] >= 0).all() and (r["hand_frame"] < frames).all()
        # Each quaternion is its hand's rotation.
        x, y, z, w = r["wrist_quaternion"].astype(float).T
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]).transpose(2, 0, 1)
        assert np.allclose(rot, r["wrist_rotation"], atol=1e-4)
    assert np.isfinite(r["intrinsics"]).all()  # the intrinsics that placed the hands, for every backend
    return r


CALIBRATION_YAML = """image_width: 1920
image_height: 1080
camera_name: test_camera
camera_matrix:
  rows: 3
  cols: 3
  data: [1400.0, 0.0, 960.0, 0.0, 1400.0, 540.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
"""


def run_cli(*args):
    return offline.main([*map(str, args), "-q"])


# ---- MediaPipe ----------------------------------------------------------------------------------
def test_image(tmp_path):
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", tmp_path, "--backend", "mediapipe") == 0
    overlay = cv2.imread(str(tmp_path / "magic_output.jpg"))
    source = cv2.imread(str(MEDIA / "magic.jpg"))
    assert overlay.shape == source.shape
    assert np.mean(np.abs(overlay.astype(int) - source.astype(int)).max(axis=2) > 40) > 0.002
    r = check_results(tmp_path / "magic_results.npz", 1, "mediapipe")
    assert list(r["side"]) == ["left"]
    assert np.isnan(r["vertices"]).all() and np.isnan(r["finger_pose"]).all()
    assert bool(r["default_intrinsics"][0]) and r["frame_name"][0] == "magic"


def test_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("magic.jpg", "two_hands.jpg", "portrait.jpg"):
        shutil.copy(MEDIA / name, folder / name)
    out = tmp_path / "out"
    assert run_cli("--inputs", folder, "-o", out, "--intrinsics", 700, 700, 480, 270) == 0
    for name in ("magic", "two_hands", "portrait"):
        assert (out / "photos" / f"{name}_output.jpg").is_file()
    assert decoded_frames(out / "photos_output.mp4") == 3
    r = check_results(out / "photos_results.npz", 3, "mediapipe")
    assert list(r["frame_name"]) == ["magic", "portrait", "two_hands"]
    assert not r["default_intrinsics"].any() and np.allclose(r["intrinsics"], [700, 700, 480, 270])
    # Photos are independent: two hands in two_hands.jpg, one in each other photo.
    assert np.bincount(r["hand_frame"], minlength=3).tolist() == [1, 1, 2]


def test_clip_with_smoothing(tmp_path):
    assert run_cli("--inputs", CLIP, "-o", tmp_path, "-t") == 0
    assert decoded_frames(tmp_path / "magic_clip_output.mp4") == 30
    r = check_results(tmp_path / "magic_clip_results.npz", 30, "mediapipe")
    assert np.all(np.diff(r["frame_timestamp"]) > 0)
    assert r["frame_timestamp"][1] == pytest.approx(1 / 12, abs=1e-3)
    sides = {int(f): s for f, s in zip(r["hand_frame"], r["side"])}
    # The clip pans over magic.jpg (a left hand), then over its mirror image (a right hand).
    assert sum(sides.get(i) == "left" for i in range(15)) >= 13
    assert sum(sides.get(i) == "right" for i in range(15, 30)) >= 13


def test_no_render_and_max_frames(tmp_path):
    assert run_cli("--inputs", CLIP, "-o", tmp_path, "--no-render", "--max-frames", "4") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["magic_clip_results.npz"]
    check_results(tmp_path / "magic_clip_results.npz", 4, "mediapipe")


def test_bad_inputs(tmp_path, capsys):
    assert run_cli("--inputs", tmp_path / "missing.jpg", "-o", tmp_path) == 2
    out, err = capsys.readouterr()
    assert "missing.jpg: no such file or folder" in err and "backend:" not in out  # before any model loads
    assert run_cli("--backend", "acr", "--checkpoint", tmp_path / "wild.pkl", "-o", tmp_path) == 2
    err = capsys.readouterr().err
    assert "wild.pkl" in err and "Google Drive" in err


def refusal(capsys):
    """(stdout, the one line on stderr) of a run refused before any model loaded."""
    out, err = capsys.readouterr()
    assert "backend:" not in out and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return out, err.strip()


@pytest.mark.parametrize("intrinsics", [(0, 0, 0, 0), ("nan", 500, 320, 240), (-500, -500, 320, 240),
                                        (500, "inf", 320, 240)])
def test_intrinsics_that_are_no_camera_are_refused_before_any_model_loads(tmp_path, capsys, intrinsics):
    # Before: NaN joints or hands behind the camera, exit code 0 and not a word.
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", tmp_path / "out", "--intrinsics", *intrinsics) == 2
    _, err = refusal(capsys)
    assert err.startswith(f"acr_offline: --intrinsics {' '.join(map(str, intrinsics))}: not a camera"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, message", [
    (["--device", "banana"], "device must be auto, cpu, cuda or cuda:N (N: the GPU's index), got 'banana'"),
    (["--fps", "0"], "--fps 0: must be a positive number"),
    (["--fps", "-5"], "--fps -5: must be a positive number"),
    (["--batch-size", "0"], "--batch-size 0: must be a positive number"),
    (["--max-frames", "-1"], "--max-frames -1: must be a positive number"),
    (["--depth-scale", "nan"], "--depth-scale nan: must be a positive number"),
    (["--threshold", "nan"], "--threshold nan: must be a finite number"),
    (["--threads", "0"], "--threads 0: must be a positive number"),
    (["--skip-existing", "--workers", "2"], "--workers, --skip-existing: only with --ray"),
    (["--ray", "--gpus-per-worker", "-1"], "--gpus-per-worker -1: must be 0 (CPU workers) or more"),
])
def test_bad_options_are_refused_in_one_line_before_any_model_loads(tmp_path, capsys, option, message):
    assert run_cli("--inputs", MEDIA, "-o", tmp_path / "out", *option) == 2  # no intrinsics warning either
    assert refusal(capsys)[1] == f"acr_offline: {message}"


def test_a_depth_folder_without_depth_images_is_refused_before_any_model_loads(tmp_path, capsys):
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", tmp_path / "out", "--depth", tmp_path) == 2
    # It raised ValueError once the model had loaded.
    assert refusal(capsys)[1] == f"acr_offline: --depth {tmp_path}: no depth images (.png, .tif, .tiff, .exr)"


@pytest.mark.parametrize("where", ["below_a_file", "a_file", "proc"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_model_loads(tmp_path, capsys, where):
    """Tests run as root, whom permissions do not stop: a path below a file, a file, and a folder of
    /proc (root cannot create files there) stop everyone."""
    (tmp_path / "file").write_text("")
    output = {"below_a_file": tmp_path / "file" / "out", "a_file": tmp_path / "file",
              "proc": Path("/proc/self")}[where]
    if where == "proc" and not output.is_dir():
        pytest.skip("no /proc")
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", output) == 2
    _, err = refusal(capsys)
    assert err.startswith(f"acr_offline: -o {output}: cannot write there (") and "choose another" in err, err


def test_an_overlay_that_cannot_be_written_is_reported_and_not_listed(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "magic_output.jpg").mkdir(parents=True)  # cv2.imwrite returns False on a folder
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", out, "--intrinsics", 700, 700, 480, 270) == 1
    stdout, err = capsys.readouterr()
    assert err.strip() == f"acr_offline: {out / 'magic_output.jpg'}: cannot write the overlay (a folder in the way, " \
                          "no space or no permission)"
    assert "magic_output.jpg" not in stdout and f"  {out / 'magic_results.npz'}" in stdout


def test_exit_code_2_when_no_input_could_run(tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "camera.yaml").write_text(CALIBRATION_YAML.replace("image_height: 1080", "image_height: 1920"))
    assert run_cli("--inputs", tmp_path / "empty.jpg", tmp_path / "no_images", tmp_path / "missing.jpg",
                   "-o", tmp_path / "out", "--no-render") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "acr_offline: no input could run" and "Traceback" not in err
    # A calibration for another aspect ratio raised CalibrationError with a traceback.
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", tmp_path / "out", "--no-render",
                   "--calibration", tmp_path / "camera.yaml") == 2
    err = capsys.readouterr().err
    assert f"skipping {MEDIA / 'magic.jpg'}: {tmp_path / 'camera.yaml'} is for 1920x1920 images, not 960x540" in err
    assert "Traceback" not in err
    # A file where the folder's overlays go raised FileExistsError.
    (tmp_path / "photos").mkdir()
    shutil.copy(MEDIA / "magic.jpg", tmp_path / "photos")
    (tmp_path / "out" / "photos").write_text("")
    assert run_cli("--inputs", tmp_path / "photos", "-o", tmp_path / "out", "--intrinsics", 700, 700, 480, 270) == 2
    err = capsys.readouterr().err
    assert f"acr_offline: skipping {tmp_path / 'photos'}: cannot write {tmp_path / 'out' / 'photos'}: File exists" \
        in err and "Traceback" not in err
    # Code 1 once one input ran.
    assert run_cli("--inputs", tmp_path / "empty.jpg", MEDIA / "magic.jpg", "-o", tmp_path / "out",
                   "--no-render", "--intrinsics", 700, 700, 480, 270) == 1


@pytest.mark.parametrize("options", [["--checkpoint", "nowhere.pkl"], ["--mano-dir", "mano"]])
def test_auto_with_a_wrong_model_path_stops_naming_the_option(tmp_path, capsys, options):
    options = [options[0], tmp_path / options[1]]
    assert run_cli("--inputs", MEDIA / "magic.jpg", "-o", tmp_path, *options) == 2
    err = capsys.readouterr().err
    assert "set --checkpoint to its path" in err and "parameter" not in err and "Traceback" not in err
    assert not (tmp_path / "magic_results.npz").exists()


def test_unreadable_images_are_reported_and_skipped(tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "noise.jpg").write_bytes(noise)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(MEDIA / "magic.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(noise)
    shutil.copy(MEDIA / "magic_flip.jpg", folder / "c.jpg")
    out = tmp_path / "out"
    code = run_cli("--inputs", tmp_path / "empty.jpg", tmp_path / "noise.jpg", folder, "-o", out,
                   "--backend", "mediapipe", "--no-render")
    stdout, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    for name in ("empty.jpg", "noise.jpg", "b.jpg"):
        assert err.count(f"{name}: cannot read it as an image") == 1, err
    assert "photos: 2 frame(s), 1 unreadable" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["photos_results.npz"]  # nothing for unreadable images
    check_results(out / "photos_results.npz", 2, "mediapipe")


def test_calibration_file_places_the_hands_and_no_intrinsics_warns_once(tmp_path, capsys):
    (tmp_path / "camera.yaml").write_text(CALIBRATION_YAML)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(MEDIA / "magic.jpg", folder / "a.jpg")
    shutil.copy(MEDIA / "magic_flip.jpg", folder / "b.jpg")
    assert run_cli("--inputs", folder, "-o", tmp_path / "calibrated", "--no-render",
                   "--calibration", tmp_path / "camera.yaml") == 0
    assert "no camera intrinsics" not in capsys.readouterr().err
    r = np.load(tmp_path / "calibrated" / "photos_results.npz")
    width, height = r["frame_size"][0]
    assert not r["default_intrinsics"].any()
    np.testing.assert_allclose(r["intrinsics"][0], np.array([1400.0, 1400.0, 960.0, 540.0]) * width / 1920)
    assert run_cli("--inputs", folder, "-o", tmp_path / "default", "--no-render") == 0
    assert capsys.readouterr().err.count("no camera intrinsics") == 1


def _run_with_and_without_depth(tmp_path, depth_image, *model):
    """Results of magic.jpg (as a folder of one frame) placed by the model, then with depth_image."""
    photos, depth = tmp_path / "photos", tmp_path / "depth"
    photos.mkdir()
    depth.mkdir()
    shutil.copy(MEDIA / "magic.jpg", photos / "frame_0001.jpg")
    camera = ["--no-render", "--intrinsics", 700, 700, 480, 270, *model]
    assert run_cli("--inputs", photos, "-o", tmp_path / "model", *camera) == 0
    model_results = np.load(tmp_path / "model" / "photos_results.npz")
    cv2.imwrite(str(depth / "frame_0001.png"), depth_image(model_results))
    assert run_cli("--inputs", photos, "-o", tmp_path / "fused", "--depth", depth, *camera) == 0
    fused = np.load(tmp_path / "fused" / "photos_results.npz")
    assert list(model_results["depth_source"]) == ["model"] * len(model_results["side"])
    assert list(fused["side"]) == list(model_results["side"])
    # Hands in the image are placed by the depth; one outside it (random weights can put one there)
    # has no depth to use and keeps the model's distance.
    seen = ((fused["keypoints"] >= 0) & (fused["keypoints"] < [960, 540])).all(axis=2).any(axis=1)
    assert seen.any()
    assert list(fused["depth_source"]) == ["depth" if s else "model" for s in seen]
    assert np.all(fused["depth_samples"][seen] > 0)
    # The hands moved along the camera rays: their joints project where the model's did.
    project = lambda joints: joints[..., :2] / joints[..., 2:]  # noqa: E731
    np.testing.assert_allclose(project(fused["joints"]), project(model_results["joints"]), atol=1e-5)
    np.testing.assert_array_equal(fused["keypoints"], model_results["keypoints"])
    return model_results, fused, seen


def test_a_flat_depth_image_puts_the_wrist_at_its_distance(tmp_path):
    """A photographed hand (MediaPipe) and a depth image of a flat surface 0.6 m away: the fused
    wrist is at 0.6 m within the hand's thickness, whatever the monocular guess was."""
    _, fused, seen = _run_with_and_without_depth(tmp_path, lambda _: np.full((540, 960), 600, np.uint16),
                                                 "--backend", "mediapipe")
    assert seen.all()
    assert np.all(np.abs(fused["wrist_position"][:, 2] - 0.6) < 0.03), fused["wrist_position"]
    assert np.all(np.isfinite(fused["depth_residual"]))


def test_acr_hands_land_on_the_depth_of_their_own_surface(tmp_path, acr_checkpoint, mano_dir):
    """ACR (random weights): a depth image of the model's own meshes at 80 % of their distance, in
    front of a wall: the fused hands are the model's scaled by 0.8."""
    from acr_ros.acr.hands import CameraIntrinsics
    from support.depth_scenes import splat

    def depth_of_meshes(results):
        metres = np.full((540, 960), float(results["vertices"][..., 2].max()) + 0.5)
        for vertices in results["vertices"]:
            splat(metres, vertices.astype(np.float64) * 0.8, camera=CameraIntrinsics(700, 700, 480, 270))
        return np.rint(metres * 1000).astype(np.uint16)

    model_results, fused, seen = _run_with_and_without_depth(tmp_path, depth_of_meshes, "--checkpoint", acr_checkpoint,
                                                             "--mano-dir", mano_dir, "--precision", "fp32")
    np.testing.assert_allclose(fused["wrist_position"][seen], 0.8 * model_results["wrist_position"][seen], rtol=0.01)
    assert np.all(fused["depth_residual"][seen] < 0.005)


def test_default_inputs_are_the_samples():
    inputs = offline.default_inputs()
    assert inputs[0] == str(MEDIA) and str(CLIP) in inputs


# ---- media iteration ------------------------------------------------------------------------------
def test_folder_order_and_video_timestamps(tmp_path):
    for name in ("10.png", "2.png", "1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    img = np.zeros((4, 6, 3), np.uint8)
    for name in ("10.png", "2.png", "1.png"):
        cv2.imwrite(str(tmp_path / name), img)
    source = open_media(str(tmp_path), folder_fps=10)
    assert isinstance(source, FolderSource)
    frames = list(source)
    assert [f.name for f in frames] == ["1", "2", "10"] and [f.timestamp for f in frames] == [0, 0.1, 0.2]

    video = open_media(str(CLIP))
    assert isinstance(video, VideoSource) and video.fps == pytest.approx(12) and video.length == 30
    stamps = [f.timestamp for f in video]
    assert len(stamps) == 30 and stamps[:3] == pytest.approx([0, 1 / 12, 2 / 12])


class FakeCamera:
    """A VideoCapture stand-in: frames numbered in pixel (0, 0), produced faster than consumed."""

    def __init__(self, frames=200):
        self.count, self.frames, self.released = 0, frames, False
        self.lock = threading.Lock()

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        with self.lock:
            if self.count >= self.frames or self.released:
                return False, None
            self.count += 1
            img = np.zeros((8, 8, 3), np.uint8)
            img[0, 0, 0] = self.count % 256
            img[0, 0, 1] = self.count // 256
        threading.Event().wait(0.001)
        return True, img

    def release(self):
        self.released = True


def test_webcam_never_repeats_a_frame():
    camera = FakeCamera()
    source = WebcamSource(0, max_frames=15, capture=camera)
    seen = []
    for frame in source:
        seen.append((frame.index, int(frame.image[0, 0, 0]) + 256 * int(frame.image[0, 0, 1])))
        threading.Event().wait(0.005)  # a slow consumer: frames are dropped, never repeated
    assert len(seen) == 15
    indices = [i for i, _ in seen]
    assert indices == sorted(set(indices))                       # strictly increasing
    assert all(pixel == i + 1 for i, pixel in seen)              # the frame is the one numbered
    assert camera.released


def test_webcam_stops_when_the_camera_fails():
    source = WebcamSource(0, capture=FakeCamera(frames=5), timeout=2.0)
    frames = list(source)
    assert 1 <= len(frames) <= 5


# ---- ACR (synthetic weights: structure only) ---------------------------------------------------------
def test_acr_image_folder_and_clip(tmp_path, acr_checkpoint, mano_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(MEDIA / "two_hands.jpg", folder / "two_hands.jpg")
    out = tmp_path / "out"
    # One run (the network loads once): an image, a folder and the clip (2 frames), smoothed.
    assert run_cli("--inputs", MEDIA / "magic.jpg", folder, CLIP, "--max-frames", 2, "-t",
                   "--backend", "acr", "--checkpoint", acr_checkpoint, "--mano-dir", mano_dir,
                   "--device", "cpu", "--precision", "fp32", "-o", out) == 0
    assert (out / "magic_output.jpg").is_file()
    assert (out / "photos" / "two_hands_output.jpg").is_file()
    assert decoded_frames(out / "photos_output.mp4") == 1
    assert decoded_frames(out / "magic_clip_output.mp4") == 2
    for name, frames in (("magic", 1), ("photos", 1), ("magic_clip", 2)):
        r = check_results(out / f"{name}_results.npz", frames, "acr")
        assert len(r["side"])  # the synthetic weights fire on every image (detect="both")
        assert np.isfinite(r["vertices"]).all() and np.isfinite(r["finger_pose"]).all()
        assert np.isfinite(r["shape"]).all() and np.isfinite(r["global_orient"]).all()
        assert np.isfinite(r["weak_camera"]).all()


def test_mediapipe_start_up_chatter_stays_out_of_the_log(tmp_path):
    """TensorFlow Lite and absl print to the process's stderr whenever a MediaPipe graph starts (per
    input here): none of it reaches the user (one capture spans a graph's construction and its first
    run, when its threads print), and what acr_offline itself says does."""
    result = subprocess.run([sys.executable, "-m", "acr_ros.offline", "--backend", "mediapipe", "-q", "--no-render",
                             "--inputs", str(MEDIA / "magic.jpg"), str(MEDIA / "magic_flip.jpg"), str(CLIP),
                             "--max-frames", "2", "-o", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for chatter in ("XNNPACK", "absl::InitializeLog", "inference_feedback_manager"):
        assert chatter not in result.stderr, result.stderr
    assert "no camera intrinsics" in result.stderr


@pytest.mark.parametrize("text, said", [
    ("x\n", "not a ROS 2 parameters file"),
    ("/**:\n  ros__parameters:\n    frame_prefx: h\n", "unknown parameter 'frame_prefx'"),
    ("/**:\n  ros__parameters:\n    marker_lifetime: -1.0\n", "marker_lifetime is -1.0"),
    ("/**:\n  ros__parameters:\n    tf_joints: 3\n", "expected a bool"),
])
def test_a_params_file_that_is_no_node_parameters_file_is_refused_in_one_line(tmp_path, capsys, text, said):
    params = tmp_path / "hands.yaml"
    params.write_text(text)
    assert offline.main(["--inputs", str(MEDIA / "magic.jpg"), "-o", str(tmp_path / "out"), "--no-render",
                         "--params-file", str(params)]) == 2
    err = capsys.readouterr().err
    assert said in err and str(params) in err and len(err.strip().splitlines()) == 1, err


def test_frames_the_backend_fails_on_are_a_problem_of_the_run(tmp_path):
    from support.fake_backend import FakeBackend

    backend = FakeBackend()
    backend.reconstruct = lambda **batch: (_ for _ in ()).throw(ValueError("image 1x40000 is more elongated"))
    summary = offline_unit.process_input(backend, open_media(MEDIA / "magic.jpg"), "magic.jpg", tmp_path, False,
                                    lambda width, height: None)
    assert summary["frames"] == 0
    assert summary["problems"] == ["magic.jpg: 1 frame(s) not processed: ValueError: image 1x40000 is more elongated"]
