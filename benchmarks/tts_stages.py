"""Per-stage timers for bench_tts.py: wrappers around the functions each side's `tts_with_preset` calls.

  clock = StageClock()
  instrument_original(tts, clock)    tortoise.api: AR candidates, CLVP, AR latents pass, diffusion, vocoder
  instrument_jax(clock)              clvp_jax: AR candidates + CLVP (one program), AR latents pass, diffusion, vocoder
  clock.reset(); tts_with_preset(...); clock.snapshot()   -> seconds, calls and what each stage saw, per stage

A wrapper measures wall time around one call of the wrapped function (clvp-jax: until its result is ready), adds
it to its stage, and notes what it saw (shapes: codes per candidate, latent frames, mel frames, samples). Nothing
else changes: the wrapped functions get the same arguments and return the same values (`functools.wraps` keeps
their signatures, which transformers' `generate` inspects). The original's GPT2InferenceModel.forward calls are
logged too (`ForwardLog`): their input widths show whether the KV cache is used (with it: the prefix once, then one
token per step; without: the whole sequence every step).
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable
from typing import Any

STAGES = ("AR candidates", "CLVP ranking", "AR latents pass", "diffusion", "vocoder")


class StageClock:
    """Seconds, calls and the last note of each stage, filled by the wrappers `wrap` installs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.notes: dict[str, Any] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.notes.clear()

    def wrap(
        self,
        owner: Any,
        name: str,
        stage: str,
        *,
        before: Callable[[tuple, dict], Any] | None = None,
        sync: Callable[[Any], Any] | None = None,
        note: Callable[[tuple, dict, Any], Any] | None = None,
    ) -> None:
        """Replace `owner.name` (a module function, or a method on an instance) by a timed call of it.

        `before(args, kwargs)` runs before the clock starts (e.g. waits for the inputs, which JAX may still be
        computing: that wait belongs to the stage that made them); `sync(result)` blocks until the result is
        computed (JAX's asynchronous dispatch); `note(args, kwargs, result)` records what the stage saw (the last
        call's note is kept)."""
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            if before is not None:
                before(args, kwargs)
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            if sync is not None:
                sync(out)
            self.seconds[stage] += time.perf_counter() - t0
            self.calls[stage] += 1
            if note is not None:
                self.notes[stage] = note(args, kwargs, out)
            return out

        setattr(owner, name, timed)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{stage: {"s": seconds, "calls": n, "note": ...}} of the stages timed since the last `reset`."""
        return {s: {"s": self.seconds[s], "calls": self.calls[s], "note": self.notes.get(s)} for s in self.seconds}


class ForwardLog:
    """The input widths of every GPT2InferenceModel.forward call, and whether each got a filled KV cache."""

    def __init__(self) -> None:
        self.widths: list[int] = []
        self.cached: list[int] = []  # tokens already in the cache passed to each call (0: none or empty)

    def reset(self) -> None:
        self.widths.clear()
        self.cached.clear()

    def install(self, inference_model) -> None:
        inner = inference_model.forward

        @functools.wraps(inner)
        def logged(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            past = kwargs.get("past_key_values")
            self.widths.append(int(ids.shape[1]))
            self.cached.append(0 if past is None else int(past.get_seq_length()))
            return inner(*args, **kwargs)

        inference_model.forward = logged

    def summary(self) -> dict[str, Any]:
        """Calls, the first call's width, the widths of the later calls (min, max) and how many got a cache."""
        later = self.widths[1:] or [0]
        return dict(
            calls=len(self.widths),
            first_width=self.widths[0] if self.widths else 0,
            later_widths=[min(later), max(later)],
            calls_with_cache=sum(c > 0 for c in self.cached),
        )


def _codes_per_row(codes, stop: int) -> list[int]:
    """Codes before the first stop token of each row of a [R, M] torch tensor."""
    rows = codes.tolist()
    return [row.index(stop) if stop in row else len(row) for row in rows]


def instrument_original(tts, clock: StageClock) -> ForwardLog:
    """Time the stages of tortoise.api's `tts` on `tts` (its models' methods, api.py's diffusion function)."""
    import tortoise.api as api

    ar = tts.autoregressive
    stop = ar.stop_mel_token

    def codes_note(args, kwargs, out):
        n = _codes_per_row(out, stop)
        return dict(shape=list(out.shape), codes_min=min(n), codes_max=max(n), stopped=sum(k < out.shape[1] for k in n))

    clock.wrap(ar, "inference_speech", "AR candidates", note=codes_note)
    clock.wrap(tts.clvp, "forward", "CLVP ranking", note=lambda a, k, out: dict(speech_codes=int(a[1].shape[1])))
    clock.wrap(ar, "forward", "AR latents pass", note=lambda a, k, out: dict(latents=list(out.shape)))
    clock.wrap(
        api,
        "do_spectrogram_diffusion",
        "diffusion",
        note=lambda a, k, out: dict(latent_frames=int(a[2].shape[1]), mel_frames=int(out.shape[-1])),
    )
    clock.wrap(tts.vocoder, "inference", "vocoder", note=lambda a, k, out: dict(samples=int(out.shape[-1])))
    log = ForwardLog()
    log.install(ar.inference_model)
    return log


def instrument_jax(clock: StageClock) -> None:
    """Time the stages of clvp_jax's `speak_chunks` (the module functions it calls; candidates and CLVP ranking
    are one compiled program, `rank_group`). "diffusion" is `render_waveform` minus its vocoder call."""
    import jax

    import clvp_jax.pipeline as pipeline
    import clvp_jax.speech as speech
    import clvp_jax.speech_sample as sample

    def ranked_note(args, kwargs, out):
        n = [len(c.codes) for chunk, _ in out for c in chunk.candidates]
        stopped = sum(c.stopped for chunk, _ in out for c in chunk.candidates)
        return dict(candidates=len(n), codes_min=min(n), codes_max=max(n), stopped=stopped)

    clock.wrap(pipeline, "rank_group", "AR candidates + CLVP ranking", note=ranked_note)
    clock.wrap(speech, "ar_latents", "AR latents pass", note=lambda a, k, out: dict(latents=list(out.shape)))
    clock.wrap(
        speech,
        "render_waveform",
        "diffusion + vocoder",
        note=lambda a, k, out: dict(latent_frames=int(a[1].shape[1]), mel_frames=int(out[0].shape[-1])),
    )
    clock.wrap(
        sample,
        "vocode",
        "vocoder",
        before=lambda a, k: jax.block_until_ready(a[1]),  # the mel: the diffusion's result, maybe still running
        sync=jax.block_until_ready,
        note=lambda a, k, out: dict(samples=int(out.shape[-1])),
    )


def exclusive(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """clvp-jax's stages with "diffusion" = "diffusion + vocoder" minus "vocoder" (the vocoder runs inside)."""
    out = dict(stages)
    both = out.pop("diffusion + vocoder", None)
    if both is not None:
        vocoder = out.get("vocoder", {"s": 0.0})
        out["diffusion"] = dict(both, s=both["s"] - vocoder["s"])
    return out
