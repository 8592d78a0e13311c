"""The generation case the device-count tests run in subprocesses (1 vs 4 devices, 1 vs 2 processes).

`CASE` is Python source: after it runs, `run(n)` generates with the same key over n devices and returns the
candidates and scores as lists. Subprocesses import jax themselves (device flags and `jax.distributed` must be
set up first), so this is source text, not a function.
"""

CASE = r"""
import json
import numpy as np
from clvp_jax.config import ClvpConfig
from clvp_jax.model import ClvpModelForConditionalGeneration, init_params
from clvp_jax.generation import GenerationOptions, generate
cfg = ClvpConfig.tiny()
model = ClvpModelForConditionalGeneration(cfg)
params = init_params(cfg, jax.random.key(0))
ids = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
mask = (ids > 0).astype(np.int32)
feats = np.random.default_rng(1).standard_normal((2, 80, 16)).astype(np.float32)
opts = GenerationOptions.tortoise(num_candidates=4, max_new_tokens=10, pad_to_max_mel_tokens=12, chunk_size=4)


def run(n):
    out = generate(model, params, ids, feats, mask, rng=jax.random.key(3), options=opts, devices=n)
    return dict(seq=np.asarray(out.sequences).tolist(), lpt=np.asarray(out.logits_per_text).tolist())
"""
