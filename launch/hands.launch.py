"""Two-hand reconstruction: the hands node (a managed node), optionally an image source and RViz.

    ros2 launch acr_ros hands.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
    ros2 launch acr_ros hands.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info \
        depth_topic:=/camera/aligned_depth_to_color/image_raw        # RGB-D: metric hands
    ros2 launch acr_ros hands.launch.py source:=video input:=clip.mp4 rviz:=true
    ros2 launch acr_ros hands.launch.py checkpoint:=/models/wild.pkl mano_dir:=/models/mano
    ros2 launch acr_ros hands.launch.py autostart:=false   # then: ros2 lifecycle set /acr_hands configure, activate
    ros2 launch acr_ros hands.launch.py use_sim_time:=true ...   # beside `ros2 bag play --clock`
    ros2 launch acr_ros hands.launch.py respawn:=true ...   # a hands node that dies is started again
    ros2 launch acr_ros hands.launch.py robot:=leap urdf_dir:=dex-urdf/hands source:=webcam rviz:=true  # teleop

No half-alive graph: a bad params_file ends the launch before anything starts; the hands node and the
image source are required (when either exits, the launch ends, with exit code 1 unless it exited 0),
except that with respawn:=true a hands node that exits is started again (respawn_delay seconds later);
rviz:=true without rviz2 installed is said once and the rest runs without RViz. With retargeting on
(robot:= or the params_file's retarget.*), a robot_state_publisher per side turns the node's
~/<side>/joint_states into TF; without robot_state_publisher installed that is said once and the rest runs.
"""
from pathlib import Path
from typing import Optional

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from acr_ros.node import parameters
from acr_ros.node.parameters import PARAMS_BY_NAME, given_parameters
from acr_ros.retargeting import RetargetSettings, robot_urdf

# The hands node's compressed input follows the remapped image_raw (image_transport's convention).
CAMERA_REMAPPINGS = [
    ("image_raw", LaunchConfiguration("image")),
    ("camera_info", LaunchConfiguration("camera_info")),
]

# Launch arguments that override a node parameter of config/hands.yaml when given (non-empty).
PARAMETER_ARGUMENTS = {
    "backend": "auto, acr or mediapipe",
    "checkpoint": "path to the ACR checkpoint wild.pkl",
    "mano_dir": "folder with MANO_LEFT.pkl and MANO_RIGHT.pkl",
    "device": "auto, cuda or cpu",
    "runtime": "torch or onnxruntime (what runs the ACR network)",
}

# Launch arguments that override the node's retargeting parameters when given (non-empty).
RETARGET_ARGUMENTS = {
    "robot": ("retarget.robot", "robot hand to retarget to: leap, allegro, inspire, ability, shadow or schunk"),
    "retarget_type": ("retarget.type", "vector or dexpilot"),
    "urdf_dir": ("retarget.urdf_dir", "the hands/ folder of a dex-urdf checkout"),
}


class LaunchRefused(Exception):
    """Ends the launch with exit code 1; launch prints the message as one line."""


def check_params_file(context):
    """A params_file that cannot be used ends the launch before any node starts (launch_ros itself
    would only warn and start the node on its built-in defaults)."""
    path = Path(LaunchConfiguration("params_file").perform(context))
    try:
        parameters = yaml.safe_load(path.read_text())
    except OSError as error:
        raise LaunchRefused(f"params_file:={path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or "unreadable"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise LaunchRefused(f"params_file:={path}: not valid YAML ({where}{problem})") from None
    if not isinstance(parameters, dict) or not all(
            isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict)
            for section in parameters.values()):
        raise LaunchRefused(f"params_file:={path}: not a ROS 2 parameters file (expected <node name or /**>: "
                            "ros__parameters: {...})")
    return []


def number_argument(context, name: str, kind: type):
    """A numeric launch argument, or the launch refused with one line naming it."""
    value = LaunchConfiguration(name).perform(context)
    try:
        return kind(value)
    except ValueError:
        raise LaunchRefused(f"{name}:={value}: not {'an integer' if kind is int else 'a number'}") from None


def end_launch_when_it_exits(description: str):
    """An OnProcessExit callback for a required node: the launch ends with it, not half alive."""
    def on_exit(event, context):
        if context.is_shutdown:  # the launch is stopping it (Ctrl-C, or another required node ended)
            return None
        if event.returncode == 0:
            return [Shutdown(reason=f"{description} exited")]
        raise LaunchRefused(f"{description} exited with code {event.returncode} (its messages above say why): "
                            "ending the launch")
    return on_exit


def respawn_or_end(description: str, delay: float, max_retries: int):
    """An OnProcessExit callback for a node that launch respawns: upstream launch logs the death but not
    the restart, so the log says why the node comes back; once it has been restarted `max_retries`
    times (negative: no limit) upstream stops restarting it, and the launch ends as for a required node."""
    restarts = 0

    def on_exit(event, context):
        nonlocal restarts
        if context.is_shutdown:
            return
        if 0 <= max_retries <= restarts:
            raise LaunchRefused(f"{description} exited with code {event.returncode} after {restarts} restarts "
                                f"(respawn_max_retries:={max_retries}): ending the launch")
        restarts += 1
        get_logger("hands.launch.py").warning(
            f"{description} exited with code {event.returncode}: respawn:=true, starting it again in {delay} s")
    return on_exit


def required(node, description: str) -> list:
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=end_launch_when_it_exits(
        description)))]


def retarget_settings(context) -> Optional[RetargetSettings]:
    """The node's retargeting settings (None: off), read as the node reads them: the params_file's
    retarget.*, overridden by the launch arguments, the rest at the node's defaults."""
    given = given_parameters(yaml.safe_load(Path(LaunchConfiguration("params_file").perform(context)).read_text()))
    for argument, (parameter, _) in RETARGET_ARGUMENTS.items():
        given[parameter] = LaunchConfiguration(argument).perform(context) or given.get(parameter, "")
    return parameters.retarget_settings(lambda name: given.get(name, PARAMS_BY_NAME[name].default))


def robot_state_publishers(context):
    """Per retargeted side, robot_state_publisher with that side's prefixed URDF (its base mounted at
    <side>_robot_pose in robot_parent): the robot hand in TF and on /acr_hands/<side>/robot_description.
    A URDF that cannot be made ends the launch before any node starts."""
    settings = retarget_settings(context)
    if settings is None:
        return []
    parent = LaunchConfiguration("robot_parent").perform(context)
    try:
        urdfs = {side: robot_urdf(settings, side, parent, LaunchConfiguration(f"{side}_robot_pose")
                                  .perform(context).split()) for side in settings.sides}
    except ValueError as error:
        raise LaunchRefused(str(error)) from None
    try:
        get_package_prefix("robot_state_publisher")
    except PackageNotFoundError:
        get_logger("hands.launch.py").warning(
            "retargeting is on but robot_state_publisher is not installed (sudo apt install "
            "ros-jazzy-robot-state-publisher): running without the robot hands in TF")
        return []
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context) == "true"
    return [Node(
        package="robot_state_publisher",
        executable="robot_state_publisher",
        name=f"{side}_robot_state_publisher",
        output="screen",
        parameters=[{"robot_description": ParameterValue(urdf, value_type=str), "use_sim_time": use_sim_time}],
        remappings=[("joint_states", f"/acr_hands/{side}/joint_states"),
                    ("robot_description", f"/acr_hands/{side}/robot_description")],
    ) for side, urdf in urdfs.items()]


def rviz(context):
    """RViz is a viewer, not part of the graph: without it the rest runs, and the launch says so once.
    With retargeting on it also shows the robot hands (config/teleop.rviz)."""
    if LaunchConfiguration("rviz").perform(context) != "true":
        return []
    config = "hands.rviz" if retarget_settings(context) is None else "teleop.rviz"
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        get_logger("hands.launch.py").warning(
            "rviz:=true but rviz2 is not installed (sudo apt install ros-jazzy-rviz2): running without RViz")
        return []
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([FindPackageShare("acr_ros"), "config", config])],
        parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
    )]


def hands_node(context):
    overrides = {"autostart": LaunchConfiguration("autostart").perform(context) == "true",
                 # a recording played with `ros2 bag play --clock`: the node's clock is the recording's
                 "use_sim_time": LaunchConfiguration("use_sim_time").perform(context) == "true"}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    for argument, (parameter, _) in RETARGET_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context)
        if value:
            overrides[parameter] = value
    depth_topic = LaunchConfiguration("depth_topic").perform(context)
    if depth_topic:
        overrides["depth_topics"] = [depth_topic]
    respawn = LaunchConfiguration("respawn").perform(context) == "true"
    delay = number_argument(context, "respawn_delay", float)
    max_retries = number_argument(context, "respawn_max_retries", int)
    # A LifecycleNode action: launch follows its transition events and can request transitions
    # (launch_ros.events.lifecycle.ChangeState); the node starts itself when autostart is true, a
    # respawned one too.
    node = LifecycleNode(
        package="acr_ros",
        executable="hands_node",
        name="acr_hands",
        namespace="",
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=CAMERA_REMAPPINGS,
        respawn=respawn,
        respawn_delay=delay,
        respawn_max_retries=max_retries,
    )
    description = "the hands node (acr_hands)"
    if not respawn:
        return required(node, description)
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=respawn_or_end(
        description, delay, max_retries)))]


def image_source(context):
    if LaunchConfiguration("source").perform(context) == "none":
        return []
    return required(Node(
        package="acr_ros",
        executable="image_source",
        name="image_source",
        output="screen",
        parameters=[{
            "source": LaunchConfiguration("source"),
            # a webcam id like "0" must stay a string parameter
            "input": ParameterValue(LaunchConfiguration("input"), value_type=str),
            "frame_id": LaunchConfiguration("frame_id"),
            "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float),
            "camera_info_url": ParameterValue(LaunchConfiguration("camera_info_url"), value_type=str),
        }],
        remappings=CAMERA_REMAPPINGS,
    ), "the image source (image_source)")


def generate_launch_description():
    share = FindPackageShare("acr_ros")
    arguments = [
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo of that camera"),
        DeclareLaunchArgument("depth_topic", default_value="",
                              description="depth image registered to that camera (e.g. "
                              "/camera/aligned_depth_to_color/image_raw); empty: no depth"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "hands.yaml"]),
                              description="parameters of the hands node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="configure and activate the hands node at start; false: a lifecycle "
                                          "manager or `ros2 lifecycle set /acr_hands configure` (then activate) "
                                          "drives it"),
        DeclareLaunchArgument("respawn", default_value="false", choices=["true", "false"],
                              description="start the hands node again when it exits (killed, crashed, or "
                                          "failed at start), instead of ending the launch"),
        DeclareLaunchArgument("respawn_delay", default_value="1.0",
                              description="seconds between the hands node's exit and its restart (respawn:=true)"),
        DeclareLaunchArgument("respawn_max_retries", default_value="-1",
                              description="restarts at most (respawn:=true); once used up, the next exit ends the "
                                          "launch with exit code 1; negative: no limit"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start RViz with config/hands.rviz (config/teleop.rviz with retargeting on)"),
        DeclareLaunchArgument("source", default_value="none",
                              choices=["none", "webcam", "video", "folder", "image"],
                              description="also start an image source publishing on the image topics"),
        DeclareLaunchArgument("input", default_value="0",
                              description="the source's input: webcam id, video file, image folder or image"),
        DeclareLaunchArgument("frame_id", default_value="camera_optical_frame",
                              description="optical frame of the image source"),
        DeclareLaunchArgument("rate", default_value="10.0",
                              description="the image source's frames per second (0: a video's own rate)"),
        DeclareLaunchArgument("camera_info_url", default_value="",
                              description="the image source's calibration YAML (camera_calibration format; "
                                          "path, file:// or package:// URL); empty: uncalibrated"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="run the node and RViz on /clock (a bag played with --clock)"),
        DeclareLaunchArgument("robot_parent", default_value=LaunchConfiguration("frame_id"),
                              description="frame the robot hands' bases are placed in (default: frame_id)"),
        # In the optical frame (x right, y down, z forward): beside where an unmirrored camera sees each hand.
        DeclareLaunchArgument("left_robot_pose", default_value="0.4 0 0.6 0 0 0",
                              description="x y z (m) roll pitch yaw (rad) of the left robot hand's base "
                                          "in robot_parent"),
        DeclareLaunchArgument("right_robot_pose", default_value="-0.4 0 0.6 0 0 0",
                              description="x y z (m) roll pitch yaw (rad) of the right robot hand's base "
                                          "in robot_parent"),
    ] + [DeclareLaunchArgument(name, default_value="", description=f"{text} (overrides params_file)")
         for name, text in PARAMETER_ARGUMENTS.items()] + [
        DeclareLaunchArgument(name, default_value="", description=f"{text} (overrides params_file's {parameter})")
        for name, (parameter, text) in RETARGET_ARGUMENTS.items()]

    return LaunchDescription(arguments + [OpaqueFunction(function=check_params_file),
                                          OpaqueFunction(function=robot_state_publishers),
                                          OpaqueFunction(function=hands_node), OpaqueFunction(function=image_source),
                                          OpaqueFunction(function=rviz)])
