"""Tiny random reference (transformers) models and their clvp-jax twins, shared by the parity tests.

Configurations (together they cover the space the issue asks for):
  A "full_rotary":  rotary with head_dim == rotary width, no q/k/v bias, mean pooling, gelu / gelu_new,
                    n_inner unset, 2 mel blocks (16 groups), default eps.
  B "partial_rotary": head_dim 64 > rotary 32, q/k/v bias on, "last"/"first" pooling, gelu_new GLU, eps 1e-6,
                    decoder n_inner 40, gelu, 3 heads, 3 mel blocks, no decoder attention bias.
  C "no_rotary":    rotary off, head_dim 8, "cls_index"/"mean" pooling, 0-layer text encoder, 1 decoder layer,
                    1 mel block, decoder width 24 (8 groups).
  D "odd_rotary":   projection 70 -> r0 = 35 rounded up to a 36-wide rotary on 40-wide heads; speech 2 heads of
                    36 with r 32; decoder width 16 (8 groups), 4 heads of 4, eps 1e-4, 2 mel blocks.
Weights are redrawn at O(1) scale (embeddings N(0,1), matrices N(0, 1/fan_in), biases N(0, 0.5^2), norm gains
U(0.5, 1.5)), so that a dropped bias, norm or block cannot hide.
"""

from __future__ import annotations

import functools

import numpy as np

from clvp_jax.config import ClvpConfig

CONFIGS: dict[str, dict] = {
    "full_rotary": dict(
        text_config=dict(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=48,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=1,
        ),
        speech_config=dict(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=40,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=1,
        ),
        decoder_config=dict(
            vocab_size=258,
            bos_token_id=256,
            eos_token_id=257,
            max_position_embeddings=48,
            max_text_tokens=24,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_mel_attn_blocks=2,
        ),
    ),
    "partial_rotary": dict(
        text_config=dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=56,
            projection_dim=48,
            num_hidden_layers=2,
            num_attention_heads=1,
            use_attention_bias=True,
            summary_type="last",
            hidden_act="gelu_new",
            layer_norm_eps=1e-6,
        ),
        speech_config=dict(
            vocab_size=300,
            hidden_size=128,
            intermediate_size=40,
            projection_dim=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            use_attention_bias=True,
            summary_type="first",
            layer_norm_eps=1e-6,
        ),
        decoder_config=dict(
            vocab_size=300,
            bos_token_id=298,
            eos_token_id=299,
            max_position_embeddings=40,
            max_text_tokens=20,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            n_inner=40,
            activation_function="gelu",
            layer_norm_epsilon=1e-6,
            num_mel_attn_blocks=3,
            use_attention_bias=False,
        ),
    ),
    "no_rotary": dict(
        text_config=dict(
            vocab_size=256,
            hidden_size=24,
            intermediate_size=20,
            projection_dim=16,
            num_hidden_layers=0,
            num_attention_heads=3,
            use_rotary_embedding=False,
            summary_type="cls_index",
        ),
        speech_config=dict(
            vocab_size=256,
            hidden_size=16,
            intermediate_size=24,
            projection_dim=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            use_rotary_embedding=False,
        ),
        decoder_config=dict(
            vocab_size=256,
            bos_token_id=254,
            eos_token_id=255,
            max_position_embeddings=40,
            max_text_tokens=20,
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_mel_attn_blocks=1,
        ),
    ),
    "odd_rotary": dict(
        text_config=dict(
            vocab_size=260,
            hidden_size=40,
            intermediate_size=32,
            projection_dim=70,
            num_hidden_layers=1,
            num_attention_heads=1,
            bos_token_id=259,
            eos_token_id=1,
        ),
        speech_config=dict(
            vocab_size=260,
            hidden_size=72,
            intermediate_size=32,
            projection_dim=70,
            num_hidden_layers=2,
            num_attention_heads=2,
            summary_type="last",
        ),
        decoder_config=dict(
            vocab_size=258,
            bos_token_id=256,
            eos_token_id=257,
            max_position_embeddings=44,
            max_text_tokens=22,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            layer_norm_epsilon=1e-4,
            num_mel_attn_blocks=2,
            feature_size=20,
            decoder_fixing_codes=(5, 6),
        ),
    ),
}


def ours_config(name: str) -> ClvpConfig:
    return ClvpConfig.from_dict(CONFIGS[name])


def redraw_o1(model, seed: int) -> None:
    """Redraw every parameter of a torch module at O(1) scale (see module docstring)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(1.3)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "embed" in name or "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[0] if ".mlp.c_" in name else int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


@functools.cache
def reference_model(name: str, seed: int = 0):
    """(transformers model in eval mode, numpy state dict) for config `name`, cached per session."""
    import torch
    from transformers import ClvpConfig as HFConfig
    from transformers import ClvpModelForConditionalGeneration as HFModel

    torch.manual_seed(seed)
    hf = HFModel(HFConfig.from_dict(dict(CONFIGS[name]))).eval()
    redraw_o1(hf, seed)
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    return hf, state
