"""Offline hand reconstruction on images, folders, videos, webcams and ROS 2 recordings.

    acr_offline [--inputs IMAGE|FOLDER|VIDEO|WEBCAM_ID|BAG ...] [-o OUTPUT_DIR] [-t]
                [--backend auto|acr|mediapipe] [--checkpoint wild.pkl] [--mano-dir DIR]
                [--device auto] [--precision auto] [--runtime auto|torch|onnxruntime [--onnx-providers P ...]]
                [--threshold T] [--no-render] [--batch-size N]
                [--calibration camera.yaml | --intrinsics FX FY CX CY] [--depth DEPTH_FOLDER]
                [--image-topic TOPIC] [--camera-info-topic TOPIC] [--copy-inputs] [--bag-overlay]
                [--threads N] [--ray [ADDRESS] [--gpus-per-worker G] [--workers N] [--skip-existing]]

Without --inputs it runs on the bundled samples (acr_ros/data/samples: its images as a folder,
and the clip). The backend is chosen like the node's: ACR when --checkpoint or --mano-dir is given
(a wrong path stops the run with a message naming the file), the embedded MediaPipe backend when
neither is (no download needed). Inputs that do not exist and misconfigurations (bad --intrinsics,
--device, --fps, an output folder that cannot be written, ...) are reported before any model loads;
unreadable images are reported one line each and skipped; the exit code is 1 when anything was
skipped, 2 when nothing could run (docs/offline.md, "Exit codes").

Distances need the camera's intrinsics: --calibration reads the calibration YAML that ROS's
camera_calibration writes (scaled to the image size when the images are a resized stream),
--intrinsics takes them directly; without either, ACR's default focal length is used (said once as
a warning) and depth can be off by a large factor. --depth FOLDER places every hand on an aligned
depth image (an RGB-D camera's depth registered to colour: 16-bit PNG in millimetres, --depth-scale
for other units; paired with the frames by file name, else by order), as the node's depth_topics.

Outputs in OUTPUT_DIR (default ./acr_output), for an input named NAME:
    image   NAME_output.jpg                     the input with the hands drawn
    folder  NAME/<image>_output.jpg + NAME_output.mp4
    video   NAME_output.mp4                     (webcam: webcam<ID>_output.mp4)
    bag     NAME_hands/ (rosbag2, MCAP storage) + NAME_output.mp4, see "Recordings" below
    all     NAME_results.npz                    the results, below
Overlays show the shaded MANO mesh when the backend has one (ACR), the skeleton otherwise;
--no-render skips them (results only).

Recordings (acr_ros.recordings): a rosbag2 bag directory (sqlite3 or MCAP storage) or a single
.mcap or .db3 file. Every image of --image-topic (sensor_msgs/Image or CompressedImage; default:
the bag's only image topic) is processed, in record order, in batches of --batch-size, with the
CameraInfo of the image topic's sibling camera_info (or --camera-info-topic; --calibration and
--intrinsics override both). NAME_hands/ holds what the node would have published, at the images'
stamps and written at their record times: /acr_hands/hands (hand tracks as the node keeps them),
/acr_hands/left|right/wrist_pose, /tf, /acr_hands/markers, /acr_hands/mesh (ACR), with
--bag-overlay /acr_hands/overlay; the input's /tf_static as recorded; with --copy-inputs every
input topic too (the input's /tf merged into the output's). The same recording gives a
byte-identical bag and identical results arrays on every run (same machine, backend and options).
Unusable images, damaged storage and missing topics are reported on stderr with the file and the
reason; what can be read is processed and the exit code is 1. Ctrl-C stops after the batch in
flight and closes every output (exit code 130); a second Ctrl-C stops at once. --depth-topic
places the hands on the recording's aligned depth images (as --depth does for folders and videos).

--ray fans the inputs out over a Ray cluster (acr_ros.cluster, docs/cluster.md): each input is
processed by one worker with this same code, into a staging folder moved into place with a
completion marker NAME_done.json, so the outputs equal a local run's with the same --threads.

-t/--temporal: One-Euro smoothing per hand side (acr_ros.acr.one_euro.SmoothingConfig defaults,
as the node). ACR smooths the MANO pose and shape (the seed demo's -t); the MediaPipe backend
smooths the 3D joints and, separately, the 2D keypoints (in normalised image coordinates), both
with the finger-pose parameters.

NAME_results.npz (numpy.load, no pickle) holds one row per frame and one row per hand:
    backend, model, checkpoint          () str: which model made them
    frame_name (F,) str, frame_timestamp (F,) float64 s, frame_size (F, 2) int (width, height),
    default_intrinsics (F,) bool, intrinsics (F, 4) float64 fx, fy, cx, cy used (NaN if unknown)
    hand_frame (N,) int                 row of the hand's frame in the frame arrays
    side (N,) str 'left'/'right', score (N,) float32
    joints (N, 21, 3) m, camera optical frame; keypoints (N, 21, 2) px; box (N, 4) int x, y, w, h
    wrist_position (N, 3) m; wrist_rotation (N, 3, 3); wrist_quaternion (N, 4) x, y, z, w
    depth_source (N,) str 'model'/'depth', depth_residual (N,) m (NaN from the model), depth_samples (N,)
    global_orient (N, 3), finger_pose (N, 45), shape (N, 10), weak_camera (N, 3),
    vertices (N, 778, 3) m, joint_rotations (N, 21, 3, 3)   NaN where the backend gives none
                                        (MediaPipe: no MANO fields, no vertices)
These are the per-hand fields of acr_ros/Hand (joint order: acr_ros.acr.hands.JOINT_NAMES).
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from acr_ros.acr.options import PRECISIONS, RUNTIMES
from acr_ros.acr.runtime import passive_openmp_waits
from acr_ros.backends import BACKENDS
from acr_ros.media import SAMPLES_DIR, VIDEO_SUFFIXES, is_recording, sample_inputs
from acr_ros.offline_unit import (RunContext, engine_options, load_backend, model_files_problem, process_spec,
                                  report)
from acr_ros.retargeting import ROBOTS, TYPES

DEFAULT_OUTPUT = Path("acr_output")
NO_INTRINSICS = ("acr_offline: warning: no camera intrinsics (--calibration or --intrinsics): hands are placed with "
                 "ACR's default focal length and distances can be off by a large factor")


# ---- command line -----------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="acr_offline", description=__doc__.split("\n\n")[0],
        epilog="Results format and outputs: see the module documentation (python -m pydoc acr_ros.offline).")
    parser.add_argument("-i", "--inputs", nargs="+", default=None,
                        help="images, folders of images, videos, webcam ids (integers) or recordings "
                             "(rosbag2 bag directories, .mcap, .db3); default: the bundled samples")
    parser.add_argument("-o", "--output-dir", type=Path, default=DEFAULT_OUTPUT, help="default: ./acr_output")
    parser.add_argument("-t", "--temporal", action="store_true", help="One-Euro temporal smoothing")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--checkpoint", default="", help="ACR checkpoint wild.pkl (ACR README, Google Drive)")
    parser.add_argument("--mano-dir", default="", help="folder with MANO_LEFT.pkl and MANO_RIGHT.pkl "
                                                       "(https://mano.is.tue.mpg.de)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (ACR)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="ACR")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="what runs the ACR network (onnxruntime: exported to ONNX at start-up, fp32; auto: on "
                             "a CPU in fp32 the faster of the two, measured once the export is cached)")
    parser.add_argument("--onnx-providers", nargs="+", default=(), metavar="PROVIDER",
                        help="onnxruntime execution providers in order of preference (default: CUDA then CPU "
                             "on a CUDA device, CPU otherwise)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="detection threshold (ACR: center-map peak, default 0.35; "
                             "MediaPipe: detection confidence, default 0.5)")
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                        help="camera intrinsics in pixels of the inputs (default: the documented "
                             "default focal, depth approximate)")
    camera.add_argument("--calibration", default=None,
                        help="camera calibration YAML (ROS camera_calibration format; path or file:// URL)")
    parser.add_argument("--depth", type=Path, default=None,
                        help="folder of depth images aligned to the colour frames (16-bit PNG in millimetres, "
                             "or 32-bit float TIFF in metres), paired by file name, else by order")
    parser.add_argument("--depth-scale", type=float, default=None,
                        help="millimetres per unit of 16-bit depth images (default: the node's "
                             "depth_millimetres_per_unit, 1.0)")
    parser.add_argument("--retarget", default=None, metavar="ROBOT",
                        help="robot-hand joint commands with dex-retargeting: " + ", ".join(ROBOTS) + " (JointState "
                             "per side in the bag, robot_positions in the results; also retarget.* of --params-file)")
    parser.add_argument("--retarget-type", default="vector", choices=TYPES, help="with --retarget (default vector)")
    parser.add_argument("--urdf-dir", default="", help="with --retarget: the robot URDFs' folder (dex-urdf's hands/)")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="the hands node's parameters file (e.g. config/hands.yaml): its track, depth and "
                             "output parameters (track_timeout, depth_max_time_difference, frame_prefix, tf_joints, "
                             "marker_lifetime, ...) apply here as in the node")
    parser.add_argument("--no-render", action="store_true", help="write results only, no overlays or mp4")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of folder inputs (timestamps, mp4)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop each input after this many frames")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per forward pass (video, folder, recording)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the network (torch) and OpenCV in each process (default: torch's, all "
                             "cores; a Ray worker: its CPUs, 1). Results on the CPU can differ in the last bits "
                             "between thread counts")
    cluster = parser.add_argument_group("a Ray cluster (docs/cluster.md)")
    cluster.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                         help="fan the inputs out over Ray workers, one input at a time each: no ADDRESS, a local "
                              "Ray; 'auto' or ray://HOST:PORT, an existing cluster (-o on storage every node mounts)")
    cluster.add_argument("--gpus-per-worker", type=float, default=None,
                         help="GPUs of each worker (default: 1 where the cluster has GPUs, else CPU workers)")
    cluster.add_argument("--workers", type=int, default=None,
                         help="at most this many workers (default: as many as the cluster's GPUs or CPUs allow)")
    cluster.add_argument("--skip-existing", action="store_true",
                         help="leave out inputs finished before with the same options (their completion marker "
                              "NAME_done.json); redo the others")
    bags = parser.add_argument_group("recordings (rosbag2 bag directories, .mcap or .db3 files)")
    bags.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage topic (default: the bag's only one)")
    bags.add_argument("--camera-info-topic", help="default: the image topic's sibling camera_info, when recorded")
    bags.add_argument("--depth-topic", help="depth images aligned to the colour images (16UC1 mm, 32FC1 m, or "
                                            "compressedDepth), paired by stamp: hands placed on them (--depth-scale)")
    bags.add_argument("--copy-inputs", action="store_true",
                      help="copy every input topic into the output bag, so that one file holds both")
    bags.add_argument("--bag-overlay", action="store_true",
                      help="write the overlay image into the output bag (raw bgr8, as the node's ~/overlay)")
    return parser.parse_args(argv)


def default_inputs() -> list[str]:
    """The bundled samples: the folder (its images as a sequence) and each clip."""
    clips = [p for p in sample_inputs() if p.suffix.lower() in VIDEO_SUFFIXES]
    return [str(SAMPLES_DIR)] + [str(p) for p in clips]


def missing_inputs(inputs: list[str]) -> list[str]:
    """The inputs that are neither a webcam id nor an existing file or folder (checked before any
    model loads, so a typo fails at once)."""
    return [spec for spec in inputs if not str(spec).strip().isdigit() and not Path(spec).expanduser().exists()]


def argument_problem(args) -> Optional[str]:
    """What is wrong with the numeric options, one line, or None (checked before any model loads)."""
    positive = {"--fps": args.fps, "--batch-size": args.batch_size, "--max-frames": args.max_frames,
                "--depth-scale": args.depth_scale, "--threads": args.threads, "--workers": args.workers}
    for option, value in positive.items():
        if value is not None and not (np.isfinite(value) and value > 0):
            return f"{option} {value:g}: must be a positive number"
    if args.threshold is not None and not np.isfinite(args.threshold):
        return f"--threshold {args.threshold:g}: must be a finite number"
    if args.gpus_per_worker is not None and not (np.isfinite(args.gpus_per_worker) and args.gpus_per_worker >= 0):
        return f"--gpus-per-worker {args.gpus_per_worker:g}: must be 0 (CPU workers) or more"
    cluster_only = [option for option, given in (("--gpus-per-worker", args.gpus_per_worker is not None),
                                                 ("--workers", args.workers is not None),
                                                 ("--skip-existing", args.skip_existing)) if given]
    if cluster_only and args.ray is None:
        return f"{', '.join(cluster_only)}: only with --ray"
    return None


def check_output_folder(folder: Path) -> None:
    """Creates the output folder when missing; raises ValueError (one line) when outputs cannot be
    written there. Checked before any model loads, by creating a file in it: only that tells for
    certain (permissions aside, a read-only file system or a path below a file stop even root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"-o {folder}: cannot write there ({error.strerror or error}): choose another output "
                         "folder") from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_once(number, frame):
    """SIGINT and SIGTERM stop the run as Ctrl-C does (the input in progress is saved); any later one
    is ignored, so that neither the saving nor the interpreter's exit is cut short (Python puts
    handled signals back to their default action when it exits, but leaves ignored ones ignored)."""
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv=None) -> int:
    passive_openmp_waits()  # before torch loads
    previous = {number: signal.signal(number, interrupt_once) for number in STOP_SIGNALS}
    try:
        return run(argv)
    except KeyboardInterrupt:  # outside an input's processing (which saves what it did and ends)
        print("acr_offline: stopped", file=sys.stderr)
        return 130
    finally:
        if signal.getsignal(signal.SIGINT) is interrupt_once:  # not stopped: callers get theirs back
            for number, handler in previous.items():
                signal.signal(number, handler)


def run(argv=None) -> int:
    args = parse_args(argv)
    if args.ray is not None:
        from acr_ros import cluster

        problem = cluster.missing_ray()
        if problem:
            print(f"acr_offline: {problem}", file=sys.stderr)
            return 2
    inputs = [str(spec) for spec in args.inputs or default_inputs()]
    status = 0
    for spec in missing_inputs(inputs):
        print(f"acr_offline: skipping {spec}: no such file or folder", file=sys.stderr)
        inputs.remove(spec)
        status = 1
    if not inputs:
        print("acr_offline: no input to process", file=sys.stderr)
        return 2
    problem = argument_problem(args)
    if problem:
        print(f"acr_offline: {problem}", file=sys.stderr)
        return 2
    try:
        context = RunContext.create(args)
        options = engine_options(args)
    except ValueError as error:  # a params file, --retarget, --depth, --calibration, --intrinsics, --device
        print(f"acr_offline: {error}", file=sys.stderr)
        return 2
    recordings = [spec for spec in inputs if is_recording(spec)]
    if args.depth is not None and recordings:
        print(f"acr_offline: --depth applies to image, folder and video inputs, not to recordings "
              f"({', '.join(recordings)}): give their aligned depth topic with --depth-topic", file=sys.stderr)
    try:
        check_output_folder(args.output_dir)  # the last check: a refusal above leaves no folder behind
    except ValueError as error:
        print(f"acr_offline: {error}", file=sys.stderr)
        return 2
    # Once the run goes ahead (a refusal is one line). Recordings carry their camera_info: no warning
    # when they are all the inputs.
    without_intrinsics = context.given_intrinsics is None and len(recordings) < len(inputs)
    if args.ray is not None:  # the workers load the backend; the driver schedules, collects and reports
        from acr_ros import cluster

        problem = model_files_problem(args)  # the workers would each fail on it: said once, here
        if problem:
            print(f"acr_offline: {problem}", file=sys.stderr)
            return 2
        if without_intrinsics:
            print(NO_INTRINSICS, file=sys.stderr)
        return cluster.run(args, inputs, status)
    try:
        backend, reason = load_backend(args, options)
    except (ValueError, ImportError) as error:
        print(f"acr_offline: {error}", file=sys.stderr)
        return 2
    if recordings:
        from acr_ros.acr.runtime import tune_cpu_allocator

        tune_cpu_allocator()  # recorded images are megabytes each: heap, not an mmap and page faults per image
    print(f"backend: {backend.name} ({reason}); model {backend.model}"
          + (f", weights {backend.checkpoint}" if backend.checkpoint else ""))
    if args.temporal:
        print("temporal smoothing: on (One-Euro, per hand side)")
    if without_intrinsics:
        print(NO_INTRINSICS, file=sys.stderr)
    ran = False  # whether any input could run, else exit code 2
    for spec in inputs:
        summary = process_spec(backend, spec, context, args.output_dir)
        ran = ran or summary["ran"]
        status = max(status, report(summary))
        if summary["interrupted"]:
            break
    backend.close()
    if not ran and status != 130:
        print("acr_offline: no input could run", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
