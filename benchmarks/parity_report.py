"""Print the largest |clvp-jax - transformers| per module on the four tiny test configurations.

    .venv/bin/python benchmarks/parity_report.py

Uses the same O(1)-scale random reference models as tests/test_parity_modules.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference_models  # noqa: E402

from clvp_jax.checkpoint import state_dict_to_params  # noqa: E402
from clvp_jax.model import ClvpModelForConditionalGeneration  # noqa: E402


def main() -> None:
    rows = []
    for name in sorted(reference_models.CONFIGS):
        hf, sd = reference_models.reference_model(name)
        cfg = reference_models.ours_config(name)
        params = state_dict_to_params(sd, cfg)
        model = ClvpModelForConditionalGeneration(cfg, masked_pooling=False)

        def run(fn, *args, model=model, params=params):
            return np.asarray(jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=fn))(params, *args))

        rng = np.random.default_rng(0)
        B, T = 3, 9
        lengths = np.array([T, T - 3, 2])
        mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int64)
        ids = rng.integers(1, 200, (B, T)) * mask
        feats = rng.normal(size=(B, cfg.decoder_config.feature_size, 23)).astype(np.float32)
        dec_ids = rng.integers(0, cfg.decoder_config.vocab_size, (B, 11))
        pos = np.broadcast_to(np.arange(11) + 3, (B, 11)).copy()
        t = torch.from_numpy
        with torch.no_grad():
            ref = {
                "text encoder embeds": hf.text_encoder_model(input_ids=t(ids), attention_mask=t(mask)).embeds,
                "speech encoder embeds": hf.speech_encoder_model(input_ids=t(ids), attention_mask=t(mask)).embeds,
                "conditioning encoder": hf.conditioning_encoder(
                    input_features=t(feats), input_ids=t(ids), attention_mask=t(mask)
                ),
                "decoder logits": hf.speech_decoder_model(input_ids=t(dec_ids), position_ids=t(pos)).logits,
                "forward logits_per_text": hf(
                    input_ids=t(ids), input_features=t(feats), attention_mask=t(mask)
                ).logits_per_text,
            }
        ours = {
            "text encoder embeds": run(lambda m, i, a: m.text_encoder_model(i, a).embeds, ids, mask),
            "speech encoder embeds": run(lambda m, i, a: m.speech_encoder_model(i, a).embeds, ids, mask),
            "conditioning encoder": run(lambda m, *a: m.conditioning_encoder(*a), feats, ids, mask),
            "decoder logits": run(
                lambda m, i, p: m.speech_decoder_model(input_ids=i, position_ids=p).logits, dec_ids, pos
            ),
            "forward logits_per_text": run(lambda m, *a: m(*a).logits_per_text, ids, feats, mask),
        }
        for key, value in ref.items():
            rows.append((name, key, float(np.abs(ours[key] - value.numpy()).max()), float(np.abs(value.numpy()).max())))
    print(f"{'config':16s} {'module':26s} {'max |diff|':>11s} {'max |ref|':>10s}")
    for name, key, diff, scale in rows:
        print(f"{name:16s} {key:26s} {diff:11.2e} {scale:10.2f}")


if __name__ == "__main__":
    main()
