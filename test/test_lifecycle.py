"""The hands node as a managed node, driven over DDS through the standard lifecycle services (and the
real `ros2 lifecycle` tools where installed): every transition, autostart on and off, the model kept
over deactivate/activate and released by cleanup, shutdown from each state exiting 0."""
from __future__ import annotations


import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image

from acr_ros.msg import Hands
from support.launch import Launch
from support.lifecycle import NO_ROS2_CLI, ROS2, LifecycleClient, ros2
from support.ros_harness import RELIABLE, NodeProcess, Probe, image_msg, magic_bgr

MODEL_LOADED = "hand backend:"  # the node logs this line each time configure loads a model


class ManagedNode:
    """A hands node process with autostart off, a probe, its lifecycle client and one camera."""

    def __init__(self, tmp_path, name: str, **params):
        self.name = name
        self.image_topic = f"/{name}_cam/image_raw"
        self.process = NodeProcess("acr_ros.hands_node", {
            "backend": "mediapipe", "autostart": False, "image_topics": [self.image_topic],
            "qos_reliability": "reliable", **params}, tmp_path, name=name)
        self.probe = Probe(f"{name}_probe")
        self.lifecycle = LifecycleClient(self.probe, name)
        self.hands = self.probe.record(Hands, f"/{name}/hands")
        self.images = self.probe.publisher(Image, self.image_topic, RELIABLE)
        self.lifecycle.wait_for_services(self.process)

    def subscribed(self) -> bool:
        return self.images.get_subscription_count() > 0

    def answers(self, stamp) -> bool:
        """Sends the left-hand photo stamped `stamp` (once the node's subscription matched) and
        waits for its Hands message."""
        self.probe.wait_for_subscribers(self.images, process=self.process)
        self.images.publish(image_msg(magic_bgr(), stamp=stamp))
        return self.probe.spin_until(lambda: any(m.header.stamp.sec == stamp[0] for m in self.hands), 60,
                                     self.process)

    def close(self) -> int:
        code = self.process.stop()
        self.probe.close()
        return code


@pytest.fixture
def managed(tmp_path):
    nodes = []

    def start(name: str, **params) -> ManagedNode:
        node = ManagedNode(tmp_path, name, **params)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.close()


def test_every_transition_over_the_lifecycle_services(managed):
    node = managed("managed_hands")
    life = node.lifecycle
    assert life.state() == "unconfigured"
    assert MODEL_LOADED not in node.process.log()

    assert life.change("configure") and life.state() == "inactive"
    assert node.process.log().count(MODEL_LOADED) == 1
    assert life.change("activate") and life.state() == "active"
    assert node.answers((1700010000, 0))

    # Deactivate: unsubscribed, nothing answered, the model kept.
    assert life.change("deactivate") and life.state() == "inactive"
    assert node.probe.spin_until(lambda: not node.subscribed(), 10)
    node.images.publish(image_msg(magic_bgr(), stamp=(1700010001, 0)))
    assert not node.probe.spin_until(lambda: any(m.header.stamp.sec == 1700010001 for m in node.hands), 2.0)
    # Activate again: answering without loading the model again.
    assert life.change("activate") and life.state() == "active"
    assert node.answers((1700010002, 0))
    assert node.process.log().count(MODEL_LOADED) == 1

    # Cleanup releases the model and the outputs; configure loads it again.
    assert life.change("deactivate") and life.change("cleanup") and life.state() == "unconfigured"
    assert "model and publishers released" in node.process.log()
    assert node.probe.spin_until(lambda: node.probe.node.count_publishers(f"/{node.name}/hands") == 0, 10)
    assert life.change("configure") and life.state() == "inactive"
    assert node.process.log().count(MODEL_LOADED) == 2

    # Shutdown from inactive: the process ends by itself, exit code 0.
    assert life.change("shutdown")
    assert node.process.process.wait(timeout=30) == 0, node.process.log()
    assert "Traceback" not in node.process.log()
    # The transition events tell a lifecycle manager each step.
    assert node.probe.spin_until(lambda: life.goal_states()[-2:] == ["shuttingdown", "finalized"], 10)
    assert life.goal_states() == [
        "configuring", "inactive", "activating", "active", "deactivating", "inactive", "activating", "active",
        "deactivating", "inactive", "cleaningup", "unconfigured", "configuring", "inactive",
        "shuttingdown", "finalized"]


@pytest.mark.parametrize("state, transitions", [("unconfigured", []), ("inactive", ["configure"]),
                                                ("active", ["configure", "activate"])])
def test_shutdown_from_each_primary_state_exits_0(managed, state, transitions):
    node = managed(f"shutdown_from_{state}")
    for transition in transitions:
        assert node.lifecycle.change(transition)
    assert node.lifecycle.state() == state
    if state == "active":
        assert node.answers((1700010100, 0))
    assert node.lifecycle.change("shutdown")
    assert node.process.process.wait(timeout=30) == 0, node.process.log()
    log = node.process.log()
    assert f"shut down from {state}" in log and "Traceback" not in log


def test_a_refused_configuration_leaves_the_node_unconfigured_and_fixable(managed):
    """A lifecycle manager sees configure fail (one line says why), sets the parameter right and
    configures again; the node never exits on its own."""
    node = managed("misconfigured_hands", backend="acr", checkpoint="/nowhere/wild.pkl")
    assert not node.lifecycle.change("configure")
    assert node.lifecycle.state() == "unconfigured" and node.process.alive()
    log = node.process.log()
    assert "configure failed: ACR checkpoint not found at /nowhere/wild.pkl" in log and "Traceback" not in log

    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = node.probe.node.create_client(SetParameters, f"/{node.name}/set_parameters")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(
        name="backend", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="mediapipe"))]))
    assert node.probe.spin_until(future.done, 30) and future.result().results[0].successful
    assert node.lifecycle.change("configure") and node.lifecycle.change("activate")
    assert node.answers((1700010200, 0))


def test_autostart_activates_and_enabled_false_stops_at_inactive(tmp_path):
    """autostart (the default): active at start, as unmanaged nodes always were; with enabled false
    at start the node is configured (model loaded) but not active."""
    probe = Probe("autostart_probe")
    processes = [NodeProcess("acr_ros.hands_node", dict(backend="mediapipe", image_topics=[f"/{name}/image_raw"],
                                                        enabled=enabled), tmp_path, name=name)
                 for name, enabled in (("autostarted_hands", True), ("autostarted_paused_hands", False))]
    try:
        started, paused = (LifecycleClient(probe, name) for name in ("autostarted_hands", "autostarted_paused_hands"))
        for client, process in zip((started, paused), processes):
            client.wait_for_services(process)
        # The services exist before the node's start transitions have run: wait for the outcome.
        assert probe.spin_until(lambda: started.state() == "active", 60, processes[0])
        assert probe.spin_until(lambda: paused.state() == "inactive", 60, processes[1])
        assert MODEL_LOADED in processes[1].log()
    finally:
        codes = [process.stop() for process in processes]
        probe.close()
    assert codes == [0, 0]


@pytest.mark.launch
@pytest.mark.slow(seconds=45)  # the module; this test: eight ros2 commands, each a process of its own
@pytest.mark.skipif(ROS2 is None, reason=NO_ROS2_CLI)
def test_ros2_lifecycle_tools_drive_the_node(managed):
    """Each kind of ros2 lifecycle command once (every transition is driven over the services by
    test_every_transition_over_the_lifecycle_services; each ros2 command is a process of its own)."""
    node = managed("cli_hands")
    for transition in ("configure", "activate"):
        result = ros2("lifecycle", "set", "/cli_hands", transition)
        assert "Transitioning successful" in result.stdout, result
    assert ros2("lifecycle", "get", "/cli_hands").stdout.strip() == "active [3]"
    assert node.answers((1700010300, 0))
    available = ros2("lifecycle", "list", "/cli_hands").stdout
    assert "deactivate [4]" in available and "shutdown [7]" in available
    assert "Transitioning successful" in ros2("lifecycle", "set", "/cli_hands", "shutdown").stdout
    assert node.probe.spin_until(lambda: node.lifecycle.goal_states()[-2:] == ["shuttingdown", "finalized"], 10)
    assert node.process.process.wait(timeout=30) == 0, node.process.log()


@pytest.mark.launch
@pytest.mark.skipif(ROS2 is None, reason=NO_ROS2_CLI)
@pytest.mark.parametrize("autostart", ["true", "false"])
def test_ros2_launch_starts_a_managed_node(colcon_workspace, tmp_path, autostart):
    """The launch file's autostart argument: true, active as before; false, unconfigured until told."""
    name, topic = "acr_hands", "/launch_cam/image_raw"
    launch = Launch(colcon_workspace, tmp_path / "launch.log", f"autostart:={autostart}", "backend:=mediapipe",
                    f"image:={topic}")
    probe = Probe("launch_probe")
    try:
        life = LifecycleClient(probe, name)
        life.wait_for_services()
        if autostart == "false":
            assert life.state() == "unconfigured", launch.log()
            assert life.change("configure") and life.change("activate"), launch.log()
        assert probe.spin_until(lambda: life.state() == "active", 60), launch.log()
        hands = probe.record(Hands, f"/{name}/hands")
        images = probe.publisher(Image, topic, RELIABLE)
        probe.wait_for_subscribers(images)
        # The launch file's parameters subscribe best effort (sensor data): a large frame may be
        # lost on the way, so send one every 2 s until one is answered.
        for attempt in range(30):
            images.publish(image_msg(magic_bgr(), stamp=(1700010500, attempt)))
            if probe.spin_until(lambda: bool(hands), 2.0):
                break
        assert hands, launch.log()
        if autostart == "false":  # a manager shuts the node down: the launch ends with it, exit 0
            assert life.change("shutdown"), launch.log()
    finally:
        if autostart == "true":
            launch.ctrl_c()  # what ctrl-c does: SIGINT to the launch and its nodes
        code = launch.wait(60)
        probe.close()
    assert code == 0 and "process has finished cleanly" in launch.log(), f"exit code {code}:\n{launch.log()}"
    if autostart == "false":
        assert "the hands node (acr_hands) exited" not in launch.log(), launch.log()  # a clean exit is no error


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")])])
def test_cleanup_releases_the_acr_model_and_its_accelerator_memory(device, acr_checkpoint, mano_dir):
    """In process with the real ACR backend (random weights): after a frame, cleanup drops every
    reference to the backend; on CUDA the allocated memory goes back to what it was before
    configure and the cached memory is handed back to the driver."""
    import gc
    import weakref

    import rclpy
    import torch

    from acr_ros.acr.options import EngineOptions
    from acr_ros.backends.acr import ACRBackend
    from acr_ros.frame_processor import FrameInput
    from acr_ros.hands_node import HandsNode

    context = rclpy.Context()
    rclpy.init(context=context)
    gc.collect()
    allocated_before = torch.cuda.memory_allocated() if device == "cuda" else 0
    node = HandsNode(backend_factory=lambda: (ACRBackend(acr_checkpoint, mano_dir, EngineOptions(device=device)),
                                              "test"), context=context)
    try:
        assert node.start()
        header = image_msg(magic_bgr(), stamp=(1700010400, 0)).header
        node.process([FrameInput(node.cameras[0].topic, 1700010400 * 10**9, magic_bgr(), None, header)])
        assert node.counters.get("published") == 1
        backend = weakref.ref(node.backend)
        if device == "cuda":
            allocated_loaded, reserved_loaded = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
            assert allocated_loaded > allocated_before + 50 * 2**20  # 30 M parameters in fp16, at least
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert backend() is not None  # inactive: the model stays loaded
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert backend() is None
        if device == "cuda":
            assert torch.cuda.memory_allocated() <= allocated_before + 2**20
            assert torch.cuda.memory_reserved() <= reserved_loaded - 50 * 2**20
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_a_transition_that_fails_unexpectedly_leaves_the_node_unconfigured_and_enabled_false():
    import rclpy

    from acr_ros.hands_node import HandsNode
    from support.fake_backend import FakeBackend

    class BrokenReset(FakeBackend):
        def reset(self):
            raise RuntimeError("the accelerator went away")

    context = rclpy.Context()
    rclpy.init(context=context)
    backend = BrokenReset()
    node = HandsNode(backend_factory=lambda: (backend, "fault injection"), context=context)
    try:
        assert node.start() and node.get_parameter("enabled").value
        assert node.trigger_deactivate() == TransitionCallbackReturn.ERROR  # on_error then ran
        assert not node.configured and backend.closed
        assert node.get_parameter("enabled").value is False  # it follows the state, here too
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
