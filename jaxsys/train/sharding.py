"""Device meshes and named shardings for data- and parameter-parallel training (one host or many).

JAX is the distributed engine: a `jax.sharding.Mesh` with axes ('data', 'model'), `NamedSharding`s on
the train state and the batch, and `jax.jit(step, in_shardings=..., out_shardings=...)` let XLA
partition one pure step across devices (GSPMD inserts the all-reduces/all-gathers); a step written
for one device is unchanged. Several hosts join with `jax.distributed.initialize`.

    mesh = make_mesh(parse_mesh("data=2,model=2"))
    state_sh = tree_shardings(state, mesh, rules=GPT_TENSOR_PARALLEL_RULES, fsdp=True)
    batch_sh = batch_shardings(batch, mesh)
    step = jit_sharded(train_step, (state_sh, batch_sh), (state_sh, replicated(mesh)), donate_argnums=0)
    state = put_tree(state, state_sh)
    state, loss = step(state, shard_batch(local_batch, mesh))

Parameter placement is decided by pure rules on the leaf's path ("blocks/attn_wq/w", joined with '/'),
so this module imports no jaxsys system:
  * tensor parallel (Megatron-style, for w_OxI weights): the first matmul of a pair (attn_wq/wk/wv,
    mlp_fc1) is split by output rows along 'model', the second (attn_wo, mlp_fc2) by input columns,
    so each device holds a slice of the heads / hidden units and one all-reduce closes the pair;
  * FSDP (`fsdp=True`): every leaf with >= `fsdp_min_size` elements is additionally split along
    'data' on its largest free divisible axis; XLA all-gathers it for the matmul and reduce-scatters
    the gradient; optimizer moments follow their parameter (their paths end the same way);
  * everything else is replicated.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.errors import ConfigError, DataError, ShapeError

MESH_AXES = ("data", "model")

Rule = tuple[str, P]  # (regex searched in a leaf's '/'-joined path, spec of the leaf's trailing dims)

# The GPT's attention/MLP matrices, stored w_OxI (rows = outputs). Leading axes (e.g. a stacked layer
# axis) stay unsharded: a rule's spec covers the trailing dims only.
GPT_TENSOR_PARALLEL_RULES: tuple[Rule, ...] = (
    (r"(^|[/.])(attn_w[qkv]|attn_qkv|mlp_fc1)(/w)?$", P("model", None)),  # column-parallel: split outputs
    (r"(^|[/.])(attn_w[qkv]|attn_qkv|mlp_fc1)/b$", P("model")),  # its bias follows the outputs
    (r"(^|[/.])(attn_b[qkv]|mlp_b1)$", P("model")),
    (r"(^|[/.])(attn_wo|mlp_fc2)(/w)?$", P(None, "model")),  # row-parallel: split inputs
)


# ----------------------------------------------------------------------------------------- meshes
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int  # devices along 'data': the batch is split here (and FSDP parameter shards)
    model: int  # devices along 'model': tensor-parallel split of the big matrices

    @property
    def size(self) -> int:
        return self.data * self.model

    @property
    def shape(self) -> tuple[int, int]:
        return (self.data, self.model)

    def __str__(self) -> str:
        return f"data={self.data},model={self.model}"


class _MeshSpec(NamedTuple):
    text: str  # the spec as the user wrote it (for messages)
    sizes: dict[str, int]  # both axes; -1: fill from the device count

    @property
    def fixed_size(self) -> int | None:
        """data*model when the spec fixes both axes ('data' given, no -1), else None."""
        return None if -1 in self.sizes.values() else self.sizes["data"] * self.sizes["model"]


def _read_mesh_spec(spec: str | MeshConfig | None) -> _MeshSpec:
    """The one reader of `--mesh` text (see parse_mesh): the sizes it gives, 'data' left out as -1
    and 'model' left out as 1. Raises ConfigError for malformed text."""
    if isinstance(spec, MeshConfig):
        return _MeshSpec(str(spec), {"data": spec.data, "model": spec.model})
    text = (spec or "").strip()
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, val = part.partition("=")
        name = name.strip()
        if not eq:
            raise ConfigError(f"--mesh {text!r}: expected axis=size items like 'data=4,model=2', got {part!r}")
        if name not in MESH_AXES:
            raise ConfigError(f"--mesh {text!r}: unknown axis {name!r} (axes: {', '.join(MESH_AXES)})")
        if name in sizes:
            raise ConfigError(f"--mesh {text!r}: axis {name!r} given twice")
        try:
            n = int(val.strip())
        except ValueError:
            raise ConfigError(f"--mesh {text!r}: size of {name!r} must be an integer, got {val.strip()!r}") from None
        if n < 1 and n != -1:
            raise ConfigError(f"--mesh {text!r}: size of {name!r} must be >= 1 (or -1 to fill), got {n}")
        sizes[name] = n
    sizes.setdefault("data", -1)
    sizes.setdefault("model", 1)
    if all(sizes[a] == -1 for a in MESH_AXES):
        raise ConfigError(f"--mesh {text!r}: at most one axis may be -1")
    return _MeshSpec(text, sizes)


def parse_mesh(spec: str | MeshConfig | None, num_devices: int | None = None) -> MeshConfig:
    """Parse `--mesh` text such as "data=4,model=2", "model=2" or "data=-1,model=2".

    'data' left out, or an axis given as -1, is filled so that data * model == num_devices (default
    `jax.device_count()`, all processes); 'model' left out is 1, so an empty spec puts every device
    on 'data'.
    Raises ConfigError for unknown axes, repeats, non-integers, sizes < 1 or a product that does not
    match the device count.
    """
    return _fill_mesh_spec(_read_mesh_spec(spec), jax.device_count() if num_devices is None else num_devices)


def _fill_mesh_spec(spec: _MeshSpec, num_devices: int) -> MeshConfig:
    """The MeshConfig of a read spec on `num_devices` devices: its -1 axis filled, the product checked."""
    text, sizes = spec.text, dict(spec.sizes)
    free = [a for a in MESH_AXES if sizes[a] == -1]
    fixed = math.prod(v for a, v in sizes.items() if a not in free)
    if free:
        if num_devices % fixed:
            raise ConfigError(f"--mesh {text!r}: {fixed} does not divide the {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    cfg = MeshConfig(data=sizes["data"], model=sizes["model"])
    if cfg.size != num_devices:
        raise ConfigError(
            f"--mesh {text!r}: data*model = {cfg.data}*{cfg.model} = {cfg.size} but "
            f"{num_devices} devices are visible (pick sizes whose product is the device "
            f"count, or restrict devices with CUDA_VISIBLE_DEVICES)"
        )
    return cfg


def make_mesh(cfg: MeshConfig | str | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'model') mesh over `devices` (default: all devices of all processes).

    In a single-process run, explicit sizes whose product is smaller than the device count take the
    first data*model devices (`--mesh data=1` on a 4-GPU host trains on one GPU); a product larger
    than the device count, or any mismatch with several processes, is a ConfigError.

    Uses `jax.make_mesh`, which orders devices for the interconnect (TPU rings, NVLink islands); the
    axis types are Auto so shardings are propagated by XLA from the jit's in/out shardings.
    """
    devices = list(jax.devices() if devices is None else devices)
    spec = _read_mesh_spec(cfg)
    want = spec.fixed_size
    if want is not None and want < len(devices) and jax.process_count() == 1:
        devices = devices[:want]
    cfg = _fill_mesh_spec(spec, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * 2
    try:
        return jax.make_mesh(cfg.shape, MESH_AXES, axis_types=auto, devices=devices)
    except Exception:  # some backends/device subsets have no topology-aware order: keep list order
        return Mesh(np.asarray(devices, dtype=object).reshape(cfg.shape), MESH_AXES, axis_types=auto)


def batch_mesh(batch: int, devices: Sequence[Any] | None = None) -> Mesh:
    """The default mesh of a run with `batch` rows per step: data parallel over as many devices as
    divide the batch (gcd(batch, device count)), so a small batch still runs on a many-device host.
    With several processes every device takes part (the batch must divide)."""
    devices = list(jax.devices() if devices is None else devices)
    if jax.process_count() > 1:
        return make_mesh(None, devices)
    n = math.gcd(int(batch), len(devices)) or 1
    return make_mesh(MeshConfig(data=n, model=1), devices[:n])


def await_each_step(mesh: Mesh) -> bool:
    """True for a CPU mesh of more than one device: there the training loops wait for every step.

    XLA:CPU's in-process collectives (jax 0.10.2) can hang when many multi-device steps are queued
    by async dispatch: seen here with ~100 queued MLP steps on 2 and 4 simulated CPU devices (an
    all-reduce rendezvous never completes and XLA aborts the process after 40 s); awaiting each
    step's output made the same loop run. GPUs/TPUs keep async dispatch."""
    devs = list(mesh.devices.flat)
    return len(devs) > 1 and all(d.platform == "cpu" for d in devs)


def mesh_config(mesh: Mesh) -> MeshConfig:
    return MeshConfig(data=int(mesh.shape["data"]), model=int(mesh.shape["model"]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# --------------------------------------------------------------------------- parameter placement
def path_str(path: Sequence[Any]) -> str:
    """'/'-joined names of a tree path: dict keys, attribute names, sequence indices."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def leaf_spec(
    path: str,
    shape: Sequence[int],
    mesh_shape: Mapping[str, int],
    *,
    rules: Iterable[Rule] = (),
    fsdp: bool = False,
    fsdp_min_size: int = 2**16,
) -> P:
    """The PartitionSpec of one leaf (pure: no devices needed).

    The first rule whose regex is found in `path` gives the spec of the trailing dims; then, with
    `fsdp`, a leaf of >= fsdp_min_size elements gets 'data' on its largest unsharded axis divisible
    by the 'data' size. Raises ConfigError when a rule's axis does not divide the dimension.
    """
    shape = tuple(int(d) for d in shape)
    entries: list[Any] = [None] * len(shape)
    for pattern, spec in rules:
        if re.search(pattern, path):
            spec = tuple(spec)
            if len(spec) > len(shape):
                raise ConfigError(
                    f"sharding rule {pattern!r} -> {P(*spec)} has rank {len(spec)} but "
                    f"parameter {path!r} has shape {shape}"
                )
            entries[len(shape) - len(spec) :] = list(spec)
            break
    for i, e in enumerate(entries):
        axes = (e,) if isinstance(e, str) else tuple(e or ())
        n = math.prod(int(mesh_shape.get(a, 1)) for a in axes)
        if shape[i] % n:
            raise ConfigError(
                f"parameter {path!r} dim {i} of size {shape[i]} is not divisible by the mesh axis {e!r} of size {n}"
            )
        if n == 1:
            entries[i] = None  # size-1 axes shard nothing; a plain spec keeps shardings comparable
    data = int(mesh_shape.get("data", 1))
    if fsdp and data > 1 and math.prod(shape) >= fsdp_min_size:
        free = [i for i, e in enumerate(entries) if e is None and shape[i] % data == 0]
        if free:
            entries[max(free, key=lambda i: (shape[i], -i))] = "data"
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)


def tree_pspecs(
    tree: Any,
    mesh_shape: Mapping[str, int],
    *,
    rules: Iterable[Rule] = (),
    fsdp: bool = False,
    fsdp_min_size: int = 2**16,
) -> Any:
    """PartitionSpecs for every array leaf of `tree` (params, optimizer state, a whole train state)."""
    rules = tuple(rules)

    def f(path, x):
        shape = getattr(x, "shape", ())
        return leaf_spec(path_str(path), shape, mesh_shape, rules=rules, fsdp=fsdp, fsdp_min_size=fsdp_min_size)

    return jax.tree_util.tree_map_with_path(f, tree)


def tree_shardings(
    tree: Any, mesh: Mesh, *, rules: Iterable[Rule] = (), fsdp: bool = False, fsdp_min_size: int = 2**16
) -> Any:
    """NamedShardings on `mesh` for every leaf of `tree` (see `leaf_spec`)."""
    specs = tree_pspecs(tree, dict(mesh.shape), rules=rules, fsdp=fsdp, fsdp_min_size=fsdp_min_size)
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def batch_shardings(batch: Any, mesh: Mesh) -> Any:
    """Split every batch leaf along its leading axis over 'data' (scalars, and every leaf on a
    1-device 'data' axis, are replicated)."""
    split = int(mesh.shape["data"]) > 1
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, P("data") if split and np.ndim(x) >= 1 else P()), batch)


def abstract_tree(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying `shardings`: the `like=` of `Checkpointer.restore` for restoring a
    checkpoint straight onto a (possibly different) mesh, and the input of `jit(...).lower`."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jax.numpy.result_type(x), sharding=s), tree, shardings
    )


# ------------------------------------------------------------------------------ placing arrays
def put_tree(tree: Any, shardings: Any) -> Any:
    """Place a host/device pytree onto `shardings`. With several processes every process must pass
    the same values (e.g. params initialised from the same seed); each keeps only its shards."""

    def f(x, s):
        if s.is_fully_addressable:
            return jax.device_put(x, s)
        if isinstance(x, jax.Array) and x.sharding == s:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree_util.tree_map(f, tree, shardings)


def local_rows(mesh: Mesh, global_batch: int) -> slice:
    """The rows of a global batch that this process's devices hold when the batch is split over
    'data': with several processes each one loads only these rows (`data[indices[local_rows]]`)."""
    data = int(mesh.shape["data"])
    if global_batch % data:
        raise DataError(f"global batch size {global_batch} is not divisible by the mesh data axis ({data} devices)")
    idx = NamedSharding(mesh, P("data")).addressable_devices_indices_map((global_batch,))
    starts = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop) for s in idx.values()})
    lo, hi = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != hi - lo:
        raise ConfigError(
            f"this process's devices hold non-contiguous rows of the batch on mesh "
            f"{mesh_config(mesh)}; put each process's devices together along 'data'"
        )
    return slice(lo, hi)


def shard_batch(batch: Any, mesh: Mesh, global_batch: int | None = None) -> Any:
    """Global arrays split over 'data' from this process's rows (`local_rows`); with one process
    the local batch is the whole batch. Raises DataError when a leading axis does not divide."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        return batch
    n_local = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    nproc = jax.process_count()
    if global_batch is None:
        global_batch = n_local * nproc if nproc > 1 else n_local
    rows = local_rows(mesh, global_batch)
    shardings = batch_shardings(batch, mesh)

    def f(path, x, s):
        if np.ndim(x) == 0:
            return put_tree(x, s)
        if np.shape(x)[0] != rows.stop - rows.start:
            raise DataError(
                f"batch leaf {path_str(path) or '<root>'} has {np.shape(x)[0]} rows but this "
                f"process holds rows {rows.start}:{rows.stop} of a global batch of {global_batch}"
            )
        if nproc == 1:
            return jax.device_put(x, s)
        return jax.make_array_from_process_local_data(s, np.asarray(x), (global_batch, *np.shape(x)[1:]))

    return jax.tree_util.tree_map_with_path(f, batch, shardings)


def to_host(tree: Any) -> Any:
    """numpy copies of (possibly multi-process sharded) arrays; every process gets the full value."""
    from jax.experimental import multihost_utils

    def f(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(f, tree)


# ------------------------------------------------------------------------------------ the step
def jit_sharded(
    fn: Callable,
    in_shardings: Any,
    out_shardings: Any,
    *,
    donate_argnums: int | Sequence[int] = (),
    static_argnums: int | Sequence[int] = (),
):
    """`jax.jit(fn)` with explicit shardings: arguments are laid out as `in_shardings` (a tuple with
    one pytree prefix per positional argument) and results come back as `out_shardings`."""
    return jax.jit(
        fn,
        in_shardings=in_shardings,
        out_shardings=out_shardings,
        donate_argnums=donate_argnums,
        static_argnums=static_argnums,
    )


def compiled_input_specs(fn: Any, *args: Any) -> list[tuple[str, P]]:
    """(path, PartitionSpec) of every array input of the compiled step, as XLA laid them out.

    `fn` is a jitted function (lowered and compiled here for `args`, arrays or `abstract_tree`
    ShapeDtypeStructs) or an already compiled one (`jitted.lower(*args).compile()`, which can then
    run the steps without a second compile)."""
    compiled = fn if hasattr(fn, "input_shardings") else fn.lower(*args).compile()
    shardings = compiled.input_shardings[0]
    flat_args = jax.tree_util.tree_flatten_with_path(args)[0]
    flat_sh = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    if len(flat_args) != len(flat_sh):
        raise ShapeError(f"compiled step has {len(flat_sh)} array inputs, got {len(flat_args)} leaves")
    out = []
    for (path, x), s in zip(flat_args, flat_sh):
        spec = s.spec if isinstance(s, NamedSharding) else P()
        out.append((path_str(path), normalize_spec(spec, np.ndim(x))))
    return out


def normalize_spec(spec: P, ndim: int) -> P:
    """A spec without trailing Nones (P('data', None) == P('data')) for comparisons."""
    entries = list(tuple(spec))[:ndim]
    entries = [None if e in ((), None) else (e[0] if isinstance(e, tuple) and len(e) == 1 else e) for e in entries]
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)
