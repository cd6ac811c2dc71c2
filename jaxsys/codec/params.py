"""Parameters stored compressed: the codec's one API for a model that keeps its weights compressed.

    data = compress_params(params, mode="int8")        # {name: array} (or a nested pytree) -> bytes
    exact = decode_params(data)                         # {name: np.ndarray}, decoded on the host
    cache = open_params(data, groups, cache_groups=1)   # packs on the device + an LRU of decoded groups
    w = cache.get("layer0")                             # {name: jax.Array}, decoded on demand
    cache.prefetch("layer1"); cache.check()             # look-ahead; raise CodecError on damage

`groups` maps a group name (the unit of caching and prefetch, e.g. one transformer layer) to the
names of its parameters. A model that fuses decoding into its own jitted step uses `group_value` /
`tensor_value` (traceable) on a group's `DeviceGroup` / `DeviceTensor`. Nothing here knows a model.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxsys.codec.errors import CodecError
from jaxsys.codec.runtime import DeviceGroup, DeviceTensor, WeightCache, group_value, load_device_store, tensor_value
from jaxsys.codec.store import LayerOpts, Store, encode_store

__all__ = [
    "CodecError",
    "DeviceGroup",
    "DeviceTensor",
    "LayerOpts",
    "WeightCache",
    "compress_params",
    "decode_params",
    "flatten",
    "group_value",
    "open_params",
    "second_cpu_device",
    "tensor_value",
]


def flatten(tree, prefix: str = "") -> dict:
    """A pytree of arrays (nested dicts/lists) -> {"a/b/0": np.ndarray}; a flat dict stays as it is."""
    if isinstance(tree, dict) and not any(isinstance(v, (dict, list, tuple)) for v in tree.values()):
        return {prefix + str(k): np.asarray(v) for k, v in tree.items()}  # keeps the caller's order
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        out[prefix + (name or "x")] = np.asarray(leaf)
    return out


def compress_params(params, mode: str = "int8", per_channel: bool = True, opts: LayerOpts = LayerOpts()) -> bytes:
    """Parameters -> container bytes. mode "int8": floats quantised per output channel (lossy);
    "lossless": every bit kept."""
    return encode_store(flatten(params), mode=mode, per_channel=per_channel, opts=opts)


def decode_params(data) -> dict:
    """Every parameter decoded on the host: the exact values a compressed run computes with."""
    st = Store(data)
    return {n: st.decode(n) for n in st.names}


def second_cpu_device():
    """A second CPU device (XLA:CPU runs one device's computations in order and different devices'
    in parallel), or None. Needs `jax.config.update("jax_num_cpu_devices", 2)` before JAX starts."""
    if jax.default_backend() != "cpu":
        return None
    devs = jax.devices("cpu")
    return devs[1] if len(devs) > 1 else None


def open_params(
    data,
    groups: dict,
    cache_groups: int | None = None,
    cache_bytes: int | None = None,
    prefetch: bool = True,
    prefetch_thread: bool = False,
    pack_groups: bool = True,
    decode_device=None,
    sync: bool = False,
) -> WeightCache:
    """Compressed parameters resident on a device, decoded group by group into a bounded LRU cache.

    Args:
      data: container bytes (`compress_params`).
      groups: group name -> parameter names (the unit of caching and prefetch).
      cache_groups / cache_bytes: capacity of the decoded cache (None: unbounded; 0 groups: none kept).
      prefetch: honour `prefetch(group)`; prefetch_thread: decode prefetches on a worker thread.
      pack_groups: a group's int8 parameters decode in ONE call (else one call per parameter).
      decode_device: where the packs live and decode runs ("second-cpu": `second_cpu_device()`;
        None: the default device); decoded weights then move to the default device.
      sync: a cache miss waits for its decode (on-demand decoding without look-ahead).
    Every pack is verified once at load (device decode + the stored raw CRC32).
    """
    if decode_device == "second-cpu":
        decode_device = second_cpu_device()
    out_device = jax.devices()[0] if decode_device is not None else None
    tensors, packed = load_device_store(Store(data), groups, pack_groups, decode_device)
    return WeightCache(
        tensors,
        groups,
        max_groups=cache_groups,
        max_bytes=cache_bytes,
        prefetch=prefetch,
        prefetch_thread=prefetch_thread,
        packed=packed,
        out_device=out_device,
        sync=sync,
    )
