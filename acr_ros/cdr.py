"""ROS 2 messages to CDR, reproducibly and fast, for the recording writer (recordings.HandsBag).

rclpy's serialize_message (Fast CDR) leaves the padding bytes before aligned fields as the allocator
left them, so one message gives different bytes in different processes, and it turns a list of
geometry_msgs/Point into C one attribute at a time. rosbags' Typestore.serialize_cdr zeroes the
padding but needs rosbags' own message classes and writes a list of structs one item at a time: for
one frame's outputs with two hands (the markers' two MANO meshes: 9228 points) converting and
serializing costs about 5 ms, CdrEncoder about 0.5 ms (benchmarks/cdr.py; test/test_cdr.py checks
that both give the same bytes for every type the writer emits). Reading uses rosbags'
deserialize_cdr: it is as fast as a decoder of our own and does not copy the pixels.

CdrEncoder writes the CDR into a zeroed buffer, walking the message with its definition from a
rosbags type store: the same message always gives the same bytes; arrays of numbers are copied
whole; a list of small structs of one number type (Point, Quaternion, ColorRGBA...) is gathered
into one array (a numpy array of shape (N, fields) is taken as is: ros_messages' markers with
points_as_arrays).

The layout is plain CDR as ROS 2 uses it (XCDR1, little-endian): after the 4-byte encapsulation
header, each number is aligned to its size from the start of the data; strings and sequence lengths
are uint32, strings NUL-terminated; a sequence of numbers is aligned to its element size only when
it is not empty.
"""
from __future__ import annotations

import operator
import struct
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

# ROS type -> struct code (little-endian); numpy's dtype of the same
_CODES = {"bool": "?", "byte": "B", "char": "B", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H",
          "int32": "i", "uint32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d"}
_HEADER = b"\x00\x01\x00\x00"  # CDR, little-endian
_ACR_ROS_MESSAGES = ("Hand", "Hands", "HandMesh")
_UINT32 = struct.Struct("<I")


def _acr_ros_msg_dir() -> Path:
    """This package's .msg files: installed (ament index), else the source checkout (pip set-up)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("acr_ros")) / "msg"
        if installed.is_dir():
            return installed
    except (ImportError, LookupError, OSError):  # no ament index (AMENT_PREFIX_PATH unset)
        pass
    return Path(__file__).resolve().parents[1] / "msg"


@lru_cache(maxsize=1)
def typestore():
    """ROS 2 Jazzy's standard types plus acr_ros/msg/*: definitions, type hashes and layouts."""
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = _acr_ros_msg_dir()
    types = {}
    for name in _ACR_ROS_MESSAGES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"acr_ros/msg/{name}"))
    store.register(types)
    return store



def _number(value):
    """A byte field's value as a number: rclpy gives `byte` as bytes of length 1, `char` as str."""
    if isinstance(value, (bytes, bytearray)):
        return value[0]
    return ord(value) if isinstance(value, str) else value


def _raw(values: np.ndarray) -> memoryview:
    """The bytes of an array, without copying it (a bytearray += takes a flat memoryview)."""
    return memoryview(np.ascontiguousarray(values)).cast("B")


class CdrEncoder:
    """encode(msg, typename) -> CDR bytes with zeroed padding (rclpy messages, or any objects with
    their fields), for the message types of one rosbags type store."""

    def __init__(self, store):
        self.store = store
        self._steps = lru_cache(maxsize=None)(self._compile)
        self._record = lru_cache(maxsize=None)(self._record_layout)

    def encode(self, msg, typename: str) -> bytearray:
        out = bytearray(_HEADER)
        self._struct(out, msg, typename)
        return out  # not bytes(out): that would copy a 1080p image's 6 MB once more

    def _compile(self, typename: str) -> list[tuple]:
        """(field, kind, element, count): kind "number" (element: (dtype, struct)), "string" or
        "struct" (element: type name); count 1, N (fixed array) or None (sequence)."""
        steps = []
        for field, (node, info) in self.store.fielddefs[typename][1]:
            if node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                (node_, info_), length = info
                count = length if node == Nodetype.ARRAY else None
            else:
                node_, info_, count = node, info, 1
            if node_ == Nodetype.NAME:
                steps.append((field, "struct", info_, count))
            elif info_[0] == "string":
                steps.append((field, "string", None, count))
            elif info_[0] in _CODES:
                code = "<" + _CODES[info_[0]]
                steps.append((field, "number", (np.dtype(code), struct.Struct(code)), count))
            else:
                raise ValueError(f"{typename}.{field}: {info_[0]} is not supported")
        return steps

    def _record_layout(self, typename: str) -> Optional[tuple[np.dtype, tuple[str, ...]]]:
        """(dtype, field names) of a struct made of single numbers of one type (a Point: float64
        x, y, z), which an array of them lays out as an (N, fields) array; None otherwise."""
        steps = self._compile(typename)
        dtypes = {element[0] for _, kind, element, count in steps if kind == "number" and count == 1}
        if len(dtypes) != 1 or len(steps) != sum(kind == "number" and count == 1 for _, kind, _, count in steps):
            return None
        return dtypes.pop(), tuple(field for field, *_ in steps)

    @staticmethod
    def _align(out: bytearray, alignment: int) -> None:
        pad = -(len(out) - 4) % alignment
        if pad:
            out += bytes(pad)

    def _struct(self, out: bytearray, msg, typename: str) -> None:
        for field, kind, element, count in self._steps(typename):
            value = getattr(msg, field)
            if count is None:
                self._align(out, 4)
                out += _UINT32.pack(len(value))
                if not len(value):
                    continue
            if kind == "number":
                dtype, packer = element
                self._align(out, dtype.itemsize)
                out += packer.pack(_number(value)) if count == 1 else self._numbers(value, dtype)
            elif kind == "string":
                for text in ([value] if count == 1 else value):
                    data = text.encode()
                    self._align(out, 4)
                    out += _UINT32.pack(len(data) + 1) + data + b"\x00"
            elif count == 1:
                self._struct(out, value, element)
            else:
                record = self._record(element)
                if record is None:
                    for item in value:
                        self._struct(out, item, element)
                else:
                    self._align(out, record[0].itemsize)
                    out += self._records(value, *record)

    @staticmethod
    def _numbers(value, dtype: np.dtype):
        if isinstance(value, (bytes, bytearray)):
            return value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, str)):
            value = [_number(v) for v in value]
        return _raw(np.asarray(value, dtype))  # array.array and numpy arrays: a view, no copy

    @staticmethod
    def _records(value, dtype: np.dtype, fields: tuple[str, ...]):
        if isinstance(value, np.ndarray):
            return _raw(value.astype(dtype, copy=False))
        # one C-level attrgetter call per item gives a row: fast enough for the Hands' 42 joints
        return _raw(np.array(list(map(operator.attrgetter(*fields), value)), dtype).reshape(len(value), len(fields)))
