"""`CVVP`: Tortoise's contrastive voice-voice scorer (`cvvp.pth`), how similar candidate codes sound to a voice.

Axis letters: see the package legend in `clvp_jax/__init__.py` (here B clips or candidates, C candidates against B clips
in `score_matrix`; F = 80 mel bins, N mel frames at 22.05 kHz, hop 256; T code positions; D model width; K = 64 head
dim, x-transformers' default whatever D is; E = 32 rotary width).

conditioning: mel [B, 80, N] -> Conv1d(80, D/2, k5, s2, p2) -> Conv1d(D/2, D, k3, s2, p1) (no activation;
  517 -> 259 -> 130 frames) -> CollapsingTransformer -> to_conditioning_latent (D x D, no bias)
speech:       codes [B, T] -> Embedding(mel_codes, D) -> CollapsingTransformer -> to_speech_latent
CollapsingTransformer: x-transformers Encoder (depth x [x + Attn(RMSNorm(x)); x + GLU-FF(RMSNorm(x))], rotary on
  the first 32 channels of each head of q, k **and** v, no absolute positions) -> LayerNorm -> 1x1 conv ->
  AttentionBlock (GroupNorm, per-head qkv, no position bias) -> 1x1 conv -> mean over time (the original's
  masked mean with its all-ones eval mask).
score = exp(temperature) * cos(conditioning latent, speech latent).

Where this port differs from the original (same numbers, less work): the original scores (clip, candidate) pairs
row by row, re-encoding a clip once per candidate (`api.tts` repeats each clip's mel C times); here each clip and
each candidate is encoded once and `score_matrix` takes all the cosines in one product. The speech embedding is
kept [B, T, D] instead of the original's channels-first round trip. The mel-input speech encoder (`mel_codes=None`)
and training-time masking are not ported: Tortoise's checkpoint scores codes and is used in eval only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from clvp_jax.layers import Dtype, LayerNorm, Linear, apply_rotary, param, rotary_tables
from clvp_jax.waveform.attention_block import AttentionBlock
from clvp_jax.waveform.conv import Conv1d, norm_groups

HEAD_DIM = 64  # x-transformers' DEFAULT_DIM_HEAD; CollapsingTransformer never overrides it
ROTARY_DIM = max(HEAD_DIM // 2, 32)  # x-transformers: max(dim_head // 2, 32)
RMS_EPS = 1e-8  # x-transformers RMSNorm clamps the scaled norm at 1e-8
_TRAINING_ONLY = ("dropout", "cond_mask_percentage", "speech_mask_percentage")


@dataclasses.dataclass(frozen=True)
class CvvpConfig:
    """The CVVP constructor arguments that shape the eval-mode model.

    Attributes:
      model_dim: width D of both encoders (512).
      transformer_heads: heads H of the encoders (8; head dim is always 64, so the attention is 64 H wide) and
        of the pre-combiner AttentionBlock (head dim D / H there).
      conditioning_enc_depth: layers of the conditioning encoder (8).
      speech_enc_depth: layers of the speech encoder (8).
      mel_channels: mel bins of the conditioning input (80).
      mel_codes: speech-code vocabulary (8192).
    """

    model_dim: int = 512
    transformer_heads: int = 8
    conditioning_enc_depth: int = 8
    speech_enc_depth: int = 8
    mel_channels: int = 80
    mel_codes: int = 8192

    ORIGINAL_KWARGS: ClassVar[tuple[str, ...]] = (
        "model_dim",
        "transformer_heads",
        "dropout",
        "conditioning_enc_depth",
        "cond_mask_percentage",
        "mel_channels",
        "mel_codes",
        "speech_enc_depth",
        "speech_mask_percentage",
        "latent_multiplier",
    )

    def __post_init__(self) -> None:
        problems = [
            f"{f.name} must be a positive integer, got {getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if not isinstance(getattr(self, f.name), int) or getattr(self, f.name) <= 0
        ]
        if not problems:
            if self.model_dim % 2:
                problems.append(f"model_dim must be even (the first conditioning conv has D / 2), got {self.model_dim}")
            if self.model_dim % self.transformer_heads:
                problems.append(
                    f"model_dim {self.model_dim} must split into transformer_heads {self.transformer_heads} "
                    "(the pre-combiner AttentionBlock)"
                )
            try:
                norm_groups(self.model_dim)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("invalid CvvpConfig: " + "; ".join(problems))

    @property
    def inner_dim(self) -> int:
        """Width of q, k, v: 64 per head."""
        return HEAD_DIM * self.transformer_heads

    @classmethod
    def tortoise(cls) -> CvvpConfig:
        """`cvvp.pth` as `api.py` builds it (spec §1)."""
        return cls()

    @classmethod
    def tiny(cls) -> CvvpConfig:
        """The tests' random-weight model (tests/data/tortoise_tiny_waveform/original_config.json "cvvp")."""
        return cls(model_dim=32, transformer_heads=2, conditioning_enc_depth=2, speech_enc_depth=1, mel_codes=64)

    @classmethod
    def from_original(cls, kwargs: Mapping[str, Any]) -> CvvpConfig:
        """From the original `CVVP(**kwargs)` constructor arguments (unknown names are refused).

        Training-only arguments (dropout, mask percentages) are accepted and dropped: eval ignores them. The
        original's `latent_multiplier` other than 1 cannot run (its conditioning projection would not fit), and
        `mel_codes=None` (a mel-input speech encoder) is not what Tortoise ships; both are refused.
        """
        unknown = sorted(set(kwargs) - set(cls.ORIGINAL_KWARGS))
        if unknown:
            raise ValueError(f"unknown CVVP constructor arguments {unknown}; known: {list(cls.ORIGINAL_KWARGS)}")
        if kwargs.get("latent_multiplier", 1) != 1:
            raise ValueError(
                f"latent_multiplier={kwargs['latent_multiplier']}: the original CVVP only runs with 1 "
                "(to_conditioning_latent would receive model_dim features)"
            )
        if "mel_codes" in kwargs and kwargs["mel_codes"] is None:
            raise ValueError(
                "mel_codes=None (a mel-input speech encoder) is not supported: Tortoise's CVVP scores codes"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in kwargs.items() if k in fields})

    def to_original(self) -> dict[str, Any]:
        """The original constructor arguments (eval settings: dropout and masking 0, latent_multiplier 1)."""
        return {
            **dataclasses.asdict(self),
            "dropout": 0,
            "cond_mask_percentage": 0,
            "speech_mask_percentage": 0,
            "latent_multiplier": 1,
        }


class RMSNorm(nn.Module):
    """x-transformers' RMSNorm: x / max(||x|| D^-1/2, 1e-8) * g, in float32 (param `g` [D])."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        g = param(self, "g", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True)) * x.shape[-1] ** -0.5
        return (x32 / jnp.maximum(norm, RMS_EPS) * g.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
    """Self-attention [B, T, D] -> [B, T, D]: to_q / to_k / to_v (D -> 64 H, no bias), rotary on q, k and v,
    softmax(q k^T / 8) in float32, to_out (64 H -> D, bias)."""

    heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        B, T, D = x.shape
        inner = HEAD_DIM * self.heads

        def heads(name: str) -> jax.Array:  # [B, T, H, K], rotated
            y = Linear(inner, use_bias=False, dtype=self.dtype, name=name)(x).reshape(B, T, self.heads, HEAD_DIM)
            return apply_rotary(y, cos, sin)

        q, k, v = heads("to_q"), heads("to_k"), heads("to_v")
        logits = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32) * HEAD_DIM**-0.5  # [B, H, T, T]
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhts,bshk->bthk", weights, v).reshape(B, T, inner)
        return Linear(D, dtype=self.dtype, name="to_out")(out)


class FeedForward(nn.Module):
    """GLU feed-forward (ff_mult 1): net_0 = GLU (proj D -> 2D; value * GELU(gate), exact GELU), net_3 = D -> D."""

    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D = x.shape[-1]
        value, gate = jnp.split(GLUProjection(D, dtype=self.dtype, name="net_0")(x), 2, axis=-1)
        return Linear(D, dtype=self.dtype, name="net_3")(value * jax.nn.gelu(gate, approximate=False))


class GLUProjection(nn.Module):
    """The `proj` Linear of x-transformers' GLU (D -> 2 features); the gating is done by `FeedForward`."""

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Linear(2 * self.features, dtype=self.dtype, name="proj")(x)


class Encoder(nn.Module):
    """x-transformers `Encoder` (pre-norm, residual): entry 2i is attention, 2i + 1 the feed-forward; each entry's
    RMSNorm is `layers_{n}_0_0` (torch `layers.{n}.0.0`), its block `layers_{n}_1`."""

    depth: int
    heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cos, sin = rotary_tables(ROTARY_DIM, x.shape[1])  # [T, E]
        for i in range(self.depth):
            a, f = 2 * i, 2 * i + 1
            x = x + Attention(self.heads, dtype=self.dtype, name=f"layers_{a}_1")(
                RMSNorm(name=f"layers_{a}_0_0")(x), cos, sin
            )
            x = x + FeedForward(dtype=self.dtype, name=f"layers_{f}_1")(RMSNorm(name=f"layers_{f}_0_0")(x))
        return x


class ContinuousTransformer(nn.Module):
    """`ContinuousTransformerWrapper(use_pos_emb=False)`: attn_layers, then the final LayerNorm `norm`."""

    depth: int
    heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Encoder(self.depth, self.heads, dtype=self.dtype, name="attn_layers")(x)
        return LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)


class CollapsingTransformer(nn.Module):
    """[B, T, D] -> [B, D]: transformer, pre_combiner_{0,1,2} (1x1 conv, AttentionBlock, 1x1 conv), time mean."""

    depth: int
    heads: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D = x.shape[-1]
        h = ContinuousTransformer(self.depth, self.heads, dtype=self.dtype, name="transformer")(x)
        h = Conv1d(D, 1, name="pre_combiner_0")(h.transpose(0, 2, 1))  # [B, D, T]
        h = AttentionBlock(self.heads, dtype=self.dtype, name="pre_combiner_1")(h)
        h = Conv1d(D, 1, name="pre_combiner_2")(h)
        return h.astype(jnp.float32).mean(axis=-1).astype(h.dtype)  # all-ones eval mask: the plain mean


class Embedding(nn.Module):
    """torch's nn.Embedding (param `weight` [vocab, D]): ids [B, T] -> [B, T, D]."""

    vocab: int
    features: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(param(self, "weight", nn.initializers.normal(1.0), (self.vocab, self.features)), ids, axis=0)


class ConvFormatEmbedding(nn.Module):
    """The original's `speech_emb` wrapper (`emb`: the Embedding), kept for the key names."""

    vocab: int
    features: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        return Embedding(self.vocab, self.features, name="emb")(ids)


def _l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)  # F.normalize: x / max(||x||, 1e-12)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class CVVP(nn.Module):
    """The CVVP scorer. Methods: `conditioning_latent`, `speech_latent` (raw, un-normalised), `__call__` (the
    original's per-row forward), `score_matrix` (every clip against every candidate).

    Attributes: config; dtype (compute dtype; parameters stay as given, norms and softmax in float32).
    """

    config: CvvpConfig
    dtype: Dtype | None = None

    def setup(self) -> None:
        cfg = self.config
        D = cfg.model_dim
        self.temperature = self.param("temperature", nn.initializers.ones, ())
        self.cond_emb_0 = Conv1d(D // 2, 5, stride=2, padding=2)
        self.cond_emb_1 = Conv1d(D, 3, stride=2, padding=1)
        self.conditioning_transformer = CollapsingTransformer(
            cfg.conditioning_enc_depth, cfg.transformer_heads, dtype=self.dtype
        )
        self.to_conditioning_latent = Linear(D, use_bias=False, dtype=self.dtype)
        self.speech_emb = ConvFormatEmbedding(cfg.mel_codes, D)
        self.speech_transformer = CollapsingTransformer(cfg.speech_enc_depth, cfg.transformer_heads, dtype=self.dtype)
        self.to_speech_latent = Linear(D, use_bias=False, dtype=self.dtype)

    def conditioning_latent(self, mels: jax.Array) -> jax.Array:
        """mels [B, 80, N] (the AR front end's normalised log-mels, as `format_conditioning` makes them) ->
        [B, D] float32, before L2 normalisation."""
        x = mels if self.dtype is None else mels.astype(self.dtype)
        h = self.cond_emb_1(self.cond_emb_0(x))  # [B, D, ceil(N / 4)]
        return self.to_conditioning_latent(self.conditioning_transformer(h.transpose(0, 2, 1))).astype(jnp.float32)

    def speech_latent(self, codes: jax.Array) -> jax.Array:
        """codes [B, T] int (0 <= code < mel_codes) -> [B, D] float32, before L2 normalisation."""
        h = self.speech_emb(codes)  # [B, T, D]
        h = h if self.dtype is None else h.astype(self.dtype)
        return self.to_speech_latent(self.speech_transformer(h)).astype(jnp.float32)

    def __call__(self, mels: jax.Array, codes: jax.Array) -> jax.Array:
        """The original `forward(mel_cond, mel_input)`: row b's clip against row b's codes -> [B] scores."""
        c = _l2_normalize(self.conditioning_latent(mels))
        s = _l2_normalize(self.speech_latent(codes))
        return jnp.einsum("bd,bd->b", c, s) * jnp.exp(self.temperature.astype(jnp.float32))

    def score_matrix(self, mels: jax.Array, codes: jax.Array) -> jax.Array:
        """Every clip against every candidate: mels [B, 80, N], codes [C, T] -> [B, C] scores (each encoded once)."""
        c = _l2_normalize(self.conditioning_latent(mels))
        s = _l2_normalize(self.speech_latent(codes))
        return jnp.einsum("bd,cd->bc", c, s) * jnp.exp(self.temperature.astype(jnp.float32))


@functools.lru_cache(maxsize=8)
def _score_matrix_fn(model: CVVP):
    return jax.jit(lambda p, m, c: model.apply({"params": p}, m, c, method=CVVP.score_matrix))


def cvvp_score_matrix(model: CVVP, params: Mapping, mels: jax.Array, codes: jax.Array) -> jax.Array:
    """Jitted `CVVP.score_matrix` (compiled once per model and shapes): mels [B, 80, N], codes [C, T] -> [B, C].

    Raises:
        ValueError: mels or codes of the wrong rank or width, or codes outside [0, mel_codes) (the original's
            embedding raises; inside the compiled program a lookup would silently clamp).
    """
    cfg = model.config
    mels, codes = jnp.asarray(mels), jnp.asarray(codes)
    if mels.ndim != 3 or mels.shape[1] != cfg.mel_channels or mels.shape[0] == 0:
        raise ValueError(f"CVVP: mels must be [clips, {cfg.mel_channels}, frames], got shape {mels.shape}")
    if codes.ndim != 2 or codes.size == 0 or not jnp.issubdtype(codes.dtype, jnp.integer):
        raise ValueError(f"CVVP: codes must be integer [candidates, length], got {codes.dtype} {codes.shape}")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= cfg.mel_codes:
        raise ValueError(
            f"CVVP: codes range over [{low}, {high}] but the model has {cfg.mel_codes} codes; pass speech codes "
            "after `fix_autoregressive_output` (no start / stop tokens)"
        )
    return _score_matrix_fn(model)(params, mels, codes)


def cvvp_scores(model: CVVP, params: Mapping, mels: jax.Array, codes: jax.Array) -> jax.Array:
    """CVVP scores of C candidates for one voice as `api.tts` mixes them: the mean over the B clips of each
    clip's score. mels [B, 80, N], codes [C, T] -> [C] float32."""
    return cvvp_score_matrix(model, params, mels, codes).mean(axis=0)
