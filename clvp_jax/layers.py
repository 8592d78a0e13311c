"""Small building blocks shared by the CLVP modules: norms, activations, rotary embedding, MLPs, layer loops.

Axis letters: see the package legend in `clvp_jax/__init__.py`.
Norm statistics are always computed in float32, whatever the compute dtype. The backend-dependent forms
(`Linear`'s product, the layer loops) are chosen by a `Tuning` (`clvp_jax.tuning`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.tuning import TowerLoop, Tuning

Dtype = jnp.dtype


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The reference's `ACT2FN[name]` for the activations CLVP configs use."""
    table: dict[str, Callable[[jax.Array], jax.Array]] = {
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
        "tanh": jnp.tanh,
    }
    if name not in table:
        raise ValueError(f"unsupported activation {name!r}; use one of {sorted(table)}")
    return table[name]


def param(module: nn.Module, name: str, init: Callable, shape: tuple[int, ...]) -> jax.Array:
    """`module.param(name, init, shape)`, minus Flax's check by abstract evaluation of `init` on every apply.

    Flax re-traces the initializer (a random normal, for weights) under `jax.eval_shape` each time an existing
    parameter is read, only to compare shapes; for the ~1,500 parameter reads of the generation program that
    was about a third of its tracing time. Here the shape is compared directly.
    """
    if module.is_initializing() or not module.has_variable("params", name):
        return module.param(name, init, shape)
    value = module.get_variable("params", name)
    if tuple(value.shape) != tuple(shape):
        raise flax.errors.ScopeParamShapeError(name, module.scope.path_text, tuple(value.shape), tuple(shape))
    return value


class Linear(nn.Module):
    """torch's `nn.Linear`: y = x W^T + b with the weight stored as torch stores it, `weight` [out, in].

    With at most `tuning.weight_first_max_rows` rows the product is taken weight-first, [out, in] x [in, rows],
    and the transpose back is fenced by an optimization barrier so that XLA keeps that operand order (on CPU the
    skinny products of a decode step run ~1.8x faster so; see benchmarks/README.md, "Why the CPU forms").
    Otherwise it is the plain x W^T. Storing [out, in] also loads torch's nn.Linear weights without a transpose.
    In bf16 (or fp16) it is always x W^T accumulated and biased in float32, rounded once (`_low_precision_product`);
    with `dtype=float32` on bf16-stored weights, the float32 input is split in two bf16 parts instead of copying
    the weight to float32 (`_split_input_product`).

    Attributes: features (out), use_bias, dtype (compute; default: promote input and parameters), tuning.
    """

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., in] -> [..., out]
        weight = param(self, "weight", nn.initializers.normal(0.02), (self.features, x.shape[-1]))
        bias = param(self, "bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        if x.dtype == jnp.float32 and weight.dtype in LOW_PRECISION and self.dtype == jnp.float32:
            return _split_input_product(x, weight, bias, self.tuning)  # float32 compute on bf16-stored weights
        x, weight, bias = nn.dtypes.promote_dtype(x, weight, bias, dtype=self.dtype)
        rows = x.reshape(-1, x.shape[-1])  # [rows, in]
        if x.dtype in LOW_PRECISION:
            return _low_precision_product(rows, weight, bias, self.tuning).reshape(*x.shape[:-1], self.features)
        if rows.shape[0] > self.tuning.weight_first_max_rows:
            y = jax.lax.dot_general(x, weight, (((x.ndim - 1,), (1,)), ((), ())))  # [..., out]
        else:
            y = jax.lax.dot_general(weight, rows, (((1,), (1,)), ((), ())))  # [out, rows]
            y = jax.lax.optimization_barrier(y).T.reshape(*x.shape[:-1], self.features)
        return y if bias is None else y + bias


LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _low_precision_product(
    rows: jax.Array, weight: jax.Array, bias: jax.Array | None, tuning: Tuning, out: Dtype | None = None
) -> jax.Array:
    """[rows, in] x [out, in]^T for bf16 / fp16 operands -> [rows, out] in their dtype, accumulated in float32.

    The plain x W^T with a float32 result (`preferred_element_type`), the bias added in float32, then one
    rounding: on XLA CPU a dot whose result is bf16 falls off the fast (oneDNN / AMX) path, ~5-10x slower, and
    the weight-first form is ~2-3x slower than x W^T in bf16 (benchmarks/README.md, "bf16"). Fewer rows than
    `tuning.low_precision_min_rows` are padded with zero rows to that many (the one-row product is a slow path).
    `out`: the result's dtype (default: the operands').
    """
    n = rows.shape[0]
    if n < tuning.low_precision_min_rows:
        rows = jnp.pad(rows, ((0, tuning.low_precision_min_rows - n), (0, 0)))
    y = jax.lax.dot_general(rows, weight, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)[:n]
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(out or rows.dtype)


def _split_input_product(x: jax.Array, weight: jax.Array, bias: jax.Array | None, tuning: Tuning) -> jax.Array:
    """float32 x [..., in] times bf16-stored weight [out, in]^T -> float32 [..., out], without a float32 copy of W.

    x = hi + lo with hi = bf16(x) and lo = bf16(x - hi): one bf16 product over the rows [hi; lo] (float32
    accumulation), summed back. The weight is exact in bf16 and x is kept to ~2^-17 relative, so this is float32
    maths on the stored weights (the logits: `ClvpForCausalLM.lm_head`), while the weight is read once in bf16
    instead of being converted to a float32 copy every call (~10% of a bf16 decode step at real size).
    """
    rows = x.reshape(-1, x.shape[-1])  # [n, in]
    n = rows.shape[0]
    hi = rows.astype(weight.dtype)
    lo = (rows - hi.astype(jnp.float32)).astype(weight.dtype)
    y = _low_precision_product(jnp.concatenate([hi, lo]), weight, None, tuning, out=jnp.float32)  # [2n, out]
    y = y[:n] + y[n:]
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear(features: int, name: str, *, use_bias: bool = True, dtype: Dtype | None = None, tuning: Tuning) -> Linear:
    """A `Linear` layer (weight [out, in], as torch; the converter transposes GPT-2's Conv1D [in, out])."""
    return Linear(features, use_bias=use_bias, dtype=dtype, tuning=tuning, name=name)


class RMSNorm(nn.Module):
    """y = scale * x / sqrt(mean(x^2) + eps), computed in float32 (encoders only; no bias)."""

    eps: float = 1e-5
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(self.dtype or x.dtype)


class LayerNorm(nn.Module):
    """torch's LayerNorm, computed as Flax's `nn.LayerNorm(use_fast_variance=False)`: statistics in float32
    with the biased variance E[(x - mean)^2], y = (x - mean) * (rsqrt(var + eps) * scale) + bias.

    Attributes: eps, dtype (output; default: promote input and parameters).
    """

    eps: float = 1e-5
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],))
        bias = param(self, "bias", nn.initializers.zeros, (x.shape[-1],))
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean = x32.mean(axis=-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)
        y = (x32 - mean) * (jax.lax.rsqrt(var + self.eps) * scale) + bias
        return y.astype(self.dtype or jnp.result_type(x, scale, bias))


def layer_norm(eps: float, name: str, dtype: Dtype | None = None) -> LayerNorm:
    """A LayerNorm with torch's biased variance computed as E[(x - mean)^2], in float32."""
    return LayerNorm(eps, dtype=dtype, name=name)


def rotary_inv_freq(rotary_dim: int) -> np.ndarray:
    """inv_freq[j] = 1 / 10000^(2j / r0) over arange(0, r0, 2), float32 (spec §4); r0 = the unrounded dim.

    `rotary_dim` here is r0 = max(P // (2H), 32); the table has ceil(r0 / 2) entries. The exponent and the
    division are float32 as in the reference; the power is rounded correctly (computed in float64), which
    reproduces torch's values bit for bit for every r0 up to 64 (the real model has r0 = 32), where float32
    powers (numpy's, XLA's) are off by one ulp in a few entries.
    """
    exponent = np.arange(0, rotary_dim, 2).astype(np.float32) / np.float32(rotary_dim)
    power = (10000.0 ** exponent.astype(np.float64)).astype(np.float32)
    return np.float32(1.0) / power


def rotary_r0(projection_dim: int, num_heads: int) -> int:
    return max(projection_dim // (2 * num_heads), 32)


def rotary_tables(r0: int, length: int) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [T, E] for positions 0..length-1, E = 2 * ceil(r0 / 2)."""
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * rotary_inv_freq(r0)[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate the first E dims of each head of x [B, T, H, K] with rotate-half; the rest passes through."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    cos = cos[None, :, None, :].astype(x.dtype)
    sin = sin[None, :, None, :].astype(x.dtype)
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


class GatedProjection(nn.Module):
    """The reference's `ClvpGatedLinearUnit`: proj to 2I, value = first half, gate = act(second half)."""

    features: int
    act: str
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, I]
        h = linear(2 * self.features, "proj", dtype=self.dtype, tuning=self.tuning)(x)  # [B, T, 2I]
        value, gate = jnp.split(h, 2, axis=-1)
        return value * activation(self.act)(gate)


class EncoderMLP(nn.Module):
    """GLU feed-forward of the encoders: fc2(GLU(fc1(x)))."""

    hidden_size: int
    intermediate_size: int
    act: str
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
        h = GatedProjection(self.intermediate_size, self.act, dtype=self.dtype, tuning=self.tuning, name="fc1")(x)
        return linear(self.hidden_size, "fc2", dtype=self.dtype, tuning=self.tuning)(h)  # h: [B, T, I]


class DecoderMLP(nn.Module):
    """GPT-2 MLP: c_proj(act(c_fc(x))). The torch weights are Conv1D [in, out]; ours are [out, in] (`Linear`)."""

    hidden_size: int
    inner_size: int
    act: str
    dtype: Dtype | None = None
    tuning: Tuning = dataclasses.field(default_factory=Tuning.for_backend)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
        h = activation(self.act)(linear(self.inner_size, "c_fc", dtype=self.dtype, tuning=self.tuning)(x))  # [B, T, I]
        return linear(self.hidden_size, "c_proj", dtype=self.dtype, tuning=self.tuning)(h)


def scan_layers(apply: Callable[[Any, jax.Array], jax.Array], layer_params: Sequence[Any], x: jax.Array) -> jax.Array:
    """x -> layer_{L-1}(... layer_0(x)) as a loop with one compiled layer, the layers' parameters kept apart.

    `apply(params_i, x) -> x` runs one layer. Each iteration copies its own layer's parameters out of the L
    separate subtrees with a `lax.switch`, so the parameter tree keeps the reference's per-layer layout (the
    converter's and the optimiser's) and no stacked copy of all layers is ever made; one layer's copy is cheap
    against a pass over many rows (a smaller program that compiles faster; figures in benchmarks/README.md).
    For inference: differentiating through the switch adds a zero gradient for every layer in every iteration,
    so training keeps the unrolled layers.
    """
    if not layer_params:
        return x
    branches = [lambda ps, k=k: ps[k] for k in range(len(layer_params))]

    def body(x, i):
        return apply(jax.lax.switch(i, branches, layer_params), x), None

    return jax.lax.scan(body, x, jnp.arange(len(layer_params)))[0]


def stacked_scan_layers(
    apply: Callable[[Any, jax.Array], jax.Array], layer_params: Sequence[Any], x: jax.Array
) -> jax.Array:
    """`scan_layers` over a stack of the layers' parameters made inside the program (the tree stays per-layer).

    The portable loop: each iteration slices its layer out of the stack, with no branch to select (a switch is a
    device-side conditional, which some backends run with a host round trip), at the price of one copy of all
    the layers' weights per call.
    """
    if not layer_params:
        return x
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layer_params)  # each leaf [n_layers, ...]
    return jax.lax.scan(lambda h, p: (apply(p, h), None), x, stacked)[0]


def loop_layers(
    form: TowerLoop, apply: Callable[[Any, jax.Array], jax.Array], layer_params: Sequence[Any], x: jax.Array
) -> jax.Array:
    """x through every layer, in the form `form` names ("switch", "stacked" or "unrolled"; see `Tuning`)."""
    if form == "switch":
        return scan_layers(apply, layer_params, x)
    if form == "stacked":
        return stacked_scan_layers(apply, layer_params, x)
    for p in layer_params:
        x = apply(p, x)
    return x


def additive_mask(allowed: jax.Array) -> jax.Array:
    """Boolean 'may attend' mask -> additive float32 mask: 0 where allowed, finfo(float32).min elsewhere.

    Matches the reference's eager attention, including rows whose keys are all masked (uniform weights).
    """
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def inverse_sqrt(n: int) -> float:
    return 1.0 / math.sqrt(n)
