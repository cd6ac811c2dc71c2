"""Compressed model store: one container file holding every tensor of a model.

    "JXCS" | version u16 (2) | reserved u16 | index_len u32 | index_crc u32 | data_len u64
    | index (UTF-8 JSON, see index.py) | data (the tensors' blobs, concatenated)

All int8 symbols of the store (kinds int and q8) are coded together in ONE shared-table group blob
(group.py: one frequency table for the whole model, per tensor a few bytes of geometry + its lanes);
float byte planes and other dtypes' bytes are layer blobs (format.py). Written atomically (temp file +
rename). A damaged or inconsistent tensor raises `CodecError` naming it; the index is cross-checked
against the blobs (index.check_entry) before either decode path runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.codec import floats
from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec import index as I
from jaxsys.codec.errors import CodecError
from jaxsys.codec.layout import Layout
from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.errors import ConfigError, DataError
from jaxsys.train.io import atomic_write_bytes

MAGIC = b"JXCS"
VERSION = I.VERSION
HEADER = Layout(
    ("magic", "4s"),
    ("version", "H"),
    ("reserved", "H"),
    ("index_size", "I"),
    ("index_crc", "I"),
    ("data_size", "Q"),
)
MODES = ("auto", "lossless", "int8")
DECODE_BYTES_PER_ELEMENT = 5  # host decode working set: lane symbols, tiles, predictor, output (+ itemsize)


@dataclasses.dataclass(frozen=True)
class LayerOpts:
    tile_shape: tuple = (256, 256)  # tile rows x cols
    lanes: int = 32  # interleaved rANS lanes per tile
    prob_bits: int = 14  # frequency precision of a layer blob
    predictor: str = "auto"  # none | delta | auto
    min_lane_symbols: int = 256  # layer blobs: fewer lanes for small tiles (per-lane overhead ~6 bytes)
    shared_lane_symbols: int = 4096  # group blob: symbols per lane at least (size vs decode speed)
    shared_prob_bits: int | None = None  # group table precision; None: the cheapest of 12..16


def encode_store(tensors: dict, mode: str = "auto", per_channel: bool = True, opts: LayerOpts = LayerOpts()) -> bytes:
    """dict name -> array  ->  container bytes.

    mode: "lossless"/"auto" keeps every bit (float planes / integer bytes); "int8" quantises floats to
    int8 (per output channel when `per_channel` and ndim >= 2). int8/uint8 tensors and quantised floats
    go to the shared-table group blob.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if not tensors:
        raise DataError("no tensors to store")
    layer = dict(
        tile_shape=opts.tile_shape,
        lanes=opts.lanes,
        prob_bits=opts.prob_bits,
        predictor=opts.predictor,
        min_lane_symbols=opts.min_lane_symbols,
    )
    entries, chunks, members, member_arrays, off = [], [], [], [], 0

    def add(part: bytes) -> dict:
        nonlocal off
        chunks.append(part)
        off += len(part)
        return {"offset": off - len(part), "length": len(part), "crc": zlib.crc32(part)}

    for name, x in tensors.items():
        x, name = np.asarray(x), str(name)
        if x.size == 0:
            raise DataError(f"tensor {name!r} is empty (shape {x.shape}): nothing to compress")
        try:
            dt = I.dtype_of(x.dtype.name)
        except DataError as e:
            raise DataError(f"tensor {name!r}: {e}") from None
        kind = I.kind_of(dt, mode)
        ent = {"name": name, "dtype": dt.name, "shape": list(x.shape), "kind": kind}
        view = I.as_2d(x.shape)
        if kind == "int":
            ent.update(member=len(members), parts=[])
            member_arrays.append(x.reshape(view))
        elif kind == "q8":
            pc = per_channel and x.ndim >= 2
            q, scale = quantize_int8(x.astype(np.float32), per_channel=pc)
            ent.update(member=len(members), per_channel=pc, parts=[add(scale.astype("<f4").tobytes())])
            member_arrays.append(q.reshape(view))
        elif kind == "float":
            planes = [p.reshape(view) for p in floats.split_planes(x)]
            ent["parts"] = [add(fmt.encode_layer(p, **layer)) for p in planes]
            ent["plane_crcs"] = [zlib.crc32(p) for p in planes]  # which blob is which plane
        else:
            b = np.ascontiguousarray(x).view(np.uint8).reshape(I.byte_view(x.shape, x.dtype.itemsize))
            ent["parts"] = [add(fmt.encode_layer(b, **layer))]
        if kind in ("int", "q8"):
            members.append(name)
        entries.append(ent)
    index = {"version": VERSION, "tensors": entries}
    if members:
        blob = G.encode_group(
            member_arrays,
            tile_shape=opts.tile_shape,
            lanes=opts.lanes,
            prob_bits=opts.shared_prob_bits,
            predictor=opts.predictor,
            min_lane_symbols=opts.shared_lane_symbols,
        )
        index["group"] = {**add(blob), "members": members}
    ib = json.dumps(index, separators=(",", ":")).encode()
    hdr = HEADER.pack(
        magic=MAGIC, version=VERSION, reserved=0, index_size=len(ib), index_crc=zlib.crc32(ib), data_size=off
    )
    return hdr + ib + b"".join(chunks)


def write_store(
    path, tensors: dict, mode: str = "auto", per_channel: bool = True, opts: LayerOpts = LayerOpts()
) -> Path:
    return atomic_write_bytes(path, encode_store(tensors, mode, per_channel, opts))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_dtype(dt: np.dtype, name: str) -> np.dtype:
    """`dt` if JAX can hold it as it is; a 64-bit type with jax_enable_x64 off raises instead of narrowing."""
    if jax.dtypes.canonicalize_dtype(dt) != dt:
        raise DataError(
            f"tensor {name!r} is {dt.name}, which JAX holds only with jax_enable_x64 on "
            "(jax.config.update('jax_enable_x64', True)); Store.decode returns it exactly on the host"
        )
    return dt


class Store:
    """A parsed container (bytes in memory): `names`, `entry(name)` (validated index.Entry),
    `decode(name)` (numpy) and `decode_jax(name)` (device); both check the entry against its blobs."""

    def __init__(self, data: bytes | memoryview):
        mv = memoryview(data).cast("B")
        if len(mv) < HEADER.size:
            raise CodecError(f"container of {len(mv)} bytes is shorter than its {HEADER.size}-byte header")
        h = HEADER.unpack(mv)
        if h["magic"] != MAGIC:
            raise CodecError(f"bad container magic {h['magic']!r} (expected {MAGIC!r})")
        if h["version"] != VERSION or h["reserved"] != 0:
            raise CodecError(
                f"unsupported container version {h['version']} / reserved {h['reserved']} "
                f"(this build reads version {VERSION}; compress the weights again)"
            )
        ilen, dlen = h["index_size"], h["data_size"]
        if ilen > I.MAX_INDEX or HEADER.size + ilen + dlen != len(mv):
            raise CodecError(f"container length {len(mv)} != header {HEADER.size} + index {ilen} + data {dlen}")
        ib = mv[HEADER.size : HEADER.size + ilen]
        if zlib.crc32(ib) != h["index_crc"]:
            raise CodecError("container index CRC mismatch")
        self.index = I.parse_index(bytes(ib), dlen)
        self._data = mv[HEADER.size + ilen :]
        self.nbytes = len(mv)
        self.version = h["version"]
        self._parsed_group = None
        self._checked: dict = {}  # name -> blob headers, after index.check_entry

    @classmethod
    def open(cls, path) -> Store:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"container file not found: {path}")
        return cls(path.read_bytes())

    @property
    def names(self) -> list[str]:
        return list(self.index.entries)

    @property
    def group(self) -> I.Part | None:
        return self.index.group

    def entry(self, name: str) -> I.Entry:
        if name not in self.index.entries:
            raise CodecError(f"no tensor {name!r} in the container")
        return self.index.entries[name]

    def _bytes(self, p: I.Part, what: str) -> memoryview:
        b = self._data[p.offset : p.offset + p.length]
        if zlib.crc32(b) != p.crc:
            raise CodecError(f"{what} CRC mismatch (corrupted)")
        return b

    def part(self, name: str, i: int) -> memoryview:
        """Blob i of tensor `name` (CRC-checked)."""
        return self._bytes(self.entry(name).parts[i], f"tensor {name!r}: part {i}")

    def member(self, name: str) -> int | None:
        """Index of `name` in the shared-table group blob, or None."""
        return self.entry(name).member

    def parsed_group(self) -> G.ParsedGroup:
        """The group blob, parsed and fully validated once (cached). On a CRC or structure error
        the damaged tensors are located and named in the `CodecError`."""
        if self._parsed_group is None:
            g = self.group
            if g is None:
                raise CodecError("container has no shared-table group")
            try:
                self._parsed_group = G.parse_group(self._bytes(g, "shared-table group blob"))
            except CodecError as e:
                bad = G.damaged_members(self._data[g.offset : g.offset + g.length])
                names = self.index.members if not bad else [self.index.members[k] for k in bad]
                more = f" (damaged: {', '.join(map(repr, names))})" if len(names) > 1 else ""
                raise CodecError(f"tensor {names[0]!r}: {e}{more}") from None
        return self._parsed_group

    def headers(self, name: str) -> list:
        """The blob geometry of `name` (group member header, or one header per layer blob), after the
        entry has been cross-checked against it (index.check_entry), once per tensor."""
        if name in self._checked:
            return self._checked[name]
        e = self.entry(name)
        with _named(name):
            if e.member is not None:
                pg = self.parsed_group()
                if e.member >= len(pg.members):
                    raise CodecError(f"member {e.member} of a group of {len(pg.members)} tensors")
                hs = [pg.members[e.member].header]
            else:
                hs = [fmt.parse_header(self.part(name, i)) for i in range(len(e.parts))]
            I.check_entry(e, hs)
        self._checked[name] = hs
        return hs

    def compressed_bytes(self, name: str) -> int:
        e = self.entry(name)
        n = sum(p.length for p in e.parts)
        if e.member is not None:
            self.headers(name)
            n += self.parsed_group().members[e.member].coded_bytes()
        return n

    def q8_scale(self, name: str) -> np.ndarray:
        return np.frombuffer(self.part(name, 0), "<f4").copy()

    def _check_budget(self, e: I.Entry) -> None:
        need = e.size * (DECODE_BYTES_PER_ELEMENT + e.dtype.itemsize)
        avail = available_memory()
        if avail is not None and need > avail:
            raise CodecError(
                f"tensor {e.name!r} claims shape {list(e.shape)}: decoding needs about {need} bytes, "
                f"only {avail} bytes of memory are available"
            )

    def decode(self, name: str) -> np.ndarray:
        """Host decode (vectorised numpy), exact for every dtype."""
        e = self.entry(name)
        self.headers(name)
        self._check_budget(e)
        with _named(name):
            if e.member is not None:
                q = G.decode_parsed_numpy(self.parsed_group(), [e.member])[0]
                if e.kind == "int":
                    return q.reshape(e.shape)
                scale = self.q8_scale(name)
                q = q.reshape(e.shape[0], -1) if e.per_channel else q
                return dequantize_int8(q, scale if e.per_channel else scale.reshape(()), e.dtype).reshape(e.shape)
            blobs = [fmt.decode_layer_numpy(self.part(name, i)) for i in range(len(e.parts))]
            if e.kind == "float":
                return floats.merge_planes(blobs, e.dtype.name).reshape(e.shape)
            return np.ascontiguousarray(blobs[0]).view(e.dtype).reshape(e.shape)

    def decode_jax(self, name: str, check: bool = True) -> jax.Array:
        """Device decode: each blob goes to the device once and is decoded there. With `check` the
        device integrity flags and the decoded bytes' raw CRC32 are verified (as on the host path)."""
        from jaxsys.codec import decode as D

        e = self.entry(name)
        self.headers(name)
        dt = device_dtype(e.dtype, name)
        self._check_budget(e)
        with _named(name):
            if e.member is not None:
                q = D.decode_parsed_group(self.parsed_group(), [e.member], check=check)[0]
                if e.kind == "int":
                    return q.reshape(e.shape)
                return dequantize_jax(q, jnp.asarray(self.q8_scale(name)), e.shape, e.per_channel, dt)
            blobs = [D.decode_layer(self.part(name, i), check=check) for i in range(len(e.parts))]
            if e.kind == "float":
                return floats.merge_planes_jax(blobs, e.dtype.name).reshape(e.shape)
            return bytes_to_dtype(blobs[0], dt, e.shape)


def dequantize_jax(q, scale, shape: tuple, per_channel: bool, dtype):
    """Traceable q * scale (per row of axis 0 or per tensor) in float32, then cast to `dtype`."""
    q = q.astype(jnp.float32)
    w = q.reshape(shape[0], -1) * scale[:, None] if per_channel else q * scale[0]
    return w.reshape(shape).astype(dtype)


def bytes_to_dtype(u8, dtype, shape: tuple):
    """Traceable: a uint8 array of a tensor's bytes -> the tensor (bitcast, little-endian)."""
    dt = jnp.dtype(dtype)
    u = u8.reshape(-1)
    w = jax.lax.bitcast_convert_type(u.reshape(-1, dt.itemsize), dt) if dt.itemsize > 1 else u.view(dt)
    return w.reshape(shape)


class _named:
    """Context: a CodecError (or MemoryError) inside names the tensor."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, typ, err, tb):
        if typ is MemoryError:
            raise CodecError(f"tensor {self.name!r}: out of memory while decoding") from None
        if typ is not None and issubclass(typ, CodecError) and not str(err).startswith("tensor '"):
            raise CodecError(f"tensor {self.name!r}: {err}") from None
        return False
