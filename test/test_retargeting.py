"""The retargeting stage (acr_ros/retargeting.py) on every bundled dex-retargeting robot, both sides, vector
and DexPilot, with synthetic hands (support/hand_poses.py) and the robots' URDFs from ../shared/robots.

Each retargeter is built once per module and each (robot, type, side, pose) retargeted once (new tracks,
so the results do not depend on the order the tests run in)."""
from __future__ import annotations

import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import yaml

from acr_ros.retargeting import ROBOTS, TYPES, HandRetargeter, RetargetSettings, robot_urdf
from support.benchmarks import load_benchmark
from support.hand_poses import hand_pose

pytestmark = pytest.mark.slow(seconds=5)

HANDS = Path(__file__).resolve().parents[1].parent / "shared" / "robots" / "dex-urdf" / "hands"
if not HANDS.is_dir():
    pytest.skip(f"no robot URDFs at {HANDS} (../shared/robots beside the repository)", allow_module_level=True)

SIDES = ("left", "right")
POSES = ("open", "fist", "pinch")
# Left and right robots are mirror images through their base frame's x-z plane (found for all six: y -> -y).
MIRROR = np.array([1.0, -1.0, 1.0])
# How far the mirrored left fingertips may be from the right ones. The URDFs differ by up to 7 mm at equal
# joint values (Allegro, Inspire; LEAP's and Schunk's left hands have other joint zeros or names), and a
# vector fist asks for fingertips nearer the base than LEAP (scaling 1.6) and Allegro reach, so the two
# sides stop in different optima there (up to 4.7 cm measured).
MIRROR_TOLERANCE = {"dexpilot": {"open": 0.01, "fist": 0.01, "pinch": 0.01},
                    "vector": {"open": 0.015, "fist": 0.05, "pinch": 0.015}}
FRAME_NS = 33_333_333

COMBINATIONS = [(robot, kind) for robot in ROBOTS for kind in TYPES]
PER_SIDE = [(robot, kind, side) for robot, kind in COMBINATIONS for side in SIDES]


@pytest.fixture(scope="module")
def build():
    """build(robot, type, **settings) -> HandRetargeter, one per distinct settings in this module."""
    made = {}

    def get(robot: str, kind: str, **extra) -> HandRetargeter:
        key = (robot, kind, tuple(sorted(extra.items())))
        if key not in made:
            made[key] = HandRetargeter.create(RetargetSettings(robot=robot, type=kind, urdf_dir=str(HANDS), **extra))
        return made[key]

    return get


@pytest.fixture(scope="module")
def solved(build):
    """solved(robot, type, side, pose) -> RobotJoints of that pose as a new track, computed once."""
    results = {}

    def get(robot: str, kind: str, side: str, pose: str):
        key = (robot, kind, side, pose)
        if key not in results:
            results[key] = build(robot, kind).retarget(side, hand_pose(pose, side), 0, new_track=True)
        return results[key]

    return get


def urdf_limits(retargeter: HandRetargeter, robot: str, side: str) -> dict[str, tuple[float, float]]:
    """The movable joints' limits read from the URDF file itself, by joint name."""
    path = next(HANDS.glob(f"*/{'schunk_svh' if robot == 'schunk' else robot}_hand_{side}.urdf"))
    limits = {}
    for joint in ElementTree.parse(path).getroot().iter("joint"):
        if joint.get("type") in ("revolute", "prismatic"):
            limit = joint.find("limit")
            limits[joint.get("name")] = (float(limit.get("lower")), float(limit.get("upper")))
    return limits


def test_building_leaves_no_folder_behind():
    """dex-retargeting's build() copies the URDF into a new temporary folder and keeps it: one a side,
    at every configure, until the machine's temporary folder fills up."""
    def left_behind() -> set:
        return set(Path(tempfile.gettempdir()).glob("dex_retargeting-*"))

    before = left_behind()
    HandRetargeter.create(RetargetSettings(robot="leap", type="vector", urdf_dir=str(HANDS)))
    assert left_behind() <= before
    assert tempfile.tempdir is None or Path(tempfile.tempdir).is_dir()  # put back as it was


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_a_fist_brings_every_fingertip_closer_to_the_palm(build, solved, robot, kind, side):
    retargeter = build(robot, kind)
    palm = retargeter.palm(side)
    distance = {pose: np.linalg.norm(retargeter.fingertips(side, solved(robot, kind, side, pose).positions) - palm,
                                     axis=1) for pose in ("open", "fist")}
    assert len(distance["open"]) >= 4  # thumb and at least three fingers
    assert np.all(distance["fist"] < distance["open"]), distance


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_a_pinch_brings_the_thumb_and_index_tips_together(build, solved, robot, kind, side):
    retargeter = build(robot, kind)
    tips = {pose: retargeter.fingertips(side, solved(robot, kind, side, pose).positions) for pose in ("open", "pinch")}
    gap = {pose: np.linalg.norm(tip[0] - tip[1]) for pose, tip in tips.items()}
    assert gap["pinch"] < 0.5 * gap["open"], gap


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_joint_limits_hold_and_nothing_is_nan(build, solved, robot, kind, side):
    retargeter = build(robot, kind)
    limits = urdf_limits(retargeter, robot, side)
    names = retargeter.joint_names(side)
    assert {name.removeprefix(f"{side}_") for name in names} == set(limits)
    lower, upper = np.array([limits[name.removeprefix(f"{side}_")] for name in names]).T
    # The three poses, then a noisy stream between them within one track (the optimiser warm-starts).
    rng = np.random.default_rng(0)
    results = [solved(robot, kind, side, pose) for pose in POSES]
    for frame in range(12):
        joints = hand_pose(POSES[frame % 3], side) + rng.normal(0, 0.01, (21, 3)).astype(np.float32)
        results.append(retargeter.retarget(side, joints, (frame + 1) * FRAME_NS, new_track=False))
    for result in results:
        assert result.side == side and result.names == names
        assert result.positions.dtype == np.float64 and result.positions.shape == (len(names),)
        assert np.all(np.isfinite(result.positions)) and np.isfinite(result.residual) and result.seconds > 0
        assert np.all(result.positions >= lower) and np.all(result.positions <= upper)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_only_the_hand_pose_counts_not_where_the_hand_is_or_how_it_is_turned(build, solved, robot, kind, side):
    retargeter, rng = build(robot, kind), np.random.default_rng(1)
    fist = hand_pose("fist", side).astype(np.float64)
    for _ in range(3):
        moved = (fist - fist[0]) @ random_rotation(rng).T + rng.uniform(-0.3, 0.3, 3) + (0, 0, 0.8)
        result = retargeter.retarget(side, moved, 0, new_track=True)
        np.testing.assert_allclose(result.positions, solved(robot, kind, side, "fist").positions, atol=2e-3)


@pytest.mark.parametrize("robot,kind", COMBINATIONS)
def test_mirrored_hands_give_mirrored_robot_hands(build, solved, robot, kind):
    retargeter = build(robot, kind)
    for pose in POSES:
        left = retargeter.fingertips("left", solved(robot, kind, "left", pose).positions)
        right = retargeter.fingertips("right", solved(robot, kind, "right", pose).positions)
        error = np.abs(left * MIRROR - right).max()
        assert error < MIRROR_TOLERANCE[kind][pose], f"{pose}: {error * 1000:.1f} mm"


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_a_new_track_starts_from_the_neutral_pose_and_restarts_the_filter(build, solved, robot, kind, side):
    retargeter = build(robot, kind, low_pass_alpha=0.5)
    fist, open_hand = hand_pose("fist", side), hand_pose("open", side)
    for frame in range(3):
        retargeter.retarget(side, fist, frame * FRAME_NS, new_track=frame == 0)
    continued = retargeter.retarget(side, open_hand, 3 * FRAME_NS, new_track=False).positions
    restarted = retargeter.retarget(side, open_hand, 4 * FRAME_NS, new_track=True).positions
    # Unfiltered and from the neutral start: what the alpha-0 retargeter gives for a first frame.
    np.testing.assert_allclose(restarted, solved(robot, kind, side, "open").positions, atol=1e-9)
    assert np.abs(continued - restarted).max() > 0.05  # the filter and the fist's solution held it back


@pytest.mark.parametrize("robot,kind,side", PER_SIDE)
def test_max_joint_velocity_bounds_each_change_from_the_neutral_pose_on(build, robot, kind, side):
    velocity = 2.0  # rad/s
    limited, free = build(robot, kind, max_joint_velocity=velocity), build(robot, kind)
    fist = hand_pose("fist", side)
    commands, unlimited = [], []
    for frame in range(40):
        commands.append(limited.retarget(side, fist, frame * FRAME_NS, new_track=frame == 0).positions)
        unlimited.append(free.retarget(side, fist, frame * FRAME_NS, new_track=frame == 0).positions)
    np.testing.assert_allclose(commands[0], limited.neutral(side))
    steps = np.abs(np.diff(commands, axis=0)).max(axis=1)
    assert np.all(steps <= velocity * FRAME_NS * 1e-9 + 1e-9)
    assert steps[0] == pytest.approx(velocity * FRAME_NS * 1e-9)  # the limit, not the target, set the step
    # The limit delays the commands, not the optimiser: the ramp ends on the unlimited solution.
    np.testing.assert_allclose(commands[-1], unlimited[-1], atol=1e-9)
    # Same stamp again: no time, no change.
    held = limited.retarget(side, hand_pose("open", side), 39 * FRAME_NS, new_track=False).positions
    np.testing.assert_array_equal(held, commands[-1])


@pytest.mark.parametrize("robot,kind", COMBINATIONS)
def test_the_objective_without_torch_is_dex_retargetings(build, robot, kind):
    """The stage's numpy objective against the optimiser's own (torch) one: values, gradients and DexPilot's
    pinch state, over the poses in the order that sets and keeps that state, at random joint positions."""
    rng = np.random.default_rng(2)
    for side in SIDES:
        optimizer = build(robot, kind)._side(side).optimizer
        own = type(optimizer).get_objective_function  # the class's, which the stage replaced on the instance
        lower, upper = optimizer.opt.get_lower_bounds(), optimizer.opt.get_upper_bounds()
        for pose in ("open", "pinch", "fist", "pinch"):
            reference = build(robot, kind)._side(side).reference(hand_pose(pose, side)).astype(np.float32)
            last = rng.uniform(lower, upper).astype(np.float32)
            state = np.copy(getattr(optimizer, "projected", ()))
            ours = optimizer.get_objective_function(reference, np.array([]), last)
            if kind == "dexpilot":
                ours_state, optimizer.projected[:] = optimizer.projected.copy(), state
            theirs = own(optimizer, reference, np.array([]), last)
            if kind == "dexpilot":
                np.testing.assert_array_equal(ours_state, optimizer.projected)
            for _ in range(3):
                x = rng.uniform(lower, upper)
                grad_ours, grad_theirs = np.zeros_like(x), np.zeros_like(x)
                assert ours(x, grad_ours) == pytest.approx(theirs(x, grad_theirs), rel=1e-12, abs=1e-15)
                np.testing.assert_allclose(grad_ours, grad_theirs, rtol=1e-10, atol=1e-13)
    if kind == "dexpilot":
        assert optimizer.projected.any()  # the pinch projected a pair: that branch was compared too


def test_names_are_the_urdf_joints_prefixed_by_side(build):
    retargeter = build("leap", "vector")
    assert retargeter.joint_names("left") == tuple("left_" + n[6:] for n in retargeter.joint_names("right"))
    assert set(retargeter.joint_names("right")) == {f"right_{i}" for i in range(16)}


def test_link_frames_agree_with_the_fingertips(build, solved):
    retargeter = build("shadow", "dexpilot")
    positions = solved("shadow", "dexpilot", "right", "fist").positions
    frames = retargeter.link_frames("right", positions)
    tips = np.stack([frames[name][:3, 3] for name in retargeter.fingertip_links("right")])
    np.testing.assert_allclose(tips, retargeter.fingertips("right", positions))
    assert all(np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)) for pose in frames.values())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_joints_are_refused(build, bad):
    joints = hand_pose("open", "right")
    joints[7, 1] = bad
    with pytest.raises(ValueError, match="not finite"):
        build("allegro", "vector").retarget("right", joints, 0, new_track=True)


def test_collinear_knuckles_are_refused(build):
    joints = np.linspace(0, 1, 63, dtype=np.float32).reshape(21, 3)
    with pytest.raises(ValueError, match="collinear"):
        build("allegro", "vector").retarget("right", joints, 0, new_track=True)


def test_a_users_config_overrides_robot_and_type(tmp_path, build, solved):
    bundled = Path(sys.modules["dex_retargeting"].__file__).parent / "configs" / "teleop" / "allegro_hand_right.yml"
    config = yaml.safe_load(bundled.read_text())
    (tmp_path / "mine.yml").write_text(yaml.safe_dump(config))  # urdf_path relative to urdf_dir
    mine = HandRetargeter.create(RetargetSettings(robot="leap", type="dexpilot", config=str(tmp_path / "mine.yml"),
                                                  urdf_dir=str(HANDS), sides=("right",)))
    assert mine.sides == ("right",)
    result = mine.retarget("right", hand_pose("pinch", "right"), 0, new_track=True)
    assert result.names == build("allegro", "vector").joint_names("right")
    np.testing.assert_allclose(result.positions, solved("allegro", "vector", "right", "pinch").positions, atol=1e-6)


def one_line_refusal(settings: RetargetSettings, capfd) -> str:
    with pytest.raises(ValueError) as raised:
        HandRetargeter.create(settings)
    message = str(raised.value)
    assert "\n" not in message
    assert "Unable to resolve filename" not in "".join(capfd.readouterr())
    return message


@pytest.fixture
def urdf_copy(tmp_path) -> Path:
    """hands/allegro_hand/ with a copy of the right Allegro URDF, for configs to break."""
    (tmp_path / "allegro_hand").mkdir()
    source = HANDS / "allegro_hand" / "allegro_hand_right.urdf"
    (tmp_path / "allegro_hand" / source.name).write_text(source.read_text())
    return tmp_path


@pytest.mark.parametrize("settings,names", [
    (RetargetSettings(robot="baxter", urdf_dir=str(HANDS)), ["baxter", "leap, allegro", "config"]),
    (RetargetSettings(robot="leap", type="position", urdf_dir=str(HANDS)), ["position", "vector, dexpilot"]),
    (RetargetSettings(robot="leap"), ["urdf_dir", "dex-urdf"]),
    (RetargetSettings(robot="leap", urdf_dir="/nonexistent/hands"), ["/nonexistent/hands", "dex-urdf"]),
    (RetargetSettings(robot="leap", urdf_dir=str(HANDS), sides=("up",)), ["'up'", "'left', 'right'"]),
    (RetargetSettings(robot="leap", urdf_dir=str(HANDS), low_pass_alpha=2.0), ["low_pass_alpha", "0 (off) to 1"]),
    (RetargetSettings(robot="leap", urdf_dir=str(HANDS), max_joint_velocity=-1.0), ["max_joint_velocity", "rad/s"]),
    (RetargetSettings(), ["off", "robot", "config"]),
])
def test_bad_settings_are_refused_in_one_line_that_names_the_fix(settings, names, capfd):
    message = one_line_refusal(settings, capfd)
    assert all(name in message for name in names), message


def test_a_urdf_dir_without_the_robot_is_refused(tmp_path, capfd):
    message = one_line_refusal(RetargetSettings(robot="shadow", urdf_dir=str(tmp_path)), capfd)
    assert "shadow_hand/shadow_hand_left.urdf" in message and "dex-urdf" in message


def test_a_config_that_does_not_parse_is_refused(tmp_path, capfd):
    (tmp_path / "bad.yml").write_text("retargeting: [type: vector\n")
    message = one_line_refusal(RetargetSettings(config=str(tmp_path / "bad.yml")), capfd)
    assert "bad.yml does not parse" in message and "'retargeting' mapping" in message


def test_a_config_that_does_not_match_its_urdf_is_refused(urdf_copy, capfd):
    bundled = Path(sys.modules["dex_retargeting"].__file__).parent / "configs" / "teleop" / "allegro_hand_right.yml"
    config = yaml.safe_load(bundled.read_text())
    config["retargeting"]["target_task_link_names"][1] = "link_that_is_not_there"
    (urdf_copy / "mine.yml").write_text(yaml.safe_dump(config))
    message = one_line_refusal(RetargetSettings(config=str(urdf_copy / "mine.yml")), capfd)
    assert "does not match its URDF allegro_hand_right.urdf" in message and "link_that_is_not_there" in message


def test_a_missing_dex_retargeting_names_the_install(monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "dex_retargeting", None)  # import fails as if not installed
    message = one_line_refusal(RetargetSettings(robot="leap", urdf_dir=str(HANDS)), capfd)
    assert "pip install dex-retargeting" in message


def test_building_prints_no_mesh_chatter(capfd):
    HandRetargeter.create(RetargetSettings(robot="inspire", urdf_dir=str(HANDS)))
    out, err = capfd.readouterr()
    assert "Unable to resolve filename" not in out + err


def test_the_benchmark_runs_as_documented(capsys):
    load_benchmark("retargeting").main(["--frames", "5", "--robots", "ability", "--types", "vector", "dexpilot"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ability")]
    assert [row[1].strip() for row in rows] == ["vector", "dexpilot"]
    assert all(float(row[2]) > 0 and float(row[3]) >= float(row[2]) for row in rows)


@pytest.mark.parametrize("robot", ROBOTS)
def test_robot_urdf_names_are_the_joint_states_and_its_base_sits_at_the_pose(build, robot):
    """robot_state_publisher matches JointState names to the URDF's joints: the side's movable joints
    must be exactly the retargeter's names, and nothing of one side may share a name with the other."""
    settings = RetargetSettings(robot=robot, urdf_dir=str(HANDS))
    names = {}
    for side in SIDES:
        text = robot_urdf(settings, side, "camera_optical_frame", (0.4, 0, 0.6, 0, 0, 1.5))
        urdf = ElementTree.fromstring(text)
        joints = urdf.findall("joint")
        movable = {j.get("name") for j in joints if j.get("type") != "fixed"}
        assert movable == set(build(robot, "vector").joint_names(side))
        links = {link.get("name") for link in urdf.findall("link")} - {"camera_optical_frame"}
        assert all(name.startswith(f"{side}_") for name in links | {j.get("name") for j in joints})
        # every reference points at a link or joint of this text
        assert {e.get("link") for e in urdf.iter() if e.tag in ("parent", "child")} <= links | {"camera_optical_frame"}
        assert {e.get("joint") for e in urdf.iter("mimic")} <= movable
        # One tree hanging from the camera frame by the mount, at the pose given.
        children = [e.get("link") for e in urdf.iter("child")]
        assert len(children) == len(set(children)) and links - set(children) == set()
        mount = next(j for j in joints if j.get("name") == f"{side}_mount")
        assert mount.find("parent").get("link") == "camera_optical_frame"
        origin = mount.find("origin")
        assert [float(v) for v in origin.get("xyz").split() + origin.get("rpy").split()] == [0.4, 0, 0.6, 0, 0, 1.5]
        meshes = [m.get("filename") for m in urdf.iter("mesh")]
        assert meshes and all(m.startswith("file:///") for m in meshes)
        names[side] = links | {j.get("name") for j in joints}
    assert not names["left"] & names["right"]


def test_robot_urdf_refuses_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        robot_urdf(RetargetSettings(robot="leap", urdf_dir=str(tmp_path / "none")), "left")
    with pytest.raises(ValueError, match="no URDF at .*leap_hand_left.urdf: point urdf_dir at the hands/ folder"):
        robot_urdf(RetargetSettings(robot="leap", urdf_dir=str(tmp_path)), "left")
    (tmp_path / "leap_hand").mkdir()
    (tmp_path / "leap_hand" / "leap_hand_left.urdf").write_text("<robot name='leap'><link name='base'></robot>")
    with pytest.raises(ValueError, match="leap_hand_left.urdf: not XML"):
        robot_urdf(RetargetSettings(robot="leap", urdf_dir=str(tmp_path)), "left")
    with pytest.raises(ValueError, match="6 finite numbers"):
        robot_urdf(RetargetSettings(robot="leap", urdf_dir=str(HANDS)), "left", "cam", ("0.4", "x", 0, 0, 0, 0))
