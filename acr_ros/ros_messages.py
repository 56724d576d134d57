"""HandResult / FrameResult -> ROS messages: Hands, HandMesh, per-side wrist poses, TF transforms and
RViz markers.

Pure functions: no node, no rclpy.init. Everything derived from an image carries that image's
header (stamp = acquisition time, frame_id = camera optical frame); only mesh_msg takes a
separate stamp (the node passes now(): the mesh belongs to no image).

Track fields of a Hand come from acr_ros.tracks (the node's tracker); a hand without a track has
them all 0. wrist_pose_msg() gives a Hand's wrist as geometry_msgs/PoseStamped in the image's frame.

TF frames (children of the image's frame_id, all at one level, stamped with the image stamp):
  ``{prefix}_{side}_wrist``       the wrist joint, oriented by HandResult.wrist_rotation (MANO's
                                  global orientation: hand root frame -> camera frame)
  ``{prefix}_{side}_{joint}``     the other 20 joints (JOINT_NAMES, e.g. hand_left_index_tip),
                                  oriented by HandResult.joint_rotations when present; otherwise
                                  x runs along the bone (parent joint -> joint), z is the wrist
                                  frame's z made orthogonal to x, y = z cross x.
  side is "left" or "right"; a leading "/" of the prefix is dropped (TF ids must not start with one).

Markers (visualization_msgs/MarkerArray), namespace ``{ns}/{frame_id}/{kind}`` (``{ns}/{kind}``
for an empty frame_id) with kind mesh | skeleton | joints | label and id 0 (left) or 1 (right):
ids are stable per camera and side, so each frame's markers replace the previous ones in place.
hand_markers() returns ADD markers for the hands present (and DELETE for a kind a present hand
does not draw, e.g. no mesh); the markers of sides that disappeared are deleted with
deletion_markers(sides, header); frame_markers() does both, given the sides shown so far per camera
(the node and the recording writer keep them). No DELETEALL: it would also wipe other publishers'
markers on the same topic.

Quaternions are (x, y, z, w), unit length, w >= 0, from acr_ros.acr.hands.rotation_to_quaternion()
(numpy, vectorised; tf_transformations is not used even where installed: one tested code path).
"""
from __future__ import annotations

import array
import itertools
from collections import deque
from typing import Mapping, Optional

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from acr_ros.acr.hands import (DEPTH_FROM_SENSOR, JOINT_NAMES, JOINT_PARENTS, LEFT, NUM_JOINTS, NUM_VERTICES,
                               RIGHT, SIDES, FrameResult, HandResult, one_per_side,
                               rotation_to_quaternion)
from acr_ros.msg import Hand, HandMesh, Hands
from acr_ros.render import SIDE_COLOURS
from acr_ros.tracks import Track

SIDE_IDS = {LEFT: 0, RIGHT: 1}            # marker id per side
SIDE_CONSTANTS = {LEFT: Hand.LEFT, RIGHT: Hand.RIGHT}
SIDE_NAMES = {Hand.LEFT: LEFT, Hand.RIGHT: RIGHT}  # Hand.side -> LEFT / RIGHT
MARKER_KINDS = ("mesh", "skeleton", "joints", "label")
MESH_ALPHA = 0.8
JOINT_DIAMETER = 0.008      # m, SPHERE_LIST scale
BONE_WIDTH = 0.004          # m, LINE_LIST scale.x
LABEL_HEIGHT = 0.02         # m, TEXT_VIEW_FACING scale.z
LABEL_LIFT = 0.02           # m above (camera -y) the hand's highest joint
_BONES = np.array([(JOINT_PARENTS[j], j) for j in range(1, NUM_JOINTS)], dtype=np.intp)  # (20, 2)
_THUMB_TIP, _INDEX_TIP = JOINT_NAMES.index("thumb_tip"), JOINT_NAMES.index("index_tip")


# ---- small helpers -----------------------------------------------------------------------------
def copy_header(header) -> Header:
    """A new Header with the same stamp and frame_id (outputs never share the input's objects)."""
    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def _float32_array(values) -> array.array:
    """A float32[] field value from any array-like, by one memcpy (not element by element)."""
    out = array.array("f")
    if values is not None:
        out.frombytes(np.ascontiguousarray(values, dtype=np.float32).reshape(-1).tobytes())
    return out


def _uint32_array(values) -> array.array:
    out = array.array("I")
    if values is not None:
        out.frombytes(np.ascontiguousarray(values, dtype=np.uint32).reshape(-1).tobytes())
    return out


def points(xyz: np.ndarray) -> list:
    """(N, 3) array -> list of N geometry_msgs/Point (float64 values)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    # Point construction dominates marker building (4614 points per mesh): default Points, then
    # one coordinate for all of them in a C-level map() loop, cost about 0.45 us a point, a
    # Point(x=, y=, z=) each about 0.55 us.
    n = len(xyz)
    out = list(itertools.starmap(Point, itertools.repeat((), n)))
    for name, values in zip("xyz", xyz.T.tolist()):
        deque(map(setattr, out, itertools.repeat(name, n), values), maxlen=0)
    return out


def time_msg(nanoseconds: int) -> Time:
    """builtin_interfaces/Time of a stamp in integer nanoseconds."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def _set_points(marker: Marker, xyz: np.ndarray, as_array: bool) -> None:
    """marker.points = the (N, 3) positions: Point objects, or with as_array the float64 array itself
    (for acr_ros.cdr.CdrEncoder; rclpy cannot serialize that, and only a marker made with
    check_fields=False takes it)."""
    marker.points = np.ascontiguousarray(xyz, dtype=np.float64).reshape(-1, 3) if as_array else points(xyz)


def _quaternion_msg(q) -> Quaternion:
    return Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def _side(hand: HandResult) -> str:
    if hand.side not in SIDE_CONSTANTS:
        raise ValueError(f"hand side must be '{LEFT}' or '{RIGHT}', got {hand.side!r}")
    return hand.side


# ---- Hands / HandMesh --------------------------------------------------------------------------
def hand_to_msg(hand: HandResult, width: int, height: int, track: Optional[Track] = None) -> Hand:
    """One HandResult as an acr_ros/Hand; box = keypoint bounding box clipped to width x height;
    track: the hand's track (its fields stay 0 without one)."""
    side = _side(hand)
    joints = np.asarray(hand.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
    keypoints = np.ascontiguousarray(hand.keypoints, dtype=np.float32).reshape(2 * NUM_JOINTS)
    msg = Hand()
    msg.side = SIDE_CONSTANTS[side]
    msg.score = float(hand.score)
    wrist = joints[0].tolist()
    msg.wrist_pose = Pose(position=Point(x=wrist[0], y=wrist[1], z=wrist[2]),
                          orientation=_quaternion_msg(rotation_to_quaternion(hand.wrist_rotation)))
    msg.joints = points(joints)
    msg.keypoints = keypoints.copy()
    x, y, w, h = hand.box(int(width), int(height))
    msg.box = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
    msg.global_orient = _float32_array(hand.global_orient)
    msg.finger_pose = _float32_array(hand.finger_pose)
    msg.shape = _float32_array(hand.shape)
    msg.weak_camera = _float32_array(hand.weak_camera)
    msg.vertices = _float32_array(hand.vertices)
    msg.depth_source = Hand.DEPTH_FROM_SENSOR if hand.depth_source == DEPTH_FROM_SENSOR else Hand.DEPTH_FROM_MODEL
    msg.depth_residual = float(hand.depth_residual)
    msg.depth_samples = int(hand.depth_samples)
    msg.pinch_distance = float(np.linalg.norm(joints[_THUMB_TIP] - joints[_INDEX_TIP]))
    if track is not None:
        if track.side != side:
            raise ValueError(f"the track of a {track.side} hand given for a {side} hand")
        msg.track_id, msg.track_frames = track.id, track.frames
        msg.track_first_seen = time_msg(track.first_seen_ns)
    return msg


def frame_to_msg(frame: FrameResult, header, width: int, height: int, backend_name: str, model: str,
                 checkpoint: str, tracks: Optional[Mapping[str, Track]] = None) -> Hands:
    """The hands of one image as acr_ros/Hands (at most one per side, as Hands.msg promises), with
    the image's header (stamp and frame) copied; tracks: side -> Track of the hands published."""
    msg = Hands()
    msg.header = copy_header(header)
    tracks = tracks or {}
    msg.hands = [hand_to_msg(hand, width, height, tracks.get(hand.side)) for hand in one_per_side(frame.hands)]
    msg.image_width, msg.image_height = int(width), int(height)
    msg.backend, msg.model, msg.checkpoint = str(backend_name), str(model), str(checkpoint or "")
    msg.default_intrinsics = bool(frame.default_intrinsics)
    return msg


def wrist_pose_msg(hands: Hands, hand: Hand) -> PoseStamped:
    """A hand's wrist pose as geometry_msgs/PoseStamped with the header of its Hands message (the
    image's stamp, the camera optical frame): what pose-command consumers subscribe to."""
    return PoseStamped(header=copy_header(hands.header), pose=hand.wrist_pose)


def _faces(faces, name: str) -> Optional[np.ndarray]:
    if faces is None:
        return None
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name} must be (F, 3) triangles, got shape {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= NUM_VERTICES):
        raise ValueError(f"{name} index outside [0, {NUM_VERTICES})")
    return faces


def mesh_msg(left_faces, right_faces, stamp) -> HandMesh:
    """acr_ros/HandMesh from (F, 3) triangle arrays (None: empty); stamp = publication time."""
    msg = HandMesh()
    msg.header = Header(stamp=stamp, frame_id="")
    msg.left_triangles = _uint32_array(_faces(left_faces, "left_faces"))
    msg.right_triangles = _uint32_array(_faces(right_faces, "right_faces"))
    return msg


# ---- TF ----------------------------------------------------------------------------------------
def frame_name(prefix: str, side: str, joint: str = "wrist") -> str:
    """TF frame id of a hand joint, e.g. frame_name("hand", "left", "index_tip") = "hand_left_index_tip"."""
    prefix = str(prefix).strip().lstrip("/")
    return "_".join(part for part in (prefix, side, joint) if part)


def joint_frames(hand: HandResult) -> np.ndarray:
    """(21, 3, 3) orientation of each joint's TF frame in the camera frame (see module doc)."""
    wrist = np.asarray(hand.wrist_rotation, dtype=np.float64).reshape(3, 3)
    if hand.joint_rotations is not None:
        rotations = np.array(hand.joint_rotations, dtype=np.float64).reshape(NUM_JOINTS, 3, 3)
        rotations[0] = wrist
        return rotations
    joints = np.asarray(hand.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
    rotations = np.repeat(wrist[None], NUM_JOINTS, axis=0)
    bone = joints[_BONES[:, 1]] - joints[_BONES[:, 0]]                       # (20, 3)
    length = np.linalg.norm(bone, axis=1, keepdims=True)
    x = bone / np.where(length > 1e-9, length, 1.0)
    z = wrist[:, 2][None] - (x @ wrist[:, 2])[:, None] * x                    # wrist z, orthogonal to x
    # a bone along the wrist's z: the wrist's y instead
    z_alt = wrist[:, 1][None] - (x @ wrist[:, 1])[:, None] * x
    z_norm = np.linalg.norm(z, axis=1, keepdims=True)
    use_alt = z_norm < 1e-3
    z = np.where(use_alt, z_alt, z)
    z_norm = np.where(use_alt, np.linalg.norm(z_alt, axis=1, keepdims=True), z_norm)
    z = z / np.maximum(z_norm, 1e-12)
    y = np.cross(z, x)
    frames = np.stack([x, y, z], axis=2)                                     # columns x, y, z
    good = (length[:, 0] > 1e-9) & np.isfinite(frames).all(axis=(1, 2))
    rotations[1:][good] = frames[good]
    return rotations


def hand_transforms(frame: FrameResult, header, prefix: str = "hand", joints: bool = True) -> list:
    """geometry_msgs/TransformStamped for each hand's wrist (and, with joints=True, its other 20
    joints), children of header.frame_id, stamped header.stamp. Frames with non-finite values are
    left out (tf2 rejects them). The transforms share one copy of the header."""
    transforms = []
    stamped = copy_header(header)
    for hand in one_per_side(frame.hands):
        positions = np.asarray(hand.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
        count = NUM_JOINTS if joints else 1
        rotations = joint_frames(hand)[:count] if joints else np.asarray(
            hand.wrist_rotation, dtype=np.float64).reshape(1, 3, 3)
        finite = np.isfinite(positions[:count]).all(axis=1) & np.isfinite(rotations).all(axis=(1, 2))
        quaternions = rotation_to_quaternion(rotations).tolist()
        for j in range(count):
            if not finite[j]:
                continue
            # filled in place: the constructor with nested messages given would first build
            # defaults for all of them (ten throw-away messages per transform)
            transform = TransformStamped(header=stamped, child_frame_id=frame_name(prefix, hand.side, JOINT_NAMES[j]))
            translation, rotation = transform.transform.translation, transform.transform.rotation
            translation.x, translation.y, translation.z = positions[j].tolist()
            rotation.x, rotation.y, rotation.z, rotation.w = quaternions[j]
            transforms.append(transform)
    return transforms


# ---- markers -----------------------------------------------------------------------------------
def marker_namespace(ns: str, frame_id: str, kind: str) -> str:
    return f"{ns}/{frame_id}/{kind}" if frame_id else f"{ns}/{kind}"


def _marker(header, ns: str, kind: str, side: str, marker_type: int, lifetime: float = 0.0,
            checked: bool = True) -> Marker:
    """checked=False: a marker without rclpy's field checks (whatever ROS_PYTHON_CHECK_FIELDS says),
    so that its points can be an array."""
    m = Marker() if checked else Marker(check_fields=False)
    m.header = copy_header(header)
    m.ns = marker_namespace(ns, m.header.frame_id, kind)
    m.id = SIDE_IDS[side]
    m.type = marker_type
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    m.frame_locked = False
    if lifetime > 0:
        sec = int(lifetime)
        m.lifetime = Duration(sec=sec, nanosec=int(round((lifetime - sec) * 1e9)) % 1_000_000_000)
    return m


def _colour(side: str, alpha: float = 1.0) -> ColorRGBA:
    r, g, b = SIDE_COLOURS[side]
    return ColorRGBA(r=r, g=g, b=b, a=float(alpha))


def _delete(header, ns: str, kind: str, side: str) -> Marker:
    m = _marker(header, ns, kind, side, Marker.TRIANGLE_LIST)
    m.action = Marker.DELETE
    return m


def hand_markers(frame: FrameResult, header, faces_by_side: Mapping[str, Optional[np.ndarray]],
                 ns: str = "hands", lifetime: float = 0.0, points_as_arrays: bool = False) -> MarkerArray:
    """RViz markers of the hands of one frame (see the module doc for namespaces, ids, deletion).

    Per hand: TRIANGLE_LIST mesh (vertices[faces], side colour, alpha 0.8; only when the hand has
    vertices and faces_by_side has that side's faces), LINE_LIST skeleton (20 bones), SPHERE_LIST
    joints (8 mm), TEXT_VIEW_FACING label "<side> <score>" above the hand. lifetime > 0 (seconds)
    lets RViz drop markers that are not refreshed, e.g. after the node stops. points_as_arrays:
    each marker's points as one (N, 3) float64 array, not N Point objects (the recording writer's
    encoder takes them whole; rclpy cannot serialize such markers).
    """
    out = MarkerArray()
    checked = not points_as_arrays
    for hand in one_per_side(frame.hands):
        side = hand.side
        xyz = np.asarray(hand.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
        drawn = set()
        faces = faces_by_side.get(side) if faces_by_side else None
        if hand.vertices is not None and faces is not None:
            vertices = np.asarray(hand.vertices, dtype=np.float64).reshape(-1, 3)
            faces = np.asarray(faces)
            if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
                raise ValueError(f"{side} faces index outside the {len(vertices)} vertices")
            m = _marker(header, ns, "mesh", side, Marker.TRIANGLE_LIST, lifetime, checked)
            m.scale = Vector3(x=1.0, y=1.0, z=1.0)
            m.color = _colour(side, MESH_ALPHA)
            _set_points(m, vertices[faces.reshape(-1)], points_as_arrays)
            out.markers.append(m)
            drawn.add("mesh")
        m = _marker(header, ns, "skeleton", side, Marker.LINE_LIST, lifetime, checked)
        m.scale = Vector3(x=BONE_WIDTH, y=0.0, z=0.0)
        m.color = _colour(side)
        _set_points(m, xyz[_BONES.reshape(-1)], points_as_arrays)
        out.markers.append(m)
        drawn.add("skeleton")
        m = _marker(header, ns, "joints", side, Marker.SPHERE_LIST, lifetime, checked)
        m.scale = Vector3(x=JOINT_DIAMETER, y=JOINT_DIAMETER, z=JOINT_DIAMETER)
        m.color = _colour(side)
        _set_points(m, xyz, points_as_arrays)
        out.markers.append(m)
        drawn.add("joints")
        m = _marker(header, ns, "label", side, Marker.TEXT_VIEW_FACING, lifetime)
        finite = xyz[np.isfinite(xyz).all(axis=1)]
        anchor = xyz[0] if len(finite) == 0 else finite.mean(axis=0)
        top = finite[:, 1].min() if len(finite) else anchor[1]
        m.pose.position = Point(x=float(anchor[0]), y=float(top - LABEL_LIFT), z=float(anchor[2]))
        m.scale = Vector3(x=0.0, y=0.0, z=LABEL_HEIGHT)
        m.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        m.text = f"{side} {float(hand.score):.2f}"
        out.markers.append(m)
        drawn.add("label")
        out.markers.extend(_delete(header, ns, kind, side) for kind in MARKER_KINDS if kind not in drawn)
    return out


def deletion_markers(sides, header, ns: str = "hands") -> MarkerArray:
    """DELETE markers for every marker kind of the given sides (hands that disappeared)."""
    return MarkerArray(markers=[_delete(header, ns, kind, side)
                                for side in SIDES if side in set(sides) for kind in MARKER_KINDS])


def frame_markers(frame: FrameResult, header, faces_by_side: Mapping[str, Optional[np.ndarray]],
                  shown_sides: dict[str, set[str]], lifetime: float = 0.0,
                  points_as_arrays: bool = False) -> MarkerArray:
    """hand_markers() of a frame, preceded by DELETE markers for the sides shown on the previous
    frame of the same frame_id and gone now; shown_sides (frame_id -> sides, the caller's) is updated."""
    markers = hand_markers(frame, header, faces_by_side, lifetime=lifetime, points_as_arrays=points_as_arrays)
    shown = {hand.side for hand in frame.hands}
    gone = shown_sides.get(header.frame_id, set()) - shown
    if gone:
        markers.markers[:0] = deletion_markers(gone, header).markers
    shown_sides[header.frame_id] = shown
    return markers
