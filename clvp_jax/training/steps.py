"""Jitted train and eval steps over a `TrainState`.

`make_train_step(loss_fn, tx)` returns `step(state, batch) -> (state, metrics)`:
rng -> (next rng, step key); (loss, metrics), grads = value_and_grad(loss_fn)(params, batch, step key);
params += tx.update(grads); step += 1. Metrics gain `grad_norm` (global norm of the raw gradients).

The step is a pure function of (state, batch), so on one backend it is deterministic: resuming from a
checkpoint continues bit-identically. Under a mesh (`clvp_jax.training.sharding`) the same jitted function
follows the input shardings: batch rows split over devices, params replicated, gradients all-reduced by XLA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import optax

from clvp_jax.training.losses import Batch, LossFn, Metrics
from clvp_jax.training.train_state import TrainState

TrainStep = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
EvalStep = Callable[[Mapping, Batch], Metrics]


def train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, state: TrainState, batch: Batch
) -> tuple[TrainState, Metrics]:
    """One un-jitted step (see module docstring); `make_train_step` jits it."""
    rng, key = jax.random.split(state.rng)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, donate: bool = True) -> TrainStep:
    """The jitted train step. With `donate` the input state's buffers are reused (do not use it afterwards)."""
    return jax.jit(lambda state, batch: train_step(loss_fn, tx, state, batch), donate_argnums=(0,) if donate else ())


def make_eval_step(loss_fn: LossFn) -> EvalStep:
    """The jitted `(params, batch) -> metrics` (fixed key 0: the losses are deterministic)."""
    return jax.jit(lambda params, batch: loss_fn(params, batch, jax.random.PRNGKey(0))[1])
