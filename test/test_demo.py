"""The README's main command: the real ROS 2 graph (source node -> hands node -> recorder) on the
bundled samples, with the embedded backend finding the real hands with the right handedness."""
import json
import os
import subprocess
import sys

import cv2
import pytest

from acr_ros.media import SAMPLES_DIR

pytestmark = pytest.mark.slow(seconds=10)  # the whole graph of processes, then its signals


def test_demo_runs_the_graph_on_the_samples(tmp_path):
    output = tmp_path / "demo"
    # Still photos at 10 frames/s instead of the default 2: the same graph, about 3 s less waiting.
    result = subprocess.run([sys.executable, "-m", "acr_ros.demo", "-o", str(output), "--rate", "10"],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(output.resolve()) in result.stdout  # it says where the results are
    summary = json.loads((output / "summary.json").read_text())
    assert summary["backend"].startswith("mediapipe")
    sides = {name: [[hand["side"] for hand in frame["hands"]] for frame in data["frames"]]
             for name, data in summary["inputs"].items()}
    # magic.jpg shows a left hand (acr_ros/data/samples/README.md); its mirror image a right hand.
    assert sides["magic.jpg"] and all(frame == ["left"] for frame in sides["magic.jpg"])
    assert sides["magic_flip.jpg"] and all(frame == ["right"] for frame in sides["magic_flip.jpg"])
    assert all(sorted(frame) == ["left", "right"] for frame in sides["two_hands.jpg"])
    # The clip: most frames came through, as an mp4 of overlays.
    clip = summary["inputs"]["magic_clip.mp4"]
    assert len(clip["frames"]) >= 20
    video = cv2.VideoCapture(str(output / "magic_clip_output.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) >= 20 and video.read()[0]
    source_fps = cv2.VideoCapture(str(SAMPLES_DIR / "magic_clip.mp4")).get(cv2.CAP_PROP_FPS)
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(source_fps, abs=0.01)  # the clip's own rate (12)
    assert list(output.glob("magic_0000*.jpg"))
    for data in summary["inputs"].values():
        for frame in data["frames"]:
            assert frame["frame_id"] == "demo_camera_optical_frame"
            for hand in frame["hands"]:
                assert 0.1 < hand["wrist_m"][2] < 5.0  # metres in front of the camera
