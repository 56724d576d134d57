"""Frames lost before the node sees them (issue 11): a reliable camera at 30 Hz delivers at least
98 % of its frames to the node's image callback over DDS, while the node runs its real backend."""
from support.frame_delivery import deliver


def test_a_reliable_camera_at_30_hz_delivers_its_frames(tmp_path):
    for row in deliver(tmp_path, "reliable", "auto", seconds=3.0):
        assert row["received"] >= 0.98 * row["published"], row
