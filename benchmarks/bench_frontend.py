"""Front-end speed: clvp-jax vs transformers 5.24, side by side in one run.

    .venv/bin/python benchmarks/bench_frontend.py [--repeats 3] [--sentences 10000] [--clips 16]

Tokenizer: throughput on distinct generated sentences (tests/text_corpus.py), each run on fresh instances (cold
word caches) and again on the same instances (warm). Features: a batch of six-second clips cut from the real
Tortoise voices. Best of `--repeats` runs; the outputs of both are checked to be identical first.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from frontend_utils import CLIP_FILES, SIX_SECONDS, TORTOISE, reference_tokenizer  # noqa: E402
from text_corpus import plain_sentences  # noqa: E402

from clvp_jax import ClvpFeatureExtractor, ClvpTokenizer, load_audio  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)


def best(fn, repeats: int, setup=None) -> float:
    """Best wall time of `fn(setup())` over `repeats` runs; `setup` (untimed) builds fresh objects."""
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_tokenizer(n: int, repeats: int) -> dict[str, float]:
    sentences = plain_sentences(n)
    ours, ref = ClvpTokenizer.from_pretrained(), reference_tokenizer(TORTOISE / "hf_tokenizer")
    assert ours(sentences)["input_ids"] == ref(sentences)["input_ids"], "ids differ"
    return {
        "ours_cold": best(lambda tok: tok(sentences), repeats, ClvpTokenizer.from_pretrained),
        "ref_cold": best(lambda tok: tok(sentences), repeats, lambda: reference_tokenizer(TORTOISE / "hf_tokenizer")),
        "ours_warm": best(lambda _: ours(sentences), repeats),
        "ref_warm": best(lambda _: ref(sentences), repeats),
    }


def bench_features(n_clips: int, repeats: int) -> dict[str, float]:
    from transformers import ClvpFeatureExtractor as Reference

    sources = [load_audio(path) for path in CLIP_FILES]
    clips = [sources[i % 3][(i * 1500) : (i * 1500) + SIX_SECONDS] for i in range(n_clips)]
    ours = ClvpFeatureExtractor.from_pretrained()
    ref = Reference(mel_norms=ours.mel_norms)
    a = ours(clips, sampling_rate=22050, return_tensors="np")["input_features"]
    b = ref(clips, sampling_rate=22050, return_tensors="np")["input_features"]
    assert a.shape == (n_clips, 80, 517) and np.abs(a - b).max() <= 1e-5, "features differ"
    return {
        "ours": best(lambda _: ours(clips, sampling_rate=22050, return_tensors="np"), repeats),
        "ref": best(lambda _: ref(clips, sampling_rate=22050, return_tensors="np"), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args()

    tok = bench_tokenizer(args.sentences, args.repeats)
    print(f"tokenizer, {args.sentences} sentences (best of {args.repeats}):")
    for state in ("cold", "warm"):
        ours, ref = tok[f"ours_{state}"], tok[f"ref_{state}"]
        print(
            f"  {state}: transformers {ref:.3f} s ({args.sentences / ref:,.0f}/s), clvp-jax {ours:.3f} s "
            f"({args.sentences / ours:,.0f}/s), ratio {ref / ours:.1f}x"
        )
    feat = bench_features(args.clips, args.repeats)
    print(f"features, {args.clips} x 6 s clips (best of {args.repeats}):")
    print(f"  transformers {feat['ref']:.3f} s, clvp-jax {feat['ours']:.3f} s, ratio {feat['ref'] / feat['ours']:.1f}x")


if __name__ == "__main__":
    main()
