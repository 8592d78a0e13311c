"""Checkpoint conversion: original Tortoise files and HF folders -> clvp-jax checkpoints or HF exports.

`convert.original` reads the original `autoregressive.pth` / `clvp2.pth`; `convert.cli` is the command line
(`clvp-jax-convert`). The parameter mapping itself is the strict rule table in `clvp_jax.weights`.
"""
