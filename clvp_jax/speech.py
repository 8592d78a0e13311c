"""Text + voice -> 24 kHz speech: Tortoise's whole `tts_with_preset`, as keyword-only library functions.

  synthesize(text=..., model=..., waveform_models=..., voice=...)   the pipeline below, every chunk of the text
  voice_conditioning(model=..., voice=...)                           clips / latents file -> both voice latents
                                                                     (`clvp_jax.speech_voice`, re-exported here)
  render_waveform(waveform_models, latents, diffusion_latent, ...)   AR latents -> diffusion -> vocoder (one sample)
  plan_speech(...), speak_chunks(plan, ...)                           the same, one chunk at a time (long text)
The results (`SpeechResult`, `SpeechChunk`, `SpeechCandidate`) live in `clvp_jax.speech_results`.

Per text chunk (`pipeline.plan_ranking` splits long text; `speak_chunks` renders a group of chunks at a time):
  1. candidates: sampled by the AR decoder and ranked by CLVP (`pipeline.rank_speech`); with a CVVP model and
     `cvvp_amount` > 0 the score becomes cvvp_amount * CVVP + (1 - cvvp_amount) * CLVP (CVVP alone at 1), where
     CVVP is the mean over the voice's clips, as `api.tts` mixes them;
  2. the k best, padded to 500 codes and fixed, give their AR latents (`waveform.ar_latents`), each cut before
     the 9th consecutive calm code;
  3. per sample: `timestep_independent` once, the sampler (preset steps, guidance, temperature; "ddpm", "ddim"
     or "dpm++2m"), L = m * 4 * 24000 // 22050 frames; de-normalised; UnivNet -> samples in [-1, 1] at 24 kHz.
The joined waveform of a rank is its chunks' waveforms one after another (as Tortoise's read.py joins them).

Randomness: the AR draws of chunk i, candidate c come from fold_in(fold_in(key(seed), i), c) (`rank_speech`); the
waveform draws of that candidate from fold_in(fold_in(fold_in(key(seed), WAVEFORM_STREAM), i), c) (then 0:
diffusion, 1: vocoder). A candidate's waveform therefore depends only on the seed, its chunk's index, its own
codes and the voice: not on k, the other chunks, or the order things are computed in.
Where this differs from Tortoise: its `tts` draws from torch's global generator (irreproducible without
re-seeding); samples of different lengths run one after another here too (the decoder has no frame mask, so
padding them to one length would change them), and each new length compiles the sampler loop once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clvp_jax.audio.univnet_mel import SAMPLING_RATE, denormalize_tacotron_mel
from clvp_jax.generation.options import SamplingOverrides
from clvp_jax.pipeline import ChunkResult
from clvp_jax.speech_results import SpeechCandidate, SpeechChunk, SpeechResult
from clvp_jax.speech_voice import AR_SAMPLING_RATE, Voice, voice_conditioning
from clvp_jax.speech_voice import diffusion_latent as diffusion_latent  # re-exported (the voice half moved)
from clvp_jax.waveform.ar_latents import MAX_MEL_TOKENS, ar_latents, fixed_codes, trim_length
from clvp_jax.waveform.bundle import WaveformModels, with_diffusion_dtype
from clvp_jax.waveform.diffusion import DiffusionTts
from clvp_jax.waveform.hifigan import hifigan_inference
from clvp_jax.waveform.presets import SpeechPreset, speech_preset
from clvp_jax.waveform.sampler import SamplerConfig, SamplerNoise, sample
from clvp_jax.waveform.univnet import vocode

WAVEFORM_STREAM = 2**30 + 1  # keeps the waveform draws apart from the AR draws of the same (seed, chunk, candidate)
TEXT_BUCKET = 16  # text lengths of the latents pass are padded (masked) to a multiple of this: fewer compilations

# progress(stage, done, total); stage is "candidates", "diffusion" (steps) or "vocoder" (samples).
Progress = Callable[[str, int, int], None]


def output_frames(codes: int) -> int:
    """Mel frames L the diffusion decoder makes for `codes` AR latent frames: codes * 4 * 24000 // 22050."""
    return codes * 4 * SAMPLING_RATE // AR_SAMPLING_RATE


# ---- one sample: AR latents -> diffusion -> vocoder ---------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _aligned_fn(model: DiffusionTts):
    def run(variables, latents, cond, *, frames):
        return model.apply(variables, latents, cond, frames, method=DiffusionTts.timestep_independent)

    return jax.jit(run, static_argnames="frames")


@functools.lru_cache(maxsize=4)
def _model_call(model: DiffusionTts):
    # One function object per model, so the sampler's compiled loop is reused across samples of a length.
    def call(variables, aligned, x, t, cond_free):
        return model.apply(variables, x, t, aligned, cond_free)

    return call


def render_waveform(
    waveform_models: WaveformModels,
    latents: np.ndarray,
    diffusion_latent: np.ndarray,  # noqa: F811 - the argument shadows the re-exported function
    *,
    sampler: SamplerConfig,
    key: jax.Array | None = None,
    noise: SamplerNoise | None = None,
    vocoder_noise: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: AR latents [1, m, D] -> (de-normalised mel [1, 100, L], waveform [1, 1, hop * L]).

    Args:
      latents: the (trimmed) AR latents of one candidate.
      diffusion_latent: [W] or [1, W] the voice's diffusion conditioning latent.
      sampler: the sampler settings.
      key: the sample's key (diffusion draws from fold_in(key, 0), the vocoder's noise from fold_in(key, 1)); or
      noise / vocoder_noise: given draws instead (`SamplerNoise`; z [1, Z, L + 10]), e.g. the original's recorded ones.
      on_step: on_step(done) after each diffusion step (`waveform.sampler.sample`).
    """
    if key is None and (noise is None or vocoder_noise is None):
        raise ValueError("render_waveform: pass key=, or both noise= and vocoder_noise=")
    latents = jnp.asarray(latents, jnp.float32)
    frames = output_frames(latents.shape[1])
    cond = jnp.asarray(diffusion_latent, jnp.float32).reshape(1, -1)
    variables = waveform_models.diffusion_variables
    aligned = _aligned_fn(waveform_models.diffusion)(variables, latents, cond, frames=frames)  # [1, C, L]
    model_fn = jax.tree_util.Partial(_model_call(waveform_models.diffusion), variables, aligned)
    shape = (1, waveform_models.diffusion.config.in_channels, frames)
    if noise is None:
        x = sample(model_fn, shape, config=sampler, key=jax.random.fold_in(key, 0), on_step=on_step)
    else:
        x = sample(model_fn, shape, config=sampler, noise=noise, on_step=on_step)
    mel = denormalize_tacotron_mel(x)[:, :, :frames]
    vocoder_key = None if vocoder_noise is not None else jax.random.fold_in(key, 1)
    wav = vocode(
        waveform_models.vocoder_params,
        mel,
        config=waveform_models.vocoder_config,
        key=vocoder_key,
        z=None if vocoder_noise is None else jnp.asarray(vocoder_noise),
    )
    return np.asarray(mel), np.asarray(wav)


def waveform_key(seed: int, chunk: int, candidate: int) -> jax.Array:
    """The key of candidate `candidate` of chunk `chunk`'s waveform (see the module docstring)."""
    key = jax.random.fold_in(jax.random.key(seed), WAVEFORM_STREAM)
    return jax.random.fold_in(jax.random.fold_in(key, chunk), candidate)


# ---- the pipeline -------------------------------------------------------------------------------------------


def mix_scores(
    clvp: np.ndarray, codes: np.ndarray, cvvp_mels: np.ndarray | None, waveform_models: WaveformModels, amount: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ranking scores of one chunk's candidates as `api.tts` mixes them.

    Args:
      clvp: [C] CLVP scores; codes: [C, m] the fixed codes; cvvp_mels: [n, 80, F] the voice clips' AR mels.
      amount: `cvvp_amount`; 0 keeps CLVP (CVVP is not run), 1 uses CVVP alone, else
        amount * CVVP + (1 - amount) * CLVP, where CVVP is the mean over the n clips of each clip's score.
    Returns:
      (scores [C] float64, the CVVP scores [C] or None when not run).
    """
    clvp = np.asarray(clvp, np.float64)
    if amount <= 0:
        return clvp, None
    from clvp_jax.waveform.cvvp import cvvp_scores

    mels, codes = jnp.asarray(cvvp_mels), jnp.asarray(codes)
    cvvp = np.asarray(cvvp_scores(waveform_models.cvvp, waveform_models.cvvp_params, mels, codes), np.float64)
    return (cvvp if amount == 1 else cvvp * amount + clvp * (1 - amount)), cvvp


def latent_length(model, max_new_tokens: int) -> int:
    """Codes m every candidate is padded to before fixing: Tortoise's 500 (or more, for longer candidates), capped
    by the decoder's position table ([start, c_0 .. c_{m-2}] sit at positions 0 .. m - 1)."""
    return min(max(MAX_MEL_TOKENS, max_new_tokens), model.config.decoder_config.max_position_embeddings)


def render_chunk(
    chunk: ChunkResult,
    *,
    index: int,
    model,
    params,
    waveform_models: WaveformModels,
    voice: Voice,
    sampler: SamplerConfig,
    k: int = 1,
    cvvp_amount: float = 0.0,
    seed: int = 0,
    length: int = MAX_MEL_TOKENS,
    progress: Progress | None = None,
    vocoder: str = "univnet",
) -> SpeechChunk:
    """The waveform stage of one chunk: (CVVP mix,) the k best, their AR latents, trim, diffusion, vocoder.

    Depends only on its arguments: chunk `index` i's candidate c draws from `waveform_key(seed, i, c)`, and its
    text is tokenized alone, so the result is the same whatever other chunks the text has.

    Args:
      chunk: the chunk's candidates as `rank_speech` ranked them (CLVP scores).
      index: the chunk's index in its text (part of every key).
      voice: both latents (`voice_conditioning`); sampler: the diffusion settings.
      length: codes m each candidate is padded to (`latent_length`).
      progress: progress(stage, done, total) for "diffusion" (every step, reported from inside the compiled
        sampler loop) and "vocoder" (samples) of this chunk; None: no reports, nothing compiled in for them.
      vocoder: "univnet" (diffusion, then UnivNet: Tortoise's path) or "hifigan" (api_fast's preview: the trimmed
        AR latents straight to audio through `waveform_models`' HiFiGAN, speaker embedding = the AR voice latent).
    """
    say = progress or (lambda stage, done, total: None)
    hifigan = vocoder == "hifigan"
    dec = model.config.decoder_config
    fixing = dec.decoder_fixing_codes
    by_index = sorted(chunk.candidates, key=lambda c: c.index)
    all_codes = fixed_codes(
        [c.codes for c in by_index], length=length, stop_token=dec.eos_token_id, fixing_codes=fixing
    )
    scores, cvvp = mix_scores([c.score for c in by_index], all_codes, voice.cvvp_mels, waveform_models, cvvp_amount)
    order = sorted(range(len(by_index)), key=lambda j: (-scores[j], j))
    best = order[:k]
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.text import ClvpTokenizer

    enc = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER)([chunk.text], return_tensors="np")
    ids, mask = _bucket(np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]), dec, TEXT_BUCKET)
    outputs = []
    if not hifigan:
        say("diffusion", 0, k * sampler.steps)
    say("vocoder", 0, k)
    for r, j in enumerate(best):
        # One row per call: batched rows differ from single ones in the last float32 ulp, which the diffusion
        # amplifies to ~1e-2, and a candidate's waveform should not depend on k. (The pass is cheap: one row.)
        latents = ar_latents(
            model, params, text_ids=ids, text_mask=mask, voice_latent=voice.autoregressive, codes=all_codes[j : j + 1]
        )
        keep = trim_length(all_codes[j], fixing[0])
        key = waveform_key(seed, index, by_index[j].index)
        if hifigan:  # api_fast does not trim its latents; the calm tail is the padding to 500 codes, so we do
            speaker = jnp.asarray(voice.autoregressive, jnp.float32)[None]  # [1, D] as api_fast's auto_conditioning
            wm = waveform_models
            wav = np.asarray(hifigan_inference(wm.hifigan_params, latents[:, :keep], speaker, config=wm.hifigan_config))
        else:
            steps, total = sampler.steps, k * sampler.steps
            on_step = None if progress is None else functools.partial(_step_report, say, r * steps, total)
            _, wav = render_waveform(
                waveform_models, latents[:, :keep], voice.diffusion, sampler=sampler, key=key, on_step=on_step
            )
            say("diffusion", (r + 1) * steps, total)
        say("vocoder", r + 1, k)
        cvvp_score = None if cvvp is None else float(cvvp[j])
        outputs.append(SpeechCandidate(by_index[j], float(scores[j]), cvvp_score, keep, wav.reshape(-1)))
    return SpeechChunk(chunk.text, [by_index[j] for j in order], [float(scores[j]) for j in order], outputs)


@dataclasses.dataclass(frozen=True)
class SpeechPlan:
    """A text prepared for speech (`plan_speech`): the AR plan, the voice, and the waveform stage's settings.

    Attributes:
      ranking: the AR stage's `pipeline.RankPlan` (its `chunks` are the text's chunks).
      voice: both voice latents; preset: the preset with the overrides applied.
      k: candidates rendered per chunk; cvvp_amount: the CVVP mix; length: codes m before fixing.
      settings: what the results record; vocoder: "univnet" or "hifigan" (see `render_chunk`).
    """

    ranking: Any
    voice: Voice
    preset: SpeechPreset
    k: int
    cvvp_amount: float
    length: int
    settings: dict[str, Any]
    vocoder: str = "univnet"

    @property
    def chunks(self) -> list[str]:
        return self.ranking.chunks


def plan_speech(
    *,
    text: str,
    model,
    params,
    waveform_models: WaveformModels,
    voice: Any = None,
    preset: str | SpeechPreset = "fast",
    k: int = 1,
    sampler: str | None = None,
    diffusion_steps: int | None = None,
    candidates: int | None = None,
    cvvp_amount: float = 0.0,
    seed: int = 0,
    max_new_tokens: int | None = None,
    dtype: str = "float32",
    sampling: SamplingOverrides | None = None,
    vocoder: str = "univnet",
) -> SpeechPlan:
    """Check everything `synthesize` takes (same arguments, less `progress`), compute the voice latents and split
    the text; nothing is generated yet. Raises `ValueError` naming a bad setting."""
    from clvp_jax.pipeline import plan_ranking

    settings = preset if isinstance(preset, SpeechPreset) else None
    if settings is None:
        settings = speech_preset(preset, sampler=sampler, diffusion_steps=diffusion_steps, candidates=candidates)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.candidates:
        raise ValueError(f"k must be an integer in [1, candidates = {settings.candidates}], got {k!r}")
    if not 0 <= cvvp_amount <= 1:
        raise ValueError(f"cvvp_amount must be in [0, 1], got {cvvp_amount!r}")
    width, wanted = model.config.decoder_config.hidden_size, waveform_models.diffusion.config.in_latent_channels
    if width != wanted:
        raise ValueError(
            f"the diffusion decoder takes AR latents of width {wanted} but the AR model's are {width}: the "
            f"checkpoint's files come from different models ({', '.join(waveform_models.sources) or 'built in'})"
        )
    _check_vocoder(vocoder, waveform_models, width)
    if cvvp_amount > 0 and waveform_models.cvvp is None:
        raise ValueError(
            "cvvp_amount > 0 needs the CVVP model: put Tortoise's cvvp.pth in the checkpoint folder (the packaged "
            "default has none), or leave cvvp_amount at 0"
        )
    voice = voice_conditioning(model=model, params=params, waveform_models=waveform_models, voice=voice)
    if cvvp_amount > 0 and voice.cvvp_mels is None:
        raise ValueError("cvvp_amount > 0 needs the voice clips (CVVP reads their mels), not a latents file")
    ranking = plan_ranking(
        text=text,
        model=model,
        params=params,
        latents=voice.autoregressive,
        preset=settings.name,
        candidates=settings.candidates,
        max_new_tokens=max_new_tokens,
        seed=seed,
        dtype=dtype,
        sampling=sampling,
    )
    length = latent_length(model, ranking.settings["max_new_tokens"])
    info = dict(ranking.settings)
    info |= {
        "k": k,
        "sampler": settings.sampler.kind,
        "diffusion_steps": settings.sampler.steps,
        "cond_free": settings.sampler.cond_free,
        "cond_free_k": settings.sampler.cond_free_k,
        "diffusion_temperature": settings.sampler.temperature,
        "cvvp_amount": cvvp_amount,
        "latent_length": length,
        "vocoder": vocoder,
        "diffusion_dtype": jnp.dtype(waveform_models.diffusion.dtype).name,
    }
    return SpeechPlan(ranking, voice, settings, k, cvvp_amount, length, info, vocoder)


def speak_chunks(
    plan: SpeechPlan,
    indices: Sequence[int] | None = None,
    *,
    model,
    params,
    waveform_models: WaveformModels,
    group_size: int = 0,
    progress: Progress | None = None,
) -> Iterator[tuple[int, SpeechChunk]]:
    """Yield (index, chunk) for the chunks `indices` of `plan` (None: all), in order, each as soon as it is rendered.

    The AR stage runs a group of chunks at a time (`pipeline.chunk_groups`, `group_size` or `CHUNKS_PER_CALL`),
    so at most one group's candidates and one chunk's waveforms are held: memory does not grow with the text.
    A chunk's result depends only on its index, its text, the voice and the settings (see the module docstring).
    `progress(stage, done, total)` counts over the chunks of `indices`.
    """
    from clvp_jax.pipeline import chunk_groups, rank_group

    say = progress or (lambda stage, done, total: None)
    indices = list(range(len(plan.chunks)) if indices is None else indices)
    groups = chunk_groups(indices, group_size)
    n, done = len(indices), 0
    C = plan.ranking.candidates
    for group in groups:
        ranked = rank_group(
            plan.ranking,
            group,
            model=model,
            params=params,
            rows=len(groups[0]),
            progress=lambda d, t, before=done: say("candidates", before * C + d, n * C),
        )
        for i, (chunk, _) in zip(group, ranked, strict=True):

            def chunk_progress(stage: str, d: int, total: int, at=done) -> None:
                say(stage, at * total + d, n * total)  # every chunk has the same amount of work

            yield (
                i,
                render_chunk(
                    chunk,
                    index=i,
                    model=model,
                    params=params,
                    waveform_models=waveform_models,
                    voice=plan.voice,
                    sampler=plan.preset.sampler,
                    k=plan.k,
                    cvvp_amount=plan.cvvp_amount,
                    seed=plan.ranking.seed,
                    length=plan.length,
                    progress=None if progress is None else chunk_progress,
                    vocoder=plan.vocoder,
                ),
            )
            done += 1


def synthesize(
    *,
    text: str,
    model,
    params,
    waveform_models: WaveformModels,
    voice: Any = None,
    preset: str | SpeechPreset = "fast",
    k: int = 1,
    sampler: str | None = None,
    diffusion_steps: int | None = None,
    candidates: int | None = None,
    cvvp_amount: float = 0.0,
    seed: int = 0,
    max_new_tokens: int | None = None,
    dtype: str = "float32",
    diffusion_dtype: str | None = None,
    progress: Progress | None = None,
    sampling: SamplingOverrides | None = None,
    vocoder: str = "univnet",
) -> SpeechResult:
    """Speak `text` in `voice`: every chunk's candidates, the k best rendered to 24 kHz audio.

    Holds every chunk's waveforms; for a long text, `clvp_jax.long_text` writes each chunk as it finishes instead.

    Args:
      text: the text (long text is split into chunks that fit the model; `|` marks manual split points).
      model, params: the AR + CLVP model (`pipeline.load_model`); waveform_models: diffusion + vocoder (+ CVVP).
      voice: see `voice_conditioning` (None: the bundled LJ clip).
      preset: a preset name (`waveform.presets.PRESET_NAMES`) or a ready `SpeechPreset`.
      k: candidates rendered per chunk (the best k by score).
      sampler, diffusion_steps, candidates: override the preset's sampler kind, steps and AR candidate count.
      cvvp_amount: in [0, 1]; > 0 mixes CVVP into the ranking (needs a CVVP model and voice clips).
      seed: every random draw derives from it (see the module docstring).
      max_new_tokens: AR codes per candidate (default: Tortoise's 500, capped by the position table).
      dtype: the AR stage's compute dtype ("float32" or "bfloat16").
      diffusion_dtype: None (as `waveform_models` are: float32 unless converted) or "float32" / "bfloat16": the
        diffusion decoder's compute dtype (`waveform.bundle.with_diffusion_dtype`; it casts the weights, so for
        repeated calls convert the models once and pass those, as `TextToSpeech(diffusion_dtype=)` does). The
        vocoder runs in float32 always.
      progress: progress(stage, done, total) after each unit of work.
      sampling: the AR sampling knobs over the preset's (temperature, top-p, top-k, repetition penalty).
      vocoder: "univnet" (Tortoise's diffusion + UnivNet) or "hifigan" (the fast preview, no diffusion: needs
        `waveform_models.hifigan_config`, i.e. `hifidecoder.pth` in the checkpoint; the packaged default has one).
    Raises:
      ValueError: bad settings (the message names them), or CVVP asked for without a CVVP model or clips.
    """
    if diffusion_dtype is not None:
        waveform_models = with_diffusion_dtype(waveform_models, diffusion_dtype)
    plan = plan_speech(
        text=text,
        model=model,
        params=params,
        waveform_models=waveform_models,
        voice=voice,
        preset=preset,
        k=k,
        sampler=sampler,
        diffusion_steps=diffusion_steps,
        candidates=candidates,
        cvvp_amount=cvvp_amount,
        seed=seed,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        sampling=sampling,
        vocoder=vocoder,
    )
    chunks = speak_chunks(plan, model=model, params=params, waveform_models=waveform_models, progress=progress)
    return SpeechResult([chunk for _, chunk in chunks], plan.settings, waveform_models.random_weights)


def _step_report(say: Progress, before: int, total: int, done: int) -> None:
    say("diffusion", before + done, total)


VOCODERS = ("univnet", "hifigan")


def _check_vocoder(vocoder: str, waveform_models: WaveformModels, width: int) -> None:
    if vocoder not in VOCODERS:
        raise ValueError(f"vocoder must be one of {', '.join(VOCODERS)}, got {vocoder!r}")
    config = waveform_models.hifigan_config
    if vocoder == "hifigan" and config is None:
        raise ValueError(
            "vocoder='hifigan' needs api_fast's HiFiGAN decoder: put hifidecoder.pth in the checkpoint folder (and "
            "re-convert a clvp-jax checkpoint), or use vocoder='univnet'"
        )
    if vocoder == "hifigan" and (config.in_channels, config.cond_channels) != (width, width):
        raise ValueError(
            f"the HiFiGAN decoder takes latents of width {config.in_channels} and a speaker embedding of width "
            f"{config.cond_channels}, but the AR model's are {width}: the checkpoint's files come from different models"
        )


def _bucket(ids: np.ndarray, mask: np.ndarray, dec, size: int) -> tuple[np.ndarray, np.ndarray]:
    limit = dec.max_text_tokens - 3  # the prefix's text positions (generation checks the same limit)
    T = ids.shape[1]
    T2 = min(max(size, -(-T // size) * size), max(T, limit))
    return np.pad(ids, ((0, 0), (0, T2 - T))), np.pad(mask, ((0, 0), (0, T2 - T)))
