"""Compressed model store: one container file holding one or more layer blobs per named tensor.

    "JXCS" | version u16 | reserved u16 | index_len u32 | index_crc u32 | data_len u64
    | index (UTF-8 JSON) | data (the tensors' parts, concatenated)

Each index entry: {name, kind, dtype, shape, parts: [{offset, length, crc}], ...}. Kinds:
  int    int8/uint8 tensor, one layer blob                                   (lossless)
  q8     float tensor quantised with `quantize_int8`: blob + float32 scales  (lossy, int8)
  float  bfloat16/float16/float32 split into byte planes, one blob per plane (lossless, bit-exact)
  bytes  any other dtype, its bytes coded as a uint8 layer                   (lossless)
Written atomically (temp file + rename). A damaged part raises `CodecError` naming the tensor.

Container version 2 (shared table, the default): all int8 symbols of the store (kinds int and q8)
are coded together in ONE group blob (group.py: one frequency table for the whole model, per tensor
only a few bytes of geometry + its lanes). The index then has "group": {offset, length, crc,
members: [names]}, and a member's entry has "member": j and no blob part (a q8 member keeps its
scales as its only part). Version-1 containers (one blob per tensor) are still read.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxsys.codec import floats
from jaxsys.codec import format as fmt
from jaxsys.codec import group as G
from jaxsys.codec.format import CodecError
from jaxsys.codec.quant import dequantize_int8, quantize_int8
from jaxsys.errors import ConfigError, DataError
from jaxsys.train.io import atomic_write_bytes

MAGIC = b"JXCS"
VERSION = 2  # written when a shared-table group is present; 1 otherwise
READ_VERSIONS = (1, 2)
_HDR = struct.Struct("<4sHHIIQ")
MAX_INDEX = 64 << 20
MODES = ("auto", "lossless", "int8")


@dataclasses.dataclass(frozen=True)
class LayerOpts:
    tile_shape: tuple = (256, 256)  # tile rows x cols
    lanes: int = 32  # interleaved rANS lanes per tile
    prob_bits: int = 14  # frequency precision
    predictor: str = "auto"  # none | delta | auto
    min_lane_symbols: int = 256  # fewer lanes for small tiles (per-lane overhead ~6 bytes)
    shared_table: bool = True  # code all int8 tensors of a store in one group blob, one table
    shared_lane_symbols: int = 4096  # group blob: symbols per lane at least (size vs decode speed)
    shared_prob_bits: int | None = None  # group table precision; None: the cheapest of 12..16


def as_2d(shape: tuple) -> tuple:
    """How a tensor of `shape` is laid out for the layer coder: 1-D stays 1-D, N-D -> (d0, rest)."""
    if len(shape) == 0:
        return (1,)
    if len(shape) == 1:
        return tuple(shape)
    return (shape[0], int(np.prod(shape[1:])))


def encode_tensor(
    name: str, x: np.ndarray, mode: str = "auto", per_channel: bool = True, opts: LayerOpts = LayerOpts()
) -> tuple[dict, list[bytes]]:
    """One tensor -> (index entry without offsets, list of part bytes).

    mode: "lossless" keeps every bit (float planes / integer bytes); "int8" quantises floats to int8
    (per output channel when `per_channel` and ndim >= 2); "auto" = lossless.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    x = np.asarray(x)
    if x.size == 0:
        raise DataError(f"tensor {name!r} is empty")
    kw = dict(
        tile_shape=opts.tile_shape,
        lanes=opts.lanes,
        prob_bits=opts.prob_bits,
        predictor=opts.predictor,
        min_lane_symbols=opts.min_lane_symbols,
    )
    ent = {"name": name, "dtype": x.dtype.name, "shape": list(x.shape)}
    view = as_2d(x.shape)
    if x.dtype in (np.int8, np.uint8):
        return {**ent, "kind": "int"}, [fmt.encode_layer(x.reshape(view), **kw)]
    is_float = x.dtype.name in floats.FLOAT_DTYPES or x.dtype == np.float64
    if mode == "int8" and is_float:
        pc = per_channel and x.ndim >= 2
        q, scale = quantize_int8(x.astype(np.float32), per_channel=pc)
        return (
            {**ent, "kind": "q8", "per_channel": pc},
            [fmt.encode_layer(q.reshape(view), **kw), scale.astype("<f4").tobytes()],
        )
    if x.dtype.name in floats.FLOAT_DTYPES:
        planes = floats.split_planes(x)
        return {**ent, "kind": "float"}, [fmt.encode_layer(p.reshape(view), **kw) for p in planes]
    b = np.ascontiguousarray(x).view(np.uint8)
    bview = (view[0], view[1] * x.dtype.itemsize) if len(view) == 2 else (x.size * x.dtype.itemsize,)
    return {**ent, "kind": "bytes"}, [fmt.encode_layer(b.reshape(bview), **kw)]


def encode_store(tensors: dict, mode: str = "auto", per_channel: bool = True, opts: LayerOpts = LayerOpts()) -> bytes:
    """dict name -> array  ->  container bytes (version 2 with one shared-table group blob for the
    int8 tensors when `opts.shared_table`, else version 1)."""
    entries, chunks, off = [], [], 0
    members, member_arrays = [], []

    def add(part):
        nonlocal off
        chunks.append(part)
        off += len(part)
        return {"offset": off - len(part), "length": len(part), "crc": zlib.crc32(part)}

    for name, x in tensors.items():
        x = np.asarray(x)
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if (
            opts.shared_table
            and x.size
            and (
                x.dtype in (np.int8, np.uint8)
                or (mode == "int8" and (x.dtype.name in floats.FLOAT_DTYPES or x.dtype == np.float64))
            )
        ):
            ent = {"name": str(name), "dtype": x.dtype.name, "shape": list(x.shape), "member": len(members)}
            view = as_2d(x.shape)
            if x.dtype in (np.int8, np.uint8):
                ent.update(kind="int", parts=[])
                member_arrays.append(x.reshape(view))
            else:
                pc = per_channel and x.ndim >= 2
                q, scale = quantize_int8(x.astype(np.float32), per_channel=pc)
                ent.update(kind="q8", per_channel=pc, parts=[add(scale.astype("<f4").tobytes())])
                member_arrays.append(q.reshape(view))
            members.append(str(name))
            entries.append(ent)
            continue
        ent, parts = encode_tensor(str(name), x, mode, per_channel, opts)
        ent["parts"] = [add(p) for p in parts]
        entries.append(ent)
    index = {"version": VERSION if members else 1, "tensors": entries}
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
    hdr = _HDR.pack(MAGIC, index["version"], 0, len(ib), zlib.crc32(ib), off)
    return hdr + ib + b"".join(chunks)


def write_store(
    path, tensors: dict, mode: str = "auto", per_channel: bool = True, opts: LayerOpts = LayerOpts()
) -> Path:
    return atomic_write_bytes(path, encode_store(tensors, mode, per_channel, opts))


class Store:
    """A parsed container (bytes in memory). `names`, `entry(name)`, `part(name, i)`,
    `decode(name)` (numpy) and `decode_jax(name)` (device)."""

    def __init__(self, data: bytes | memoryview):
        mv = memoryview(data)
        if len(mv) < _HDR.size:
            raise CodecError(f"container of {len(mv)} bytes is shorter than its {_HDR.size}-byte header")
        magic, ver, resv, ilen, icrc, dlen = _HDR.unpack_from(mv, 0)
        if magic != MAGIC:
            raise CodecError(f"bad container magic {magic!r} (expected {MAGIC!r})")
        if ver not in READ_VERSIONS or resv != 0:
            raise CodecError(f"unsupported container version {ver} / reserved {resv}")
        if ilen > MAX_INDEX or _HDR.size + ilen + dlen != len(mv):
            raise CodecError(f"container length {len(mv)} != header {_HDR.size} + index {ilen} + data {dlen}")
        ib = mv[_HDR.size : _HDR.size + ilen]
        if zlib.crc32(ib) != icrc:
            raise CodecError("container index CRC mismatch")
        try:
            index = json.loads(bytes(ib).decode("utf-8"))
            entries = index["tensors"]
            self._entries = {}
            self.group = None
            grp = index.get("group") if ver >= 2 else None
            if grp is not None:
                o, n = int(grp["offset"]), int(grp["length"])
                if o < 0 or n < 0 or o + n > dlen:
                    raise CodecError(f"group blob {o}+{n} outside the data ({dlen} bytes)")
                self.group = {
                    "offset": o,
                    "length": n,
                    "crc": int(grp["crc"]),
                    "members": [str(m) for m in grp["members"]],
                }
            for e in entries:
                for p in e["parts"]:
                    o, n = int(p["offset"]), int(p["length"])
                    if o < 0 or n < 0 or o + n > dlen:
                        raise CodecError(f"tensor {e['name']!r}: part {o}+{n} outside the data ({dlen} bytes)")
                if e["kind"] not in ("int", "q8", "float", "bytes"):
                    raise CodecError(f"tensor {e['name']!r}: unknown kind {e['kind']!r}")
                if "member" in e:
                    j = e["member"]
                    if (
                        self.group is None
                        or not isinstance(j, int)
                        or not 0 <= j < len(self.group["members"])
                        or self.group["members"][j] != e["name"]
                        or e["kind"] not in ("int", "q8")
                    ):
                        raise CodecError(f"tensor {e['name']!r}: bad group member reference {j!r}")
                self._entries[str(e["name"])] = e
        except (ValueError, KeyError, TypeError) as err:
            raise CodecError(f"container index is malformed: {err}") from None
        self._data = mv[_HDR.size + ilen :]
        self.nbytes = len(mv)
        self.version = ver
        self._parsed_group = None

    @classmethod
    def open(cls, path) -> Store:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"container file not found: {path}")
        return cls(path.read_bytes())

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> dict:
        if name not in self._entries:
            raise CodecError(f"no tensor {name!r} in the container")
        return self._entries[name]

    def part(self, name: str, i: int) -> memoryview:
        p = self.entry(name)["parts"][i]
        b = self._data[p["offset"] : p["offset"] + p["length"]]
        if zlib.crc32(b) != p["crc"]:
            raise CodecError(f"tensor {name!r}: part {i} CRC mismatch (corrupted)")
        return b

    def member(self, name: str):
        """Index of `name` in the shared-table group blob, or None."""
        return self.entry(name).get("member")

    def group_blob(self) -> memoryview:
        if self.group is None:
            raise CodecError("container has no shared-table group")
        g = self.group
        b = self._data[g["offset"] : g["offset"] + g["length"]]
        if zlib.crc32(b) != g["crc"]:
            raise CodecError("shared-table group blob CRC mismatch (corrupted)")
        return b

    def parsed_group(self):
        """The group blob, parsed and fully validated once (cached). On a CRC or structure error
        the damaged tensors are located and named in the `CodecError`."""
        if self._parsed_group is None:
            try:
                self._parsed_group = G.parse_group(self.group_blob())
            except CodecError as e:
                g = self.group
                bad = G.damaged_members(self._data[g["offset"] : g["offset"] + g["length"]])
                names = g["members"] if not bad else [g["members"][k] for k in bad]
                raise CodecError(
                    f"tensor {names[0]!r}: {e}"
                    + (f" (damaged: {', '.join(map(repr, names))})" if len(names) > 1 else "")
                ) from None
        return self._parsed_group

    def _blob_of(self, name: str, i: int = 0):
        return self.part(name, i)

    def compressed_bytes(self, name: str) -> int:
        e = self.entry(name)
        n = sum(p["length"] for p in e["parts"])
        if "member" in e:
            m = self.parsed_group().members[e["member"]]
            h = m.header
            n += h.rows * h.cols if h.coding == fmt.CODING_RAW else 2 * int(m.lane_words.sum()) + 2 * m.lane_words.size
        return n

    def _layer(self, name, i, decoder):
        try:
            return decoder(self.part(name, i))
        except CodecError as e:
            if str(e).startswith(f"tensor {name!r}"):
                raise
            raise CodecError(f"tensor {name!r}: {e}") from None

    def _member_value(self, name, device: bool):
        j = self.member(name)
        pg = self.parsed_group()
        try:
            if device:
                from jaxsys.codec.decode import decode_parsed_group

                return decode_parsed_group(pg, [j])[0]
            return G._decode_parsed(pg, [j])[0]
        except CodecError as e:
            raise CodecError(f"tensor {name!r}: {e}") from None

    def _q8_scale(self, name):
        return np.frombuffer(self.part(name, len(self.entry(name)["parts"]) - 1), "<f4").copy()

    def decode(self, name: str) -> np.ndarray:
        """Host decode (vectorised numpy)."""
        e = self.entry(name)
        shape, kind = tuple(e["shape"]), e["kind"]
        dec = fmt.decode_layer_numpy
        if kind in ("int", "q8"):
            q = self._member_value(name, False) if "member" in e else self._layer(name, 0, dec)
            if kind == "int":
                return q.reshape(shape)
            scale = self._q8_scale(name)
            scale = scale.reshape(()) if not e["per_channel"] else scale
            return dequantize_int8(q.reshape(shape[0], -1) if e["per_channel"] else q, scale).reshape(shape)
        if kind == "float":
            planes = [self._layer(name, i, dec) for i in range(len(e["parts"]))]
            return floats.merge_planes(planes, e["dtype"]).reshape(shape)
        b = self._layer(name, 0, dec)
        return np.ascontiguousarray(b).view(np.dtype(e["dtype"])).reshape(shape)

    def decode_jax(self, name: str, check: bool = True):
        """Device decode: each part goes to the device once and is decoded there."""
        import jax.numpy as jnp

        from jaxsys.codec.decode import decode_layer

        e = self.entry(name)
        shape, kind = tuple(e["shape"]), e["kind"]
        dec = lambda b: decode_layer(b, check=check)  # noqa: E731
        if kind in ("int", "q8"):
            q = self._member_value(name, True) if "member" in e else self._layer(name, 0, dec)
            if kind == "int":
                return q.reshape(shape)
            q = q.astype(jnp.float32)
            scale = jnp.asarray(self._q8_scale(name))
            if e["per_channel"]:
                q = q.reshape(shape[0], -1) * scale[:, None]
            else:
                q = q * scale[0]
            return q.reshape(shape)
        if kind == "float":
            planes = [self._layer(name, i, dec) for i in range(len(e["parts"]))]
            return floats.merge_planes_jax(planes, e["dtype"]).reshape(shape)
        b = self._layer(name, 0, dec)
        return jnp.asarray(np.asarray(b).view(np.dtype(e["dtype"])).reshape(shape))


# ------------------------------------------------------------------------------------------------
# tensor sources: .npy, .safetensors (own reader/writer: bfloat16 included), weights.json, pytrees

_ST_DTYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}


def _np_dtype(name: str) -> np.dtype:
    return floats.FLOAT_DTYPES[name] if name in floats.FLOAT_DTYPES else np.dtype(name)


def read_safetensors(path) -> dict:
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise DataError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack_from("<Q", data, 0)
    if 8 + n > len(data):
        raise DataError(f"{path}: header length {n} exceeds the file")
    try:
        hdr = json.loads(data[8 : 8 + n].decode("utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: bad safetensors header: {e}") from None
    base = 8 + n
    out = {}
    for name, meta in hdr.items():
        if name == "__metadata__":
            continue
        if meta.get("dtype") not in _ST_DTYPES:
            raise DataError(f"{path}: tensor {name!r} has unsupported dtype {meta.get('dtype')}")
        dt = _np_dtype(_ST_DTYPES[meta["dtype"]])
        s, e = meta["data_offsets"]
        shape = tuple(meta["shape"])
        if base + e > len(data) or e - s != int(np.prod(shape)) * dt.itemsize:
            raise DataError(f"{path}: tensor {name!r} offsets {s}..{e} do not fit")
        out[name] = np.frombuffer(data[base + s : base + e], dtype=dt).reshape(shape).copy()
    return out


def write_safetensors(path, tensors: dict) -> Path:
    hdr, chunks, off = {}, [], 0
    for name, x in tensors.items():
        x = np.ascontiguousarray(x)
        if x.dtype.name not in _ST_CODES:
            raise DataError(f"tensor {name!r}: dtype {x.dtype} not storable in safetensors")
        b = x.tobytes()
        hdr[name] = {"dtype": _ST_CODES[x.dtype.name], "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return atomic_write_bytes(path, struct.pack("<Q", len(h)) + h + b"".join(chunks))


def flatten_pytree(tree, prefix: str = "") -> dict:
    """Nested dicts/lists of arrays -> {"a/b/0": array}."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten_pytree(v, f"{prefix}{k}/"))
    elif isinstance(tree, (list, tuple)):
        try:  # a (nested) list of numbers is one tensor
            arr = np.asarray(tree)
        except ValueError:
            arr = None
        if arr is not None and arr.dtype.kind in "fiub":
            out[prefix[:-1] or "x"] = arr
            return out
        for i, v in enumerate(tree):
            out.update(flatten_pytree(v, f"{prefix}{i}/"))
    else:
        out[prefix[:-1] or "x"] = np.asarray(tree)
    return out


def load_tensors(path) -> dict:
    """Read tensors from .npy, .npz, .safetensors or a JSON file of nested lists (weights.json)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    suf = path.suffix.lower()
    if suf == ".npy":
        return {path.stem: np.load(path, allow_pickle=False)}
    if suf == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suf == ".safetensors":
        return read_safetensors(path)
    if suf == ".json":
        try:
            obj = json.loads(path.read_text())
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON: {e}") from None
        flat = flatten_pytree(obj)
        return {
            k: (v.astype(np.float32) if v.dtype == np.float64 else v)
            for k, v in flat.items()
            if v.dtype.kind in "fiub" and v.size > 0
        }
    raise DataError(f"{path}: unsupported input type {suf!r} (use .npy, .npz, .safetensors, .json)")
