"""The command-line experiment end to end on a short synthetic run: progress, evaluation, checkpoints kept,
resume, and an HF export that transformers loads strictly and that computes the same embeddings."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from clvp_jax.checkpoint import state_dict_to_params
from clvp_jax.config import ClvpConfig
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.training.data import DataError, read_pairs
from clvp_jax.training.experiment import main
from clvp_jax.training.losses import clvp_embeddings

ARGS = ["--synthetic", "--synthetic-train", "256", "--synthetic-eval", "64", "--batch-size", "32"]
ARGS += ["--eval-every", "10", "--save-every", "10", "--keep", "2", "--no-progress", "--warmup-steps", "5"]


def test_synthetic_experiment_runs_resumes_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*ARGS, "--output", str(out), "--steps", "30"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in curve] == [0, 10, 20, 30]
    assert curve[0]["train_loss"] is None and all(r["train_loss"] > 0 for r in curve[1:])
    assert curve[-1]["eval_accuracy"] > curve[0]["eval_accuracy"]  # 30 steps already learn something
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [20, 30]
    assert len(read_pairs(out / "data" / "eval.jsonl")) == 64

    # A second call with more steps resumes from the latest checkpoint and extends the curve.
    assert main([*ARGS, "--output", str(out), "--steps", "40"]) == 0
    assert "resuming from step 30" in capsys.readouterr().err
    curve = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in curve] == [0, 10, 20, 30, 40]

    # The HF export loads strictly into transformers and gives our text embeddings back.
    torch = pytest.importorskip("torch")
    from transformers import ClvpModelForConditionalGeneration as HFModel

    hf = HFModel.from_pretrained(out / "hf").eval()
    config = ClvpConfig.from_pretrained(out / "hf")
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = state_dict_to_params(state, config)
    ids = np.array([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=torch.tensor(ids)).embeds.numpy()
    ours = clvp_embeddings(ClvpModelForConditionalGeneration(config), params, jnp.asarray(ids), None, ids, None)[1]
    # fp32 forward of a 2-layer tower, compared after L2 normalisation (ours) -> normalise the reference too.
    np.testing.assert_allclose(ours, ref / np.linalg.norm(ref, axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_bad_data_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text_ids": [1, 2], "speech_codes": [3]}\n{"speech_codes": [1]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: needs 'text_ids'"):
        read_pairs(bad)
    assert main(["--train", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "--eval" in capsys.readouterr().err
