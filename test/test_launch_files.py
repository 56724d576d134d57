"""What can be checked of the launch file, the parameters file and the RViz config by reading them:
every executable, file, topic and parameter they name exists and matches. `ros2 launch` itself runs
in test/test_launch.py."""
import ast
import re
from pathlib import Path

import pytest
import yaml

from acr_ros.hands_node import PARAMS
from acr_ros.node.parameters import flatten_parameters

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "hands.launch.py"


def launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def installed_executables() -> set[str]:
    cmake = (REPO / "CMakeLists.txt").read_text()
    programs = re.search(r"install\(PROGRAMS(.*?)DESTINATION", cmake, re.S).group(1).split()
    return {Path(p).name for p in programs}


def node_calls() -> list[ast.Call]:
    return launch_calls("Node") + launch_calls("LifecycleNode")


def test_every_node_of_the_launch_file_is_an_installed_executable():
    nodes = node_calls()
    assert len(nodes) == 4
    # the rest are optional packages of a ROS install, started only when installed
    assert {ast.literal_eval(keyword(n, "package")) for n in nodes} == {"acr_ros", "rviz2", "robot_state_publisher"}
    ours = [n for n in nodes if ast.literal_eval(keyword(n, "package")) == "acr_ros"]
    assert {ast.literal_eval(keyword(n, "executable")) for n in ours} == {"hands_node", "image_source"}
    for node in ours:
        executable = ast.literal_eval(keyword(node, "executable"))
        assert executable in installed_executables()
        assert (REPO / "scripts" / executable).exists()
    # setup.py declares the same entry points for the pip path
    setup = (REPO / "setup.py").read_text()
    assert "hands_node = acr_ros.hands_node:main" in setup and "image_source = acr_ros.image_source:main" in setup


def test_files_named_by_the_launch_file_exist_and_are_installed():
    text = LAUNCH.read_text()
    named = set(re.findall(r'"([\w.]+\.(?:rviz|yaml))"', text))
    assert named == {"hands.yaml", "hands.rviz", "teleop.rviz"}
    for name in named:
        assert (REPO / "config" / name).exists(), name
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in (REPO / "CMakeLists.txt").read_text()


def declared_arguments() -> dict[str, ast.Call]:
    return {c.args[0].value: c for c in launch_calls("DeclareLaunchArgument")
            if c.args and isinstance(c.args[0], ast.Constant)}


def test_launch_arguments_match_the_node_and_the_source():
    declared = declared_arguments()
    assert {"image", "camera_info", "params_file", "rviz", "source", "input", "frame_id"} <= set(declared)
    # PARAMETER_ARGUMENTS (plain data: read without importing `launch`) become launch arguments
    # overriding node parameters of the same names.
    tree = ast.parse(LAUNCH.read_text())
    overrides = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and n.targets[0].id == "PARAMETER_ARGUMENTS")
    assert set(overrides) <= {p.name for p in PARAMS}
    assert "for name, text in PARAMETER_ARGUMENTS.items()" in LAUNCH.read_text()
    # RETARGET_ARGUMENTS likewise, to the node's retargeting parameters of other names.
    retarget = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and n.targets[0].id == "RETARGET_ARGUMENTS")
    assert set(retarget) == {"robot", "retarget_type", "urdf_dir"}
    assert {parameter for parameter, _ in retarget.values()} <= {p.name for p in PARAMS}
    assert "for name, (parameter, text) in RETARGET_ARGUMENTS.items()" in LAUNCH.read_text()
    assert {"robot_parent", "left_robot_pose", "right_robot_pose"} <= set(declared)
    # respawn is opt-in: by default a dying hands node ends the launch (test_launch.py runs both)
    assert ast.literal_eval(keyword(declared["respawn"], "default_value")) == "false"
    # The source modes offered are the ones the image source understands.
    source_arg = declared["source"]
    choices = set(ast.literal_eval(keyword(source_arg, "choices")))
    from acr_ros.media import FolderSource, ImageFileSource, VideoSource, WebcamSource
    assert choices - {"none"} == {cls.kind for cls in (FolderSource, ImageFileSource, VideoSource, WebcamSource)}


def test_remapped_topics_are_the_ones_the_nodes_use():
    tree = ast.parse(LAUNCH.read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "CAMERA_REMAPPINGS")
    remapped = {entry.elts[0].value for entry in table.elts}
    # Every camera topic either node uses; the hands node's compressed input follows image_raw's remap.
    assert remapped == {"image_raw", "camera_info"}
    for node in node_calls():
        if ast.literal_eval(keyword(node, "package")) == "acr_ros":
            assert getattr(keyword(node, "remappings"), "id", None) == "CAMERA_REMAPPINGS"
    defaults = yaml.safe_load((REPO / "config" / "hands.yaml").read_text())["/**"]["ros__parameters"]
    assert defaults["image_topics"] == ["image_raw"]  # remapped by the launch file
    # image_source publishes on the names remapped there
    import rclpy

    from acr_ros.image_source import ImageSource
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        source = ImageSource(context=context, cli_args=[
            "--ros-args", "-r", "image_raw:=/launch_cam/image", "-r", "camera_info:=/launch_cam/info"])
        assert (source.image_pub.topic_name, source.info_pub.topic_name) == ("/launch_cam/image", "/launch_cam/info")
        source.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_the_package_is_mit_licensed_and_pulls_no_rviz_onto_a_robot():
    """rosdep installs every exec_depend: RViz and its Qt on a headless robot, for an optional viewer."""
    package = (REPO / "package.xml").read_text()
    assert "<exec_depend>rviz2</exec_depend>" not in package
    assert "<license>MIT</license>" in package and (REPO / "LICENSE").read_text().startswith("MIT License")


def test_params_file_sets_exactly_the_declared_parameters_with_their_types_and_defaults():
    values = flatten_parameters(yaml.safe_load((REPO / "config" / "hands.yaml").read_text())["/**"]["ros__parameters"])
    declared = {p.name: p for p in PARAMS}
    assert set(values) == set(declared)
    for name, value in values.items():
        default = declared[name].default
        assert type(value) is type(default), name
        assert value == default, f"{name}: yaml {value!r} but the node declares {default!r}"
        if declared[name].choices:
            assert value in declared[name].choices


@pytest.mark.parametrize("topic", ["/acr_hands/markers", "/acr_hands/overlay"])
def test_rviz_config_shows_the_node_outputs(topic):
    config = yaml.safe_load((REPO / "config" / "hands.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert topic in [d.get("Topic", {}).get("Value") for d in displays]
    assert "rviz_default_plugins/TF" in [d["Class"] for d in displays]
    launch_source = LAUNCH.read_text()
    assert 'default_value="camera_optical_frame"' in launch_source
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera_optical_frame"
    assert 'name="acr_hands"' in launch_source  # the node name the topics above assume


def robot_state_publisher_topics() -> dict[str, str]:
    """The robot_state_publisher node's topics (remapped, per side) as the launch file names them."""
    call = next(n for n in node_calls() if ast.literal_eval(keyword(n, "package")) == "robot_state_publisher")
    pairs = {entry.elts[0].value: entry.elts[1] for entry in keyword(call, "remappings").elts}
    # f"/acr_hands/{side}/..." -> "/acr_hands/{side}/..."
    return {name: "".join(part.value if isinstance(part, ast.Constant) else "{" + part.value.id + "}"
                          for part in target.values) for name, target in pairs.items()}


def test_robot_state_publishers_read_the_nodes_joint_states():
    topics = robot_state_publisher_topics()
    assert topics["joint_states"] == "/acr_hands/{side}/joint_states"  # the node's ~/<side>/joint_states
    assert topics["robot_description"] == "/acr_hands/{side}/robot_description"
    assert 'f"~/{side}/joint_states"' in (REPO / "acr_ros" / "node" / "outputs.py").read_text()


def test_teleop_rviz_shows_the_robot_hands_beside_the_human_hands():
    teleop = yaml.safe_load((REPO / "config" / "teleop.rviz").read_text())
    hands = yaml.safe_load((REPO / "config" / "hands.rviz").read_text())
    displays = teleop["Visualization Manager"]["Displays"]
    robots = [d for d in displays if d["Class"] == "rviz_default_plugins/RobotModel"]
    description = robot_state_publisher_topics()["robot_description"]
    assert [d["Description Topic"]["Value"] for d in robots] == [description.format(side=side)
                                                                  for side in ("left", "right")]
    for robot in robots:
        assert robot["Description Source"] == "Topic" and robot["Enabled"]
        # robot_state_publisher's description is transient local; the URDF's links carry the side already
        assert robot["Description Topic"]["Durability Policy"] == "Transient Local" and robot["TF Prefix"] == ""
    # everything of hands.rviz is there too, the same
    assert [d for d in displays if d not in robots] == hands["Visualization Manager"]["Displays"]
    assert teleop["Visualization Manager"]["Global Options"] == hands["Visualization Manager"]["Global Options"]
