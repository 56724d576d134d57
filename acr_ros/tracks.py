"""Hand tracks: which hand a consumer is looking at, per camera and side, over time. No ROS here.

The backends find at most one left and one right hand per image (Hands.msg), so a track is one
side of one camera (a stream) seen in consecutive frames:

- a side seen in a frame continues its track when it was also seen in the stream's previous
  frame, no more than ``timeout_s`` earlier (image stamps); otherwise it starts a new track with
  a new id (ids start at 1 and are never reused by a tracker);
- a side absent from a frame ends its track: a hand that is lost is absent, never zeroed, and a
  hand that comes back is a new track;
- a frame whose stamp is more than ``timeout_s`` after the stream's previous frame, or earlier
  than it (a recording restarted), ends every track of the stream first;
- the sides given are those that will be published, after the one-per-side rule: when that rule
  relabels a hand, its track is the one of the side it is published as.

"Frames" are the frames the caller processes and publishes; frames it drops never reach here.
One caller thread at a time (the node's inference worker, or a transition with the worker stopped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable

from acr_ros.acr.hands import SIDES


@dataclass(frozen=True)
class Track:
    id: int               # > 0, unique among the tracks of one tracker
    side: str             # LEFT or RIGHT
    first_seen_ns: int    # stamp of the track's first frame, nanoseconds
    frames: int           # consecutive frames the side has been seen, 1 in the first


@dataclass(frozen=True)
class TrackUpdate:
    tracks: dict[str, Track]   # side -> track, for the sides seen in this frame
    ended: list[Track]         # tracks this frame ended (side absent, gap, or time going back)


@dataclass
class _Stream:
    last_stamp_ns: int
    tracks: dict[str, Track]


class HandTracker:
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s   # settable between frames
        self._streams: dict[Hashable, _Stream] = {}
        self._last_id = 0

    def expire(self, stream: Hashable, stamp_ns: int) -> list[Track]:
        """Ends the stream's tracks when a frame stamped stamp_ns would not continue them (a gap
        longer than timeout_s, or a stamp earlier than the previous frame's); returns them.

        update() applies the same rule; calling this before inference lets per-track state (the
        smoothing of a backend) be reset before the frame is processed."""
        state = self._streams.get(stream)
        if state is None or not state.tracks:
            return []
        gap_ns = stamp_ns - state.last_stamp_ns
        if 0 <= gap_ns <= self.timeout_s * 1e9:
            return []
        ended = list(state.tracks.values())
        state.tracks = {}
        return ended

    def update(self, stream: Hashable, stamp_ns: int, sides: Iterable[str]) -> TrackUpdate:
        """The tracks of a frame of `stream` stamped stamp_ns in which `sides` were seen."""
        sides = list(sides)
        for side in sides:
            if side not in SIDES:
                raise ValueError(f"hand side must be one of {', '.join(SIDES)}, got {side!r}")
        if len(set(sides)) != len(sides):
            raise ValueError(f"at most one hand per side in a frame, got sides {sides}")
        ended = self.expire(stream, stamp_ns)
        state = self._streams.setdefault(stream, _Stream(stamp_ns, {}))
        tracks = {}
        for side in sides:
            previous = state.tracks.get(side)
            if previous is None:
                self._last_id += 1
                tracks[side] = Track(self._last_id, side, stamp_ns, 1)
            else:
                tracks[side] = Track(previous.id, side, previous.first_seen_ns, previous.frames + 1)
        ended += [track for side, track in state.tracks.items() if side not in tracks]
        state.tracks, state.last_stamp_ns = tracks, stamp_ns
        return TrackUpdate(tracks, ended)

    def clear(self) -> None:
        """Ends every track of every stream (e.g. the node was deactivated); ids keep counting up."""
        self._streams.clear()
