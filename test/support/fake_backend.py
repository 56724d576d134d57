"""A hand backend for testing the node's own logic in process (HandsNode(backend_factory=...)):
no model, instant, and it records what the node hands it. NOT a hand model."""
from __future__ import annotations

from acr_ros.acr.hands import LEFT, FrameResult
from acr_ros.backends.base import MEDIAPIPE_THRESHOLD, check_batch
from support.hands import FACES_BY_SIDE, make_hand

SCORE = 0.9  # of every hand it reports


class FakeBackend:
    """One left hand (make_hand: random values in front of the camera, score SCORE) in every image
    that is not of one colour, none in a one-colour image or when detection_threshold >= SCORE.
    mano=True adds the MANO fields and a mesh (faces). It uses the embedded backend's threshold
    parameter (mediapipe_min_confidence)."""

    name, model, checkpoint, device = "fake", "test double", "", "cpu"
    threshold = MEDIAPIPE_THRESHOLD
    static_image_mode = False

    def __init__(self, mano: bool = False):
        self.mano = mano
        self.detection_threshold = self.threshold.default
        self.batches: list[dict] = []     # the arguments of every reconstruct call
        self.smoothing: list = []         # every set_smoothing argument
        self.reset_sides: list = []       # every reset_side (stream, side): tracks that ended
        self.closed = False

    def faces(self, side):
        return FACES_BY_SIDE[side] if self.mano else None

    def reconstruct(self, images, intrinsics, timestamps, streams):
        check_batch(images, intrinsics, timestamps, streams)
        self.batches.append(dict(images=list(images), intrinsics=list(intrinsics), timestamps=list(timestamps),
                                 streams=list(streams)))
        found = [SCORE > self.detection_threshold and image.min() != image.max() for image in images]
        return [FrameResult(hands=[make_hand(LEFT, mano=self.mano, score=SCORE)] if hand else [],
                            default_intrinsics=k is None, intrinsics=k) for hand, k in zip(found, intrinsics)]

    def set_smoothing(self, config) -> None:
        self.smoothing.append(config)

    def reset(self) -> None:
        pass

    def reset_side(self, stream: str, side: str) -> None:
        self.reset_sides.append((stream, side))

    def close(self) -> None:
        self.closed = True
