"""ROS 2 messages to and from CDR, reproducibly and fast, for recordings.

Writing: rclpy's serialize_message (Fast CDR) leaves the padding bytes before aligned fields as the
allocator left them, so one message gives different bytes in different processes, and it turns a
list of geometry_msgs/Point into C one attribute at a time (about 1 us per point: 10 ms for the two
MANO meshes of an ACR frame's markers). CdrEncoder writes the same CDR into a zeroed buffer, walking
the message with its definition from a rosbags type store: the same message always gives the same
bytes; arrays of numbers are copied whole; a list of small structs of one number type (Point,
Quaternion, ColorRGBA...) is gathered with C-level attribute reads and copied as one array (a numpy
array of shape (N, fields) is taken as is).

Reading: rclpy's deserialize_message copies an image's pixels into a new array.array (about 1 ms
for a 1080p frame, mostly page faults). CdrDecoder returns the message as nested SimpleNamespaces
whose arrays of numbers are numpy views of the given buffer: nothing is copied.

The layout is plain CDR as ROS 2 uses it (XCDR1; written little-endian, read in either order):
after the 4-byte encapsulation header, each number is aligned to its size from the start of the
data; strings and sequence lengths are uint32, strings NUL-terminated; a sequence of numbers is
aligned to its element size only when it is not empty.
"""
from __future__ import annotations

import operator
import struct
from functools import lru_cache
from types import SimpleNamespace
from typing import Optional

import numpy as np
from rosbags.typesys.base import Nodetype

# ROS type -> struct code (little-endian); numpy's dtype of the same
_CODES = {"bool": "?", "byte": "B", "char": "B", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H",
          "int32": "i", "uint32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d"}
_HEADER = b"\x00\x01\x00\x00"  # CDR, little-endian
_UINT32 = struct.Struct("<I")


def _number(value):
    """A byte field's value as a number: rclpy gives `byte` as bytes of length 1, `char` as str."""
    if isinstance(value, (bytes, bytearray)):
        return value[0]
    return ord(value) if isinstance(value, str) else value


class _Layouts:
    """How the message types of one rosbags type store are laid out, compiled once per type."""

    def __init__(self, store):
        self.store = store
        self._steps = lru_cache(maxsize=None)(self._compile)
        self._record = lru_cache(maxsize=None)(self._record_layout)

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



class CdrEncoder(_Layouts):
    """encode(msg, typename) -> CDR bytes with zeroed padding (rclpy messages, or any objects with
    their fields)."""

    def encode(self, msg, typename: str) -> bytes:
        out = bytearray(_HEADER)
        self._struct(out, msg, typename)
        return bytes(out)

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
    def _numbers(value, dtype: np.dtype) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, str)):
            value = [_number(v) for v in value]
        return np.ascontiguousarray(value, dtype).tobytes()

    @staticmethod
    def _records(value, dtype: np.dtype, fields: tuple[str, ...]) -> bytes:
        if isinstance(value, np.ndarray):
            return np.ascontiguousarray(value, dtype).tobytes()
        cls = type(value[0])
        # rclpy messages keep fields in slots "_x": reading the slot descriptor skips the property.
        getters = [getattr(cls, f"_{f}").__get__ if hasattr(cls, f"_{f}") else operator.attrgetter(f)
                   for f in fields]
        columns = np.empty((len(value), len(fields)), dtype)
        for column, getter in enumerate(getters):
            columns[:, column] = list(map(getter, value))
        return columns.tobytes()


class CdrDecoder(_Layouts):
    """decode(raw, typename) -> the message as nested SimpleNamespaces, arrays of numbers as numpy
    views of raw (writable when raw is). Raises ValueError when raw does not hold that type."""

    def decode(self, raw, typename: str) -> SimpleNamespace:
        data = memoryview(raw)
        if len(data) < 4 or data[1] not in (0, 1):
            raise ValueError("not CDR: no encapsulation header")
        try:
            msg, _ = self._struct(data[4:], 0, typename, "<" if data[1] == 1 else ">")
        except struct.error as error:
            raise ValueError(f"{typename} ends early ({error})") from None
        return msg

    def _uint32(self, data, pos: int, order: str) -> tuple[int, int]:
        pos += -pos % 4
        return struct.unpack_from(order + "I", data, pos)[0], pos + 4

    def _struct(self, data, pos: int, typename: str, order: str) -> tuple[SimpleNamespace, int]:
        values = {}
        for field, kind, element, count in self._steps(typename):
            many = count != 1
            if count is None:
                count, pos = self._uint32(data, pos, order)
            if kind == "number":
                dtype = element[0].newbyteorder(order)
                if count:
                    pos += -pos % dtype.itemsize
                if many:
                    if pos + count * dtype.itemsize > len(data):
                        raise ValueError(f"{typename}.{field}: {count} values past the end of the data")
                    value = np.frombuffer(data, dtype, count, pos)
                else:
                    value = struct.unpack_from(order + dtype.char, data, pos)[0]
                pos += count * dtype.itemsize
            elif kind == "string":
                texts = []
                for _ in range(count):
                    length, pos = self._uint32(data, pos, order)
                    if not 0 < length <= len(data) - pos:
                        raise ValueError(f"{typename}.{field}: a string of {length} bytes past the end of the data")
                    texts.append(bytes(data[pos:pos + length - 1]).decode(errors="replace"))
                    pos += length
                value = texts if many else texts[0]
            else:
                items = []
                for _ in range(count):
                    item, pos = self._struct(data, pos, element, order)
                    items.append(item)
                value = items if many else items[0]
            values[field] = value
        return SimpleNamespace(**values), pos
