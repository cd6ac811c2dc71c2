"""Tiled matmul C = A B as a Pallas kernel (the derivation's "tiles in shared memory" section).

The output is cut into [bm x bn] tiles, one program per tile (grid = (M/bm, N/bn)). Program (i, j)
receives the row panel A[i*bm:(i+1)*bm, :] and the column panel B[:, j*bn:(j+1)*bn] and walks K in
steps of bk: it loads the tiles A[i, k] [bm x bk] and B[k, j] [bk x bn] (on a GPU: into shared memory
/ registers), accumulates acc += A[i, k] B[k, j] in float32 (float64 for float64 inputs), and writes
C[i, j] once at the end. Ragged shapes are zero-padded up to whole tiles and the result is sliced.

On CPU the kernel runs through Pallas' interpreter (`interpret=True`, automatic), which checks the
tiling logic against `jnp.dot` in tests; on GPU it is compiled (Triton lowering).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxsys.errors import ShapeError


def _kernel(a_ref, b_ref, c_ref, *, bk: int, nk: int, acc_dtype):
    bm, bn = c_ref.shape

    def body(k, acc):
        a = a_ref[:, pl.ds(k * bk, bk)]  # tile A[i, k]  [bm x bk]
        b = b_ref[pl.ds(k * bk, bk), :]  # tile B[k, j]  [bk x bn]
        return acc + jnp.dot(a, b, preferred_element_type=acc_dtype)

    acc = lax.fori_loop(0, nk, body, jnp.zeros((bm, bn), acc_dtype))
    c_ref[...] = acc.astype(c_ref.dtype)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _tile(n: int, block: int) -> int:
    # small dims use one tile of the next power of two >= 16 (Triton's minimum dot size)
    return min(block, max(16, 1 << (max(n, 1) - 1).bit_length()))


@functools.partial(jax.jit, static_argnames=("bm", "bn", "bk", "interpret"))
def _matmul(a, b, bm, bn, bk, interpret):
    M, K = a.shape
    _, N = b.shape
    bm, bn, bk = _tile(M, bm), _tile(N, bn), _tile(K, bk)
    Mp, Np, Kp = _round_up(M, bm), _round_up(N, bn), _round_up(K, bk)
    a = jnp.pad(a, ((0, Mp - M), (0, Kp - K)))
    b = jnp.pad(b, ((0, Kp - K), (0, Np - N)))
    out_dtype = jnp.result_type(a.dtype, b.dtype)
    acc_dtype = jnp.float64 if out_dtype == jnp.float64 else jnp.float32
    c = pl.pallas_call(
        functools.partial(_kernel, bk=bk, nk=Kp // bk, acc_dtype=acc_dtype),
        out_shape=jax.ShapeDtypeStruct((Mp, Np), out_dtype),
        grid=(Mp // bm, Np // bn),
        in_specs=[pl.BlockSpec((bm, Kp), lambda i, j: (i, 0)), pl.BlockSpec((Kp, bn), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        interpret=interpret,
    )(a, b)
    return c[:M, :N]


def matmul(
    a: jax.Array, b: jax.Array, *, bm: int = 64, bn: int = 64, bk: int = 32, interpret: bool | None = None
) -> jax.Array:
    """C = A B for A [M x K], B [K x N] with the tiled Pallas kernel.

    Args:
      a, b: 2-D arrays with matching inner dimension (any sizes; padded to whole tiles).
      bm, bn, bk: tile sizes (clipped to the next power of two >= 16 for small dimensions).
      interpret: run in Pallas' interpreter; default True on CPU, False (compiled) elsewhere.

    Returns:
      C [M x N] in the promoted dtype of a and b.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: need A [M x K] and B [K x N], got {list(a.shape)} and {list(b.shape)}")
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    return _matmul(a, b, bm, bn, bk, bool(interpret))
