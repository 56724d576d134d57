"""Recordings in, a bag of hands out: rosbag2 bags (sqlite3 or MCAP storage) and single .mcap files.

Storage is read and written with rosbags (pure Python, pinned in scripts/requirements.txt), and so
are the input messages' CDR bytes: images and camera_info are decoded into rosbags' message objects,
which have the fields of the ROS messages, their pixels views of the bytes read, so the node's
conversions (image_conversion) apply unchanged; the outputs are the node's own messages
(ros_messages), encoded by acr_ros.cdr with zeroed padding, so the same recording always gives the
same bytes.

    recording = Recording("my_bag/")                  # RecordingError: one line naming the file
    selection = recording.select(image_topic=None)    # the bag's only image topic, its camera_info
    for item in read_frames(recording, selection):    # InputMessage | RecordedFrame, record order
        ...
    with HandsBag("out/my_bag_hands", recording, selection, faces) as bag:
        bag.copy(message); bag.add(frame.time, header, messages, overlay)   # acr_ros.hand_outputs

Reading
    A directory with metadata.yaml is a rosbag2 bag (any number of storage files); a directory
    without one (the recorder was killed before writing it) is read through its .mcap / .db3
    files directly, in name order; a .mcap or .db3 file on its own is one storage file.
    Damaged storage is read up to the damage: an MCAP file cut short (no summary or footer) is
    scanned from the start; a truncated sqlite3 file is read in insertion order through a VFS
    that pads it to the size its header records (SQLite refuses shorter files). Where reading
    stops early, Recording.damage says where and why.
Pairing (acr_ros.frame_inputs, as the node pairs)
    An image is paired with the CameraInfo of its exact stamp; failing that, the newest one read
    so far; and with the depth image nearest its stamp within depth_max_time_difference. Images
    wait for them up to PAIRING_WINDOW_NS of record time (a driver may record them just after the
    image), so the pairing depends on the recording only.
Writing (HandsBag, MCAP storage)
    {prefix}/hands (with the hand tracks), {prefix}/left|right/wrist_pose, /tf, {prefix}/markers,
    {prefix}/overlay (optional), {prefix}/mesh (ACR, once), {prefix}/left|right/joint_states (with
    retargeting): the node's topics and messages, each
    stamped with its source image's stamp and written at the image's record time; /tf_static of
    the input passed through (all of it, so that the camera's static transforms are there), and
    with copy_inputs every input topic, at their record times.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import apsw
import numpy as np
from rosbags.interfaces import (Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat, Qos,
                                QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.serde import SerdeError

from acr_ros import ros_messages
from acr_ros.acr.hands import LEFT, RIGHT
from acr_ros.cdr import CdrEncoder, typestore
from acr_ros.frame_inputs import CameraInfos, DecodeSettings, DepthPairing, decode_frame, stamp_ns
from acr_ros.frame_processor import FrameInput, ProcessedFrame
from acr_ros.hand_outputs import FrameMessages
from acr_ros.image_conversion import ImageConversionError, bgr_to_image
from acr_ros.media import RECORDING_SUFFIXES

COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = ("sensor_msgs/msg/Image", COMPRESSED_IMAGE_TYPE)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_STATIC = "/tf_static"
DEFAULT_PREFIX = "/acr_hands"        # the node's default name: the output topics are the node's
PAIRING_WINDOW_NS = 500_000_000      # how long (record time) an image waits for its CameraInfo


class RecordingError(ValueError):
    """A recording that cannot be used; ``str(error)`` names the file and says what is wrong."""


def _qos(depth: int, durability: QosDurability = QosDurability.VOLATILE) -> Qos:
    infinite = QosTime(9223372036, 854775807)  # how Jazzy's rosbag2 writes "no limit"
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, infinite, infinite,
               QosLiveliness.AUTOMATIC, infinite, False)


# The node's publishers: replaying the output offers what the node would.
OUTPUT_QOS = _qos(10)
WRIST_POSE_QOS = _qos(1)
TF_QOS = _qos(100)
LATCHED_QOS = _qos(1, QosDurability.TRANSIENT_LOCAL)


# ---- damaged storage -----------------------------------------------------------------------------
class _SalvagingMcapReader(McapReader):
    """rosbags' MCAP reader, plus files cut short: without a valid footer and summary the file is
    scanned from its start; reading then stops with an error at the damage."""

    damage = ""

    def _open(self) -> None:
        try:
            super()._open()
        except Exception as error:  # ReaderError, or whatever a damaged summary makes the parser raise
            if not self.data_start:  # the header itself is wrong: not an MCAP file at all
                raise
            self.damage = f"cut short (no valid MCAP summary: {error}); reading it from the start up to the damage"
            for table in (self.schemas, self.channels, self.chunks, self.connections):
                table.clear()
            self.data_end = self.bio.seek(0, 2)
            try:
                self.meta_scan()  # the topics; it stops where the data does
            except Exception:  # the damage: what is before it was scanned
                pass


class _PaddedFile(apsw.VFSFile):
    def __init__(self, name, flags, size: int):
        super().__init__("", name, flags)
        self.size = size

    def xFileSize(self) -> int:
        return max(super().xFileSize(), self.size)


class _PaddedVFS(apsw.VFS):
    """Reports a truncated sqlite3 file at the size its header records; the missing pages read as
    zeros (a short read), so SQLite reads every page before them instead of refusing the file."""

    def __init__(self, name: str, size: int):
        self.size = size
        super().__init__(name, "")

    def xOpen(self, name, flags):
        return _PaddedFile(name, flags, self.size)


class _SalvagingSqlite3Reader(Sqlite3Reader):
    """rosbags' sqlite3 reader, plus truncated files: read through _PaddedVFS, topics from the
    topics table, messages in insertion (= recording) order up to the damage."""

    damage = ""
    _vfs: Optional[_PaddedVFS] = None

    def open(self) -> None:
        try:
            super().open()
        except ReaderError as error:
            with open(self.path, "rb") as file:
                header = file.read(100)
            if not header.startswith(b"SQLite format 3\x00") or len(header) < 100:
                raise
            page_size = int.from_bytes(header[16:18], "big")
            page_size = 65536 if page_size == 1 else page_size
            name = f"acr_ros_padded_{id(self)}"
            self._vfs = _PaddedVFS(name, page_size * int.from_bytes(header[28:32], "big"))
            try:
                self.dbconn = apsw.Connection(f"file:{self.path}?immutable=1", vfs=name,
                                              flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
                self.connections = self._salvaged_connections()
            except apsw.Error as salvage_error:
                self.close()
                raise ReaderError(f"{error} (and its topics are unreadable: {salvage_error})") from None
            self.damage = f"damaged ({error}); reading its messages in recording order up to the damage"

    def _salvaged_connections(self) -> list[Connection]:
        """The topics as rosbags' reader makes them (so that a bag directory's metadata matches them),
        without the message counts, which would read every row."""
        columns = {row[1] for row in self.dbconn.execute("PRAGMA table_info(topics)")}
        qos = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
        digest = "type_description_hash" if "type_description_hash" in columns else "''"
        rows = list(self.dbconn.execute(
            f"SELECT id, name, type, serialization_format, {qos}, {digest} FROM topics ORDER BY id"))
        definitions = {}
        if self.dbconn.execute("SELECT count(*) FROM sqlite_master WHERE name='message_definitions'").fetchone()[0]:
            definitions = {name: (encoding, text) for name, encoding, text in self.dbconn.execute(
                "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")}
        formats = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}

        def definition(msgtype: str) -> MessageDefinition:
            encoding, text = definitions.get(msgtype, ("", ""))
            return MessageDefinition(formats.get(encoding, MessageDefinitionFormat.NONE), text)

        return [Connection(cid, topic, msgtype, definition(msgtype), digest_value or "", 0,
                           ConnectionExtRosbag2(fmt, parse_qos(qos_value)), self)
                for cid, topic, msgtype, fmt, qos_value, digest_value in rows]

    def messages(self, connections, start=None, stop=None):
        if not self.damage:
            yield from super().messages(connections, start, stop)
            return
        wanted = {c.id: c for c in connections}
        for cid, timestamp, data in self.dbconn.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            if cid in wanted:
                yield wanted[cid], timestamp, data

    def close(self) -> None:
        if self.dbconn is not None:
            super().close()
        if self._vfs is not None:
            self._vfs.unregister()
            self._vfs = None


class _BagDirectory(DirectoryReader):
    STORAGE_PLUGINS = {"mcap": _SalvagingMcapReader, "sqlite3": _SalvagingSqlite3Reader}


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


# ---- reading ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str
    count: int                  # messages, as the recording's index says (0 when it has none)
    connection: Connection      # the first connection: definition, type hash, offered QoS


@dataclass(frozen=True)
class TopicSelection:
    image: Topic
    camera_info: Optional[str]       # None: the recording has none for this camera
    copied: tuple[Topic, ...]        # passed through to the output
    depth: Optional[Topic] = None    # depth images aligned to the colour images, paired by stamp


class Recording:
    """A recording opened for reading (see the module documentation for what is accepted)."""

    def __init__(self, path):
        self.path = Path(path)
        self.notes: list[str] = []           # things the user should know (read without metadata, ...)
        self.damage = ""                     # set when reading stopped before the end of the data
        self._storages = []
        if not self.path.exists():
            raise RecordingError(f"{self.path}: no such file or directory")
        if self.path.is_dir() and (self.path / "metadata.yaml").is_file():
            self._storages = [_BagDirectory(self.path)]
        else:
            files = ([self.path] if self.path.is_file() else
                     sorted((p for p in self.path.iterdir() if p.suffix in RECORDING_SUFFIXES), key=_natural_key))
            if not files:
                raise RecordingError(f"{self.path}: not a rosbag2 bag (no metadata.yaml, no .mcap or .db3 file)")
            if self.path.is_dir():
                self.notes.append(f"{self.path}: no metadata.yaml (the recording was not closed; `ros2 bag "
                                  f"reindex` restores it): reading {', '.join(p.name for p in files)} directly")
            for file in files:
                if file.suffix not in RECORDING_SUFFIXES:
                    raise RecordingError(f"{file}: not a recording (expected a bag directory, .mcap or .db3)")
            self._storages = [(_SalvagingMcapReader if f.suffix == ".mcap" else _SalvagingSqlite3Reader)(f)
                              for f in files]
        opened = []
        try:
            for storage in self._storages:
                storage.open()
                opened.append(storage)
        except Exception as error:  # the readers raise ReaderError, OSError, and parser errors on garbage
            for storage in opened:
                storage.close()
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RecordingError(f"{self.path}: cannot read it as a rosbag2 recording: {reason}") from None
        for storage in self._parts():
            if storage.damage:
                self.notes.append(f"{storage.path}: {storage.damage}")
        self.topics = self._topics()

    def _parts(self):
        """The storage readers holding the data (a bag directory's own readers)."""
        for storage in self._storages:
            yield from (storage.storages if isinstance(storage, DirectoryReader) else [storage])

    def _topics(self) -> dict[str, Topic]:
        topics: dict[str, Topic] = {}
        for storage in self._storages:
            for connection in storage.connections:
                known = topics.get(connection.topic)
                count = connection.msgcount + (known.count if known else 0)
                topics[connection.topic] = Topic(connection.topic, connection.msgtype, count,
                                                 known.connection if known else connection)
        return topics

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else (self.path.resolve().name or "recording")

    def frame_rate(self, topic: Topic) -> Optional[float]:
        """Messages per second of a topic over the recording's span, None when unknown (damaged storage)."""
        span = sum(storage.metadata.duration for storage in self._storages) * 1e-9
        return (topic.count - 1) / span if topic.count > 1 and span > 0 else None

    def image_topics(self) -> list[Topic]:
        return [t for t in self.topics.values() if t.msgtype in IMAGE_TYPES]

    def describe_image_topics(self) -> str:
        found = self.image_topics()
        if not found:
            return "it has no image topics (sensor_msgs/msg/Image or CompressedImage)"
        return "its image topics: " + ", ".join(f"{t.name} ({t.msgtype.rsplit('/', 1)[1]}, {t.count} messages)"
                                                for t in found)

    def select(self, image_topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
               copy_inputs: bool = False, depth_topic: Optional[str] = None) -> TopicSelection:
        """The topics to read; RecordingError when the image topic is missing, ambiguous or not an image.
        Without image_topic: the recording's only image topic, depth topics (the given one, and those
        named ...depth...) aside."""
        if not image_topic:
            found = [t for t in self.image_topics() if t.name != depth_topic]
            colour = [t for t in found if "depth" not in t.name.lower()]  # e.g. .../aligned_depth_to_color/...
            found = colour if len(colour) == 1 else found
            if not found:
                raise RecordingError(f"{self.path}: {self.describe_image_topics()}")
            if len(found) > 1:
                raise RecordingError(f"{self.path}: several image topics, choose one with --image-topic; "
                                     f"{self.describe_image_topics()}")
            image = found[0]
        elif image_topic not in self.topics:
            raise RecordingError(f"{self.path}: no topic {image_topic}; {self.describe_image_topics()}")
        else:
            image = self.topics[image_topic]
            if image.msgtype not in IMAGE_TYPES:
                raise RecordingError(f"{self.path}: {image.name} is {image.msgtype}, not an image "
                                     f"(sensor_msgs/msg/Image or CompressedImage); {self.describe_image_topics()}")
        if camera_info_topic:
            info = self.topics.get(camera_info_topic)
            if info is None or info.msgtype != CAMERA_INFO_TYPE:
                raise RecordingError(f"{self.path}: no {CAMERA_INFO_TYPE} topic {camera_info_topic}; its camera "
                                     "info topics: " + (", ".join(t.name for t in self.topics.values()
                                                                  if t.msgtype == CAMERA_INFO_TYPE) or "none"))
        else:
            sibling = self.topics.get(camera_info_sibling(image.name, image.msgtype))
            camera_info_topic = sibling.name if sibling is not None and sibling.msgtype == CAMERA_INFO_TYPE else None
        depth = None
        if depth_topic:
            depth = self.topics.get(depth_topic)
            if depth is None or depth.msgtype not in IMAGE_TYPES:
                what = f"is {depth.msgtype}, not an image" if depth else "is not in it"
                raise RecordingError(f"{self.path}: the depth topic {depth_topic} {what}; "
                                     f"{self.describe_image_topics()}")
        copied = [t for t in self.topics.values() if copy_inputs or t.name == TF_STATIC]
        return TopicSelection(image, camera_info_topic, tuple(copied), depth)

    def messages(self, topics) -> Iterator[tuple[str, int, bytes]]:
        """(topic, record time ns, CDR bytes) of the given topic names in record order; stops at
        damaged data, which it describes in self.damage."""
        names = set(topics)
        count = 0
        for storage in self._storages:
            connections = [c for c in storage.connections if c.topic in names]
            if not connections:
                continue
            try:
                for connection, timestamp, data in storage.messages(connections):
                    count += 1
                    yield connection.topic, timestamp, data
            except Exception as error:  # the storage's own error at the damage: ReaderError, apsw, struct...
                parts = storage.storages if isinstance(storage, DirectoryReader) else [storage]
                where = parts[0].path if len(parts) == 1 else storage.path
                self.damage = (f"{where}: unreadable after {count} messages ({type(error).__name__}: {error}); "
                               "everything before was processed")
                return

    def close(self) -> None:
        for storage in self._storages:
            storage.close()
        self._storages = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def camera_info_sibling(image_topic: str, msgtype: str) -> str:
    """'/cam/image_raw' (and '/cam/image_raw/compressed') -> '/cam/camera_info' (image_transport's
    convention)."""
    base = image_topic
    if msgtype == COMPRESSED_IMAGE_TYPE and base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    head, _, _ = base.rpartition("/")
    return f"{head}/camera_info"


@dataclass(frozen=True)
class InputMessage:
    """A recorded message passed through to the output unchanged."""

    topic: str
    time: int           # record time, ns
    raw: bytes          # CDR, as recorded


@dataclass
class RecordedFrame:
    """One image of the recording, decoded for the frame processor; input None (and problem set) when
    it is unusable."""

    index: int                                  # position among the image topic's messages
    time: int                                   # record time, ns
    input: Optional[FrameInput] = None
    problem: str = ""
    processed: Optional[ProcessedFrame] = None  # once processed; None also when inference failed


@dataclass
class _Pending:
    """A message read, waiting for its turn (an image: for its CameraInfo and depth partner)."""

    topic: str
    time: int
    raw: bytes
    index: int = -1                              # images: position among the image topic's messages
    image: Optional[object] = None               # images: decoded by rosbags (None: undecodable, see problem)
    problem: str = ""

    @property
    def stamp(self) -> Optional[int]:
        return stamp_ns(self.image.header.stamp) if self.image else None


def read_frames(recording: Recording, selection: TopicSelection, max_frames: Optional[int] = None,
                settings: DecodeSettings = DecodeSettings(),
                warn: Callable[[str], None] = lambda message: None) -> Iterator:
    """The selected topics in record order: InputMessage for each copied message, RecordedFrame for
    each image, decoded and paired as the node pairs them (acr_ros.frame_inputs): its CameraInfo,
    and with a depth topic the depth image nearest its stamp within settings.depth_max_time_difference.
    An image waits for them up to PAIRING_WINDOW_NS of record time. warn(message) is called once per
    kind of fallback that changes results (e.g. default intrinsics for a camera_info of another size)."""
    image_topic, info_topic = selection.image.name, selection.camera_info
    depth_topic = selection.depth.name if selection.depth else None
    store = typestore()
    copied = {t.name for t in selection.copied}
    infos, depths = CameraInfos(capacity=1000), DepthPairing(capacity=100)
    warned: set[str] = set()
    pending: deque[_Pending] = deque()
    images = 0

    def warn_once(kind: str, message: str) -> None:
        if kind not in warned:
            warned.add(kind)
            warn(message)

    def read_image(topic: str, time: int, raw: bytes) -> _Pending:
        item = _Pending(topic, time, raw, images)
        # into a bytearray: the pixels are views of it, writable like a subscription's; rosbags
        # slices what it is given, and only a memoryview's slice is no copy
        try:
            item.image = store.deserialize_cdr(memoryview(bytearray(raw)), selection.image.msgtype)
        except SerdeError as error:
            item.problem = f"cannot decode the image ({error})"
        return item

    def convert(item: _Pending) -> RecordedFrame:
        if item.image is None:
            return RecordedFrame(item.index, item.time, problem=item.problem)
        depth = depths.partner(item.stamp, settings.depth_max_difference_ns) if depth_topic else None
        try:
            frame = decode_frame(image_topic, item.image, infos.for_stamp(item.stamp) if info_topic else None, depth,
                                 settings, depth_expected=depth_topic is not None)
        except ImageConversionError as error:
            return RecordedFrame(item.index, item.time, problem=str(error))
        if info_topic and frame.intrinsics_problem:
            warn_once("intrinsics", f"{image_topic}: {frame.intrinsics_problem} (on {info_topic}): the default "
                                    "intrinsics are used, depth is approximate")
        return RecordedFrame(item.index, item.time, frame)

    def ready(item: _Pending, now: int) -> bool:
        if item.index < 0 or item.stamp is None or now - item.time > PAIRING_WINDOW_NS:
            return True
        return ((info_topic is None or infos.has(item.stamp))
                and (depth_topic is None or depths.partner(item.stamp, settings.depth_max_difference_ns) is not None))

    def release(now: Optional[int]):
        while pending and (now is None or ready(pending[0], now)):
            item = pending.popleft()
            yield convert(item) if item.index >= 0 else InputMessage(item.topic, item.time, item.raw)

    topics = copied | {image_topic} | {t for t in (info_topic, depth_topic) if t}
    for topic, time, raw in recording.messages(topics):
        if topic == depth_topic:
            try:
                depth = store.deserialize_cdr(memoryview(raw), selection.depth.msgtype)
                depths.put(stamp_ns(depth.header.stamp), depth)
            except SerdeError as error:
                warn_once("bad_depth", f"{recording.path}: a depth image on {depth_topic} is unreadable ({error})")
        if topic == info_topic:
            try:
                infos.put(store.deserialize_cdr(memoryview(raw), CAMERA_INFO_TYPE))
            except SerdeError as error:
                warn_once("bad_info", f"{recording.path}: a camera_info message on {info_topic} is unreadable "
                                      f"({error}); skipped")
        if topic in copied:
            pending.append(_Pending(topic, time, raw))
        if topic == image_topic:
            if max_frames is not None and images >= max_frames:
                break
            pending.append(read_image(topic, time, raw))
            images += 1
        yield from release(time)
    yield from release(None)


# ---- writing ----------------------------------------------------------------------------------------
class HandsBag:
    """The output bag (MCAP storage): the node's outputs per frame, and the copied input topics."""

    def __init__(self, path, recording: Recording, selection: TopicSelection, faces: dict,
                 prefix: str = DEFAULT_PREFIX, overlay: bool = False, retarget_sides=()):
        self.path = Path(path)
        self.faces = faces
        self.prefix = "/" + prefix.strip("/")
        self.skipped: list[str] = []    # copied topics left out, with why
        self._mesh_pending = faces.get(LEFT) is not None and faces.get(RIGHT) is not None  # ACR: once, first
        try:
            self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
            self.writer.open()
        except WriterError as error:
            raise RecordingError(f"{self.path}: {error} (remove it or choose another output folder)") from None
        except OSError as error:
            raise RecordingError(f"{self.path}: cannot write the output bag: {error}") from None
        store = typestore()
        own = {f"{self.prefix}/hands": ("acr_ros/msg/Hands", OUTPUT_QOS),
               **{f"{self.prefix}/{side}/wrist_pose": ("geometry_msgs/msg/PoseStamped", WRIST_POSE_QOS)
                  for side in (LEFT, RIGHT)},
               "/tf": ("tf2_msgs/msg/TFMessage", TF_QOS),
               f"{self.prefix}/markers": ("visualization_msgs/msg/MarkerArray", OUTPUT_QOS)}
        own.update({f"{self.prefix}/{side}/joint_states": ("sensor_msgs/msg/JointState", WRIST_POSE_QOS)
                    for side in retarget_sides})
        if overlay:
            own[f"{self.prefix}/overlay"] = ("sensor_msgs/msg/Image", OUTPUT_QOS)
        if self._mesh_pending:
            own[f"{self.prefix}/mesh"] = ("acr_ros/msg/HandMesh", LATCHED_QOS)
        self._own = {topic: self.writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=[qos])
                     for topic, (msgtype, qos) in own.items()}
        self._encoder = CdrEncoder(store)
        self._copied: dict[str, Connection] = {}
        for topic in selection.copied:
            if topic.name == "/tf" and topic.msgtype == "tf2_msgs/msg/TFMessage":
                self._copied[topic.name] = self._own["/tf"]  # the robot's TF and the hands' in one topic
                continue
            if topic.name in self._own:
                self.skipped.append(f"{topic.name} (the output writes its own)")
                continue
            definition = self._definition(topic)
            if definition is None:
                self.skipped.append(f"{topic.name} ({topic.msgtype}: no message definition in the recording, "
                                    "and not a standard type)")
                continue
            qos = list(topic.connection.ext.offered_qos_profiles) if isinstance(
                topic.connection.ext, ConnectionExtRosbag2) else []
            self._copied[topic.name] = self.writer.add_connection(
                topic.name, topic.msgtype, msgdef=definition[0], rihs01=definition[1], offered_qos_profiles=qos)

    @staticmethod
    def _definition(topic: Topic) -> Optional[tuple[str, str]]:
        """(message definition, type hash) for the writer: the recording's, else the type store's."""
        connection = topic.connection
        if connection.msgdef.format != MessageDefinitionFormat.NONE and connection.msgdef.data and connection.digest:
            return connection.msgdef.data, connection.digest
        store = typestore()
        if topic.msgtype not in store.fielddefs:
            return None
        return store.generate_msgdef(topic.msgtype, ros_version=2)[0], store.hash_rihs01(topic.msgtype)

    def copy(self, message: InputMessage) -> None:
        connection = self._copied.get(message.topic)
        if connection is not None:
            self.writer.write(connection, message.time, message.raw)

    def _write(self, topic: str, time: int, msg) -> None:
        connection = self._own[topic]
        self.writer.write(connection, time, self._encoder.encode(msg, connection.msgtype))

    def add(self, time: int, header, messages: FrameMessages, overlay: Optional[np.ndarray] = None) -> None:
        """A frame's messages (acr_ros.hand_outputs, markers built with points_as_arrays) at its record time."""
        if self._mesh_pending:
            self._write(f"{self.prefix}/mesh", time, ros_messages.mesh_msg(
                self.faces[LEFT], self.faces[RIGHT], ros_messages.copy_header(header).stamp))
            self._mesh_pending = False
        self._write(f"{self.prefix}/hands", time, messages.hands)
        for side, pose in messages.wrist_poses.items():
            self._write(f"{self.prefix}/{side}/wrist_pose", time, pose)
        for side, command in messages.joint_states.items():
            self._write(f"{self.prefix}/{side}/joint_states", time, command)
        if messages.tf is not None:
            self._write("/tf", time, messages.tf)
        if messages.markers is not None:
            self._write(f"{self.prefix}/markers", time, messages.markers)
        if overlay is not None and f"{self.prefix}/overlay" in self._own:
            self._write(f"{self.prefix}/overlay", time, bgr_to_image(overlay, header))

    def close(self) -> None:
        """Writes the summary, footer and metadata.yaml: a complete bag of what was added."""
        if self.writer.storage is not None:
            self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
