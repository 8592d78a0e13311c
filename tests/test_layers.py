"""The building blocks whose computation differs from Flax's stock modules: `Linear`, `LayerNorm`, `param`."""

from __future__ import annotations

import dataclasses

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax import attention
from clvp_jax.layers import LayerNorm, Linear, rotary_inv_freq, scan_layers
from clvp_jax.tuning import Tuning

CPU = Tuning.cpu()


@pytest.mark.parametrize("rows", [1, 16, CPU.weight_first_max_rows + 1])  # weight-first form, and the plain product
def test_linear_is_torch_linear(rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 2, 24), dtype=np.float32)  # leading dims are flattened: rows x 2 products
    weight = rng.standard_normal((40, 24), dtype=np.float32)  # [out, in], as torch stores it
    bias = rng.standard_normal(40, dtype=np.float32)
    y = Linear(40, tuning=CPU).apply({"params": {"weight": weight, "bias": bias}}, x)
    want = np.einsum("rti,oi->rto", x.astype(np.float64), weight.astype(np.float64)) + bias
    assert y.shape == (rows, 2, 40)
    # float32 products over 24 terms of unit-variance values (sums ~5): ~1e-6 rounding; 1e-5 leaves no room for
    # a transposed or mis-ordered weight, which changes values by O(1).
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


def test_linear_init_is_out_in_and_shape_is_checked():
    params = Linear(7).init(jax.random.key(0), jnp.ones((2, 3)))["params"]
    assert params["weight"].shape == (7, 3) and params["bias"].shape == (7,)
    with pytest.raises(flax.errors.ScopeParamShapeError, match="weight"):
        Linear(7).apply({"params": {"weight": np.zeros((3, 7), np.float32), "bias": np.zeros(7, np.float32)}},
                        jnp.ones((2, 3)))  # fmt: skip


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_flax(dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 5, 32)) * 4 + 2, dtype)
    variables = {"params": {"scale": rng.standard_normal(32).astype(np.float32),
                            "bias": rng.standard_normal(32).astype(np.float32)}}  # fmt: skip
    ours = LayerNorm(1e-5).apply(variables, x)
    flax_ln = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False).apply(variables, x)
    assert ours.dtype == flax_ln.dtype
    # The same float32 operations in the same order: equal up to the compiler's fusion choices (1 ulp).
    np.testing.assert_allclose(np.asarray(ours), np.asarray(flax_ln), rtol=1e-6, atol=1e-6)


def test_scan_layers_runs_each_layer_once_in_order():
    """The scanned loop equals the Python loop: layer i gets its own parameters (a shifted or reversed index
    changes the result, since the layers do not commute), over parameter subtrees of several leaves."""
    rng = np.random.default_rng(0)
    layers = [{"w": rng.standard_normal((6, 6), dtype=np.float32), "b": rng.standard_normal(6, dtype=np.float32)}]
    layers += [{k: v * (i + 2) for k, v in layers[0].items()} for i in range(3)]
    layers[2] = {"w": rng.standard_normal((6, 6), dtype=np.float32), "b": layers[2]["b"]}
    apply = lambda p, x: jnp.tanh(x @ p["w"] + p["b"])  # noqa: E731
    x = rng.standard_normal((5, 6), dtype=np.float32)
    want = x
    for p in layers:
        want = apply(p, want)
    got = jax.jit(lambda ps, x: scan_layers(apply, ps, x))(layers, x)
    # The same float32 ops in the same order; only XLA's fusion of the loop body may differ: ~1e-7.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_rotary_inv_freq_is_torch_bit_for_bit():
    """The exported `inv_freq` buffers must equal the reference's exactly (HF round trips are bit-exact); numpy's
    float32 power (2.4) is one ulp off for a few entries of most widths, so a tolerance would hide that."""
    torch = pytest.importorskip("torch")
    for r0 in range(32, 65):  # r0 = max(P // 2H, 32); the real model has 32
        want = (1.0 / (10000 ** (torch.arange(0, r0, 2).float() / r0))).numpy()
        got = rotary_inv_freq(r0)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"r0={r0}")


@pytest.mark.parametrize("masked", [False, True])
def test_full_attention_head_by_head_equals_all_heads(masked):
    """Above `Tuning.per_head_above_bytes` the heads are computed one at a time (the mel blocks, long speech towers);
    the tiny parity models never get there, so both paths are compared directly, padding mask included."""
    rng = np.random.default_rng(0)
    B, T, H, K = 2, 7, 3, 5
    q, k, v = (rng.standard_normal((B, T, H, K), dtype=np.float32) for _ in range(3))
    allowed = None
    if masked:
        allowed = np.ones((B, T, T), bool)
        allowed[1, :, 4:] = False  # row 1 is padded after 4 keys
    all_heads = attention.full_attention(q, k, v, allowed, CPU)
    by_head = jax.jit(attention.full_attention, static_argnums=4)(
        q, k, v, allowed, dataclasses.replace(CPU, per_head_above_bytes=0)
    )
    # Identical dot products and softmaxes; XLA may order the float32 sums differently: ~1e-7.
    np.testing.assert_allclose(np.asarray(by_head), np.asarray(all_heads), rtol=1e-6, atol=1e-6)
