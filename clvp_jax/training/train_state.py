"""The train state and its optax optimizer: AdamW, warm-up + cosine schedule, clipping, freezing, accumulation.

The state is one pytree (`TrainState`: step, params, opt_state, rng), so jit, sharding and checkpointing treat
it as a whole; the optimizer itself (`optax.GradientTransformation`) is rebuilt from an `OptimizerConfig`.

Optimizer = MultiSteps(k) ∘ multi_transform({trainable: clip(global norm) -> AdamW(schedule, decay mask),
frozen: zero}).

* Freezing: `OptimizerConfig.freeze` names parameter-path prefixes ("speech_decoder_model",
  "text_encoder_model/layers_0", "logit_scale"). Frozen leaves get zero updates and no Adam moments; the
  clipping norm is taken over the trainable leaves only.
* Weight decay applies to matrices (rank >= 2: weight matrices, embedding tables), not to biases, norm gains or
  `logit_scale`, as is usual for transformers.
* Accumulation: with `accumulation_steps = k` the parameters change every k-th call of the train step with the
  mean of the k gradients; the schedule counts those real updates.
* Mixed precision: keep the parameters (and Adam moments) in float32 and build the model with
  `dtype=jnp.bfloat16` (`compute_dtype` in the experiment): Flax casts the float32 params per layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from clvp_jax.config import ClvpConfig
from clvp_jax.model import init_params


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Attributes:
    learning_rate: peak learning rate, reached after `warmup_steps`.
    warmup_steps: linear warm-up from 0 (in parameter updates).
    total_steps: length of the whole schedule in parameter updates (warm-up included); the cosine decays to
      `learning_rate * final_lr_fraction` at this step and stays there.
    final_lr_fraction: end of the cosine as a fraction of the peak.
    weight_decay: decoupled AdamW decay of the matrices.
    b1, b2, eps: Adam constants.
    clip_norm: clip the global gradient norm (of the trainable leaves) to this; None disables.
    accumulation_steps: micro-batches per parameter update (optax.MultiSteps).
    freeze: parameter-path prefixes ("a/b") that are not trained.
    """

    learning_rate: float = 3e-4
    warmup_steps: int = 100
    total_steps: int = 10_000
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    clip_norm: float | None = 1.0
    accumulation_steps: int = 1
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze", tuple(self.freeze))
        problems = []
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_steps < self.total_steps:
            problems.append(f"need 0 <= warmup_steps < total_steps, got {self.warmup_steps} and {self.total_steps}")
        if not 0 <= self.final_lr_fraction <= 1:
            problems.append(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.accumulation_steps < 1:
            problems.append(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            problems.append(f"clip_norm must be positive or None, got {self.clip_norm}")
        if problems:
            raise ValueError("invalid OptimizerConfig: " + "; ".join(problems))


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine to `learning_rate * final_lr_fraction`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps,
        end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )


def trainable_labels(params: Mapping[str, Any], freeze: tuple[str, ...]) -> dict:
    """A tree like `params` of "trainable" / "frozen" labels. Unknown prefixes raise, listing the valid roots."""
    flat = flatten_dict(dict(params))
    paths = ["/".join(p) for p in flat]
    unknown = [f for f in freeze if not any(p == f or p.startswith(f.rstrip("/") + "/") for p in paths)]
    if unknown:
        roots = sorted({p.split("/")[0] for p in paths})
        raise ValueError(
            f"freeze prefixes {unknown} match no parameter; use parameter paths such as {roots} or "
            f"'{roots[0]}/...' (see clvp_jax.checkpoint.rules.hf_key for the naming)"
        )

    def label(path: str) -> str:
        frozen = any(path == f or path.startswith(f.rstrip("/") + "/") for f in freeze)
        return "frozen" if frozen else "trainable"

    return unflatten_dict({p: label("/".join(p)) for p in flat})


def make_optimizer(cfg: OptimizerConfig, params: Mapping[str, Any]) -> optax.GradientTransformation:
    """The optimizer for `params` (its structure decides the freeze labels and the decay mask)."""
    decay_mask = jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, dict(params))
    adamw = optax.adamw(
        learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
    )
    train = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw) if cfg.clip_norm is not None else adamw
    tx = optax.multi_transform(
        {"trainable": train, "frozen": optax.set_to_zero()}, trainable_labels(params, cfg.freeze)
    )
    if cfg.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulation_steps)
    return tx


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: int32 scalar, train-step calls so far (micro-batches when accumulating).
      params: float32 parameter tree.
      opt_state: the optimizer state of `make_optimizer`.
      rng: a raw uint32[2] PRNG key, split once per step (the key of step s is a function of the seed and s).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    def to_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}


def create_train_state(
    params: Mapping[str, Any], tx: optax.GradientTransformation, rng: jax.Array | int = 0
) -> TrainState:
    """A fresh state at step 0 for float32 `params`."""
    key = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    params = jax.tree_util.tree_map(jnp.asarray, dict(params))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=key)


def init_model_params(config: ClvpConfig, seed: int = 0) -> dict:
    """Random float32 params for `config`, initialised under jit (eager init is slow for deep trees)."""
    return jax.jit(lambda key: init_params(config, key))(jax.random.PRNGKey(seed))
