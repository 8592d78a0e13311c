"""Training losses against the PyTorch reference: loss values and the gradient of every parameter (fp32).

The reference side is built from transformers' own modules on the tiny random models of `reference_models`:
  * contrastive: `get_text_features(...).embeds`, `get_speech_features(speech_ids=...)`, L2-normalise,
    exp(logit_scale) * t s^T, symmetric cross-entropy (spec §9.2);
  * decoder LM: `conditioning_encoder(...)` gives the prefix C; the decoder gets
    `inputs_embeds = concat(C - E_pos[0..L-1], E_tok[mel ids])` with `position_ids = [0..L-1, 0..M+1]` (it always
    adds E_pos[position_ids], so the prefix arrives as C exactly) and a key-padding mask; masked cross-entropy.
Torch gradients (keyed like the state dict) are mapped through `state_dict_to_params`, i.e. the same rule table
as the weights, so a transposed or misrouted gradient cannot pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from reference_models import ours_config

from clvp_jax.checkpoint import state_dict_to_params
from clvp_jax.conditioning import add_bos_eos
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.training.losses import clvp_contrastive_loss, decoder_lm_loss, mel_inputs

torch = pytest.importorskip("torch")

B, T, M, N = 3, 7, 9, 11  # batch, text tokens, speech codes, mel frames (odd sizes on purpose)

# Loss values: one fp32 reduction over a few hundred terms in a different order -> a few ulp of ~1.
LOSS_TOL = dict(rtol=1e-6, atol=2e-6)
# Gradients: per leaf, |ours - ref| <= 1e-4 * |ref| + 2e-5 * max|ref over the whole tree|. The relative term
# covers ordinary fp32 differences in blocks of a few layers (measured: <= 4e-6 of the tree maximum); the absolute
# term, scaled to the tree, covers leaves whose true gradient is zero, e.g. the attention key bias (softmax is
# invariant to it) where both sides hold only rounding noise of ~1e-8.
GRAD_RTOL, GRAD_ATOL_FRACTION = 1e-4, 2e-5


def batch(name: str):
    cfg = ours_config(name)
    rng = np.random.default_rng(7)
    text_mask = np.ones((B, T), np.int64)
    text_mask[1, 5:] = 0
    text_mask[2, 3:] = 0
    # Right-padded with id 0: the reference detects text padding by id 0 (spec §6.1), we by the mask.
    text = rng.integers(1, cfg.text_config.vocab_size - 2, (B, T)) * text_mask
    speech_mask = np.ones((B, M), np.int64)
    speech_mask[0, 6:] = 0
    speech_mask[2, 2:] = 0
    code_vocab = min(cfg.speech_config.vocab_size, cfg.decoder_config.vocab_size - 2)
    speech = rng.integers(0, code_vocab, (B, M)) * speech_mask
    feats = rng.standard_normal((B, cfg.decoder_config.feature_size, N)).astype(np.float32)
    return cfg, text, text_mask, speech, speech_mask, feats


def torch_grads(hf) -> dict[str, np.ndarray]:
    """Parameter gradients keyed like the state dict; parameters the loss does not reach get zeros."""
    return {
        n: (p.grad.numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
        for n, p in hf.named_parameters()
    }


def assert_grads_close(ours, ref) -> None:
    ours, ref = flatten_dict(jax.device_get(ours)), flatten_dict(ref)
    assert ours.keys() == ref.keys()
    scale = max(float(np.abs(v).max()) for v in ref.values())
    assert scale > 0
    for path in ref:
        np.testing.assert_allclose(
            ours[path], ref[path], rtol=GRAD_RTOL, atol=GRAD_ATOL_FRACTION * scale, err_msg="/".join(path)
        )


@pytest.mark.parametrize("name", ["full_rotary", "partial_rotary", "no_rotary", "odd_rotary"])
def test_contrastive_loss_and_grads_match_reference(name, reference_of):
    hf, _, _, params = reference_of(name)
    cfg, text, text_mask, speech, speech_mask, _ = batch(name)
    hf.zero_grad()
    t = hf.get_text_features(input_ids=torch.tensor(text), attention_mask=torch.tensor(text_mask)).embeds
    s = hf.get_speech_features(speech_ids=torch.tensor(speech), attention_mask=torch.tensor(speech_mask))
    t, s = t / t.norm(dim=-1, keepdim=True), s / s.norm(dim=-1, keepdim=True)
    logits = hf.logit_scale.exp() * t @ s.T
    labels = torch.arange(B)
    ce = torch.nn.functional.cross_entropy
    ref_loss = 0.5 * (ce(logits, labels) + ce(logits.T, labels))
    ref_loss.backward()
    ref_grads = state_dict_to_params(torch_grads(hf), cfg)

    # masked_pooling=False: the reference pools over pads too (spec §14.8).
    model = ClvpModelForConditionalGeneration(cfg, masked_pooling=False)
    fn = jax.jit(
        jax.value_and_grad(
            lambda p: clvp_contrastive_loss(model, p, text, text_mask, speech, speech_mask), has_aux=True
        )
    )
    (loss, metrics), grads = fn(params)
    np.testing.assert_allclose(float(loss), ref_loss.item(), **LOSS_TOL)
    assert float(metrics["loss"]) == float(loss)
    assert_grads_close(grads, ref_grads)
    # The loss reaches both towers and the scale, and nothing of the decoder side.
    flat = flatten_dict(jax.device_get(grads))
    assert np.abs(flat[("logit_scale",)]).max() > 0
    assert all(
        np.abs(v).max() == 0 for p, v in flat.items() if p[0] in ("speech_decoder_model", "conditioning_encoder")
    )


@pytest.mark.parametrize("name", ["partial_rotary", "odd_rotary"])
def test_decoder_lm_loss_and_grads_match_reference(name, reference_of):
    hf, _, _, params = reference_of(name)
    cfg, text, text_mask, speech, speech_mask, feats = batch(name)
    dec, text_cfg = cfg.decoder_config, cfg.text_config
    ids, keep, targets_mask = map(np.asarray, mel_inputs(speech, speech_mask, dec.bos_token_id, dec.eos_token_id))
    _, prefix_mask = add_bos_eos(
        jnp.asarray(text), jnp.asarray(text_mask), text_cfg.bos_token_id, text_cfg.eos_token_id
    )
    prefix_keep = np.concatenate([np.ones((B, 1), np.int64), np.asarray(prefix_mask)], axis=1)

    hf.zero_grad()
    cond = hf.conditioning_encoder(torch.tensor(feats), torch.tensor(text), attention_mask=torch.tensor(text_mask))
    L = cond.shape[1]
    decoder = hf.speech_decoder_model.model.decoder
    embeds = torch.cat(
        [cond - decoder.position_embeds_layer.weight[:L][None], decoder.input_embeds_layer(torch.tensor(ids).long())], 1
    )
    positions = torch.cat([torch.arange(L), torch.arange(M + 2)])[None].repeat(B, 1)
    mask = torch.tensor(np.concatenate([prefix_keep, keep], axis=1))
    logits = hf.speech_decoder_model(inputs_embeds=embeds, position_ids=positions, attention_mask=mask).logits
    logits = logits[:, L:-1]  # the M+1 mel slots that predict [c_0 .. c_{m-1}, stop]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.tensor(ids[:, 1:]).long().reshape(-1), reduction="none"
    )
    w = torch.tensor(targets_mask, dtype=torch.float32).reshape(-1)
    ref_loss = (ce * w).sum() / w.sum()
    ref_loss.backward()
    ref_grads = state_dict_to_params(torch_grads(hf), cfg)

    model = ClvpModelForConditionalGeneration(cfg, masked_pooling=False)
    fn = jax.jit(
        jax.value_and_grad(
            lambda p: decoder_lm_loss(model, p, feats, text, text_mask, speech, speech_mask), has_aux=True
        )
    )
    (loss, metrics), grads = fn(params)
    np.testing.assert_allclose(float(loss), ref_loss.item(), **LOSS_TOL)
    assert float(metrics["tokens"]) == targets_mask.sum() == (speech_mask.sum() + B)
    assert_grads_close(grads, ref_grads)
    flat = flatten_dict(jax.device_get(grads))
    assert all(np.abs(v).max() == 0 for p, v in flat.items() if p[0] in ("text_encoder_model", "speech_encoder_model"))


def test_mel_inputs_layout():
    """[start, c.., stop, stop pads]; code k at slot k+1; targets up to and including the first stop."""
    codes = np.array([[5, 6, 7], [8, 0, 0]])
    ids, keep, target = mel_inputs(codes, np.array([[1, 1, 1], [1, 0, 0]]), start=100, stop=101)
    np.testing.assert_array_equal(ids, [[100, 5, 6, 7, 101], [100, 8, 101, 101, 101]])
    np.testing.assert_array_equal(keep, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(target, [[1, 1, 1, 1], [1, 1, 0, 0]])
