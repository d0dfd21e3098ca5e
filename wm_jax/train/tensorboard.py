"""TensorBoard event files of scalars, written directly (no TensorFlow or TensorBoard import).

An event file is a sequence of records: length (uint64 little-endian), masked CRC-32C of the
length, the serialized `Event` protocol buffer, masked CRC-32C of it. We encode the few fields a
scalar needs by hand: Event{wall_time=1 (double), step=2 (int64), file_version=3 (string),
summary=5 {value=1 {tag=1 (string), simple_value=2 (float)}}}.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


class EventWriter:
    """Appends scalar summaries to `events.out.tfevents.<time>.<host>` in ``logdir``."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.path = Path(logdir) / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._file = open(self.path, "ab")
        self._write(_event(time.time(), 0, _field(3, b"brain.Event:2")))

    def _write(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self._file.write(
            length + struct.pack("<I", _masked(crc32c(length))) + data + struct.pack("<I", _masked(crc32c(data)))
        )

    def scalar(self, tag: str, value: float, step: int) -> None:
        value_message = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value))
        self._write(_event(time.time(), int(step), _field(5, _field(1, value_message))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
