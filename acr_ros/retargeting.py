"""Robot-hand retargeting: a published hand's 21 joints to a dexterous robot hand's joint positions. No ROS.

    retargeter = HandRetargeter.create(RetargetSettings(robot="leap", urdf_dir=".../dex-urdf/hands"))
    command = retargeter.retarget("right", hand.joints, stamp_ns, new_track=track.frames == 1)

The optimisation is dex-retargeting's (PyPI `dex-retargeting`, its bundled teleoperation configs or a
user's own YAML), one optimiser per side. This module adds what a live stream needs around it: the hand
brought into the MANO wrist frame those configs were written for, per-track state (a new track starts
from the neutral pose, the optimiser's hysteresis and the low-pass filter restart), a joint velocity
limit, joint limits that always hold, and names that keep a left and a right robot apart on one TF tree.
dex-retargeting (and with it pinocchio, nlopt and torch) loads only in HandRetargeter.create, so the
frame path imports this module without them. docs/teleoperation.md describes frames, names and settings.
"""
from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROBOTS = ("leap", "allegro", "inspire", "ability", "shadow", "schunk")   # bundled dex-retargeting configs
TYPES = ("vector", "dexpilot")
SIDES = ("left", "right")

# File stem of each robot in dex-retargeting's configs/teleop (and dex-urdf's folder, minus the suffix).
_CONFIG_STEMS = {"leap": "leap_hand", "allegro": "allegro_hand", "inspire": "inspire_hand",
                 "ability": "ability_hand", "shadow": "shadow_hand", "schunk": "schunk_svh_hand"}
_TIP_JOINTS = (4, 8, 12, 16, 20)  # thumb to pinky tips in JOINT_NAMES
_INSTALL = "pip install dex-retargeting==0.5.0 nlopt six (scripts/requirements-retargeting.txt)"


@dataclass(frozen=True)
class RetargetSettings:
    robot: str = ""                 # '' = off; one of ROBOTS, or '' with config set
    type: str = "vector"            # one of TYPES
    urdf_dir: str = ""              # folder of robot URDFs (a dex-urdf checkout's hands/ folder)
    config: str = ""                # a user's own dex-retargeting YAML (any URDF); overrides robot/type
    sides: tuple[str, ...] = ("left", "right")
    low_pass_alpha: float = 0.0     # dex-retargeting's low-pass filter (0 = off)
    max_joint_velocity: float = 0.0 # rad/s, 0 = no limit; keeps a track's first commands from jumping

    @property
    def enabled(self) -> bool:
        return bool(self.robot or self.config)


@dataclass(frozen=True)
class RobotJoints:
    side: str
    names: tuple[str, ...]          # the robot's joint names from its URDF, prefixed "<side>_"
    positions: np.ndarray           # radians (or metres for prismatic joints), float64, within the URDF limits
    residual: float                 # the optimiser's final cost (what /diagnostics reports)
    seconds: float                  # time this retarget took


def mano_frame_joints(joints: np.ndarray, side: str, operator2mano: np.ndarray) -> np.ndarray:
    """(21, 3) camera-frame joints -> wrist-relative joints in the MANO convention of dex-retargeting's
    configs, as its SingleHandDetector computes them: x from the middle knuckle to the wrist, y the normal
    of the plane of the wrist, index and middle knuckles (0, 5, 9), z = x cross y pointing from the middle
    towards the index knuckle; then OPERATOR2MANO of the side."""
    points = np.asarray(joints, dtype=np.float64)
    if points.shape != (21, 3):
        raise ValueError(f"retargeting needs (21, 3) joints, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"retargeting the {side} hand: its joints are not finite")
    points = points - points[0]
    palm = points[[0, 5, 9]]
    across = np.cross(palm[1], palm[2])
    # Coincident or collinear knuckles have no wrist frame (the optimiser would get NaN).
    if np.linalg.norm(across) <= 1e-5 * np.linalg.norm(palm[1]) * np.linalg.norm(palm[2]):
        raise ValueError(f"retargeting the {side} hand: its wrist, index and middle knuckles are (nearly) "
                         "collinear, so they give no wrist frame")
    # The plane's normal, of the sign SingleHandDetector settles on (it fits the plane by SVD, then flips the
    # normal until z points from the middle towards the index knuckle): for three points, this cross product.
    normal = -across / np.linalg.norm(across)
    x = -palm[2] / np.linalg.norm(palm[2])
    z = np.cross(x, normal)
    return points @ np.stack([x, normal, z], axis=1) @ operator2mano


class _SideRetargeter:
    """One side's optimiser (a dex-retargeting SeqRetargeting) and its track state."""

    def __init__(self, side: str, seq, operator2mano: np.ndarray, low_pass_alpha: float):
        import pinocchio

        from dex_retargeting.optimizer_utils import LPFilter

        self.side = side
        self.seq = seq
        self.optimizer = seq.optimizer
        # The optimiser's objective without torch: the same values and gradients in a third of the time.
        self.optimizer.get_objective_function = _Objective(self.optimizer)
        self.robot = seq.optimizer.robot
        self.operator2mano = np.asarray(operator2mano, dtype=np.float64)
        self.names = tuple(f"{side}_{name}" for name in self.robot.dof_joint_names)
        limits = self.robot.joint_limits
        self.lower, self.upper = limits[:, 0].astype(np.float64), limits[:, 1].astype(np.float64)
        # dex-retargeting's own filter, reset per track here (its build() applies the YAML's alpha).
        seq.filter = LPFilter(low_pass_alpha) if low_pass_alpha > 0 else None
        human = np.asarray(self.optimizer.target_link_human_indices)
        self.human_origin, self.human_task = human[0], human[1]
        self.neutral = self._neutral()
        self.last_command: np.ndarray | None = None
        self.last_stamp_ns = 0

        # Link of each human joint the config uses (vector: its origin/task links; DexPilot: wrist + tips).
        link_of_joint = dict(zip(human[0].tolist(), self.optimizer.origin_link_names))
        link_of_joint.update(zip(human[1].tolist(), self.optimizer.task_link_names))
        self.tip_links = tuple(link_of_joint[j] for j in _TIP_JOINTS if j in link_of_joint)
        self.tip_ids = [self.robot.get_link_index(name) for name in self.tip_links]
        model = self.robot.model
        self.body_frames = {frame.name: i for i, frame in enumerate(model.frames)
                            if frame.type == pinocchio.FrameType.BODY}
        self.palm_point = self._palm(link_of_joint[0])

    def _neutral(self) -> np.ndarray:
        """The command of the optimiser's neutral start: SeqRetargeting.reset()'s pose (the middle of each
        optimised joint's range), with mimic joints following, within the URDF limits."""
        self.seq.reset()
        q = self.seq.get_qpos()
        if self.optimizer.adaptor is not None:
            q = self.optimizer.adaptor.forward_qpos(q)
        return np.clip(q.astype(np.float64), self.lower, self.upper)

    def _palm(self, wrist_link: str) -> np.ndarray:
        """Midpoint of the wrist link's origin and the centroid of the fingers' knuckles (the first moving
        joint on each fingertip's chain) at the neutral pose: a point in the middle of the palm."""
        model, data = self.robot.model, self.robot.data
        self.robot.compute_forward_kinematics(self.neutral)
        knuckles = []
        for tip in self.tip_ids:
            frame = model.frames[tip]
            joint = frame.parentJoint if hasattr(frame, "parentJoint") else frame.parent  # pinocchio 2: parent
            while model.parents[joint] > 0:
                joint = model.parents[joint]
            knuckles.append(data.oMi[joint].translation.copy())
        wrist = self.robot.get_link_pose(self.robot.get_link_index(wrist_link))[:3, 3]
        return (wrist + np.mean(knuckles, axis=0)) / 2

    def reference(self, joints: np.ndarray) -> np.ndarray:
        """The optimiser's input: the config's human vectors (task minus origin joint) in the MANO frame."""
        mano = mano_frame_joints(joints, self.side, self.operator2mano)
        return mano[self.human_task] - mano[self.human_origin]

    def start_track(self) -> None:
        self.seq.reset()
        if self.seq.filter is not None:
            self.seq.filter.reset()
        # DexPilot's pinch hysteresis is per track too.
        projected = getattr(self.optimizer, "projected", None)
        if projected is not None:
            projected[:] = False

    def forward(self, positions: np.ndarray) -> None:
        q = np.asarray(positions, dtype=np.float64)
        if q.shape != self.lower.shape:
            raise ValueError(f"{self.side} robot: expected {self.lower.size} joint positions, got shape {q.shape}")
        self.robot.compute_forward_kinematics(q)


class _Objective:
    """dex-retargeting's get_objective_function of its vector and DexPilot optimisers, in numpy: a weighted sum
    of the Huber losses (SmoothL1, beta = huber_delta) of the distances between the robot's link vectors and
    the reference vectors; the gradient by the chain rule through the links' world-aligned Jacobians from one
    pinocchio pass, plus the optimiser's pull towards the last solution (2 norm_delta (x - last), in the
    gradient only, as there). The same values and gradients (test_retargeting); what it saves is torch's
    autograd on tensors of a few elements, most of the objective's time."""

    def __init__(self, optimizer):
        import pinocchio

        self.pin = pinocchio
        self.optimizer = optimizer
        self.dexpilot = hasattr(optimizer, "projected")
        self.origin = np.asarray(optimizer.origin_link_indices)
        self.task = np.asarray(optimizer.task_link_indices)
        self.beta = float(optimizer.huber_loss.beta)

    def _reference(self, target_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference vectors, weight of each loss), in dex-retargeting's float32 arithmetic."""
        opt = self.optimizer
        target = np.asarray(target_vector, dtype=np.float32)
        if not self.dexpilot:
            return target * np.float32(opt.scaling), np.full(len(target), 1.0 / len(target))
        # DexPilot: a finger pair nearer than project_dist is pulled to a fixed small gap until it is farther
        # than escape_dist (hysteresis across calls, in opt.projected); pairs of fingers that both pinch the
        # thumb likewise while within 3 cm. Weights favour projected pairs and the wrist-to-tip vectors.
        pairs, fingers = len(opt.projected), opt.num_fingers
        thumb_pairs = pairs - len(opt.s2_project_index_task)
        distance = np.linalg.norm(target[:pairs], axis=1)
        projected = opt.projected
        projected[:thumb_pairs][distance[:thumb_pairs] < opt.project_dist] = True
        projected[:thumb_pairs][distance[:thumb_pairs] > opt.escape_dist] = False
        projected[thumb_pairs:] = (projected[opt.s2_project_index_origin] & projected[opt.s2_project_index_task]
                                   & (distance[thumb_pairs:] <= 0.03))
        high = np.array([200] * thumb_pairs + [400] * (pairs - thumb_pairs), dtype=np.float32)
        weight = np.concatenate([np.where(projected, high, np.float32(1)),
                                 np.full(fingers, pairs + fingers, dtype=np.float32)])
        scaled = target * opt.scaling
        gap = target[:pairs] / (distance[:, None] + 1e-6) * opt.projected_dist[:, None]
        reference = np.concatenate([np.where(projected[:, None], gap, scaled[:pairs]), scaled[pairs:]])
        return reference.astype(np.float32), weight.astype(np.float64) / len(target)

    def __call__(self, target_vector: np.ndarray, fixed_qpos: np.ndarray, last_qpos: np.ndarray):
        pin, opt = self.pin, self.optimizer
        model, data = opt.robot.model, opt.robot.data
        qpos = np.zeros(opt.num_joints)
        qpos[opt.idx_pin2fixed] = fixed_qpos
        reference, weight = self._reference(target_vector)
        links = opt.computed_link_indices

        def objective(x: np.ndarray, grad: np.ndarray) -> float:
            qpos[opt.idx_pin2target] = x
            if opt.adaptor is not None:
                qpos[:] = opt.adaptor.forward_qpos(qpos)
            pin.computeJointJacobians(model, data, qpos)  # also the forward kinematics
            body = np.array([pin.updateFramePlacement(model, data, link).translation for link in links])
            error = body[self.task] - body[self.origin] - reference
            distance = np.linalg.norm(error, axis=1)
            small = distance < self.beta
            loss = (np.where(small, 0.5 * distance**2 / self.beta, distance - 0.5 * self.beta) * weight).sum()
            if grad.size > 0:
                slope = np.where(small, distance / self.beta, 1.0) * weight
                pull = error * (slope / np.where(distance > 0, distance, 1.0))[:, None]  # torch: 0 at distance 0
                d_body = np.zeros_like(body)
                np.add.at(d_body, self.task, pull)
                np.add.at(d_body, self.origin, -pull)
                jacobians = np.stack([pin.getFrameJacobian(model, data, link, pin.LOCAL_WORLD_ALIGNED)[:3]
                                      for link in links])
                jacobians = (opt.adaptor.backward_jacobian(jacobians) if opt.adaptor is not None
                             else jacobians[..., opt.idx_pin2target])
                grad[:] = np.einsum("lk,lkj->j", d_body, jacobians) + 2 * opt.norm_delta * (x - last_qpos)
            return float(loss)

        return objective


class HandRetargeter:
    """Per-side retargeting of published hands; build with create(). One caller thread at a time."""

    def __init__(self, settings: RetargetSettings, sides: dict[str, _SideRetargeter]):
        self.settings = settings
        self._sides = sides

    @classmethod
    def create(cls, settings: RetargetSettings) -> "HandRetargeter":
        """Raises ValueError with one line naming what is wrong and the fix."""
        _check_settings(settings)
        try:
            from dex_retargeting.constants import OPERATOR2MANO, HandType
            from dex_retargeting.retargeting_config import RetargetingConfig
        except ImportError as error:
            raise ValueError(f"retargeting needs dex-retargeting ({error}): {_INSTALL}") from None
        _quiet_mesh_warnings()
        sides = {}
        for side in settings.sides:
            seq = _build(RetargetingConfig, *_side_config(settings, side), settings)
            sides[side] = _SideRetargeter(side, seq, OPERATOR2MANO[HandType[side]], settings.low_pass_alpha)
        return cls(settings, sides)

    @property
    def sides(self) -> tuple[str, ...]:
        return tuple(self._sides)

    def _side(self, side: str) -> _SideRetargeter:
        try:
            return self._sides[side]
        except KeyError:
            raise ValueError(f"no retargeter for side {side!r}; sides: {', '.join(self._sides)}") from None

    def joint_names(self, side: str) -> tuple[str, ...]:
        return self._side(side).names

    def retarget(self, side: str, joints: np.ndarray, stamp_ns: int, new_track: bool) -> RobotJoints:
        """joints: the published hand's 21 joints (metres, camera frame). new_track: the first frame of a
        track (the optimiser starts from the neutral pose, filters restart). A side's first call always
        starts a track. Raises ValueError for non-finite or degenerate joints."""
        state = self._side(side)
        tic = time.perf_counter()
        reference = state.reference(joints)
        new_track = new_track or state.last_command is None
        if new_track:
            state.start_track()
        q = state.seq.retarget(reference)
        residual = float(state.optimizer.opt.last_optimum_value())
        limit = self.settings.max_joint_velocity
        if limit > 0:
            # A new track moves away from the neutral pose, where the optimiser started, at the same rate.
            previous, dt = ((state.neutral, 0.0) if new_track
                            else (state.last_command, max(stamp_ns - state.last_stamp_ns, 0) * 1e-9))
            step = limit * dt
            q = previous + np.clip(q - previous, -step, step)
        # The optimiser's bounds are the limits widened by 1e-3 (dex-retargeting), mimic joints unbounded.
        q = np.clip(q, state.lower, state.upper)
        state.last_command, state.last_stamp_ns = q, int(stamp_ns)
        return RobotJoints(side, state.names, q.copy(), residual, time.perf_counter() - tic)

    def fingertips(self, side: str, positions: np.ndarray) -> np.ndarray:
        """(K, 3) fingertip link positions, thumb first, in the robot's base frame (forward kinematics)."""
        state = self._side(side)
        state.forward(positions)
        return np.stack([state.robot.get_link_pose(i)[:3, 3] for i in state.tip_ids])

    def fingertip_links(self, side: str) -> tuple[str, ...]:
        return self._side(side).tip_links

    def palm(self, side: str) -> np.ndarray:
        """(3,) a point in the middle of the palm, in the base frame (see _SideRetargeter._palm)."""
        return self._side(side).palm_point.copy()

    def neutral(self, side: str) -> np.ndarray:
        """The joint positions a new track starts from (the optimiser's start; with max_joint_velocity, the
        first command)."""
        return self._side(side).neutral.copy()

    def link_tree(self, side: str) -> dict[str, str]:
        """Child link -> parent link of the URDF's tree (every link of link_frames but the root), for drawing."""
        import pinocchio

        frames = self._side(side).robot.model.frames

        def previous(frame):
            return frame.parentFrame if hasattr(frame, "parentFrame") else frame.previousFrame  # pinocchio 2

        # A link's frame follows its joint's frame, which follows the parent link's frame.
        tree = {}
        for frame in frames:
            if frame.type == pinocchio.FrameType.BODY:
                parent = frames[previous(frames[previous(frame)])]
                if parent.type == pinocchio.FrameType.BODY:
                    tree[frame.name] = parent.name
        return tree

    def link_frames(self, side: str, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Link name -> (4, 4) pose in the base frame, for drawing."""
        state = self._side(side)
        state.forward(positions)
        return {name: state.robot.get_link_pose(i) for name, i in state.body_frames.items()}


def robot_urdf(settings: RetargetSettings, side: str, parent: str = "",
               pose: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)) -> str:
    """The side's robot URDF text for robot_state_publisher and RViz: every link and joint name prefixed
    "<side>_", so its movable joints are the names of that side's JointState and two robot hands share
    one TF tree; relative mesh paths as file:// URIs (RViz resolves no relative path). With parent, a
    fixed joint "<side>_mount" places the robot's root link at pose (x y z in metres, roll pitch yaw in
    radians) in the frame parent. Raises ValueError (one line) as HandRetargeter.create does, without
    loading dex-retargeting."""
    import xml.etree.ElementTree as ElementTree

    _check_settings(settings)
    if side not in SIDES:
        raise ValueError(f"robot URDF of side {side!r}: use 'left' or 'right'")
    try:
        values = [float(value) for value in pose]
    except (TypeError, ValueError):
        values = []
    if len(values) != 6 or not all(map(math.isfinite, values)):
        raise ValueError(f"robot base pose {list(pose)}: give x y z roll pitch yaw (6 finite numbers)")
    urdf = Path(_side_config(settings, side)[1]["urdf_path"])
    try:
        robot = ElementTree.parse(urdf).getroot()
    except OSError as error:
        fix = "fix urdf_path in the config" if settings.config else "point urdf_dir at the hands/ folder of dex-urdf"
        raise ValueError(f"robot URDF {urdf}: cannot read it ({error.strerror}): {fix}") from None
    except ElementTree.ParseError as error:
        raise ValueError(f"robot URDF {urdf}: not XML ({error})") from None
    prefix = f"{side}_"
    for element in robot.findall("link") + robot.findall("joint"):
        element.set("name", prefix + element.get("name"))
    for element in robot.iter():
        if element.tag in ("parent", "child") and element.get("link"):
            element.set("link", prefix + element.get("link"))
        elif element.tag == "mimic":
            element.set("joint", prefix + element.get("joint"))
        elif element.tag == "mesh" and "://" not in element.get("filename", "://"):
            element.set("filename", (urdf.parent / element.get("filename")).resolve().as_uri())
    if parent:
        children = {child.get("link") for child in robot.iter("child")}
        root = next(link.get("name") for link in robot.findall("link") if link.get("name") not in children)
        ElementTree.SubElement(robot, "link", name=parent)
        mount = ElementTree.SubElement(robot, "joint", name=f"{prefix}mount", type="fixed")
        ElementTree.SubElement(mount, "parent", link=parent)
        ElementTree.SubElement(mount, "child", link=root)
        ElementTree.SubElement(mount, "origin", xyz=" ".join(map(str, values[:3])),
                               rpy=" ".join(map(str, values[3:])))
    return ElementTree.tostring(robot, encoding="unicode")


def _check_settings(settings: RetargetSettings) -> None:
    if not settings.enabled:
        raise ValueError("retargeting is off: set robot to one of " + ", ".join(ROBOTS) + " or config to a YAML")
    if not settings.config:
        if settings.robot not in ROBOTS:
            raise ValueError(f"unknown retargeting robot {settings.robot!r}: use one of {', '.join(ROBOTS)}, "
                             "or config with your own dex-retargeting YAML")
        if settings.type not in TYPES:
            raise ValueError(f"unknown retargeting type {settings.type!r}: use one of {', '.join(TYPES)}")
        if not settings.urdf_dir:
            raise ValueError("retargeting needs urdf_dir: the hands/ folder of a dex-urdf checkout "
                             "(git clone https://github.com/dexsuite/dex-urdf)")
        if not Path(settings.urdf_dir).is_dir():
            raise ValueError(f"retargeting urdf_dir {settings.urdf_dir} is not a folder: point it at the hands/ "
                             "folder of a dex-urdf checkout (git clone https://github.com/dexsuite/dex-urdf)")
    elif not Path(settings.config).is_file():
        raise ValueError(f"retargeting config {settings.config} is not a file: give the path of a "
                         "dex-retargeting YAML")
    if not settings.sides or any(side not in SIDES for side in settings.sides) \
            or len(set(settings.sides)) != len(settings.sides):
        raise ValueError(f"retargeting sides {list(settings.sides)}: use 'left', 'right' or both, once each")
    if not 0 <= settings.low_pass_alpha <= 1:
        raise ValueError(f"retargeting low_pass_alpha {settings.low_pass_alpha}: use 0 (off) to 1 "
                         "(smaller is smoother and later)")
    if not (math.isfinite(settings.max_joint_velocity) and settings.max_joint_velocity >= 0):
        raise ValueError(f"retargeting max_joint_velocity {settings.max_joint_velocity}: use 0 (no limit) or a "
                         "positive number of rad/s")


def _side_config(settings: RetargetSettings, side: str) -> tuple[Path, dict]:
    """A side's dex-retargeting YAML (the user's, or the bundled one of the robot and type) and its
    'retargeting' mapping with urdf_path made absolute; every failure as a one-line ValueError. Finds
    dex-retargeting's folder without importing it (that imports torch)."""
    import importlib.util

    import yaml

    if settings.config:
        path = Path(settings.config)
    else:
        spec = importlib.util.find_spec("dex_retargeting")
        if spec is None:
            raise ValueError(f"retargeting needs dex-retargeting: {_INSTALL}")
        path = (Path(next(iter(spec.submodule_search_locations))) / "configs" / "teleop" /
                f"{_CONFIG_STEMS[settings.robot]}_{side}{'_dexpilot' if settings.type == 'dexpilot' else ''}.yml")
    what = f"retargeting config {path}"
    try:
        config = yaml.safe_load(path.read_text())["retargeting"]
        config_type = str(config["type"]).lower()
        urdf = Path(config["urdf_path"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise ValueError(f"{what} does not parse ({_one_line(error)}): it needs a 'retargeting' mapping with "
                         "type and urdf_path (see dex-retargeting's configs/teleop)") from None
    if config_type not in TYPES:
        raise ValueError(f"{what}: type {config_type!r} is not one of {', '.join(TYPES)} (position retargeting "
                         "is for offline data, not a live stream)")
    if not urdf.is_absolute():
        # Bundled configs name URDFs relative to dex-urdf's hands/; a user's relative to urdf_dir or its folder.
        urdf = Path(settings.urdf_dir or path.parent) / urdf
    if not urdf.is_file():
        fix = ("point urdf_dir at the hands/ folder of a dex-urdf checkout" if not settings.config
               else "fix urdf_path in the config (relative paths start at urdf_dir, else at the config's folder)")
        raise ValueError(f"{what}: no URDF at {urdf}: {fix}")
    config["urdf_path"] = str(urdf)
    return path, config


_BUILD_LOCK = threading.Lock()


def _build(config_class, path: Path, config: dict, settings: RetargetSettings):
    """One side's SeqRetargeting from its config (_side_config); every failure as one-line ValueError."""
    what = f"retargeting config {path}"
    urdf = Path(config["urdf_path"])
    try:
        # build() writes the URDF it loads into a new folder in the temporary folder and leaves it there:
        # here that folder is inside one removed afterwards (the lock keeps concurrent builds apart).
        with _BUILD_LOCK, tempfile.TemporaryDirectory(prefix="acr_ros_retargeting-") as scratch:
            saved, tempfile.tempdir = tempfile.tempdir, scratch
            try:
                return config_class.from_dict(config).build()
            finally:
                tempfile.tempdir = saved
    except Exception as error:  # dex-retargeting, yourdfpy and pinocchio raise many kinds
        raise ValueError(f"{what} does not match its URDF {urdf.name} ({_one_line(error)}): fix the config's "
                         "link and joint names, or its urdf_path") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class _MeshWarningFilter(logging.Filter):
    """dex-retargeting's URDF loader warns once per mesh file it cannot find; kinematics needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to resolve filename")


def _quiet_mesh_warnings() -> None:
    logger = logging.getLogger("dex_retargeting.yourdfpy")
    if not any(isinstance(f, _MeshWarningFilter) for f in logger.filters):
        logger.addFilter(_MeshWarningFilter())
