"""Parameter dtypes: the ones a checkpoint may hold, safetensors' codes for them, casting and checking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax  # its import registers ml_dtypes' bfloat16 with numpy: np.dtype("bfloat16") works below and in readers
import numpy as np

from clvp_jax.checkpoint.errors import CheckpointError

DTYPES = ("float32", "bfloat16", "float16")
# safetensors dtype code -> numpy dtype name (both directions are used: reading headers, writing them).
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def as_dtype(dtype: Any) -> np.dtype | None:
    """None, 'float32'|'bfloat16'|'float16', or a numpy/jax dtype -> numpy dtype (None stays None)."""
    if dtype is None:
        return None
    dt = jax.numpy.dtype(dtype)
    if dt.name not in DTYPES:
        raise CheckpointError(f"unsupported dtype {dt.name!r}; use one of {', '.join(DTYPES)}")
    return dt


def is_float(dtype: Any) -> bool:
    """Whether `dtype` is floating, bfloat16 included (numpy's own test misses ml_dtypes' bfloat16)."""
    return bool(jax.numpy.issubdtype(dtype, jax.numpy.floating))


def cast_floats(params: Mapping, dtype: np.dtype | None) -> dict:
    """`params` as numpy leaves, floating ones cast to `dtype` (None: unchanged)."""

    def cast(x):
        x = np.asarray(x)
        return x.astype(dtype) if dtype is not None and is_float(x.dtype) and x.dtype != dtype else x

    return jax.tree_util.tree_map(cast, dict(params))


def float_dtype(params: Mapping) -> str:
    """The one floating dtype name of `params`' leaves; raises `CheckpointError` if they mix several."""
    kinds = {np.asarray(x).dtype.name for x in jax.tree_util.tree_leaves(params) if is_float(x.dtype)}
    if len(kinds) != 1:
        raise CheckpointError(f"parameters mix floating dtypes {sorted(kinds)}; pass dtype= to pick one")
    return kinds.pop()
