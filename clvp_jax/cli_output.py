"""What `clvp-jax generate` and `speak` write besides the data: readable JSON and the provenance record.

Provenance (the `"provenance"` entry of every JSON they write; a one-line digest of it in speak's WAV comment):
the clvp-jax version, the command line, the checkpoint as given and its sha256 (`checkpoint_fingerprint`), whether
the weights are the packaged RANDOM ones, the voice (as asked for, and each part's files), the seed, every option,
and per chunk its text and its normalised form (what the tokenizer saw).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from clvp_jax.json_text import dumps as dumps  # re-exported: the readable JSON of every file written

PACKAGED_CHECKPOINT = "packaged default (random weights)"


def checkpoint_hash(checkpoint) -> str:
    """The sha256 naming the weights (`checkpoint_fingerprint`); the packaged default's is its version's name."""
    from clvp_jax.version import __version__

    if checkpoint is None:
        return f"packaged-{__version__}"
    from pathlib import Path

    from clvp_jax.checkpoint.hashing import checkpoint_fingerprint
    from clvp_jax.checkpoint.hub import resolve_checkpoint

    path = Path(checkpoint)
    return checkpoint_fingerprint(path if path.exists() else resolve_checkpoint(checkpoint))


def normalized(chunks: Sequence[str]) -> list[str]:
    """Each chunk as the tokenizer sees it (Tortoise's normaliser, `pipeline.TEXT_NORMALIZER`)."""
    from clvp_jax.pipeline import TEXT_NORMALIZER
    from clvp_jax.text import ClvpTokenizer

    normalize = ClvpTokenizer.from_pretrained(normalizer=TEXT_NORMALIZER).normalize
    return [normalize(c) for c in chunks]


def provenance(
    *,
    checkpoint,
    checkpoint_sha256: str,
    random_weights: bool,
    voice: dict,
    seed: int,
    options: dict,
    chunks: Sequence[str],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The provenance record (see the module docstring)."""
    from clvp_jax.version import __version__

    return {
        "clvp_jax_version": __version__,
        "command": ["clvp-jax", *(sys.argv[1:] if argv is None else argv)],
        "checkpoint": PACKAGED_CHECKPOINT if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "random_weights": random_weights,
        "voice": voice,
        "seed": seed,
        "options": options,
        "chunks": [{"text": t, "normalized": n} for t, n in zip(chunks, normalized(chunks), strict=True)],
    }


def wav_comment(record: dict[str, Any], label: str | None = None) -> str:
    """One line for a WAV's comment: the random-weights label first, then the provenance digest."""
    opts = record["options"]
    digest = (
        f"clvp-jax {record['clvp_jax_version']}; checkpoint {record['checkpoint']} "
        f"(sha256 {record['checkpoint_sha256'][:16]}); voice {record['voice']['spec']}; seed {record['seed']}; "
        f"preset {opts.get('preset')}; text: {' | '.join(c['normalized'] for c in record['chunks'])}"
    )
    return f"{label}. {digest}" if label else digest


__all__ = ["checkpoint_hash", "dumps", "normalized", "provenance", "wav_comment"]
