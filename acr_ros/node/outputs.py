"""The hands node's publishers: managed (silent unless the node is active), each with its QoS
overridable the standard way (`qos_overrides./acr_hands/hands.publisher.reliability`, ...).

The markers go out as CDR bytes that acr_ros.cdr.CdrEncoder writes from their points as arrays (the
recordings writer's encoder, byte-equal to rosbags'): two MANO meshes are 9228 points, which as
geometry_msgs/Point objects, then serialized by rclpy, cost several milliseconds a frame."""
from __future__ import annotations

import copy

from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image, JointState
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from acr_ros import ros_messages
from acr_ros.cdr import CdrEncoder, typestore
from acr_ros.acr.hands import LEFT, RIGHT, SIDES
from acr_ros.frame_processor import ProcessedFrame
from acr_ros.hand_outputs import HandOutputs, OutputSettings
from acr_ros.image_conversion import bgr_to_image
from acr_ros.msg import HandMesh, Hands

# Per-side wrist poses: the newest pose is the command; RELIABLE, or MoveIt Servo and most
# controllers (reliable subscribers) never connect.
WRIST_POSE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# tf2_ros's TransformBroadcaster QoS (DynamicBroadcasterQoS): what TF listeners expect on /tf.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
MESH_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class NodePublishers:
    """Created at configure, destroyed at cleanup; publishes what HandOutputs builds."""

    def __init__(self, node, outputs: HandOutputs, retarget_sides=()):
        self._node = node
        self.outputs = outputs
        self._encoder = CdrEncoder(typestore())
        self._all: list = []
        self.hands = self._create(Hands, "~/hands", 10)
        self.wrist_poses = {side: self._create(PoseStamped, f"~/{side}/wrist_pose", WRIST_POSE_QOS) for side in SIDES}
        self.markers = self._create(MarkerArray, "~/markers", 10)
        self.overlay = self._create(Image, "~/overlay", 2)
        self.tf = self._create(TFMessage, "/tf", TF_QOS)
        # Robot-hand commands: the newest is the command, as for the wrist poses.
        self.joint_states = {side: self._create(JointState, f"~/{side}/joint_states", WRIST_POSE_QOS)
                             for side in retarget_sides}
        faces = outputs.faces
        self.mesh = (self._create(HandMesh, "~/mesh", MESH_QOS)
                     if faces[LEFT] is not None and faces[RIGHT] is not None else None)

    def _create(self, msg_type, topic: str, qos_profile):
        # A copy: rclpy writes the overrides into the profile it is given.
        profile = copy.copy(qos_profile) if isinstance(qos_profile, QoSProfile) else qos_profile
        publisher = self._node.create_lifecycle_publisher(
            msg_type, topic, profile, qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._all.append(publisher)
        return publisher

    def destroy(self) -> None:
        for publisher in self._all:
            self._node.destroy_lifecycle_publisher(publisher)
        self._all = []

    def publish(self, processed: ProcessedFrame, settings: OutputSettings, overlay: bool) -> None:
        """The frame's messages; with overlay, ~/overlay too when someone subscribes to it."""
        messages = self.outputs.build(processed, settings, points_as_arrays=True)
        self.hands.publish(messages.hands)
        for side, pose in messages.wrist_poses.items():
            self.wrist_poses[side].publish(pose)
        for side, command in messages.joint_states.items():
            self.joint_states[side].publish(command)
        if messages.tf is not None:
            self.tf.publish(messages.tf)
        if messages.markers is not None:
            self.markers.publish(bytes(self._encoder.encode(messages.markers, MARKERS_TYPE)))
        if overlay and self.overlay.get_subscription_count() > 0:
            from acr_ros.render import draw_hands

            image = draw_hands(processed.frame.image, processed.result, self.outputs.faces)
            self.overlay.publish(bgr_to_image(image, processed.frame.header))

    def publish_mesh(self, stamp) -> None:
        """The triangles of the meshes (latched), for consumers of the vertices in Hands."""
        if self.mesh is not None:
            faces = self.outputs.faces
            self.mesh.publish(ros_messages.mesh_msg(faces[LEFT], faces[RIGHT], stamp))

    def delete_markers(self, stamp) -> None:
        """Stale hands leave RViz now, not after their lifetime."""
        for markers in self.outputs.deletions(stamp):
            self.markers.publish(markers)

