"""The hands node's parameters: one table (name, default, description, when applied, range), the
checks beyond type and range, and the settings the libraries take, read from the parameter values.

acr_offline reads the same parameters from a node parameters file (--params-file), so that a
recording is processed with the settings of the live node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from acr_ros import qos
from acr_ros.acr.hands import SIDES
from acr_ros.acr.one_euro import SmoothingConfig
from acr_ros.acr.options import PRECISIONS, RUNTIMES, EngineOptions, parse_providers
from acr_ros.backends import BACKENDS, THRESHOLDS
from acr_ros.frame_inputs import DecodeSettings
from acr_ros.hand_outputs import OutputSettings
from acr_ros.image_conversion import DEFAULT_MAX_PIXELS
from acr_ros.retargeting import ROBOTS, TYPES, RetargetSettings

NODE_NAME = "acr_hands"


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    at_configure: bool = False       # model and input parameters: applied by configure, settable while unconfigured
    read_only: bool = False          # read once at start
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] = ()


PARAMS = (
    Param("backend", "auto", "Hand model: 'acr', 'mediapipe' (embedded, no download), or 'auto' "
          "(ACR when checkpoint and MANO files are configured, else mediapipe)", True,
          choices=BACKENDS),
    Param("checkpoint", "", "Path to the ACR checkpoint wild.pkl (from the ACR README's Google Drive link)",
          True),
    Param("mano_dir", "", "Folder holding MANO_LEFT.pkl and MANO_RIGHT.pkl (https://mano.is.tue.mpg.de)",
          True),
    Param("device", "auto", "Inference device: auto (CUDA when available), cuda, cuda:N or cpu", True),
    Param("precision", "auto", "Network precision: auto (fp16 on CUDA, bf16 on a CPU with native bf16, each only "
          "where it stays within 1 px / 1 mm of fp32 on the bundled photos; else fp32), fp32, fp16, bf16",
          True, choices=PRECISIONS),
    Param("runtime", "auto", "What runs the ACR network: auto (on a CPU in fp32, the faster of torch and "
          "onnxruntime, measured once the network's ONNX export is cached and remembered per machine; torch "
          "otherwise), torch, or "
          "onnxruntime (exported to ONNX at the first start and cached, fp32; needs the onnxruntime package, "
          "onnxruntime-gpu for the CUDA and TensorRT providers)", True,
          choices=RUNTIMES),
    Param("cuda_graphs", True, "On a CUDA device with runtime torch: replay the network, the decoding and MANO as "
          "CUDA graphs, captured while loading for one 640x480 image and on first use for each other camera size or "
          "larger batch (that frame waits about a second once); false runs them eagerly, about 4x slower at "
          "batch 1", True),
    Param("aot_package", "", "With runtime torch: an AOTInductor package of the network (acr_export --aot, built "
          "on this machine) loaded at configure instead of compiling; set precision to the package's. One built "
          "for another GPU, torch, CUDA, precision or checkpoint is refused with a warning and the CUDA graphs "
          "(or the eager network) run; empty: none", True),
    Param("onnx_providers", "", "With runtime onnxruntime: execution providers in order of preference, "
          "comma-separated, e.g. 'TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider'; "
          "empty: CUDA then CPU on a CUDA device, CPU otherwise", True),
    Param("autostart", True, "Configure and activate the node at start; false: it stays unconfigured "
          "until a lifecycle manager or `ros2 lifecycle set` drives it", read_only=True),
    Param("enabled", True, "Follows the lifecycle state: false deactivates the node (no subscriptions, "
          "no inference, no publishing; the model stays loaded), true activates it again. With "
          "autostart, false at start configures the node without activating it"),
    # One confidence threshold per backend, each with its own meaning and range.
    *(Param(t.parameter, t.default, t.meaning, float_range=(t.low, t.high)) for t in THRESHOLDS),
    Param("suppress_duplicate_hands", False, "ACR: when the left and right detections fall on the same "
          "hand, keep only the stronger (off = official behaviour)", True),
    Param("smoothing.enabled", False, "One-Euro temporal smoothing of MANO pose and shape (the seed demo's -t)"),
    Param("smoothing.min_cutoff", 4.0, "One-Euro minimum cutoff (Hz) for finger pose and orientation",
          float_range=(0.001, 100.0)),
    Param("smoothing.shape_min_cutoff", 0.6, "One-Euro minimum cutoff (Hz) for the shape betas",
          float_range=(0.001, 100.0)),
    Param("smoothing.beta", 0.7, "One-Euro speed coefficient", float_range=(0.0, 100.0)),
    Param("smoothing.d_cutoff", 1.0, "One-Euro derivative cutoff (Hz)", float_range=(0.001, 100.0)),
    Param("image_topics", ["image_raw"], "Camera image topics; each camera's CameraInfo is the sibling "
          "'camera_info' topic. Several topics are batched into one forward pass", True),
    Param("compressed", False, "Subscribe to '<image topic>/compressed' (sensor_msgs/CompressedImage) "
          "instead of raw images", True),
    Param("qos_reliability", qos.AUTO, "Default reliability of the input subscriptions: auto (reliable when "
          "every publisher of the topic offers reliable, else best effort, re-chosen when the publishers "
          "change: what ros2 topic echo and rosbag2 do), best_effort (sensor data, REP 2003) or reliable. "
          "A topic's own qos_overrides.<topic>.subscription.reliability takes precedence "
          "(best_available there is auto)", True, choices=qos.CHOICES),
    Param("qos_depth", 5, "Image subscription queue depth", True, int_range=(1, 100)),
    Param("camera_info_timeout", 1.0, "Seconds a camera's first frame waits for its first CameraInfo when "
          "the camera_info topic has a publisher (then: the default intrinsics, with a warning)",
          float_range=(0.0, 10.0)),
    Param("depth_topics", [""], "Depth images registered to each colour camera, parallel to image_topics "
          "(e.g. '/camera/aligned_depth_to_color/image_raw'; a topic ending in '/compressedDepth' is "
          "read as compressedDepth); '' for a camera without depth; all '': no depth", True),
    Param("depth_max_time_difference", 0.02, "Seconds between a colour frame's stamp and its depth "
          "image's; a frame without a depth image that near is placed by the model (counted)",
          float_range=(0.0, 1.0)),
    Param("depth_millimetres_per_unit", 1.0, "Millimetres per unit of 16-bit depth images (1.0: "
          "RealSense, Orbbec, Azure Kinect); 32FC1 depth is metres", float_range=(0.001, 1000.0)),
    Param("max_image_pixels", DEFAULT_MAX_PIXELS, "Larger images are rejected (counted on diagnostics)",
          int_range=(1, 100_000_000)),
    Param("track_timeout", 2.0, "Seconds (image stamps) between two processed frames of a camera beyond "
          "which its hand tracks end; keep it above the time one inference takes",
          float_range=(0.01, 3600.0)),
    Param("publish_wrist_poses", True, "Publish each side's wrist as geometry_msgs/PoseStamped on "
          "~/left/wrist_pose and ~/right/wrist_pose (RELIABLE), only while that side is tracked"),
    Param("publish_tf", True, "Publish TF frames of the hands"),
    Param("tf_joints", True, "Publish a TF frame for each of the 21 joints (false: wrists only)"),
    Param("frame_prefix", "hand", "Prefix of the TF frame names, e.g. hand_left_wrist"),
    Param("publish_markers", True, "Publish RViz markers (mesh, skeleton, joints, label) on ~/markers"),
    Param("marker_lifetime", 1.0, "Seconds RViz keeps a hand's markers without a refresh, so that "
          "stale hands vanish when the camera stops (0: until deleted)", float_range=(0.0, 3600.0)),
    Param("publish_overlay", True, "Publish ~/overlay (input with the hands drawn), only while subscribed"),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", True, float_range=(0.1, 60.0)),
    # Teleoperation: robot-hand joint commands from the published hands (acr_ros.retargeting).
    Param("retarget.robot", "", "Robot hand to command: one of " + ", ".join(ROBOTS) + " ('' = off): "
          "~/left/joint_states and ~/right/joint_states (sensor_msgs/JointState, RELIABLE) through "
          "dex-retargeting, only while that side is tracked", True, choices=("",) + ROBOTS),
    Param("retarget.type", "vector", "Retargeting optimiser: vector (fingertip vectors) or dexpilot "
          "(also fingertip-to-fingertip distances: pinches)", True, choices=TYPES),
    Param("retarget.urdf_dir", "", "Folder of the robot hand URDFs (a dex-urdf checkout's hands/ folder)", True),
    Param("retarget.config", "", "A dex-retargeting YAML of your own, for any URDF (replaces retarget.robot "
          "and retarget.type)", True),
    Param("retarget.sides", ["left", "right"], "The hand sides to retarget (left, right)", True),
    Param("retarget.low_pass_alpha", 0.0, "dex-retargeting's low-pass filter of the joint commands "
          "(0: off; closer to 1: smoother and later)", True, float_range=(0.0, 1.0)),
    Param("retarget.max_joint_velocity", 0.0, "Largest joint speed commanded, rad/s (0: no limit): the "
          "first commands of a track do not jump", True, float_range=(0.0, 1000.0)),
)


PARAMS_BY_NAME = {param.name: param for param in PARAMS}


def descriptor(param: Param) -> ParameterDescriptor:
    description = param.description
    if param.choices:
        description += f" (one of: {', '.join(param.choices)})"
    if param.at_configure:
        description += " [applied at configure: set it while the node is unconfigured]"
    descriptor = ParameterDescriptor(description=description, read_only=param.read_only)
    if param.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=param.float_range[0], to_value=param.float_range[1])]
    if param.int_range:
        descriptor.integer_range = [IntegerRange(from_value=param.int_range[0], to_value=param.int_range[1])]
    return descriptor




def problem(param: Param, value) -> Optional[str]:
    """Why a parameter value is refused beyond its type and range (the descriptors enforce those), or None."""
    if param.choices and value not in param.choices:
        return f"parameter {param.name} is {value!r}; expected one of {', '.join(c or repr(c) for c in param.choices)}"
    if param.name == "frame_prefix" and (not value or "/" in value or " " in value):
        return "frame_prefix must be non-empty, without '/' or spaces"
    if param.name == "image_topics" and not value:
        return "image_topics is empty: name at least one camera image topic"
    if param.name == "retarget.sides" and (not value or set(value) - set(SIDES)):
        return f"retarget.sides is {list(value)}; expected one or both of {', '.join(SIDES)}"
    return None


def refusal(name: str, value, configured: bool, node: str) -> Optional[str]:
    """Why a node refuses a new value at run time, or None (types and ranges: the descriptors)."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.at_configure and configured:
        return (f"{name} is applied at configure: deactivate and clean up the node first "
                f"(ros2 lifecycle set {node} cleanup)")
    if name == "enabled" and value and not configured:
        return f"the node is unconfigured: configure it first (ros2 lifecycle set {node} configure)"
    return problem(spec, value)


def depth_topics_problem(image_topics: list[str], depth_topics: list[str]) -> Optional[str]:
    """Why depth_topics does not fit image_topics, or None."""
    if any(depth_topics) and len(depth_topics) != len(image_topics):
        return (f"depth_topics has {len(depth_topics)} entries but image_topics has {len(image_topics)}: "
                "give one per camera ('' for a camera without depth)")
    return None


Get = Callable[[str], object]  # a parameter's value by name


def smoothing_config(get: Get) -> Optional[SmoothingConfig]:
    if not get("smoothing.enabled"):
        return None
    min_cutoff, beta = get("smoothing.min_cutoff"), get("smoothing.beta")
    return SmoothingConfig(pose_min_cutoff=min_cutoff, orient_min_cutoff=min_cutoff, pose_beta=beta,
                           orient_beta=beta, betas_beta=beta, betas_min_cutoff=get("smoothing.shape_min_cutoff"),
                           d_cutoff=get("smoothing.d_cutoff"))


def engine_options(get: Get) -> EngineOptions:
    # cuda_graphs true is "auto": graphs where they apply (CUDA, runtime torch), not a refusal elsewhere.
    return EngineOptions(device=get("device"), precision=get("precision"),
                         suppress_duplicate_hands=get("suppress_duplicate_hands"), runtime=get("runtime"),
                         cuda_graphs="auto" if get("cuda_graphs") else False,
                         onnx_providers=parse_providers(get("onnx_providers")), aot_package=get("aot_package"))


def decode_settings(get: Get) -> DecodeSettings:
    return DecodeSettings(max_image_pixels=get("max_image_pixels"),
                          depth_millimetres_per_unit=get("depth_millimetres_per_unit"),
                          depth_max_time_difference=get("depth_max_time_difference"))


def output_settings(get: Get) -> OutputSettings:
    return OutputSettings(publish_wrist_poses=get("publish_wrist_poses"), publish_tf=get("publish_tf"),
                          tf_joints=get("tf_joints"), frame_prefix=get("frame_prefix"),
                          publish_markers=get("publish_markers"), marker_lifetime=get("marker_lifetime"))


def retarget_settings(get: Get) -> Optional[RetargetSettings]:
    """None while retargeting is off (no robot and no config)."""
    if not get("retarget.robot") and not get("retarget.config"):
        return None
    return RetargetSettings(robot=get("retarget.robot"), type=get("retarget.type"), urdf_dir=get("retarget.urdf_dir"),
                            config=get("retarget.config"), sides=tuple(get("retarget.sides")),
                            low_pass_alpha=get("retarget.low_pass_alpha"),
                            max_joint_velocity=get("retarget.max_joint_velocity"))


def flatten_parameters(values: dict, prefix: str = "") -> dict:
    """A parameters file's nested names joined with dots, as ROS 2 declares them."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_parameters_file(path, node_name: str = NODE_NAME) -> dict:
    """The node's parameter values in a ROS 2 parameters file (its `/**` and `node_name` sections,
    nested names joined with dots), every parameter absent there at its default. ValueError names
    the file and what is wrong: not YAML, an unknown parameter, a value of the wrong type or range."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not a readable parameters file: {error}") from None
    values = {param.name: param.default for param in PARAMS}
    sections = document if isinstance(document, dict) else {}
    if not any(isinstance(section, dict) and "ros__parameters" in section for section in sections.values()):
        raise ValueError(f"{path}: not a ROS 2 parameters file (expected <node name or /**>: ros__parameters: {{...}})")
    for key, value in given_parameters(sections, node_name).items():
        spec = PARAMS_BY_NAME.get(key)
        if spec is None:
            raise ValueError(f"{path}: unknown parameter {key!r} of {node_name}")
        values[key] = _checked(spec, value, path)
    return values


def given_parameters(document: dict, node_name: str = NODE_NAME) -> dict:
    """What a parsed parameters file gives the node (its `/**` and `node_name` sections, in that order,
    nested names joined with dots), unchecked."""
    given = {}
    for name in ("/**", node_name, f"/{node_name}"):
        section = document.get(name)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            given.update(flatten_parameters(section["ros__parameters"]))
    return given


def _checked(spec: Param, value, path: Path):
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{path}: parameter {spec.name} is {value!r}; expected a {expected.__name__}")
    low_high = spec.float_range or spec.int_range
    if low_high and not low_high[0] <= value <= low_high[1]:
        raise ValueError(f"{path}: parameter {spec.name} is {value}; expected {low_high[0]} to {low_high[1]}")
    why = problem(spec, value)
    if why:
        raise ValueError(f"{path}: {why}")
    return value
