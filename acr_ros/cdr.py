"""Zeroing the alignment padding of serialized ROS 2 messages.

rclpy's serialize_message (Fast CDR) skips the padding bytes CDR puts before aligned fields
without writing them, so they hold whatever the allocator left there: the same message gives
different bytes in different processes. Written to a bag, that would make two runs on the same
recording differ byte for byte. zero_padding() walks a serialized message with its definition
(from a rosbags type store) and sets those bytes to zero; the values are untouched.

The layout is plain CDR as ROS 2 uses it (XCDR1): after the 4-byte encapsulation header, each
primitive is aligned to its size (at most 8) from the start of the data; strings and sequence
lengths are uint32; a sequence of primitives is aligned to its element size only when it is not
empty. Arrays and sequences of structs whose layout is fixed and gap-free (geometry_msgs/Point)
are stepped over in one go.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from rosbags.typesys.base import Nodetype

_SIZES = {"bool": 1, "byte": 1, "char": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
          "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8}


class PaddingWalker:
    """zero_padding for the message types of one rosbags type store."""

    def __init__(self, store):
        self.store = store
        self._fields = lru_cache(maxsize=None)(self._compile)
        self._fixed = lru_cache(maxsize=None)(self._fixed_layout)

    # ---- layout --------------------------------------------------------------------------------
    def _compile(self, typename: str) -> list[tuple]:
        """The fields of a type as walking steps: (kind, element size or type name, count)."""
        steps = []
        for _, (node, info) in self.store.fielddefs[typename][1]:
            if node == Nodetype.NAME:
                steps.append(("struct", info, 1))
                continue
            element, count = (info, 1) if node == Nodetype.BASE else info
            if node == Nodetype.SEQUENCE:
                count = None
            if element[0] == Nodetype.NAME:
                steps.append(("struct", element[1], count))
            elif node == Nodetype.BASE:
                steps.append(("string", 0, 1) if info[0] == "string" else ("prim", _SIZES[info[0]], 1))
            elif element[1][0] == "string":
                steps.append(("string", 0, count))
            else:
                steps.append(("prim", _SIZES[element[1][0]], count))
        return steps

    def _fixed_layout(self, typename: str) -> Optional[tuple[int, int]]:
        """(size, alignment) of a type whose serialized form has a fixed size and no padding inside
        or between consecutive elements, wherever it starts (its first field has the largest
        alignment); None otherwise."""
        size, alignment, first = 0, 1, None
        for kind, element, count in self._fields(typename):
            if count is None or kind == "string":
                return None
            if kind == "struct":
                inner = self._fixed(element)
                if inner is None:
                    return None
                step, align = inner[0] * count, inner[1]
            else:
                step, align = element * count, element
            if size % align:
                return None
            first = align if first is None else first
            size += step
            alignment = max(alignment, align)
        return (size, alignment) if size and size % alignment == 0 and first == alignment else None

    # ---- walking -------------------------------------------------------------------------------
    def zero_padding(self, raw: bytes, typename: str) -> bytes:
        """raw (a serialized message of typename, with its encapsulation header) with every
        padding byte set to zero. Raises ValueError when raw does not have the type's layout."""
        data = memoryview(raw)[4:]
        order = "little" if raw[1] == 1 else "big"
        pads: list[tuple[int, int]] = []
        end = self._walk(data, 0, typename, order, pads)
        if end != len(data):
            raise ValueError(f"{len(data)} bytes of data, {typename} ends at {end}")
        if not pads:
            return raw
        out = bytearray(raw)
        for start, stop in pads:
            out[4 + start:4 + stop] = bytes(stop - start)
        return bytes(out)

    @staticmethod
    def _align(pos: int, alignment: int, pads: list) -> int:
        aligned = (pos + alignment - 1) & -alignment
        if aligned != pos:
            pads.append((pos, aligned))
        return aligned

    def _uint32(self, data, pos: int, order: str, pads: list) -> tuple[int, int]:
        pos = self._align(pos, 4, pads)
        if pos + 4 > len(data):
            raise ValueError("data ends inside a length field")
        return int.from_bytes(data[pos:pos + 4], order), pos + 4

    def _walk(self, data, pos: int, typename: str, order: str, pads: list) -> int:
        for kind, element, count in self._fields(typename):
            if count is None:
                count, pos = self._uint32(data, pos, order, pads)
                if count == 0:
                    continue
            if kind == "prim":
                pos = self._align(pos, element, pads) + element * count
            elif kind == "string":
                for _ in range(count):
                    length, pos = self._uint32(data, pos, order, pads)
                    pos += length
            else:
                fixed = self._fixed(element)
                if fixed is not None:
                    pos = self._align(pos, fixed[1], pads) + fixed[0] * count
                else:
                    for _ in range(count):
                        pos = self._walk(data, pos, element, order, pads)
        return pos
