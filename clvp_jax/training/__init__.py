"""Training for CLVP and the speech-token decoder: losses, optax train state, jitted steps, orbax checkpoints,
data-parallel sharding, the JSONL data format, a synthetic task and a command-line experiment.

Axis letters: see the package legend in `clvp_jax/__init__.py`, used throughout this package (M speech codes).
"""

from clvp_jax.training.checkpointing import Checkpointer
from clvp_jax.training.losses import (
    clvp_contrastive_loss,
    clvp_embeddings,
    decoder_lm_loss,
    make_clvp_loss,
    make_lm_loss,
    retrieval_accuracy,
)
from clvp_jax.training.steps import make_eval_step, make_train_step
from clvp_jax.training.train_state import (
    OptimizerConfig,
    TrainState,
    create_train_state,
    init_model_params,
    learning_rate_schedule,
    make_optimizer,
)

__all__ = [
    "Checkpointer",
    "OptimizerConfig",
    "TrainState",
    "clvp_contrastive_loss",
    "clvp_embeddings",
    "create_train_state",
    "decoder_lm_loss",
    "init_model_params",
    "learning_rate_schedule",
    "make_clvp_loss",
    "make_eval_step",
    "make_lm_loss",
    "make_optimizer",
    "make_train_step",
    "retrieval_accuracy",
]
