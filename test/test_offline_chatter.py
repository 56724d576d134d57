"""acr_offline on a recording with the MediaPipe backend: TensorFlow Lite's and absl's start-up
chatter stays off the user's terminal, as it does for images and videos."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support.bags import clip_frames, write_bag
from support.signals import REPO

pytestmark = pytest.mark.slow(seconds=5)

CHATTER = re.compile(r"TensorFlow Lite|absl::InitializeLog|^[IWEF]\d{4} ", re.MULTILINE)

# acr_offline with the stderr capture of acr_ros.backends.mediapipe starting half a second late (its
# temporary file is slow to come): a MediaPipe graph loads its models, and prints, on its own threads
# soon after its construction, and a gap between capturing the construction and the first run let
# that through whenever the interpreter was busy elsewhere (as with a recording's reader and writer
# threads); here the gap is certain.
LATE_CAPTURE = """
import sys, tempfile, time
from acr_ros.offline import main
make = tempfile.TemporaryFile

def late(*args, **kwargs):
    time.sleep(0.5)
    return make(*args, **kwargs)

tempfile.TemporaryFile = late
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("program", ["acr_offline", "late capture"])
def test_a_recording_prints_no_start_up_chatter(tmp_path, program):
    write_bag(tmp_path / "robot", clip_frames(4), "mcap")
    start = ["-m", "acr_ros.offline"] if program == "acr_offline" else ["-c", LATE_CAPTURE]
    result = subprocess.run([sys.executable, *start, "--backend", "mediapipe", "-q", "--no-render",
                             "--inputs", str(tmp_path / "robot"), "-o", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "robot: 4 frame(s)" in result.stdout, result.stdout
    assert CHATTER.findall(result.stderr) == [], result.stderr
