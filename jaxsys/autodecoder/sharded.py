"""Independent auto-decoder seeds spread over devices: the vmapped burst of
`jaxsys.autodecoder.train` with its leading seed axis split over the mesh's 'data' axis.

Seeds share nothing, so XLA partitions the vmap without any communication: each device trains
num_seeds / data seeds. The burst function is `train._burst_seeds` unchanged; states and
checkpoints are the same pytrees as single-device runs.

    mesh = make_mesh(parse_mesh("data=4"))
    burst = make_sharded_burst(mesh, cfg, n_steps=cfg.steps_per_call)
    state = put_seed_state(init_states(cfg), mesh)
    state, loss_SxN, zn_SxN = burst(state, put_seed_state(data_keys(cfg), mesh))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsys.autodecoder.train import TrainConfig, _burst_seeds, data_keys, init_states
from jaxsys.errors import ConfigError
from jaxsys.train import sharding as sh


def check_seed_mesh(mesh: Mesh, cfg: TrainConfig) -> None:
    d = int(mesh.shape["data"])
    if cfg.num_seeds == 1 and d > 1:
        raise ConfigError(
            f"one seed cannot be spread over {d} devices; use --num-seeds a multiple of the mesh data axis"
        )
    if cfg.num_seeds % d:
        raise ConfigError(f"num_seeds={cfg.num_seeds} is not divisible by the mesh data axis ({d})")


def seed_shardings(tree: Any, mesh: Mesh) -> Any:
    """Every leaf split on its leading (seed) axis over 'data' (replicated over 'model')."""
    split = int(mesh.shape["data"]) > 1
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, P("data") if split and len(x.shape) >= 1 else P()), tree
    )


def put_seed_state(tree: Any, mesh: Mesh) -> Any:
    return sh.put_tree(tree, seed_shardings(tree, mesh))


@functools.lru_cache(maxsize=16)  # one compile per (mesh, cfg, n_steps) across bursts and runs
def make_sharded_burst(mesh: Mesh, cfg: TrainConfig, n_steps: int) -> Callable:
    """jit of `_burst_seeds(state, keys)` -> (state, loss [S, n], |z| [S, n]) with the seed axis over
    'data'; the state is donated."""
    cfg.validate()
    check_seed_mesh(mesh, cfg)
    state_like = jax.eval_shape(lambda: init_states(cfg))
    keys_like = jax.eval_shape(lambda: data_keys(cfg))
    state_sh, keys_sh = seed_shardings(state_like, mesh), seed_shardings(keys_like, mesh)
    out_sh = NamedSharding(mesh, P("data") if mesh.shape["data"] > 1 else P())
    return sh.jit_sharded(
        functools.partial(_burst_seeds, cfg=cfg, n_steps=n_steps),
        (state_sh, keys_sh),
        (state_sh, out_sh, out_sh),
        donate_argnums=0,
    )
