"""The container index: parsed from bounded JSON, validated field by field, and cross-checked against
the blobs it describes. Both decode paths (numpy and JAX) and the device runtime go through
`check_entry`, so metadata that disagrees with a blob's own geometry fails the same way everywhere.

Index: {"version": 2, "tensors": [entry, ...], "group": {offset, length, crc, members: [names]}}
(group only when the store holds int8 symbols). Entry: {name, kind, dtype, shape, parts: [{offset,
length, crc}], member (int, q8), per_channel (q8), plane_crcs (float: each plane's raw CRC32, so
planes cannot be swapped unnoticed; files written without it are read trusting the order)}. Kinds:
  int    int8/uint8 tensor, a member of the group blob                       (lossless)
  q8     float tensor quantised with `quantize_int8`: group member + scales   (lossy, int8)
  float  bfloat16/float16/float32 split into byte planes, one layer blob per plane (lossless)
  bytes  any other numeric dtype, its bytes coded as one uint8 layer blob     (lossless)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxsys.codec import floats
from jaxsys.codec import tiles as tl
from jaxsys.codec.errors import CodecError
from jaxsys.errors import DataError
from jaxsys.train.io import load_json

VERSION = 2
KINDS = ("int", "q8", "float", "bytes")
Q8_DTYPES = ("float16", "bfloat16", "float32", "float64")
MAX_INDEX = 64 << 20


@dataclasses.dataclass(frozen=True)
class Part:
    offset: int  # byte offset in the data section
    length: int  # bytes
    crc: int  # CRC32 of those bytes


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # one of KINDS
    dtype: np.dtype  # the tensor's dtype (what decoding returns)
    shape: tuple  # the tensor's shape
    parts: tuple  # Part per blob (float planes, bytes blob, or q8 scales)
    member: int | None = None  # index in the group blob (int, q8)
    per_channel: bool = False  # q8: one scale per row of axis 0
    plane_crcs: tuple | None = None  # float: raw CRC32 of each byte plane, in part order

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def view(self) -> tuple:
        """The 1-D or 2-D view the layer coder sees."""
        return as_2d(self.shape)

    @property
    def n_scales(self) -> int:
        return self.shape[0] if self.per_channel else 1


@dataclasses.dataclass(frozen=True)
class Index:
    entries: dict  # name -> Entry, file order
    group: Part | None  # the shared-table group blob
    members: tuple  # names of the group's tensors, in group order


def as_2d(shape: tuple) -> tuple:
    """How a tensor of `shape` is laid out for the layer coder: 1-D stays 1-D, N-D -> (d0, rest)."""
    if len(shape) == 0:
        return (1,)
    if len(shape) == 1:
        return tuple(shape)
    return (shape[0], math.prod(shape[1:]))


def byte_view(shape: tuple, itemsize: int) -> tuple:
    """The uint8 view of a tensor's bytes (kind bytes)."""
    v = as_2d(shape)
    return (v[0], v[1] * itemsize) if len(v) == 2 else (v[0] * itemsize,)


def dtype_of(name: str) -> np.dtype:
    """A numeric dtype by name (bfloat16 included), or DataError: never an object or string dtype."""
    if name in floats.FLOAT_DTYPES:
        return floats.FLOAT_DTYPES[name]
    try:
        dt = np.dtype(name)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biufc" or dt.name != name:
        raise DataError(f"unsupported dtype {name!r} (numeric dtypes only)")
    return dt


def kind_of(dtype: np.dtype, mode: str) -> str:
    """The kind a tensor of `dtype` is stored as in `mode` ("lossless"/"auto" or "int8")."""
    if dtype in (np.int8, np.uint8):
        return "int"
    if mode == "int8" and dtype.name in Q8_DTYPES:
        return "q8"
    return "float" if dtype.name in floats.FLOAT_DTYPES else "bytes"


def _int(v, what: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise CodecError(f"container index: {what} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _part(p, data_size: int, what: str) -> Part:
    if not isinstance(p, dict):
        raise CodecError(f"container index: {what} must be an object, got {type(p).__name__}")
    o = _int(p.get("offset"), f"{what} offset", 0, data_size)
    n = _int(p.get("length"), f"{what} length", 0, data_size - o)
    return Part(o, n, _int(p.get("crc"), f"{what} crc", 0, 0xFFFFFFFF))


def _entry(e, data_size: int, k: int) -> Entry:
    if not isinstance(e, dict) or not isinstance(e.get("name"), str):
        raise CodecError(f"container index: tensor {k} must be an object with a string name")
    name = e["name"]
    where = f"container index: tensor {name!r}:"
    kind, shape, parts = e.get("kind"), e.get("shape"), e.get("parts")
    if kind not in KINDS:
        raise CodecError(f"{where} unknown kind {kind!r}")
    if not isinstance(shape, list) or len(shape) > 32:
        raise CodecError(f"{where} shape must be a list of at most 32 sizes, got {shape!r}")
    shape = tuple(_int(d, f"tensor {name!r} shape", 1, tl.MAX_ELEMENTS) for d in shape)
    if not isinstance(e.get("dtype"), str):
        raise CodecError(f"{where} dtype must be a string")
    try:
        dtype = dtype_of(e["dtype"])
    except DataError as err:
        raise CodecError(f"{where} {err}") from None
    if kind_of(dtype, "int8" if kind == "q8" else "lossless") != kind:
        raise CodecError(f"{where} kind {kind!r} cannot hold dtype {dtype.name}")
    n_bytes = math.prod(shape) * (dtype.itemsize if kind == "bytes" else 1)
    if n_bytes > tl.MAX_ELEMENTS:
        raise CodecError(f"{where} shape {list(shape)} exceeds the codec limit of {tl.MAX_ELEMENTS} elements")
    if not isinstance(parts, list) or len(parts) > 8:
        raise CodecError(f"{where} parts must be a list")
    parts = tuple(_part(p, data_size, f"tensor {name!r} part {i}") for i, p in enumerate(parts))
    member, per_channel = e.get("member"), e.get("per_channel", False)
    if (member is None) != (kind in ("float", "bytes")):
        raise CodecError(f"{where} kind {kind} {'needs' if member is None else 'has no'} group member")
    if member is not None:
        member = _int(member, f"tensor {name!r} member", 0, 1 << 16)
    if type(per_channel) is not bool or (per_channel and (kind != "q8" or len(shape) < 2)):
        raise CodecError(f"{where} per_channel {per_channel!r} is not valid for a {kind} tensor of shape {list(shape)}")
    plane_crcs = e.get("plane_crcs")
    if plane_crcs is not None:
        if kind != "float" or not isinstance(plane_crcs, list) or len(plane_crcs) != len(parts):
            raise CodecError(f"{where} plane_crcs must list one CRC per plane of a float tensor")
        plane_crcs = tuple(_int(c, f"tensor {name!r} plane crc", 0, 0xFFFFFFFF) for c in plane_crcs)
    ent = Entry(name, kind, dtype, shape, parts, member, per_channel, plane_crcs)
    want = {"int": 0, "q8": 1, "float": dtype.itemsize, "bytes": 1}[kind]
    if len(parts) != want:
        raise CodecError(f"{where} kind {kind} of {dtype.name} needs {want} part(s), the index lists {len(parts)}")
    if kind == "q8" and parts[0].length != 4 * ent.n_scales:
        raise CodecError(
            f"{where} per_channel={per_channel} needs {ent.n_scales} float32 scale(s), "
            f"the scale part holds {parts[0].length} bytes"
        )
    return ent


def parse_index(ib: bytes, data_size: int) -> Index:
    """Bounded JSON -> validated Index (every offset inside the data, every field of the right type)."""
    try:
        obj = load_json(bytes(ib), "container index", max_bytes=MAX_INDEX)
    except DataError as e:
        raise CodecError(str(e)) from None
    if not isinstance(obj, dict) or obj.get("version") != VERSION or not isinstance(obj.get("tensors"), list):
        raise CodecError(f"container index must be an object with version {VERSION} and a tensors list")
    entries = {}
    for k, e in enumerate(obj["tensors"]):
        ent = _entry(e, data_size, k)
        if ent.name in entries:
            raise CodecError(f"container index: tensor {ent.name!r} appears twice")
        entries[ent.name] = ent
    group, members = None, ()
    g = obj.get("group")
    if g is not None:
        group = _part(g, data_size, "group")
        members = g.get("members")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise CodecError("container index: group members must be a list of names")
        members = tuple(members)
    refs = {e.name: e.member for e in entries.values() if e.member is not None}
    if sorted(refs.values()) != list(range(len(members))) or any(members[j] != n for n, j in refs.items()):
        raise CodecError("container index: group members and the tensors' member references disagree")
    return Index(entries, group, members)


def check_entry(e: Entry, headers) -> None:
    """Cross-check an entry against the blob geometry it points to: the group member's header (int,
    q8) or the headers of its layer blobs (float planes, bytes). CodecError names the mismatch."""
    where = f"tensor {e.name!r}:"
    if e.kind in ("int", "q8"):
        (h,) = headers
        want = e.dtype if e.kind == "int" else np.dtype(np.int8)
        if h.dtype != want:
            raise CodecError(f"{where} the group stores {h.dtype} symbols, the index implies {want}")
        if h.shape != e.view:
            raise CodecError(f"{where} index shape {list(e.shape)} does not match the stored {list(h.shape)}")
        return
    view = e.view if e.kind == "float" else byte_view(e.shape, e.dtype.itemsize)
    if e.plane_crcs is not None and tuple(h.raw_crc for h in headers) != e.plane_crcs:
        raise CodecError(f"{where} the plane blobs do not match plane_crcs (planes swapped or from another tensor)")
    for i, h in enumerate(headers):
        if h.dtype != np.uint8:
            raise CodecError(f"{where} plane {i} holds {h.dtype} symbols, byte planes are uint8")
        if h.shape != view:
            raise CodecError(f"{where} index shape {list(e.shape)} does not match plane {i} of shape {list(h.shape)}")
