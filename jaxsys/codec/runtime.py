"""On-demand weights: tensors stay compressed on the device and are decoded when needed.

- `prepare_tensor(store, name)` validates a tensor's blobs on the host once (CRCs, index) and moves
  each blob's packed buffer to the device: that is the resident compressed form.
- `tensor_value(packs, scale, meta)` is a pure, traceable function (packs -> decoded tensor, ok flag)
  so a caller can fuse it into its own jitted computation; `decode_tensor` is its jitted form.
- `prepare_group_pack(store, names)` does the same for tensors that live in the store's
  shared-table group blob: ONE device buffer for all of them, decoded by ONE jitted call
  (`group_value`: one rANS kernel over all their lanes, then assembly and dequantisation).
- `WeightCache`: groups of tensors (e.g. one transformer layer) decoded on demand into a bounded LRU
  cache (capacity in groups and/or bytes), with `prefetch(group)` issued ahead of use. Decodes are
  dispatched asynchronously (JAX async dispatch), so a prefetch overlaps the caller's compute.
  Integrity flags are collected on device and checked by `check()` (one sync), which raises
  `CodecError` naming the tensor.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.codec import decode as D
from jaxsys.codec import floats
from jaxsys.codec.errors import CodecError
from jaxsys.codec.store import Store, bytes_to_dtype, dequantize_jax, device_dtype


@dataclasses.dataclass(frozen=True)
class DeviceTensor:
    name: str
    packs: tuple  # device uint32 buffers, one per blob
    scale: jax.Array | None  # q8 scales (device) or None
    meta: tuple  # hashable static description (kind, shape, dtype, per_channel, statics)
    nbytes: int  # device bytes of the compressed form

    @property
    def shape(self) -> tuple:
        return self.meta[1]


def prepare_tensor(store: Store, name: str, device=None, verify: bool = True) -> DeviceTensor:
    """One tensor's compressed form on the device. A group member becomes a one-tensor group pack;
    a float or bytes tensor keeps one pack per layer blob. With `verify` the pack is decoded once
    here and its bytes checked against the stored raw CRC32 (decoding is deterministic, so later
    decodes of the same pack need only the device's integrity flags)."""
    e = store.entry(name)
    if e.member is not None:
        dg = prepare_group_pack(store, [name], device, verify)
        return DeviceTensor(
            name, (dg.pack,), dg.scales[0], ("member", e.shape, e.dtype.name, e.per_channel, dg.meta), dg.nbytes
        )
    headers = store.headers(name)
    device_dtype(e.dtype, name)
    packs, statics = [], []
    for i, h in enumerate(headers):
        try:
            pack, kargs, geom = D.prepare(store.part(name, i))
        except CodecError as err:
            msg = str(err)
            raise CodecError(msg if msg.startswith("tensor '") else f"tensor {name!r}: {msg}") from None
        if kargs is None:
            static = (None, None, None, geom)
        else:
            pack[2:4] = kargs["sums"]
            static = (kargs["n_lanes"], kargs["steps"], kargs["prob_bits"], geom)
        dev = jax.device_put(pack, device)
        if verify:
            out, ok = _blob_value(dev, static)
            if not bool(ok):
                raise CodecError(f"tensor {name!r}: blob {i} failed its device integrity check")
            D.check_raw_crc([out], [h.raw_crc], [f"tensor {name!r}: blob {i}: "])
        packs.append(dev)
        statics.append(static)
    meta = (e.kind, e.shape, e.dtype.name, False, tuple(statics))
    return DeviceTensor(name, tuple(packs), None, meta, sum(int(p.nbytes) for p in packs))


def _blob_value(pack, static):
    n_lanes, steps, pb, geom = static
    if n_lanes is None:
        return D.assemble_raw(pack, geom)
    syms, ok = D.decode_kernel(pack, n_lanes=n_lanes, steps=steps, prob_bits=pb)
    return D.assemble(syms, ok, pack[2:4], geom, False)


def tensor_value(packs, scale, meta):
    """Traceable: device packs -> (decoded tensor, ok). q8 tensors come back dequantised (their dtype)."""
    kind, shape, dtype, _, statics = meta
    if kind == "member":
        ws, oks = group_value(packs[0], (scale,), statics)
        return ws[0], oks[0]
    vals = [_blob_value(p, s) for p, s in zip(packs, statics)]
    ok = functools.reduce(jnp.logical_and, [v[1] for v in vals])
    if kind == "float":
        return floats.merge_planes_jax([v[0] for v in vals], dtype).reshape(shape), ok
    return bytes_to_dtype(vals[0][0], dtype, shape), ok


decode_tensor = jax.jit(tensor_value, static_argnames=("meta",))


@dataclasses.dataclass(frozen=True)
class DeviceGroup:
    names: tuple  # tensor names, in pack order
    pack: jax.Array  # one uint32 device buffer (decode.prepare_group)
    scales: tuple  # per tensor: q8 scales (device) or None
    meta: tuple  # hashable: (decode statics, per tensor (kind, shape, per_channel))
    nbytes: int  # device bytes of the compressed form


def prepare_group_pack(store: Store, names, device=None, verify: bool = True) -> DeviceGroup:
    """Members `names` of the store's shared-table group -> one device pack (validated once; with
    `verify` decoded once here and checked against the members' raw CRC32s)."""
    names = tuple(names)
    for n in names:
        store.headers(n)  # the index entry cross-checked against the member's geometry
        device_dtype(store.entry(n).dtype, n)
    pg = store.parsed_group()
    members = [store.member(n) for n in names]
    pack, statics = D.prepare_group(pg, members)
    dev = jax.device_put(pack, device)
    if verify:
        vals = D.decode_group_values(dev, statics=statics)
        oks = np.asarray(jnp.stack([ok for _, ok in vals]))
        if not oks.all():
            raise CodecError(f"tensor {names[int(np.argmin(oks))]!r}: failed its device integrity check")
        crcs = [pg.members[k].header.raw_crc for k in members]
        D.check_raw_crc([v for v, _ in vals], crcs, [f"tensor {n!r}: " for n in names])
    scales, infos = [], []
    for n in names:
        e = store.entry(n)
        scales.append(jax.device_put(store.q8_scale(n), device) if e.kind == "q8" else None)
        infos.append((e.kind, e.shape, e.per_channel, e.dtype.name))
    nbytes = int(dev.nbytes) + sum(int(s.nbytes) for s in scales if s is not None)
    return DeviceGroup(names, dev, tuple(scales), (statics, tuple(infos)), nbytes)


def group_value(pack, scales, meta):
    """Traceable: a DeviceGroup's pack -> (tuple of tensors, ok flags (n,)); q8 dequantised."""
    statics, infos = meta
    vals = D.group_values(pack, statics)
    ws = []
    for (q, _), (kind, shape, per_channel, dtype), s in zip(vals, infos, scales):
        ws.append(q.reshape(shape) if kind == "int" else dequantize_jax(q, s, shape, per_channel, jnp.dtype(dtype)))
    return tuple(ws), jnp.stack([ok for _, ok in vals])


decode_group_pack = jax.jit(group_value, static_argnames=("meta",))


def _group_flat(pack, scales, meta):
    ws, oks = group_value(pack, scales, meta)
    return jnp.concatenate([w.reshape(-1) for w in ws]), oks


def _unflatten(buf, meta):
    out, o = [], 0
    for _, shape, _, _ in meta[1]:
        n = int(np.prod(shape))
        out.append(buf[o : o + n].reshape(shape))
        o += n
    return tuple(out)


# decode on one device, then ONE transfer of all the group's float32 weights (a device_put of a
# dict of arrays costs ~0.1 ms of host time per array), then split on the compute device
decode_group_flat = jax.jit(_group_flat, static_argnames=("meta",))
unflatten_group = jax.jit(_unflatten, static_argnames=("meta",))


@dataclasses.dataclass(frozen=True)
class _NoGroup:
    names: tuple = ()


_NOGROUP = _NoGroup()


class WeightCache:
    """Bounded LRU cache of decoded tensor groups, with prefetch.

    Args:
      tensors: name -> DeviceTensor (compressed, on device).
      groups: group name -> tensor names (the unit of caching, e.g. one layer).
      max_groups: at most this many decoded groups kept (None: unbounded; 0: nothing kept).
      max_bytes: at most this many decoded bytes kept (None: unbounded).
      prefetch: honour `prefetch()` calls (otherwise they are no-ops).
      prefetch_thread: run prefetches on a worker thread (dispatch + wait there) instead of relying
        on JAX async dispatch alone.
      packed: group -> DeviceGroup (a group's shared-table tensors, decoded in one call).
      out_device: move decoded weights to this device (decode runs where the packs live, e.g. on a
        second CPU device: XLA:CPU runs one device's computations in order, two devices in parallel).
      sync: on a miss, wait for the decode before returning (on-demand decode without prefetch;
        otherwise the decode is only dispatched and the caller's compute waits on the device).
    """

    def __init__(
        self,
        tensors: dict,
        groups: dict,
        max_groups: int | None = None,
        max_bytes: int | None = None,
        prefetch: bool = True,
        prefetch_thread: bool = False,
        packed: dict | None = None,
        out_device=None,
        sync: bool = False,
    ):
        self.tensors, self.groups = tensors, groups
        self.packed = packed or {}  # group -> DeviceGroup (decoded in one call)
        self.out_device, self.sync = out_device, sync
        self._pool = None
        if prefetch and prefetch_thread:  # a worker thread dispatches and waits for the decode
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxsys-prefetch")
        self.max_groups, self.max_bytes, self.prefetch_enabled = max_groups, max_bytes, prefetch
        self._lru: collections.OrderedDict = collections.OrderedDict()
        self._pending: dict = {}
        self._oks: list = []
        self.events: list = []
        self.hits = self.misses = self.prefetch_hits = self.evictions = 0

    # decoding ------------------------------------------------------------------------------------
    def decode_group(self, g: str) -> dict:
        out = {}
        if g in self.packed:
            dg = self.packed[g]
            flat = all(k == "q8" and dt == "float32" for k, _, _, dt in dg.meta[1])  # one float32 buffer
            if self.out_device is not None and flat:
                buf, oks = decode_group_flat(dg.pack, dg.scales, meta=dg.meta)
                ws = unflatten_group(jax.device_put(buf, self.out_device), meta=dg.meta)
            else:
                ws, oks = decode_group_pack(dg.pack, dg.scales, meta=dg.meta)
            self._oks.append((dg.names, oks))
            out.update(zip(dg.names, ws))
        for n in self.groups[g]:
            if n in out:
                continue
            t = self.tensors[n]
            w, ok = decode_tensor(t.packs, t.scale, meta=t.meta)
            self._oks.append((n, ok))
            out[n] = w
        if self.out_device is not None:
            rest = {n: w for n, w in out.items() if n not in self.packed.get(g, _NOGROUP).names}
            out.update(jax.device_put(rest, self.out_device))
        return out

    def note_ok(self, name: str, ok) -> None:
        """Record an integrity flag produced elsewhere (e.g. by a fused decode+compute step)."""
        self._oks.append((name, ok))

    def check(self) -> None:
        """Fetch the collected integrity flags (one sync); raise CodecError naming a bad tensor."""
        if not self._oks:
            return
        flags = np.concatenate([np.atleast_1d(f) for f in jax.device_get([ok for _, ok in self._oks])])
        names = [n for ns, _ in self._oks for n in ((ns,) if isinstance(ns, str) else ns)]
        bad = [n for n, f in zip(names, flags) if not f]
        self._oks = []
        if bad:
            raise CodecError(f"tensor {bad[0]!r}: decoded weights failed the integrity check")

    # cache ---------------------------------------------------------------------------------------
    def lookup(self, g: str):
        """Cached or prefetched weights of group g, or None (counts a hit/prefetch hit)."""
        if g in self._lru:
            self._lru.move_to_end(g)
            self.hits += 1
            self.events.append(("hit", g))
            return self._lru[g]
        if g in self._pending:
            w = self._pending.pop(g)
            if hasattr(w, "result"):
                w = w.result()
            self.prefetch_hits += 1
            self.events.append(("prefetched", g))
            self.insert(g, w)
            return w
        return None

    def get(self, g: str) -> dict:
        w = self.lookup(g)
        if w is not None:
            return w
        self.misses += 1
        self.events.append(("miss", g))
        w = self.decode_group(g)
        if self.sync:
            jax.block_until_ready(w)
        self.insert(g, w)
        return w

    def prefetch(self, g: str) -> None:
        if not self.prefetch_enabled or g in self._lru or g in self._pending:
            return
        self.events.append(("prefetch", g))
        if self._pool is not None:
            self._pending[g] = self._pool.submit(lambda: jax.block_until_ready(self.decode_group(g)))
        else:
            self._pending[g] = self.decode_group(g)  # async dispatch: returns at once

    def insert(self, g: str, w: dict) -> None:
        if self.max_groups == 0 or (self.max_bytes is not None and _nbytes(w) > self.max_bytes):
            return
        self._lru[g] = w
        self._lru.move_to_end(g)
        while self._lru and (
            (self.max_groups is not None and len(self._lru) > self.max_groups)
            or (self.max_bytes is not None and self.cached_bytes() > self.max_bytes)
        ):
            old, _ = self._lru.popitem(last=False)
            self.evictions += 1
            self.events.append(("evict", old))

    def cached_bytes(self) -> int:
        pend = [w.result() if hasattr(w, "result") else w for w in self._pending.values()]
        return sum(_nbytes(w) for w in self._lru.values()) + sum(_nbytes(w) for w in pend)

    def compressed_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values()) + sum(g.nbytes for g in self.packed.values())

    def stats(self) -> dict:
        total = self.hits + self.misses + self.prefetch_hits
        return {
            "hits": self.hits,
            "misses": self.misses,
            "prefetch_hits": self.prefetch_hits,
            "evictions": self.evictions,
            "hit_rate": (self.hits + self.prefetch_hits) / max(total, 1),
            "cache_hit_rate": self.hits / max(total, 1),
            "cached_bytes": self.cached_bytes(),
            "compressed_bytes": self.compressed_bytes(),
        }


def _nbytes(w: dict) -> int:
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in w.values())


def load_device_store(store: Store, groups: dict, pack_groups: bool = True, device=None, verify: bool = True):
    """-> (tensors, packed) for a WeightCache: the shared-table members of each group become one
    DeviceGroup (when `pack_groups`), every other tensor a DeviceTensor."""
    packed, rest = {}, []
    for g, names in groups.items():
        mem = [n for n in names if pack_groups and store.member(n) is not None]
        if mem:
            try:
                packed[g] = prepare_group_pack(store, mem, device, verify)
            except CodecError as e:
                msg = str(e)
                raise CodecError(msg if msg.startswith("tensor '") else f"tensor {mem[0]!r}: {msg}") from None
        rest += [n for n in names if n not in mem]
    return load_device_tensors(store, rest, device=device, verify=verify), packed


def load_device_tensors(
    store: Store, names=None, progress: Callable | None = None, device=None, verify: bool = True
) -> dict:
    names = store.names if names is None else names
    out = {}
    for n in names:
        out[n] = prepare_tensor(store, n, device, verify)
        if progress:
            progress(n)
    return out
