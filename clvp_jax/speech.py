"""Text + voice -> 24 kHz speech: Tortoise's whole `tts_with_preset`, as keyword-only library functions.

  synthesize(text=..., model=..., waveform_models=..., voice=...)   the pipeline below, every chunk of the text
  voice_conditioning(model=..., voice=...)                           clips / latents file -> both voice latents
                                                                     (`clvp_jax.speech_voice`, re-exported here)
  render_waveform(waveform_models, latents, diffusion_latent, ...)   AR latents -> diffusion -> vocoder (one sample;
                                                                     `clvp_jax.speech_sample`, re-exported here)
  plan_speech(...), speak_chunks(plan, ...)                           the same, one chunk at a time (long text)
  speak(text=..., settings=...)                                       `synthesize` with ready `SpeechSettings`
The results (`SpeechResult`, `SpeechChunk`, `SpeechCandidate`) live in `clvp_jax.speech_results`, the settings
(`SpeechSettings`, `speech_settings`) in `clvp_jax.speech_settings`, the score mix in `clvp_jax.speech_scores`.

Per text chunk (`pipeline.plan_ranking` splits long text; `speak_chunks` renders a group of chunks at a time):
  1. candidates: sampled by the AR decoder and ranked by CLVP (`pipeline.rank_group`); with a CVVP model and
     `cvvp_amount` > 0 the score becomes cvvp_amount * CVVP + (1 - cvvp_amount) * CLVP (CVVP alone at 1), where
     CVVP is the mean over the voice's clips, as `api.tts` mixes them (`speech_scores.mix_scores`);
  2. the k best, padded to 500 codes and fixed, give their AR latents (`waveform.ar_latents`), each cut before
     the 9th consecutive calm code;
  3. per sample: `timestep_independent` once, the sampler (preset steps, guidance, temperature; "ddpm", "ddim"
     or "dpm++2m"), L = m * 4 * 24000 // 22050 frames; de-normalised; UnivNet -> samples in [-1, 1] at 24 kHz.
The joined waveform of a rank is its chunks' waveforms one after another (as Tortoise's read.py joins them).

Randomness: the AR draws of chunk i, candidate c come from fold_in(fold_in(key(seed), i), c) (`rank_group`); the
waveform draws of that candidate from fold_in(fold_in(fold_in(key(seed), WAVEFORM_STREAM), i), c) (then 0:
diffusion, 1: vocoder; `speech_sample.waveform_key`). A candidate's waveform therefore depends only on the seed,
its chunk's index, its own codes and the voice: not on k, the other chunks, or the order things are computed in.
Where this differs from Tortoise: its `tts` draws from torch's global generator (irreproducible without
re-seeding); samples of different lengths run one after another here too (the decoder has no frame mask, so
padding them to one length would change them), and each new length compiles the sampler loop once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from clvp_jax.generation.options import SamplingOverrides
from clvp_jax.pipeline import ChunkResult, RankPlan
from clvp_jax.speech_results import SpeechCandidate, SpeechChunk, SpeechResult
from clvp_jax.speech_sample import WAVEFORM_STREAM, output_frames, render_waveform, waveform_key
from clvp_jax.speech_scores import best_first, mix_scores
from clvp_jax.speech_settings import SpeechSettings, Vocoder, speech_settings
from clvp_jax.speech_voice import AR_SAMPLING_RATE, Voice, diffusion_latent, voice_conditioning
from clvp_jax.waveform.ar_latents import MAX_MEL_TOKENS, ar_latents, fixed_codes, trim_length
from clvp_jax.waveform.bundle import WaveformModels, with_diffusion_dtype
from clvp_jax.waveform.hifigan import hifigan_inference
from clvp_jax.waveform.presets import SpeechPreset

# Re-exported: these moved to their own modules, and callers know them as `speech.<name>`.
__all__ = ["AR_SAMPLING_RATE", "WAVEFORM_STREAM", "diffusion_latent", "mix_scores", "output_frames"]
__all__ += ["render_waveform", "voice_conditioning", "waveform_key", "SpeechCandidate", "SpeechChunk"]
__all__ += ["SpeechResult", "SpeechSettings", "Voice", "speech_settings"]
# Defined here:
__all__ += ["Progress", "SpeechPlan", "TEXT_BUCKET", "latent_length", "plan_speech", "render_chunk"]
__all__ += ["speak", "speak_chunks", "synthesize"]

TEXT_BUCKET = 16  # text lengths of the latents pass are padded (masked) to a multiple of this: fewer compilations

# progress(stage, done, total); stage is "candidates", "diffusion" (steps) or "vocoder" (samples).
Progress = Callable[[str, int, int], None]


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
    settings: SpeechSettings,
    length: int = MAX_MEL_TOKENS,
    progress: Progress | None = None,
) -> SpeechChunk:
    """The waveform stage of one chunk: (CVVP mix,) the k best, their AR latents, trim, diffusion, vocoder.

    Depends only on its arguments: chunk `index` i's candidate c draws from `waveform_key(seed, i, c)`, and its
    text is tokenized alone, so the result is the same whatever other chunks the text has.

    Args:
      chunk: the chunk's candidates as `rank_group` ranked them (CLVP scores).
      index: the chunk's index in its text (part of every key).
      voice: both latents (`voice_conditioning`).
      settings: k, the CVVP mix, the diffusion sampler, the vocoder and the seed (`settings.ranking.seed`).
      length: codes m each candidate is padded to (`latent_length`).
      progress: progress(stage, done, total) for "diffusion" (every step, reported from inside the compiled
        sampler loop) and "vocoder" (samples) of this chunk; None: no reports, nothing compiled in for them.
    With `settings.vocoder` "hifigan" (api_fast's preview) the trimmed AR latents go straight to audio through
    `waveform_models`' HiFiGAN, speaker embedding = the AR voice latent; "univnet" is Tortoise's diffusion path.
    """
    say = progress or (lambda stage, done, total: None)
    k, sampler, hifigan = settings.k, settings.sampler, settings.vocoder == "hifigan"
    dec = model.config.decoder_config
    fixing = dec.decoder_fixing_codes
    by_index = sorted(chunk.candidates, key=lambda c: c.index)
    all_codes = fixed_codes(
        [c.codes for c in by_index], length=length, stop_token=dec.eos_token_id, fixing_codes=fixing
    )
    clvp = [c.score for c in by_index]
    scores, cvvp = mix_scores(clvp, all_codes, voice.cvvp_mels, waveform_models, settings.cvvp_amount)
    order = best_first(scores)
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
        key = waveform_key(settings.ranking.seed, index, by_index[j].index)
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
    """A text prepared for speech (`plan_speech`): the AR plan, the voice, and the settings of both stages.

    Attributes:
      ranking: the AR stage's `pipeline.RankPlan` (its `chunks` are the text's chunks).
      voice: both voice latents.
      speech: the settings it was planned with (`SpeechSettings`: k, the CVVP mix, sampler, vocoder, AR stage).
      length: codes m each candidate is padded to before fixing (`latent_length`).
      settings: what the results record (the AR stage's record, then the waveform stage's).
    """

    ranking: RankPlan
    voice: Voice
    speech: SpeechSettings
    length: int
    settings: dict[str, Any]

    @property
    def chunks(self) -> list[str]:
        return self.ranking.chunks

    @property
    def k(self) -> int:
        """Candidates rendered per chunk."""
        return self.speech.k


def plan_speech(
    *, text: str, model, params, waveform_models: WaveformModels, voice: Any = None, settings: SpeechSettings
) -> SpeechPlan:
    """Check the models against `settings`, compute the voice latents and split the text; nothing is generated yet.

    Args: as `synthesize`'s (`voice` is `voice_conditioning`'s), with the settings as one `SpeechSettings`.
    Raises `ValueError` naming what does not fit (models of different widths, a missing HiFiGAN or CVVP model,
    CVVP asked for with a voice given as latents).
    """
    from clvp_jax.pipeline import plan_ranking

    settings.check_models(model, waveform_models)
    voice = voice_conditioning(model=model, params=params, waveform_models=waveform_models, voice=voice)
    if settings.cvvp_amount > 0 and voice.cvvp_mels is None:
        raise ValueError("cvvp_amount > 0 needs the voice clips (CVVP reads their mels), not a latents file")
    ranking = plan_ranking(
        text=text, model=model, params=params, latents=voice.autoregressive, settings=settings.ranking
    )
    length = latent_length(model, ranking.settings["max_new_tokens"])
    diffusion_dtype = jnp.dtype(waveform_models.diffusion.dtype).name
    info = dict(ranking.settings) | settings.record(latent_length=length, diffusion_dtype=diffusion_dtype)
    return SpeechPlan(ranking, voice, settings, length, info)


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

            rendered = render_chunk(
                chunk,
                index=i,
                model=model,
                params=params,
                waveform_models=waveform_models,
                voice=plan.voice,
                settings=plan.speech,
                length=plan.length,
                progress=None if progress is None else chunk_progress,
            )
            yield i, rendered
            done += 1


def speak(
    *,
    text: str,
    model,
    params,
    waveform_models: WaveformModels,
    voice: Any = None,
    settings: SpeechSettings,
    progress: Progress | None = None,
) -> SpeechResult:
    """`synthesize` with its settings given as one `SpeechSettings` (`speech_settings(...)`): every chunk of
    `text`, the k best of each rendered. Holds every chunk's waveforms (`clvp_jax.long_text` writes them instead)."""
    plan = plan_speech(
        text=text, model=model, params=params, waveform_models=waveform_models, voice=voice, settings=settings
    )
    chunks = speak_chunks(plan, model=model, params=params, waveform_models=waveform_models, progress=progress)
    return SpeechResult([chunk for _, chunk in chunks], plan.settings, waveform_models.random_weights)


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
    vocoder: Vocoder = "univnet",
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
    settings = speech_settings(
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
    if diffusion_dtype is not None:
        waveform_models = with_diffusion_dtype(waveform_models, diffusion_dtype)
    return speak(
        text=text,
        model=model,
        params=params,
        waveform_models=waveform_models,
        voice=voice,
        settings=settings,
        progress=progress,
    )


def _step_report(say: Progress, before: int, total: int, done: int) -> None:
    say("diffusion", before + done, total)


def _bucket(ids: np.ndarray, mask: np.ndarray, dec, size: int) -> tuple[np.ndarray, np.ndarray]:
    limit = dec.max_text_tokens - 3  # the prefix's text positions (generation checks the same limit)
    T = ids.shape[1]
    T2 = min(max(size, -(-T // size) * size), max(T, limit))
    return np.pad(ids, ((0, 0), (0, T2 - T))), np.pad(mask, ((0, 0), (0, T2 - T)))
