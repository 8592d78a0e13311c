"""The original Tortoise for bench_tts.py: its models folder, a `TextToSpeech` built from it, and the shims that let
tortoise-tts 3.0.0 (written for transformers 4.31) import and run as it does there under this venv's transformers 5.

  prepare(size, folder)          the Tortoise models folder (seeded random weights, original formats) + voice.npz
  original_tts(size, models)     tortoise.api.TextToSpeech with its models loaded from that folder
  restore_kv_cache()             the original's KV cache, as under transformers 4.31 (returns the undo)
  check_cache(tts, latents, ..)  the AR candidates with the cache as transformers 5 leaves it and restored
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from collections.abc import Callable

from waveform_common import AR_KWARGS, CLVP_KWARGS, DIFFUSION_KWARGS, VOCODER_KWARGS
from waveform_reference import seeded_state, shim


def _stand_in(name: str, why: str, names: tuple[str, ...] = ()) -> None:
    """Puts a module `name` into sys.modules, unless the real one imports: `names` (what the original imports from
    it) are functions that raise, every other attribute raises on access."""
    try:
        __import__(name)
    except ImportError:
        module = types.ModuleType(name)

        def missing(attr: str):
            raise AttributeError(f"{name}.{attr}: a stand-in of this benchmark ({why}); install {name} to use it")

        def unusable(*args, **kwargs):
            raise RuntimeError(f"{name}: a stand-in of this benchmark ({why}); install {name} to use it")

        module.__getattr__ = missing
        for attr in names:
            setattr(module, attr, unusable)
        sys.modules[name] = module


def tortoise_shim() -> None:
    """What tortoise-tts 3.0.0 needs to import and run with this venv's transformers 5:
    - bench_waveform's torchaudio stand-in, installed after transformers has looked for torchaudio (it calls
      find_spec on it, which a module without a spec breaks): transformers then knows torchaudio is absent;
    - `transformers.utils.model_parallel_utils` (removed in transformers 5; the original imports two helpers
      that only its unused `parallelize` calls): a stand-in whose helpers fail loudly if called;
    - `transformers.LogitsWarper` (merged into `LogitsProcessor` in transformers 5; the original subclasses it
      for typical sampling, which tts leaves off): an alias of `LogitsProcessor`;
    - `einops` (the bench extra's, when it is not installed): waveform_reference's stand-in, torch's own
      `functorch.einops.rearrange`; `repeat` is used only by parts these models leave off (memory tokens, a ViT).
    - `rotary_embedding_torch` (imported by tortoise.models.transformer, whose Transformer CLVP uses only with
      use_xformers=False; api.py builds it with True) and `progressbar` (api.py's download progress): stand-ins
      whose names fail loudly if used.
    `_patch_generation` (and `restore_kv_cache`) add what its GPT-2 inference model needs once imported."""
    import transformers.utils
    import transformers.utils.import_utils  # noqa: F401

    shim()  # torchaudio (and einops, if missing) stand-ins
    name = "transformers.utils.model_parallel_utils"
    if name not in sys.modules:
        module = types.ModuleType(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{name} is a stand-in of this benchmark: model parallelism is not available")

        module.get_device_map = module.assert_device_map = unavailable
        sys.modules[name] = module
        transformers.utils.model_parallel_utils = module
    # (importing GPT-2 first: that import replaces the lazy `transformers` module in sys.modules)
    from transformers import GPT2PreTrainedModel, LogitsProcessor  # noqa: F401

    top = sys.modules["transformers"]
    if "LogitsWarper" not in vars(top):
        try:
            from transformers import LogitsWarper  # noqa: F401
        except ImportError:
            top.LogitsWarper = LogitsProcessor
    _stand_in(
        "rotary_embedding_torch",
        "CLVP runs with use_xformers=True, as api.py builds it",
        ("RotaryEmbedding", "broadcat"),
    )
    _stand_in("progressbar", "only api.py's model download uses it")


def _patch_generation() -> None:
    """transformers >= 4.50 no longer gives every PreTrainedModel `generate`: the original's GPT2InferenceModel
    (written for 4.x, where it had it) gets `GenerationMixin` back as a base, nothing else changed."""
    from tortoise.models.autoregressive import GPT2InferenceModel
    from transformers import GenerationMixin

    if not issubclass(GPT2InferenceModel, GenerationMixin):
        GPT2InferenceModel.__bases__ = (*GPT2InferenceModel.__bases__, GenerationMixin)


def restore_kv_cache() -> Callable[[], None]:
    """Give the original's GPT2InferenceModel its KV cache back, as transformers 4.31 gives it. Returns the undo.

    transformers 5's `generate` makes a `DynamicCache` and hands it to `prepare_inputs_for_generation` as `cache=`
    (4.x: as `past_key_values=`: None before the first step, the filled tuple of the previous steps after). The
    original's `prepare_inputs_for_generation(input_ids, past_key_values=None, **kwargs)` therefore always sees
    None: it never cuts the input to the last token nor passes a cache on, so every step re-runs the whole sequence
    (prefix + every code so far) through all layers. This wrapper hands it the cache under its own name, only once
    the cache holds tokens (as 4.x's None-then-tuple; an empty `DynamicCache` built from the config is already
    truthy, which would cut the very first input), and passes the cache to `forward` to fill (`forward` forwards
    `past_key_values` to GPT2Model, which takes it as its deprecated name for `cache`). transformers 5 also drops an
    all-ones attention mask (None), which the original's one-token step reads for its position (the mask's width =
    the sequence so far); 4.31 passed it (all ones: the original's pad token is its eos, so none is inferred), and
    so does this wrapper. With `kv_cache=False` the original discards the cache itself, as before. Nothing else
    changes."""
    import torch
    from tortoise.models.autoregressive import GPT2InferenceModel

    original = GPT2InferenceModel.prepare_inputs_for_generation

    def prepare(self, input_ids, past_key_values=None, **kwargs):
        cache = kwargs.pop("cache", None) if past_key_values is None else past_key_values
        filled = cache if cache is not None and cache.get_seq_length() > 0 else None
        if kwargs.get("attention_mask") is None:  # 4.31's mask: all ones (its pad token is its eos), the full width
            kwargs["attention_mask"] = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        inputs = original(self, input_ids, past_key_values=filled, **kwargs)
        if self.kv_cache and cache is not None:
            inputs["past_key_values"] = cache
        return inputs

    GPT2InferenceModel.prepare_inputs_for_generation = prepare
    return lambda: setattr(GPT2InferenceModel, "prepare_inputs_for_generation", original)


def _cached_positions(embedding):
    """Make `embedding` (the original's mel LearnedPositionEmbeddings) place a whole sequence [start, c_0, c_1, ..]
    at positions [0, 2, 3, ..], as its KV-cache path places them one step at a time (`get_fixed_embedding(mask
    width - prefix)`: c_k at k + 2; without the cache, c_k sits at k + 1). Returns the undo."""
    import torch

    def forward(x):
        sl = x.shape[1]
        positions = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(2, sl + 1)]) if sl > 1 else None
        return embedding.emb(torch.arange(0, sl) if positions is None else positions.to(x.device))

    embedding.forward = forward
    return lambda: delattr(embedding, "forward")


def check_cache(tts, auto_latent, text: str, *, codes: int, seed: int, log) -> dict:
    """The original's AR candidates (one batch, sampled as `tts` samples them, `codes` forced codes each) three times
    from one seed: with the cache as transformers 5 leaves it (unused: each step re-runs the whole sequence), the
    same with the positions of the original's cached path (`_cached_positions`), then with the cache restored
    (`restore_kv_cache`, left installed).

    The cached path is not the uncached one: it puts code c_k at mel position k + 2 instead of k + 1 (the original's
    own off-by-one, as under transformers 4.31), so the first run's codes differ from the restored run's after the
    first step; the second run must draw the restored run's codes (up to float rounding, which may flip a draw and
    so the rest of its row): that is the check that the restored cache computes what the full sequence does.
    Returns per run the seconds, the codes' shape and `log`'s summary (a `ForwardLog` installed on `tts`), and
    per run the fraction of codes (and of first codes) equal to the restored run's."""
    import torch
    import torch.nn.functional as F

    tokens = F.pad(torch.IntTensor(tts.tokenizer.encode(text)).unsqueeze(0), (0, 1))  # as api.tts builds them
    out, drawn = {}, {}
    for name in ("as-is", "as-is, cached positions", "restored"):
        undo = _cached_positions(tts.autoregressive.inference_model.text_pos_embedding) if "positions" in name else None
        if name == "restored":
            restore_kv_cache()
        torch.manual_seed(seed)
        log.reset()
        t0 = time.perf_counter()
        with torch.no_grad():
            gen = tts.autoregressive.inference_speech(
                auto_latent,
                tokens,
                do_sample=True,
                top_p=0.8,
                temperature=0.8,
                num_return_sequences=tts.autoregressive_batch_size,
                length_penalty=1.0,
                repetition_penalty=2.0,
                max_generate_length=codes,
                min_new_tokens=codes,
            )
        out[name] = dict(s=time.perf_counter() - t0, shape=list(gen.shape), forward=log.summary())
        drawn[name] = gen
        if undo is not None:
            undo()
    ref = drawn["restored"]
    for name, gen in drawn.items():
        same_shape = gen.shape == ref.shape
        out[name]["agree"] = float((gen == ref).float().mean()) if same_shape else 0.0
        out[name]["first_agree"] = float((gen[:, 0] == ref[:, 0]).float().mean()) if same_shape else 0.0
    return out


def _diffusion_kwargs(size: str) -> dict:
    # the diffusion decoder reads AR latents of the AR model's width
    return DIFFUSION_KWARGS[size] | {"in_latent_channels": AR_KWARGS[size]["model_dim"]}


def prepare(size: str, folder: str) -> dict:
    """Writes the Tortoise models folder (random weights, original formats) and the voice latents."""
    import numpy as np
    import torch

    tortoise_shim()
    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP
    from tortoise.models.diffusion_decoder import DiffusionTts
    from tortoise.models.vocoder import UnivNetGenerator

    models = os.path.join(folder, "models")
    os.makedirs(models)
    builds = {
        "autoregressive.pth": (lambda: UnifiedVoice(**AR_KWARGS[size]), 0),
        "clvp2.pth": (lambda: CLVP(**CLVP_KWARGS[size]), 1),
        "diffusion_decoder.pth": (lambda: DiffusionTts(**_diffusion_kwargs(size)), 2),
        "vocoder.pth": (lambda: UnivNetGenerator(**VOCODER_KWARGS[size]), 3),
    }
    for name, (build, seed) in builds.items():
        state = {k: torch.from_numpy(v) for k, v in seeded_state(build, seed).items()}
        torch.save({"model_g": state} if name == "vocoder.pth" else state, os.path.join(models, name))
        del state
    config = {
        "autoregressive": AR_KWARGS[size],
        "clvp": CLVP_KWARGS[size],
        "diffusion": _diffusion_kwargs(size),
        "vocoder": VOCODER_KWARGS[size],
    }
    with open(os.path.join(models, "original_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    rng = np.random.default_rng(0)
    np.savez(
        os.path.join(folder, "voice.npz"),
        auto=(0.1 * rng.standard_normal((1, AR_KWARGS[size]["model_dim"]))).astype(np.float32),
        diffusion=(0.1 * rng.standard_normal((1, 2 * DIFFUSION_KWARGS[size]["model_channels"]))).astype(np.float32),
    )
    return {}


def original_tts(size: str, models: str, batch: int = 16):
    """tortoise.api.TextToSpeech with the attributes its __init__ sets, models loaded from `models` as it loads
    them (its __init__ itself downloads the real weights and hard-codes the real sizes); `batch` candidates are
    sampled per `generate` call (api.py's autoregressive_batch_size)."""
    import torch

    tortoise_shim()
    from tortoise.api import TextToSpeech
    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP
    from tortoise.models.diffusion_decoder import DiffusionTts
    from tortoise.models.vocoder import UnivNetGenerator
    from tortoise.utils.tokenizer import VoiceBpeTokenizer

    _patch_generation()

    load = lambda name: torch.load(os.path.join(models, name), weights_only=True)  # noqa: E731
    tts = TextToSpeech.__new__(TextToSpeech)
    tts.models_dir = models
    tts.autoregressive_batch_size = batch
    tts.enable_redaction = False
    tts.device = torch.device("cpu")
    tts.tokenizer = VoiceBpeTokenizer()
    tts.half = False
    tts.autoregressive = UnifiedVoice(**AR_KWARGS[size]).cpu().eval()
    tts.autoregressive.load_state_dict(load("autoregressive.pth"), strict=False)
    tts.autoregressive.post_init_gpt2_config(use_deepspeed=False, kv_cache=True, half=False)
    tts.diffusion = DiffusionTts(**_diffusion_kwargs(size)).cpu().eval()
    tts.diffusion.load_state_dict(load("diffusion_decoder.pth"))
    tts.clvp = CLVP(**CLVP_KWARGS[size]).cpu().eval()
    tts.clvp.load_state_dict(load("clvp2.pth"))
    tts.cvvp = None
    tts.vocoder = UnivNetGenerator(**VOCODER_KWARGS[size]).cpu()
    tts.vocoder.load_state_dict(load("vocoder.pth")["model_g"])
    tts.vocoder.eval(inference=True)
    tts.rlg_auto = tts.rlg_diffusion = None
    return tts
