"""`Tuning`: which forms each backend gets, and that every form computes the same values (tiny config, float32).

Each module is run under `Tuning.cpu()` and `Tuning.portable()` (and, where a third form exists, that one too)
on the same parameters and inputs. The forms differ only in the order of float32 operations, so the tolerances
are rounding-level, tiered by how many operations separate the compared values:
  OP    rtol 1e-6, atol 1e-6: one product of <= 64 terms of O(1) values (float32 eps 1.2e-7, a few ulps of
        a sum ~5), or one softmax-weighted sum.
  BLOCK rtol 1e-5, atol 5e-6: a tower or attention block (projections, softmax, norms) where several such
        roundings compound; still 10^4 below what a wrong mask, head or layer order changes (O(0.1-1)).
  LOGITS rtol 1e-5, atol 2e-5: decoder logits after two layers and two LayerNorms, sums over the width of O(1)
        values, so the same relative noise shows up ~width^0.5 larger.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.attention import ClvpSelfAttention, SplitKV, split_cache_attention
from clvp_jax.config import ClvpConfig
from clvp_jax.decoder import init_cache, share_prefix
from clvp_jax.layers import Linear, rotary_tables
from clvp_jax.model import ClvpModelForConditionalGeneration, init_params
from clvp_jax.tuning import Tuning
from clvp_jax.waveform.attention_block import AttentionBlock, AttentionBlockNWC
from clvp_jax.waveform.conv import Conv1d, GroupNorm
from clvp_jax.waveform.diffusion_blocks import DiffusionLayer
from clvp_jax.waveform.nwc import ConvNWC, GroupNormNWC

OP = dict(rtol=1e-6, atol=1e-6)
BLOCK = dict(rtol=1e-5, atol=5e-6)
LOGITS = dict(rtol=1e-5, atol=2e-5)

CPU, PORTABLE = Tuning.cpu(), Tuning.portable()
FORMS = {"cpu": CPU, "portable": PORTABLE}


@pytest.fixture(scope="module")
def tiny():
    cfg = ClvpConfig.tiny()
    return cfg, init_params(cfg, jax.random.key(0))


def test_for_backend_picks_the_documented_forms():
    assert Tuning.for_backend("cpu") == CPU
    for backend in ("gpu", "cuda", "rocm", "tpu", "GPU"):
        assert Tuning.for_backend(backend) == PORTABLE, backend
    assert Tuning.for_backend() == Tuning.for_backend(jax.default_backend())
    # What the docs promise each backend: the CPU tricks on CPU, the plain forms elsewhere.
    assert (CPU.weight_first_max_rows, CPU.attention, CPU.per_head_above_bytes) == (256, "einsum", 8 << 20)
    assert (CPU.shared_prefix, CPU.tower_loop, CPU.memory_scheduler_max_rows, CPU.trim_heap) == (
        "blocked", "switch", 4, True
    )  # fmt: skip
    assert (PORTABLE.weight_first_max_rows, PORTABLE.attention, PORTABLE.per_head_above_bytes) == (
        0, "dot_product_attention", None
    )  # fmt: skip
    assert (PORTABLE.shared_prefix, PORTABLE.tower_loop) == ("dense", "stacked")
    assert (PORTABLE.memory_scheduler_max_rows, PORTABLE.trim_heap) == (0, False)
    assert (CPU.conv_kernel, PORTABLE.conv_kernel) == ("im2col", "conv")
    # The memory-optimized scheduler: CPU programs of at most 4 rows per device only.
    assert (
        CPU.compiler_options(1)
        == CPU.compiler_options(4)
        == {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    )
    assert CPU.compiler_options(5) is None and PORTABLE.compiler_options(1) is None
    assert CPU.use_memory_scheduler(4) and not CPU.use_memory_scheduler(5) and not PORTABLE.use_memory_scheduler(1)
    # Modules built without a tuning take the backend's; the model passes its own down.
    assert ClvpModelForConditionalGeneration(ClvpConfig.tiny()).tuning == Tuning.for_backend()


def test_bad_tunings_are_refused_with_the_options():
    with pytest.raises(ValueError, match=r"Tuning.attention must be one of \('einsum', 'dot_product_attention'\)"):
        dataclasses.replace(CPU, attention="flash")
    with pytest.raises(ValueError, match="tower_loop"):
        dataclasses.replace(CPU, tower_loop="scan")
    with pytest.raises(ValueError, match="weight_first_max_rows must be an int >= 0"):
        dataclasses.replace(CPU, weight_first_max_rows=-1)
    with pytest.raises(ValueError, match="per_head_above_bytes"):
        dataclasses.replace(CPU, per_head_above_bytes=1.5)
    with pytest.raises(ValueError, match="backend must be a JAX platform name"):
        Tuning.for_backend("")


def test_parameter_tree_is_the_same_in_every_form(tiny):
    cfg, params = tiny
    ids, feats = jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, cfg.decoder_config.feature_size, 8))
    for tuning in FORMS.values():
        model = ClvpModelForConditionalGeneration(cfg, tuning=tuning)
        init = lambda m=model: m.init(jax.random.key(0), ids, feats, method=m.init_all)["params"]  # noqa: E731
        shapes = jax.eval_shape(init)
        assert jax.tree.structure(shapes) == jax.tree.structure(params)
        assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, shapes, params)) == [True] * len(
            jax.tree.leaves(params)
        )


@pytest.mark.parametrize("rows", [1, 16, 300])  # weight-first on CPU up to 256 rows, the plain product above
def test_linear_forms_agree(rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 48), dtype=np.float32)
    variables = {"params": {"weight": rng.standard_normal((40, 48), np.float32), "bias": np.ones(40, np.float32)}}
    cpu = Linear(40, tuning=CPU).apply(variables, x)
    portable = Linear(40, tuning=PORTABLE).apply(variables, x)
    want = x.astype(np.float64) @ variables["params"]["weight"].T.astype(np.float64) + 1.0
    # Both are the float64 product up to float32 rounding of a 48-term sum (~5e-6 at sums ~7): the comparison to
    # float64 makes a transposed weight fail in either form, the mutual one pins the forms together.
    np.testing.assert_allclose(np.asarray(cpu), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(portable), np.asarray(cpu), **OP)


def _attention_inputs(B=3, T=7, D=32):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D), dtype=np.float32)
    keep = np.ones((B, T), bool)
    keep[1, 4:] = False  # row 1 is padded after 4 keys
    keep[2, :] = False  # row 2 has every key masked: the reference gives uniform weights
    return x, np.broadcast_to(keep[:, None, :], (B, T, T)).copy()


def test_full_attention_forms_agree():
    """einsum (all heads), einsum one head at a time, and `jax.nn.dot_product_attention`, with partial rotary,
    key padding and a row whose keys are all masked."""
    x, allowed = _attention_inputs()
    attn = lambda tuning: ClvpSelfAttention(32, 4, True, tuning=tuning)  # noqa: E731
    variables = attn(CPU).init(jax.random.key(1), x)
    rotary = rotary_tables(8, x.shape[1])  # E = 8 of K = 8: rotary on the whole head
    forms = {**FORMS, "per_head": dataclasses.replace(CPU, per_head_above_bytes=0)}
    outs = {
        name: jax.jit(lambda v, x, a, t=t: attn(t).apply(v, x, allowed=a, rotary=rotary)[0])(variables, x, allowed)
        for name, t in forms.items()
    }
    for name in ("portable", "per_head"):
        np.testing.assert_allclose(np.asarray(outs[name]), np.asarray(outs["cpu"]), **BLOCK, err_msg=name)
    # Row 2 attends uniformly to every key: each of its outputs is the same (the mean value projected).
    np.testing.assert_allclose(np.asarray(outs["portable"][2]), np.asarray(outs["portable"][2, :1]).repeat(7, 0), **OP)


def test_cached_decode_attention_forms_agree():
    """A 5-token prefill into an 8-slot cache, then two single-token steps; same cache and outputs per form."""
    rng = np.random.default_rng(2)
    B, D, H, S = 2, 32, 4, 8
    x = rng.standard_normal((B, 7, D), dtype=np.float32)
    attn = lambda tuning: ClvpSelfAttention(32, H, False, tuning=tuning)  # noqa: E731
    variables = attn(CPU).init(jax.random.key(2), x)
    slots = np.arange(S)
    results = {}
    for name, tuning in FORMS.items():
        step = jax.jit(lambda v, h, a, c, i, t=tuning: attn(t).apply(v, h, allowed=a, kv_cache=c, cache_index=i))
        cache = (jnp.zeros((B, H, D // H, S)), jnp.zeros((B, H, S, D // H)))
        outs = []
        for start, stop in ((0, 5), (5, 6), (6, 7)):
            allowed = np.broadcast_to(slots[None, :] <= np.arange(start, stop)[:, None], (B, stop - start, S))
            out, cache = step(variables, x[:, start:stop], allowed, cache, jnp.int32(start))
            outs.append(np.asarray(out))
        results[name] = (np.concatenate(outs, axis=1), cache)
    np.testing.assert_allclose(results["portable"][0], results["cpu"][0], **BLOCK)
    for got, want in zip(results["portable"][1], results["cpu"][1], strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **OP)  # keys/values: one projection each


def test_shared_prefix_reads_agree():
    """Blocked (online softmax over filled blocks of 4) and dense (all 12 own slots, masked) reads, at own
    slots 0, 3, 4 and 9 (inside the first block, at its end, the next block's start, a later block), checked
    against one softmax over [the row's prompt, its filled own slots] in float64."""
    rng = np.random.default_rng(3)
    G, R, H, K, L, M = 2, 3, 2, 8, 5, 12
    group = np.array([1, 0, 1], np.int32)
    allowed = np.ones((G, L), bool)
    allowed[1, :2] = False  # prompt 1 is left-padded
    kv = SplitKV(
        prefix_keys=jnp.asarray(rng.standard_normal((G, H, K, L), np.float32)),
        prefix_values=jnp.asarray(rng.standard_normal((G, H, L, K), np.float32)),
        prefix_allowed=jnp.asarray(allowed[group]),
        group=jnp.asarray(group),
        keys=jnp.asarray(rng.standard_normal((R, H, K, M), np.float32)),
        values=jnp.asarray(rng.standard_normal((R, H, M, K), np.float32)),
        block=4,
    )
    q, k, v = (rng.standard_normal((R, H, K), np.float32) for _ in range(3))
    run = jax.jit(split_cache_attention, static_argnums=5)
    for index in (0, 3, 4, 9):
        blocked, cache_b = run(q, k, v, kv, jnp.int32(index), "blocked")
        dense, cache_d = run(q, k, v, kv, jnp.int32(index), "dense")
        np.testing.assert_array_equal(np.asarray(cache_d.keys), np.asarray(cache_b.keys))  # the same write
        own_k = np.asarray(cache_b.keys, np.float64)[..., : index + 1]  # [R, H, K, index + 1]
        own_v = np.asarray(cache_b.values, np.float64)[:, :, : index + 1]
        want = np.empty((R, H, K))
        for r in range(R):
            g = group[r]
            keys = np.concatenate([np.asarray(kv.prefix_keys, np.float64)[g][..., allowed[g]], own_k[r]], axis=-1)
            vals = np.concatenate([np.asarray(kv.prefix_values, np.float64)[g][:, allowed[g]], own_v[r]], axis=1)
            s = np.einsum("hk,hkn->hn", q[r].astype(np.float64), keys)
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            want[r] = np.einsum("hn,hnk->hk", p / p.sum(axis=-1, keepdims=True), vals)
        # float32 softmax-weighted sums of O(1) values against float64: a few ulps of O(1) (OP).
        np.testing.assert_allclose(np.asarray(blocked), want, **OP, err_msg=f"blocked, index {index}")
        np.testing.assert_allclose(np.asarray(dense), want, **OP, err_msg=f"dense, index {index}")


@pytest.mark.parametrize("tower", ["text_encoder_model", "speech_encoder_model"])
def test_tower_loops_agree(tiny, tower):
    """The towers' layer loops (switch, stacked, unrolled) against the plain unrolled tower, on a padded batch."""
    cfg, params = tiny
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 250, (3, 9))
    mask = (np.arange(9)[None, :] < np.array([9, 6, 2])[:, None]).astype(np.int32)

    def embeds(tuning: Tuning, scan: bool) -> jax.Array:
        model = ClvpModelForConditionalGeneration(cfg, scan_layers=scan, tuning=tuning)
        out = jax.jit(lambda p: model.apply({"params": p}, method=lambda m: getattr(m, tower)(ids, mask)))(params)
        return np.asarray(out.last_hidden_state), np.asarray(out.embeds)

    want = embeds(CPU, scan=False)
    for loop in ("switch", "stacked", "unrolled"):
        for base in FORMS.values():
            got = embeds(dataclasses.replace(base, tower_loop=loop), scan=True)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, **BLOCK, err_msg=f"{loop} over {base.attention}")


def test_decoder_forward_and_cached_decode_agree(tiny):
    """Decoder logits under both tunings: a padded full forward, a prefill + 3 cached steps (`KVCache`), and
    3 steps of candidates sharing the prompts (`SharedPrefixCache`, blocks of 2: the blocked read crosses one)."""
    cfg, params = tiny
    dec = cfg.decoder_config
    rng = np.random.default_rng(5)
    B, L, steps = 2, 6, 3
    prompt = rng.integers(0, dec.vocab_size, (B, L))
    prompt_mask = np.ones((B, L), np.int32)
    prompt_mask[1, :2] = 0  # a left-padded prompt
    new = rng.integers(0, dec.vocab_size, (B, steps))
    group = np.array([0, 1, 1, 0], np.int32)
    own = rng.integers(0, dec.vocab_size, (len(group), steps))

    def logits(tuning: Tuning) -> list[np.ndarray]:
        model = ClvpModelForConditionalGeneration(cfg, tuning=tuning)
        call = jax.jit(
            lambda p, i, pos, a, c: model.apply(
                {"params": p},
                method=lambda m: m.speech_decoder_model(input_ids=i, position_ids=pos, attention_mask=a, cache=c),
            )
        )
        positions = np.broadcast_to(np.arange(L), (B, L))
        out = [np.asarray(call(params, prompt, positions, prompt_mask, None).logits)]
        prefill = call(params, prompt, positions, prompt_mask, init_cache(dec, B, L + steps)).cache
        cache = prefill
        for k in range(steps):
            step = call(params, new[:, k : k + 1], np.full((B, 1), L + k), None, cache)
            out.append(np.asarray(step.logits))
            cache = step.cache
        full = call(params, prompt, positions, prompt_mask, init_cache(dec, B, L)).cache
        shared = share_prefix(full, jnp.asarray(group), steps, block=2)
        for k in range(steps):
            step = call(params, own[:, k : k + 1], np.full((len(group), 1), L + k), None, shared)
            out.append(np.asarray(step.logits))
            shared = step.cache
        return out

    cpu, portable = logits(CPU), logits(PORTABLE)
    for k, (got, want) in enumerate(zip(portable, cpu, strict=True)):
        np.testing.assert_allclose(got, want, **LOGITS, err_msg=f"call {k}")


# ---- the diffusion decoder's channels-last forms ----------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_channels_last_conv_forms_equal_the_channels_first_conv(kernel, stride, padding):
    """`ConvNWC` (im2col and lax.conv) on the parameters of `conv.Conv1d`: the same values, transposed."""
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 16, 11)), jnp.float32)  # [B, W, T], T odd
    reference = Conv1d(24, kernel, stride=stride, padding=padding)
    variables = reference.init(jax.random.key(2), x)
    want = np.asarray(reference.apply(variables, x)).transpose(0, 2, 1)
    for form in ("im2col", "conv"):
        conv = ConvNWC(24, kernel, stride=stride, padding=padding, tuning=dataclasses.replace(CPU, conv_kernel=form))
        got = conv.apply(variables, x.transpose(0, 2, 1))
        np.testing.assert_allclose(np.asarray(got), want, **OP, err_msg=form)  # one product of 48 terms


def test_channels_last_norm_and_attention_equal_the_channels_first_blocks():
    """`GroupNormNWC` and `AttentionBlockNWC` (both kernels, relative bias) on the channels-first blocks' params."""
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 32, 9)), jnp.float32)  # [B, W, T]
    norm = GroupNorm(8)
    nv = norm.init(jax.random.key(3), x)
    nv = jax.tree_util.tree_map(lambda p: p + jnp.linspace(-0.5, 0.5, p.size).reshape(p.shape), nv)  # not 1 / 0
    got = GroupNormNWC(8).apply(nv, x.transpose(0, 2, 1))
    np.testing.assert_allclose(np.asarray(got), np.asarray(norm.apply(nv, x)).transpose(0, 2, 1), **OP)
    block = AttentionBlock(4, relative_position=True)
    variables = block.init(jax.random.key(4), x)
    want = np.asarray(block.apply(variables, x)).transpose(0, 2, 1)
    for name, tuning in FORMS.items():
        got = AttentionBlockNWC(4, relative_position=True, tuning=tuning).apply(variables, x.transpose(0, 2, 1))
        np.testing.assert_allclose(np.asarray(got), want, **BLOCK, err_msg=name)


def test_diffusion_layer_forms_agree():
    """A DiffusionLayer (ResBlock with scale-shift + relative-bias attention: every form-dependent piece of the
    diffusion decoder) under each tuning; the whole model's CPU form is checked against the original in
    tests/test_waveform_diffusion.py. (One layer, not the model: two tiny-model compiles would cost ~20 s of CI.)"""
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.standard_normal((2, 12, 32)), jnp.float32)  # [B, T, W]
    time_emb = jnp.asarray(rng.standard_normal((2, 32)), jnp.float32)
    variables = DiffusionLayer(4, tuning=CPU).init(jax.random.key(7), x, time_emb)
    # out_layers_3 is zero-initialised in the original; any random weights exercise the k3 conv here.
    variables = jax.tree_util.tree_map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), variables)
    outs = {
        name: jax.jit(DiffusionLayer(4, tuning=tuning).apply)(variables, x, time_emb) for name, tuning in FORMS.items()
    }
    assert outs["cpu"].shape == x.shape
    np.testing.assert_allclose(np.asarray(outs["portable"]), np.asarray(outs["cpu"]), **BLOCK)
