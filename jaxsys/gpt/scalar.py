"""Scalar reference: a pure-Python autograd engine (one `Value` per scalar operation) and the
microgpt model on it, one token at a time with a KV cache. For tiny configs only: this is the
independent implementation the tensor engine is checked against (forward, gradients, Adam steps).
Nothing here imports jax.
"""

import math
from collections.abc import Iterable, Sequence

import numpy as np

from jaxsys.errors import ConfigError, DataError, ShapeError


class Value:
    """A scalar node: data, grad, and the local derivative towards each child."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data: float, children: tuple = (), local_grads: tuple = ()):
        self.data = float(data)
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k: float):
        if isinstance(k, Value):
            raise TypeError("Value ** Value is not supported; the exponent must be a number")
        return Value(self.data**k, (self,), (k * self.data ** (k - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self):
        return Value(max(0.0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1.0

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1.0

    def __rtruediv__(self, other):
        return other * self**-1.0

    def backward(self) -> None:
        """Reverse-mode sweep: topological order (iterative DFS), then chain rule from the root."""
        topo, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                topo.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for c in node._children:
                if id(c) not in visited:
                    stack.append((c, False))
        self.grad = 1.0
        for node in reversed(topo):
            for child, lg in zip(node._children, node._local_grads):
                child.grad += lg * node.grad


def _linear(x: Sequence[Value], w: list[list[Value]]) -> list[Value]:
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def _softmax(logits: Sequence[Value]) -> list[Value]:
    m = max(v.data for v in logits)
    exps = [(v - m).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _rmsnorm(x: Sequence[Value], eps: float = 1e-5) -> list[Value]:
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + eps) ** -0.5
    return [xi * scale for xi in x]


class Gpt:
    """microgpt on scalars. `params`: dict name -> 2-D array-like (the weights.json names)."""

    MAX_NODES_HINT = 2_000_000

    def __init__(self, params: dict, n_layer: int, n_head: int):
        if "wte" not in params or "wpe" not in params or "lm_head" not in params:
            raise DataError("scalar Gpt params need wte, wpe and lm_head")
        self.n_layer, self.n_head = int(n_layer), int(n_head)
        self.state = {
            k: [[Value(x) for x in row] for row in np.asarray(v, np.float64).tolist()] for k, v in params.items()
        }
        self.vocab_size = len(self.state["wte"])
        self.n_embd = len(self.state["wte"][0])
        self.block_size = len(self.state["wpe"])
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} not divisible by n_head={self.n_head}")
        for i in range(self.n_layer):
            for m in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"):
                if f"layer{i}.{m}" not in self.state:
                    raise DataError(f"scalar Gpt params missing layer{i}.{m}")
        self._adam_m = {k: np.zeros((len(v), len(v[0]))) for k, v in self.state.items()}
        self._adam_v = {k: np.zeros((len(v), len(v[0]))) for k, v in self.state.items()}

    def parameters(self) -> Iterable[Value]:
        for mat in self.state.values():
            for row in mat:
                yield from row

    def step(self, token_id: int, pos_id: int, keys: list, values: list) -> list[Value]:
        """Logits for one token given the per-layer key/value caches (appended to in place)."""
        st, hd = self.state, self.n_embd // self.n_head
        x = [t + p for t, p in zip(st["wte"][token_id], st["wpe"][pos_id])]
        x = _rmsnorm(x)
        for li in range(self.n_layer):
            p = f"layer{li}."
            x_res = x
            x = _rmsnorm(x)
            q = _linear(x, st[p + "attn_wq"])
            k = _linear(x, st[p + "attn_wk"])
            v = _linear(x, st[p + "attn_wv"])
            keys[li].append(k)
            values[li].append(v)
            x_attn = []
            for h in range(self.n_head):
                hs = h * hd
                q_h = q[hs : hs + hd]
                k_h = [ki[hs : hs + hd] for ki in keys[li]]
                v_h = [vi[hs : hs + hd] for vi in values[li]]
                logits = [sum(q_h[j] * k_h[t][j] for j in range(hd)) / hd**0.5 for t in range(len(k_h))]
                w = _softmax(logits)
                x_attn.extend(sum(w[t] * v_h[t][j] for t in range(len(v_h))) for j in range(hd))
            x = _linear(x_attn, st[p + "attn_wo"])
            x = [a + b for a, b in zip(x, x_res)]
            x_res = x
            x = _rmsnorm(x)
            x = _linear(x, st[p + "mlp_fc1"])
            x = [xi.relu() for xi in x]
            x = _linear(x, st[p + "mlp_fc2"])
            x = [a + b for a, b in zip(x, x_res)]
        return _linear(x, st["lm_head"])

    def sequence_logits(self, tokens: Sequence[int]) -> list[list[Value]]:
        if len(tokens) > self.block_size:
            raise ConfigError(f"sequence length {len(tokens)} exceeds block_size={self.block_size}")
        keys = [[] for _ in range(self.n_layer)]
        values = [[] for _ in range(self.n_layer)]
        return [self.step(int(t), pos, keys, values) for pos, t in enumerate(tokens)]

    def logits_numpy(self, tokens_BxT) -> np.ndarray:
        """[B, T, V] float64 logits (data only)."""
        return np.array(
            [[[v.data for v in row] for row in self.sequence_logits(seq)] for seq in np.asarray(tokens_BxT).tolist()]
        )

    def loss(self, tokens_BxT, targets_BxT, mask_BxT=None) -> Value:
        """Mean over unmasked positions of -log softmax(logits)[target]."""
        tokens = np.asarray(tokens_BxT)
        targets = np.asarray(targets_BxT)
        if tokens.ndim != 2 or targets.shape != tokens.shape:
            raise ShapeError(f"tokens/targets must both be [B, T], got {tokens.shape} and {targets.shape}")
        mask = np.ones(tokens.shape) if mask_BxT is None else np.asarray(mask_BxT, np.float64)
        terms = []
        for b in range(tokens.shape[0]):
            n_used = int(np.max(np.nonzero(mask[b])[0], initial=-1)) + 1
            if n_used == 0:
                continue
            logits = self.sequence_logits(tokens[b, :n_used].tolist())
            for t in range(n_used):
                if mask[b, t]:
                    probs = _softmax(logits[t])
                    terms.append(-probs[int(targets[b, t])].log() * float(mask[b, t]))
        count = max(float(mask.sum()), 1.0)
        return sum(terms) / count

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0

    def loss_and_grads(self, tokens_BxT, targets_BxT, mask_BxT=None) -> tuple[float, dict]:
        self.zero_grad()
        loss = self.loss(tokens_BxT, targets_BxT, mask_BxT)
        loss.backward()
        return loss.data, self.grads()

    def grads(self) -> dict[str, np.ndarray]:
        return {k: np.array([[p.grad for p in row] for row in mat]) for k, mat in self.state.items()}

    def params_numpy(self) -> dict[str, np.ndarray]:
        return {k: np.array([[p.data for p in row] for row in mat]) for k, mat in self.state.items()}

    def adam_step(
        self, step: int, num_steps: int, lr: float = 0.01, beta1: float = 0.85, beta2: float = 0.99, eps: float = 1e-8
    ) -> None:
        """microgpt's Adam on the current .grad values, with linear decay lr_t = lr (1 - step/num_steps):

        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m^ = m / (1 - b1^(step+1));
        v^ = v / (1 - b2^(step+1));  p -= lr_t m^ / (sqrt(v^) + eps).
        """
        lr_t = lr * (1 - step / num_steps)
        for k, mat in self.state.items():
            m, v = self._adam_m[k], self._adam_v[k]
            for i, row in enumerate(mat):
                for j, p in enumerate(row):
                    g = p.grad
                    m[i, j] = beta1 * m[i, j] + (1 - beta1) * g
                    v[i, j] = beta2 * v[i, j] + (1 - beta2) * g * g
                    m_hat = m[i, j] / (1 - beta1 ** (step + 1))
                    v_hat = v[i, j] / (1 - beta2 ** (step + 1))
                    p.data -= lr_t * m_hat / (v_hat**0.5 + eps)
