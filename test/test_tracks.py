"""Hand tracks (acr_ros.tracks) over sequences of frames: hands appear, vanish, swap sides, reappear,
are relabelled by the one-per-side rule; gaps in time and several cameras. No ROS."""
import pytest

from acr_ros.tracks import HandTracker, Track

MS = 1_000_000  # nanoseconds
FRAME = 33 * MS
T0 = 1_700_000_000 * 1_000_000_000


def run(tracker: HandTracker, frames, stream="cam0", start=T0):
    """frames: the sides seen in each frame, at 30 Hz; returns each frame's TrackUpdate."""
    return [tracker.update(stream, start + i * FRAME, sides) for i, sides in enumerate(frames)]


def test_a_hand_seen_in_consecutive_frames_keeps_its_track_and_counts_frames():
    updates = run(HandTracker(timeout_s=1.0), [["left"], ["left"], ["left"]])
    assert [u.tracks["left"] for u in updates] == [Track(1, "left", T0, 1), Track(1, "left", T0, 2),
                                                   Track(1, "left", T0, 3)]
    assert all(u.ended == [] for u in updates)


def test_a_hand_that_vanishes_ends_its_track_and_comes_back_as_a_new_one():
    appear, seen, gone, back = run(HandTracker(timeout_s=1.0), [["left"], ["left"], [], ["left"]])
    assert gone.tracks == {}                                   # absent, not a zero hand
    assert gone.ended == [Track(1, "left", T0, 2)]
    assert back.tracks["left"] == Track(2, "left", T0 + 3 * FRAME, 1)
    assert back.ended == []


def test_both_hands_have_their_own_tracks():
    updates = run(HandTracker(timeout_s=1.0), [["left", "right"], ["right", "left"], ["right"]])
    first, second, third = updates
    assert (first.tracks["left"].id, first.tracks["right"].id) == (1, 2)
    assert second.tracks == {"left": Track(1, "left", T0, 2), "right": Track(2, "right", T0, 2)}
    assert third.tracks == {"right": Track(2, "right", T0, 3)}
    assert third.ended == [Track(1, "left", T0, 2)]


def test_a_hand_that_swaps_sides_ends_one_track_and_starts_the_other():
    """E.g. the left hand leaves as the right one enters within one frame: per side, not per person."""
    left, right = run(HandTracker(timeout_s=1.0), [["left"], ["right"]])
    assert right.tracks == {"right": Track(2, "right", T0 + FRAME, 1)}
    assert right.ended == [Track(1, "left", T0, 1)]


def test_the_track_follows_the_published_side_when_a_hand_is_relabelled():
    """Two hands labelled left: the one-per-side rule publishes the weaker as right. The tracker
    is given the published sides, so the relabelled hand continues the right track if there was
    one and starts it otherwise; the left track goes on."""
    tracker = HandTracker(timeout_s=1.0)
    run(tracker, [["left", "right"]])
    relabelled = tracker.update("cam0", T0 + FRAME, ["left", "right"])  # published sides after the rule
    assert relabelled.tracks == {"left": Track(1, "left", T0, 2), "right": Track(2, "right", T0, 2)}
    # One frame later the weaker detection is gone: its (right) track ends, the left one goes on.
    after = tracker.update("cam0", T0 + 2 * FRAME, ["left"])
    assert after.tracks == {"left": Track(1, "left", T0, 3)}
    assert after.ended == [Track(2, "right", T0, 2)]


def test_a_gap_longer_than_the_timeout_starts_new_tracks():
    tracker = HandTracker(timeout_s=0.5)
    run(tracker, [["left", "right"]])
    within = tracker.update("cam0", T0 + 500 * MS, ["left", "right"])
    assert within.tracks["left"].id == 1 and within.ended == []
    later = T0 + 500 * MS + 501 * MS                              # the camera stopped for 0.501 s
    assert [t.id for t in tracker.expire("cam0", later)] == [1, 2]  # told before inference
    assert tracker.expire("cam0", later) == []                    # and only once
    update = tracker.update("cam0", later, ["left"])
    assert update.tracks == {"left": Track(3, "left", later, 1)}
    assert update.ended == []                                     # already reported by expire


def test_update_alone_applies_the_timeout_too():
    tracker = HandTracker(timeout_s=0.5)
    run(tracker, [["left"]])
    update = tracker.update("cam0", T0 + 2_000 * MS, ["left"])
    assert update.tracks["left"] == Track(2, "left", T0 + 2_000 * MS, 1)
    assert update.ended == [Track(1, "left", T0, 1)]


def test_a_stamp_going_back_ends_the_tracks():
    """A recording played again from its start: what follows is not the same hand."""
    tracker = HandTracker(timeout_s=1.0)
    run(tracker, [["left"], ["left"]])
    update = tracker.update("cam0", T0, ["left"])
    assert update.tracks["left"].id == 2 and update.ended[0].id == 1


def test_the_same_stamp_again_continues_the_track():
    tracker = HandTracker(timeout_s=1.0)
    tracker.update("cam0", T0, ["left"])
    assert tracker.update("cam0", T0, ["left"]).tracks["left"] == Track(1, "left", T0, 2)


def test_cameras_are_tracked_separately_with_ids_unique_across_them():
    tracker = HandTracker(timeout_s=1.0)
    a = tracker.update("cam0", T0, ["left"])
    b = tracker.update("cam1", T0, ["left"])
    assert (a.tracks["left"].id, b.tracks["left"].id) == (1, 2)
    # cam1 losing its hand does not end cam0's track
    assert tracker.update("cam1", T0 + FRAME, []).ended == [Track(2, "left", T0, 1)]
    assert tracker.update("cam0", T0 + FRAME, ["left"]).tracks["left"] == Track(1, "left", T0, 2)


def test_clear_ends_everything_and_ids_keep_counting():
    tracker = HandTracker(timeout_s=1.0)
    run(tracker, [["left", "right"]])
    tracker.clear()
    update = tracker.update("cam0", T0 + FRAME, ["left"])
    assert update.tracks["left"] == Track(3, "left", T0 + FRAME, 1)
    assert update.ended == []


def test_the_timeout_can_change_between_frames():
    tracker = HandTracker(timeout_s=1.0)
    run(tracker, [["left"]])
    tracker.timeout_s = 0.1
    assert tracker.update("cam0", T0 + 200 * MS, ["left"]).tracks["left"].id == 2


@pytest.mark.parametrize("sides, expected", [(["left", "left"], "at most one hand per side"),
                                             (["top"], "hand side must be one of left, right")])
def test_bad_sides_are_refused_with_a_clear_message(sides, expected):
    with pytest.raises(ValueError, match=expected):
        HandTracker(timeout_s=1.0).update("cam0", T0, sides)
