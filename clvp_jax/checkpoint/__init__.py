"""Checkpoints: reading HF folders, clvp-jax checkpoints and original Tortoise files; writing clvp-jax and HF.

One concept per module, imports going down the list:

  errors     CheckpointError, WeightsMismatchError
  dtypes     the parameter dtypes, safetensors' dtype codes, casting
  hashing    sha256 provenance of source files
  layouts    tensor layouts (`Layout`, `Split`): one record for both directions
  readers    lazy safetensors / torch readers with `specs()` (shapes and dtypes without reading)
  rules      the strict HF <-> Flax rule table (`state_dict_to_params`, `params_to_state_dict`)
  infer      the config of original Tortoise weights, from their shapes
  tortoise   the two-way original Tortoise rule table (`load_original`, `to_original`)
  format     format detection and the clvp-jax manifest
  load       `load_params`, `load_checkpoint`, `from_pretrained`
  save       `save_checkpoint`, `export_hf`
  convert_cli  the `clvp-jax-convert` command (and `clvp-jax convert`)
"""

from clvp_jax.checkpoint.dtypes import DTYPES
from clvp_jax.checkpoint.errors import CheckpointError, WeightsMismatchError
from clvp_jax.checkpoint.format import detect_format
from clvp_jax.checkpoint.load import LoadedCheckpoint, from_pretrained, load_checkpoint, load_params
from clvp_jax.checkpoint.rules import (
    ALL_PARTS,
    AUTOREGRESSIVE_PARTS,
    CLVP_PARTS,
    check_params,
    params_to_state_dict,
    state_dict_to_params,
)
from clvp_jax.checkpoint.save import export_hf, save_checkpoint
from clvp_jax.checkpoint.tortoise import load_original, to_original

__all__ = ["CheckpointError", "WeightsMismatchError", "DTYPES", "ALL_PARTS", "AUTOREGRESSIVE_PARTS", "CLVP_PARTS"]
__all__ += ["detect_format", "LoadedCheckpoint", "from_pretrained", "load_checkpoint", "load_params"]
__all__ += ["check_params", "params_to_state_dict", "state_dict_to_params", "load_original", "to_original"]
__all__ += ["export_hf", "save_checkpoint"]
