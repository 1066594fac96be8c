"""The spool's record layout: a request row and/or an encoded prediction batch, as bytes.

One record is what ``Outbox.put`` spools for one answer and ships in one transaction with its
chunk: written in the request's thread, read back by the shipper (or by the worker that adopts a
dead one's segment), so the layout carries a version (``RECORD_FORMAT``). No Flask.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from service.monitoring.predlog import EncodedBatch

#: The record layout written to the spool; a record of another layout is counted ``unreadable``.
RECORD_FORMAT = 1
LENGTH = struct.Struct("<I")  # the header's length, before it
BLOB = "$blob"  # a batch field kept as raw bytes after the header


def pack(request: tuple[Any, ...] | None, batch: EncodedBatch | None) -> bytes:
    """One record: a request row (``REQUEST_COLUMNS``) and/or a logged prediction batch.

    Layout: the header's length (4 bytes), the header (JSON: format, request, the batch's fields
    with each ``bytes`` field replaced by ``{"$blob": i}``, the blobs' lengths), then the blobs
    as they are, so binary columns cost no encoding.
    """
    fields, blobs = None, []
    if batch is not None:
        fields = {}
        for name, value in vars(batch).items():
            if isinstance(value, bytes):
                fields[name] = {BLOB: len(blobs)}
                blobs.append(value)
            else:
                fields[name] = value
    header = orjson.dumps([RECORD_FORMAT, request, fields, [len(b) for b in blobs]])
    return b"".join((LENGTH.pack(len(header)), header, *blobs))


def unpack(record: bytes) -> tuple[tuple[Any, ...] | None, EncodedBatch | None]:
    """Read a record back; raise ``ValueError`` for one that is not of ``RECORD_FORMAT``."""
    try:
        (size,) = LENGTH.unpack_from(record)
        version, request, fields, lengths = orjson.loads(record[LENGTH.size:LENGTH.size + size])
        if version != RECORD_FORMAT:
            raise ValueError(f"record format {version!r}")
        offsets, at = [], LENGTH.size + size
        for length in lengths:
            offsets.append((at, at + length))
            at += length
        if at != len(record):
            raise ValueError(f"record of {len(record)} bytes declares {at}")
        if fields is not None:
            for name, value in fields.items():
                if isinstance(value, dict) and set(value) == {BLOB}:
                    begin, end = offsets[value[BLOB]]
                    fields[name] = record[begin:end]
        return (tuple(request) if request is not None else None,
                EncodedBatch(**fields) if fields is not None else None)
    except (TypeError, IndexError, KeyError, struct.error, orjson.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from exc
