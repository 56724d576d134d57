"""The messages published for one processed frame, built once for the node and acr_offline's bag:
Hands (with tracks), a wrist pose per tracked side, TF and RViz markers, and with retargeting a
robot-hand JointState per tracked side, all stamped with the image's header. No node here: the node
publishes these, the recordings writer encodes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from acr_ros import ros_messages
from acr_ros.frame_processor import ProcessedFrame
from acr_ros.msg import Hands


@dataclass(frozen=True)
class OutputSettings:
    """The node's output parameters of the same names (acr_offline reads the same parameters)."""

    publish_wrist_poses: bool = True
    publish_tf: bool = True
    tf_joints: bool = True
    frame_prefix: str = "hand"
    publish_markers: bool = True
    marker_lifetime: float = 1.0


@dataclass
class FrameMessages:
    hands: Hands
    wrist_poses: dict[str, PoseStamped] = field(default_factory=dict)   # side -> pose of each tracked side
    tf: Optional[TFMessage] = None           # None: TF off, or no hand
    markers: Optional[MarkerArray] = None    # None: markers off, or nothing to add or delete
    joint_states: dict[str, JointState] = field(default_factory=dict)  # side -> robot-hand command


class HandOutputs:
    """Builds each frame's messages; remembers which sides have markers out per frame_id, so that
    a hand that disappears has its markers deleted."""

    def __init__(self, backend, faces: Mapping[str, Optional[np.ndarray]]):
        self.backend_name, self.model, self.checkpoint = backend.name, backend.model, backend.checkpoint
        self.faces = faces
        self._shown_sides: dict[str, set[str]] = {}

    def build(self, processed: ProcessedFrame, settings: OutputSettings,
              points_as_arrays: bool = False) -> FrameMessages:
        """points_as_arrays: marker points as (N, 3) arrays, for the recordings writer's encoder."""
        frame, result = processed.frame, processed.result
        height, width = frame.image.shape[:2]
        hands = ros_messages.frame_to_msg(result, frame.header, width, height, self.backend_name, self.model,
                                          self.checkpoint, processed.tracks)
        messages = FrameMessages(hands)
        if settings.publish_wrist_poses:
            messages.wrist_poses = {ros_messages.SIDE_NAMES[hand.side]: ros_messages.wrist_pose_msg(hands, hand)
                                    for hand in hands.hands}
        if settings.publish_tf and result.hands:
            messages.tf = TFMessage(transforms=ros_messages.hand_transforms(
                result, frame.header, prefix=settings.frame_prefix, joints=settings.tf_joints))
        messages.joint_states = {
            side: JointState(header=ros_messages.copy_header(frame.header), name=list(command.names),
                             position=command.positions.tolist())
            for side, command in processed.robot_joints.items()}
        if settings.publish_markers:
            markers = ros_messages.frame_markers(result, frame.header, self.faces, self._shown_sides,
                                                 lifetime=settings.marker_lifetime, points_as_arrays=points_as_arrays)
            messages.markers = markers if markers.markers else None
        return messages

    def deletions(self, stamp) -> list[MarkerArray]:
        """DELETE markers for every hand still shown (e.g. the node was deactivated), then forgets them."""
        arrays = [ros_messages.deletion_markers(sides, Header(stamp=stamp, frame_id=frame_id))
                  for frame_id, sides in self._shown_sides.items() if sides]
        self._shown_sides.clear()
        return arrays
