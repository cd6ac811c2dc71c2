"""gpt system: the microgpt model as a tensor engine with hand-derived backward.

Modules: config (GPTConfig), tokenizer (character level, plain/chat), model (forward/backward,
jax.grad path), scalar (pure-Python Value engine reference), inference (float64 numpy KV-cache
model and sampling), weights_io (weights.json/meta.json, safetensors), data/train/cli/tour
(training), generate/chat/serve (serving).
"""
