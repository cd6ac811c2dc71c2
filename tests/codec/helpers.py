"""Test helpers: synthetic symbol sources and a 'reseal' that recomputes a blob's CRCs after a
mutation, so tests reach the structural checks behind the CRCs (a hostile blob)."""

import struct
import zlib

import numpy as np

from jaxsys.codec import format as fmt


def reseal(blob: bytes) -> bytes:
    """Recompute payload and meta CRCs from the (possibly mutated) header offsets."""
    H = fmt.HEADER
    b = bytearray(blob)
    if len(b) < H.size:
        return bytes(b)
    f = H.unpack(b)
    t_off, p_off = f["table_off"], f["payload_off"]
    if not (H.size <= t_off <= p_off <= len(b)):
        return bytes(b)
    struct.pack_into("<I", b, H.offset("payload_crc"), zlib.crc32(bytes(b[p_off:])))
    meta = zlib.crc32(bytes(b[t_off:p_off]), zlib.crc32(bytes(b[: H.offset("meta_crc")])))
    struct.pack_into("<I", b, H.offset("meta_crc"), meta)
    return bytes(b)


def source(kind: str, shape, rng, dtype=np.int8) -> np.ndarray:
    n = int(np.prod(shape))
    if kind == "uniform":
        v = rng.integers(0, 256, n)
    elif kind == "constant":
        v = np.full(n, 77)
    elif kind == "single":  # one symbol except the default value: still a single-symbol table
        v = np.zeros(n, np.int64)
    elif kind == "all256":
        v = np.arange(n) % 256
    elif kind == "gauss":
        v = np.clip(np.rint(rng.normal(0, 6, n)), -128, 127)
    elif kind == "heavy":  # Student-t(1.5): heavy tails, most mass near 0, rare extremes
        v = np.clip(np.rint(rng.standard_t(1.5, n) * 2), -128, 127)
    elif kind == "ramp":  # smooth rows: delta predictor territory
        v = (np.arange(n) // 3) % 256
    else:
        raise ValueError(kind)
    return (np.asarray(v, np.int64) % 256).astype(np.uint8).view(dtype).reshape(shape)


def reseal_group(blob: bytes) -> bytes:
    """Recompute a group blob's payload and meta CRCs from its (possibly mutated) section sizes."""
    from jaxsys.codec import group as G

    H = G.HEADER
    b = bytearray(blob)
    if len(b) < H.size:
        return bytes(b)
    f = H.unpack(b)
    p0 = H.size + f["table_size"] + f["directory_size"] + f["index_size"]
    if p0 > len(b):
        return bytes(b)
    struct.pack_into("<I", b, H.offset("payload_crc"), zlib.crc32(bytes(b[p0:])))
    meta = zlib.crc32(bytes(b[H.size : p0]), zlib.crc32(bytes(b[: H.offset("meta_crc")])))
    struct.pack_into("<I", b, H.offset("meta_crc"), meta)
    return bytes(b)


def mutations(blob: bytes, other: bytes, rng, n: int, reseal_fn):
    """n damaged copies of `blob`, cycling bit flips, truncation, a splice from `other` and an
    8-byte overwrite; every odd one is passed through `reseal_fn` (valid CRCs, damaged content)."""
    for i in range(n):
        b = bytearray(blob)
        op = i % 4
        if op == 0:
            for _ in range(rng.integers(1, 4)):
                p = rng.integers(0, len(b))
                b[p] ^= 1 << rng.integers(0, 8)
        elif op == 1:
            b = b[: rng.integers(0, len(b))]
        elif op == 2:
            p = rng.integers(0, len(b))
            q = rng.integers(0, len(other))
            b = b[:p] + other[q : q + rng.integers(1, 64)] + b[p:]
        else:
            p = rng.integers(0, len(b))
            b[p : p + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        yield bytes(b) if i % 2 == 0 else reseal_fn(bytes(b))


CONTAINER_HDR = struct.Struct("<4sHHIIQ")  # magic, version, reserved, index length, index CRC, data length


def open_container(data: bytes) -> tuple[int, dict, bytearray]:
    """(version, index dict, data section) of a container, without validation."""
    import json

    _, ver, _, ilen, _, _ = CONTAINER_HDR.unpack_from(data, 0)
    n = CONTAINER_HDR.size
    return ver, json.loads(data[n : n + ilen]), bytearray(data[n + ilen :])


def seal_container(ver: int, index, body: bytes, index_bytes: bytes | None = None) -> bytes:
    """A container with a valid index CRC around `index` (or raw `index_bytes`) and `body`."""
    import json

    ib = json.dumps(index).encode() if index_bytes is None else index_bytes
    return CONTAINER_HDR.pack(b"JXCS", ver, 0, len(ib), zlib.crc32(ib), len(body)) + ib + bytes(body)


def replace_blob(body: bytearray, ref: dict, new: bytes) -> None:
    """Overwrite the blob `ref` ({offset, length, crc}) in the data section with `new` (same length)
    and fix its CRC in the index."""
    o, n = ref["offset"], ref["length"]
    assert len(new) == n
    body[o : o + n] = new
    ref["crc"] = zlib.crc32(new)


def flip_group_flag(data: bytes, bit: int) -> bytes:
    """A container whose group blob has flag `bit` of its first member flipped, every CRC resealed."""
    from jaxsys.codec import group as G

    ver, index, body = open_container(data)
    g = index["group"]
    blob = bytearray(body[g["offset"] : g["offset"] + g["length"]])
    t_size = G.HEADER.unpack(blob)["table_size"]
    blob[G.HEADER.size + t_size] ^= bit  # the first member's flags (a one-byte varint)
    replace_blob(body, g, reseal_group(bytes(blob)))
    return seal_container(ver, index, body)
