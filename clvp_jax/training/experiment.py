"""Command-line experiment: fine-tune CLVP's contrastive towers on (text, speech-codes) pairs.

    python -m clvp_jax.training.experiment --synthetic --output runs/synthetic
    clvp-jax-train --train train.jsonl --eval heldout.jsonl --init path/to/checkpoint --output runs/mine

Data: the JSONL format of `clvp_jax.training.data`; `--synthetic` generates the task of
`clvp_jax.training.synthetic` instead (and writes it to <output>/data/ for inspection).
Model: `--init` any checkpoint `clvp_jax.checkpoint.load_params` reads (fine-tuning), else a fresh random model of
`--config` (a config.json) or of `ClvpConfig.tiny()`. Only the text and speech towers and `logit_scale` are
trained by default (`--freeze` lists what is not; the contrastive loss does not reach the decoder side, and
freezing it keeps AdamW's decay and moments off it).

Output folder:
    checkpoints/<step>/   orbax checkpoints of the whole train state (the `--keep` latest); a rerun with the
                          same folder resumes from the latest one and continues bit-identically
    curve.json            [{step, wall_s, train_loss, eval_accuracy}], rewritten at every evaluation
    hf/                   the trained model in HF format (config.json + model.safetensors) at the end

Evaluation: top-1 text -> speech retrieval accuracy over all held-out pairs (chance = 1 / number of pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from clvp_jax.config import ClvpConfig, write_text_atomic
from clvp_jax.model import ClvpModelForConditionalGeneration
from clvp_jax.training import data as data_lib
from clvp_jax.training.checkpointing import Checkpointer
from clvp_jax.training.losses import clvp_embeddings, make_clvp_loss, retrieval_accuracy
from clvp_jax.training.sharding import data_mesh, replicate, shard_batch
from clvp_jax.training.steps import make_train_step
from clvp_jax.training.synthetic import SyntheticTask
from clvp_jax.training.train_state import OptimizerConfig, create_train_state, init_model_params, make_optimizer


@dataclasses.dataclass(frozen=True)
class ExperimentOptions:
    """Everything a run depends on (the CLI flags; see `parser()` for their meaning)."""

    output: str
    train: str | None = None
    eval: str | None = None
    synthetic: bool = False
    synthetic_train: int = 4096
    synthetic_eval: int = 256
    config: str | None = None
    init: str | None = None
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    accumulation_steps: int = 1
    freeze: tuple[str, ...] = ("conditioning_encoder", "speech_decoder_model")
    eval_every: int = 25
    save_every: int = 200
    keep: int = 3
    seed: int = 0
    bf16: bool = False
    data_parallel: bool = False
    max_text_tokens: int | None = None
    max_speech_codes: int | None = None
    export: bool = True
    progress: bool = True


DEFAULT_OUTPUT = "clvp-jax-train-out"  # like `clvp-jax generate`'s clvp-jax-out: `clvp-jax-train --synthetic` just runs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clvp-jax-train", description=__doc__.split("\n\n")[0])
    d = ExperimentOptions(output="")
    p.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"run folder (checkpoints, curve.json, hf/); default {DEFAULT_OUTPUT}"
    )
    src = p.add_argument_group("data")
    src.add_argument("--train", help="training pairs (JSONL: text_ids|text, speech_codes)")
    src.add_argument("--eval", help="held-out pairs for retrieval accuracy (same format)")
    src.add_argument("--synthetic", action="store_true", help="generate the synthetic task instead")
    src.add_argument("--synthetic-train", type=int, default=d.synthetic_train, help="synthetic training pairs")
    src.add_argument("--synthetic-eval", type=int, default=d.synthetic_eval, help="synthetic held-out pairs")
    src.add_argument("--max-text-tokens", type=int, help="padded text length (default: longest, rounded up to 8)")
    src.add_argument("--max-speech-codes", type=int, help="padded speech length (default: longest, rounded to 8)")
    mod = p.add_argument_group("model")
    mod.add_argument("--config", help="config.json of a fresh random model (default: ClvpConfig.tiny())")
    mod.add_argument("--init", help="checkpoint to fine-tune (any format clvp_jax.checkpoint reads)")
    mod.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 master weights")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps, help="train steps (micro-batches)")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per micro-batch")
    opt.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak AdamW learning rate")
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up (updates)")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--clip-norm", type=float, default=d.clip_norm, help="global gradient-norm clip (0: off)")
    opt.add_argument("--accumulation-steps", type=int, default=d.accumulation_steps, help="micro-batches/update")
    opt.add_argument("--freeze", nargs="*", default=list(d.freeze), help="parameter-path prefixes not trained")
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--data-parallel", action="store_true", help="split each batch over all local devices")
    run = p.add_argument_group("run")
    run.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evaluations")
    run.add_argument("--save-every", type=int, default=d.save_every, help="steps between checkpoints")
    run.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    run.add_argument("--no-export", dest="export", action="store_false", help="skip the final HF export")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> ExperimentOptions:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentOptions) if hasattr(args, f.name)}
    values["freeze"] = tuple(values["freeze"])
    return ExperimentOptions(**values)


def _round8(n: int) -> int:
    return 8 * math.ceil(n / 8)


def load_data(o: ExperimentOptions) -> tuple[list[data_lib.Pair], list[data_lib.Pair]]:
    if o.synthetic == bool(o.train):
        raise ValueError("pass either --synthetic or --train FILE (with --eval FILE)")
    if o.synthetic:
        task = SyntheticTask(seed=o.seed)
        train, held_out = task.pairs(o.synthetic_train, "train"), task.pairs(o.synthetic_eval, "eval")
        data_lib.write_pairs(Path(o.output) / "data" / "train.jsonl", train)
        data_lib.write_pairs(Path(o.output) / "data" / "eval.jsonl", held_out)
        return train, held_out
    if not o.eval:
        raise ValueError("--train needs --eval FILE: held-out pairs for the retrieval accuracy")
    tokenize = None
    if any('"text"' in line for line in Path(o.train).open(encoding="utf-8")):
        from clvp_jax.text import ClvpTokenizer  # local: only runs with raw text need the tokenizer

        tokenize = ClvpTokenizer.from_pretrained().encode
    return data_lib.read_pairs(o.train, tokenize), data_lib.read_pairs(o.eval, tokenize)


def load_model(o: ExperimentOptions) -> tuple[ClvpConfig, dict]:
    if o.init:
        from clvp_jax.checkpoint import load_params  # local: the loaders pull in the converter and orbax

        loaded = load_params(o.init, dtype="float32")
        return loaded.config, jax.tree_util.tree_map(jnp.asarray, loaded.params)
    config = ClvpConfig.from_pretrained(o.config) if o.config else ClvpConfig.tiny()
    return config, init_model_params(config, o.seed)


class RetrievalEval:
    """Top-1 text -> speech retrieval over a fixed held-out set, in jitted chunks of one shape."""

    def __init__(self, model, pairs: Sequence[data_lib.Pair], chunk: int, max_text: int, max_speech: int) -> None:
        self.n = len(pairs)
        padded = list(pairs) + [pairs[0]] * (-len(pairs) % chunk)  # filler rows are cut before scoring
        self.chunks = [
            data_lib.pad_batch(padded[i : i + chunk], max_text, max_speech) for i in range(0, len(padded), chunk)
        ]

        def embed(params, b):
            _, t, s = clvp_embeddings(model, params, b["text_ids"], b["text_mask"], b["speech_ids"], b["speech_mask"])
            return t, s

        self._embed = jax.jit(embed)

    def __call__(self, params: Mapping[str, Any]) -> float:
        parts = [self._embed(params, b) for b in self.chunks]
        t = jnp.concatenate([p[0] for p in parts])[: self.n]
        s = jnp.concatenate([p[1] for p in parts])[: self.n]
        return float(retrieval_accuracy(t, s))


def run_experiment(*, options: ExperimentOptions) -> dict[str, Any]:
    """Train as `options` say; returns {"curve": [...], "final_accuracy", "steps", "wall_s", "output"}."""
    o = options
    out = Path(o.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, held_out = load_data(o)
    config, params = load_model(o)
    max_text = o.max_text_tokens or _round8(max(len(p.text_ids) for p in train + held_out))
    max_speech = o.max_speech_codes or _round8(max(len(p.speech_codes) for p in train + held_out))
    vocab = dict(text_vocab=config.text_config.vocab_size, speech_vocab=config.speech_config.vocab_size)
    data_lib.check_pairs(train, max_text=max_text, max_speech=max_speech, name="training data", **vocab)
    data_lib.check_pairs(held_out, max_text=max_text, max_speech=max_speech, name="held-out data", **vocab)

    model = ClvpModelForConditionalGeneration(config, dtype=jnp.bfloat16 if o.bf16 else None)
    updates = math.ceil(o.steps / o.accumulation_steps)
    opt_cfg = OptimizerConfig(
        learning_rate=o.learning_rate,
        warmup_steps=min(o.warmup_steps, updates - 1),
        total_steps=updates,
        weight_decay=o.weight_decay,
        clip_norm=o.clip_norm or None,
        accumulation_steps=o.accumulation_steps,
        freeze=o.freeze,
    )
    tx = make_optimizer(opt_cfg, params)
    state = create_train_state(params, tx, o.seed)
    mesh = data_mesh() if o.data_parallel else None
    if mesh is not None:
        state = replicate(state, mesh)

    meta = {
        "config": config.to_dict(),
        "options": dataclasses.asdict(o),
        "max_text": max_text,
        "max_speech": max_speech,
    }
    curve: list[dict[str, Any]] = []
    checkpoints = Checkpointer(out / "checkpoints", max_to_keep=o.keep)
    if checkpoints.latest_step() is not None:
        state, _ = checkpoints.restore(state)
        if (out / "curve.json").is_file():
            curve = [r for r in json.loads((out / "curve.json").read_text()) if r["step"] <= int(state.step)]
        print(f"resuming from step {int(state.step)} ({checkpoints.directory})", file=sys.stderr)
    wall_offset = curve[-1]["wall_s"] if curve else 0.0

    step_fn = make_train_step(make_clvp_loss(model), tx)
    evaluate = RetrievalEval(model, held_out, o.batch_size, max_text, max_speech)

    def record(step: int, train_loss: float | None) -> dict[str, Any]:
        row = {
            "step": step,
            "wall_s": round(wall_offset + time.perf_counter() - t_start, 2),
            "train_loss": train_loss,
            "eval_accuracy": evaluate(state.params),
        }
        curve.append(row)
        write_text_atomic(out / "curve.json", json.dumps(curve, indent=1) + "\n")
        return row

    first = int(state.step)
    if not curve:
        record(first, None)
    progress = _progress(first, o.steps, o.progress)
    loss, tick, pairs_done = None, time.perf_counter(), 0
    for step in range(first, o.steps):
        batch = data_lib.train_batch(train, o.batch_size, o.seed, step, max_text, max_speech)
        batch = shard_batch(batch, mesh) if mesh is not None else batch
        state, metrics = step_fn(state, batch)
        pairs_done += o.batch_size
        done = step + 1
        if done % 10 == 0 or done == o.steps:
            loss = float(metrics["loss"])  # syncs with the device, so the throughput below is real
            rate = pairs_done / (time.perf_counter() - tick)
            progress.set_postfix(loss=f"{loss:.4f}", pairs_s=f"{rate:.0f}")
            progress.update(done - progress.n)
            tick, pairs_done = time.perf_counter(), 0
        if done % o.eval_every == 0 or done == o.steps:
            row = record(done, float(metrics["loss"]))
            progress.write(f"step {done}: train loss {row['train_loss']:.4f}, eval accuracy {row['eval_accuracy']:.3f}")
            tick = time.perf_counter()
        if done % o.save_every == 0 or done == o.steps:
            checkpoints.save(state, meta, force=True)
    progress.close()
    checkpoints.close()
    if not curve or curve[-1]["step"] != int(state.step):
        record(int(state.step), loss)
    if o.export:
        from clvp_jax.checkpoint import export_hf  # local: pulls in the converter

        export_hf(out / "hf", config, jax.device_get(state.params), force=True)
    return {
        "curve": curve,
        "final_accuracy": curve[-1]["eval_accuracy"],
        "steps": int(state.step),
        "wall_s": curve[-1]["wall_s"],
        "output": str(out),
    }


def _progress(initial: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = run_experiment(options=options_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"clvp-jax-train: error: {err}", file=sys.stderr)
        return 2
    print(
        f"done: {result['steps']} steps, held-out retrieval accuracy {result['final_accuracy']:.3f} "
        f"({result['wall_s']:.0f} s); curve in {result['output']}/curve.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
