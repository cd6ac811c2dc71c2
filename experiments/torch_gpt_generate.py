"""PyTorch baseline for GPT generation with a preallocated KV cache (the microgpt model: no biases,
rmsnorm without gain, causal MHA, ReLU MLP, untied lm_head, no final norm).

Used by experiments/bench_serve.py; also runnable alone:
    python experiments/torch_gpt_generate.py --model DIR --tokens 128
"""

import argparse
import math
import time

import numpy as np
import torch


class TorchGPT:
    def __init__(self, params: dict, n_layer: int, n_head: int, block_size: int, dtype=torch.float32):
        self.p = {k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in params.items()}
        self.n_layer, self.n_head, self.block_size, self.dtype = n_layer, n_head, block_size, dtype
        self.E = self.p["wte"].shape[1]
        self.D = self.E // n_head

    @staticmethod
    def _rms(x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5)

    def step(self, tok_B, pos: int, ck, cv):
        """Feed one token per row at position `pos` (all rows aligned); returns logits [B, V]."""
        B, H, D, p = tok_B.shape[0], self.n_head, self.D, self.p
        x = self._rms(p["wte"][tok_B] + p["wpe"][pos])
        for i in range(self.n_layer):
            L = f"layer{i}."
            h = self._rms(x)
            q = (h @ p[L + "attn_wq"].T).view(B, H, D)
            ck[i, :, :, pos] = (h @ p[L + "attn_wk"].T).view(B, H, D)
            cv[i, :, :, pos] = (h @ p[L + "attn_wv"].T).view(B, H, D)
            k, v = ck[i, :, :, : pos + 1], cv[i, :, :, : pos + 1]  # [B, H, t, D]
            a = torch.softmax(torch.einsum("bhd,bhtd->bht", q, k) / math.sqrt(D), -1)
            o = torch.einsum("bht,bhtd->bhd", a, v).reshape(B, H * D)
            x = x + o @ p[L + "attn_wo"].T
            h = self._rms(x)
            x = x + torch.relu(h @ p[L + "mlp_fc1"].T) @ p[L + "mlp_fc2"].T
        return x @ p["lm_head"].T

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], max_new: int, greedy: bool = True, temperature: float = 1.0, seed: int = 0
    ) -> list[list[int]]:
        """Same-length prompts (a batch of B rows), fixed max_new tokens, no stop tokens."""
        B, n = len(prompts), len(prompts[0])
        T = min(self.block_size, n + max_new)
        shape = (self.n_layer, B, self.n_head, T, self.D)
        ck, cv = torch.zeros(shape, dtype=self.dtype), torch.zeros(shape, dtype=self.dtype)
        toks = torch.tensor(prompts, dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        out = []
        for pos in range(T - 1):
            logits = self.step(toks[:, pos] if pos < n else out[-1], pos, ck, cv)
            if pos + 1 < n:
                continue
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)[:, 0]
            out.append(nxt)
        return torch.stack(out, 1).tolist() if out else [[] for _ in range(B)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    from jaxsys.gpt.weights_io import load_model

    params, cfg, tok = load_model(a.model)
    m = TorchGPT(params, cfg.n_layer, cfg.n_head, cfg.block_size)
    prompts = [[tok.bos]] * a.batch
    m.generate(prompts, 4)
    t0 = time.perf_counter()
    out = m.generate(prompts, a.tokens)
    dt = time.perf_counter() - t0
    print(f"torch: {a.batch * len(out[0]) / dt:.1f} tokens/s; sample: {tok.decode(out[0])!r}")


if __name__ == "__main__":
    main()
