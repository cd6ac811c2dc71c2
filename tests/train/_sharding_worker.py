"""Child process for tests/train/test_sharding.py: runs one scenario on simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N set by the parent) and prints one JSON line.

    python tests/train/_sharding_worker.py parity
    python tests/train/_sharding_worker.py ckpt_save DIR
    python tests/train/_sharding_worker.py ckpt_restore DIR
    python tests/train/_sharding_worker.py single OUT.npz
    python tests/train/_sharding_worker.py multiproc OUT.npz PORT NPROC PID
"""

import json
import sys

import numpy as np

if sys.argv[1] == "multiproc":  # must join before any JAX computation
    from jaxsys.train import distributed as _sh

    _sh.maybe_initialize_distributed(f"127.0.0.1:{sys.argv[3]}", int(sys.argv[4]), int(sys.argv[5]), timeout_s=60)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxsys.train import Checkpointer  # noqa: E402
from jaxsys.train import sharding as sh  # noqa: E402

D, H, O, B = 8, 16, 4, 8
RULES = sh.GPT_TENSOR_PARALLEL_RULES
FSDP_MIN = 64
OPT = optax.adam(1e-2)


def init_state():
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "mlp_fc1": {"w": jax.random.normal(k1, (H, D)) / D**0.5, "b": 0.1 * jax.random.normal(k2, (H,))},
        "mlp_fc2": {"w": jax.random.normal(k3, (O, H)) / H**0.5, "b": 0.1 * jax.random.normal(k4, (O,))},
    }
    return params, OPT.init(params)


def batch_at(step):
    rng = np.random.default_rng(100 + step)
    return {"x": rng.normal(size=(B, D)).astype(np.float32), "y": rng.normal(size=(B, O)).astype(np.float32)}


def loss_fn(params, batch):
    h = jnp.tanh(batch["x"] @ params["mlp_fc1"]["w"].T + params["mlp_fc1"]["b"])
    out = h @ params["mlp_fc2"]["w"].T + params["mlp_fc2"]["b"]
    return jnp.mean((out - batch["y"]) ** 2)


def train_step(state, batch):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


single_step = jax.jit(train_step)


def run_single(steps, state=None, start=0):
    state = init_state() if state is None else state
    losses = []
    for s in range(start, start + steps):
        state, loss = single_step(state, batch_at(s))
        losses.append(float(loss))
    return state, losses


def sharded(mesh, fsdp):
    state = init_state()
    state_sh = sh.tree_shardings(state, mesh, rules=RULES, fsdp=fsdp, fsdp_min_size=FSDP_MIN)
    batch_sh = sh.batch_shardings(batch_at(0), mesh)
    step = sh.jit_sharded(train_step, (state_sh, batch_sh), (state_sh, sh.replicated(mesh)))
    return state, state_sh, batch_sh, step


def run_sharded(mesh, state_sh, step, state, steps, start=0):
    state = sh.put_tree(state, state_sh)
    losses = []
    for s in range(start, start + steps):
        b = batch_at(s)
        rows = sh.local_rows(mesh, B)
        local = {k: v[rows] for k, v in b.items()}  # each process loads only its rows
        state, loss = step(state, sh.shard_batch(local, mesh, global_batch=B))
        losses.append(float(sh.to_host(loss)))
    return state, losses


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree_util.tree_leaves(sh.to_host(a)), jax.tree_util.tree_leaves(sh.to_host(b)))
    )


def specs_of(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {sh.path_str(p): str(sh.normalize_spec(x.sharding.spec, x.ndim)) for p, x in flat}


def scenario_parity():
    ref_state, ref_losses = run_single(2)
    out = {"device_count": jax.device_count(), "cases": []}
    for shape in [(4, 1), (2, 2), (1, 1)]:
        for fsdp in (False, True):
            n = shape[0] * shape[1]
            mesh = sh.make_mesh(sh.MeshConfig(*shape), devices=jax.devices()[:n])
            state, state_sh, batch_sh, step = sharded(mesh, fsdp)
            abstract = (sh.abstract_tree(state, state_sh), sh.abstract_tree(batch_at(0), batch_sh))
            new_state, losses = run_sharded(mesh, state_sh, step, state, 2)
            compiled = dict(sh.compiled_input_specs(step, *abstract))  # after the call: a cache hit
            intended = {}
            for prefix, tree in (("0", state), ("1", batch_at(0))):
                specs = (
                    sh.tree_pspecs(tree, dict(mesh.shape), rules=RULES, fsdp=fsdp, fsdp_min_size=FSDP_MIN)
                    if prefix == "0"
                    else jax.tree_util.tree_map(lambda x: P("data") if shape[0] > 1 else P(), tree)
                )
                for p, s in jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda s: isinstance(s, P))[0]:
                    intended[f"{prefix}/{sh.path_str(p)}"] = str(s)
            out["cases"].append(
                {
                    "mesh": list(shape),
                    "fsdp": fsdp,
                    "losses": losses,
                    "ref_losses": ref_losses,
                    "param_max_diff": max_diff(new_state, ref_state),
                    "compiled": {k: str(v) for k, v in compiled.items()},
                    "intended": intended,
                    "out_specs": specs_of(new_state[0]),
                    "devices_used": sorted(
                        {d.id for x in jax.tree_util.tree_leaves(new_state) for d in x.sharding.device_set}
                    ),
                }
            )
    return out


def scenario_ckpt_save(directory):
    mesh = sh.make_mesh("data=2,model=2")
    state, state_sh, _, step = sharded(mesh, fsdp=True)
    state, _ = run_sharded(mesh, state_sh, step, state, 2)
    with Checkpointer(directory) as ck:
        ck.save(2, state, meta={"mesh": str(sh.mesh_config(mesh))})
    state, losses = run_sharded(mesh, state_sh, step, state, 2, start=2)
    np.savez(f"{directory}/continued.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(sh.to_host(state))])
    return {"device_count": jax.device_count(), "losses": losses, "saved_specs": specs_of(state[0])}


def scenario_ckpt_restore(directory):
    saved = np.load(f"{directory}/continued.npz")
    saved = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    out = {"device_count": jax.device_count(), "runs": []}
    for spec, devices in (
        ("data=2,model=1", jax.devices()),
        ("data=1,model=2", jax.devices()),
        ("data=1,model=1", jax.devices()[:1]),
    ):
        mesh = sh.make_mesh(spec, devices=devices)
        like_state, state_sh, _, step = sharded(mesh, fsdp=True)
        with Checkpointer(directory) as ck:
            restored, meta = ck.restore(like=sh.abstract_tree(like_state, state_sh))
        restored_specs = specs_of(restored[0])
        ok_sh = all(
            x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state_sh))
        )
        state, losses = run_sharded(mesh, state_sh, step, restored, 2, start=2)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(sh.to_host(state)), saved))
        out["runs"].append(
            {
                "mesh": spec,
                "meta": meta,
                "losses": losses,
                "restored_specs": restored_specs,
                "shardings_match": ok_sh,
                "param_max_diff_vs_4dev": diff,
            }
        )
    return out


def save_result(path, state, losses):
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(sh.to_host(state))]
    np.savez(path, losses=np.asarray(losses), *leaves)


def scenario_single(path):
    state, losses = run_single(2)
    save_result(path, state, losses)
    return {"losses": losses, "device_count": jax.device_count()}


def scenario_multiproc(path, mesh_spec):
    mesh = sh.make_mesh(mesh_spec)
    state, state_sh, _, step = sharded(mesh, fsdp=True)
    state, losses = run_sharded(mesh, state_sh, step, state, 2)
    rows = sh.local_rows(mesh, B)
    host = sh.to_host(state)  # a collective: every process takes part
    if jax.process_index() == 0:
        save_result(path, host, losses)
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "rows": [rows.start, rows.stop],
        "losses": losses,
        "specs": specs_of(state[0]),
    }


if __name__ == "__main__":
    name = sys.argv[1]
    if name == "parity":
        res = scenario_parity()
    elif name == "ckpt_save":
        res = scenario_ckpt_save(sys.argv[2])
    elif name == "ckpt_restore":
        res = scenario_ckpt_restore(sys.argv[2])
    elif name == "single":
        res = scenario_single(sys.argv[2])
    elif name == "multiproc":
        res = scenario_multiproc(sys.argv[2], sys.argv[6])
    else:
        raise SystemExit(f"unknown scenario {name}")
    print("RESULT " + json.dumps(res))
