"""`clvp_jax.long_text` / `clvp_jax.cli_long_text`: long text chunk by chunk, in groups, resumable (read.py-style).

Memory boundedness is tested structurally (no chunk group is larger than asked, and each chunk's folder is on disk
before the next group starts), not by timing. Texts use `|` split points, so a few short chunks make a "long" text.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from clvp_jax import long_text, pipeline
from clvp_jax.text import ClvpTokenizer
from clvp_jax.text.splitter import split_at_marks, split_text

DATA = Path(__file__).resolve().parent / "data"
THREE = "The first chunk. | A second one, rather different! | And the third."
SMALL = dict(candidates=2, max_new_tokens=6, seed=5)  # quick, and two candidates to rank


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def default_model():
    return pipeline.load_model(None)  # the packaged tiny default (random weights)


@pytest.fixture(scope="module")
def latents(default_model):
    model, params = default_model
    return pipeline.compute_latents(model=model, params=params)


def _plan(default_model, latents, text=THREE):
    model, params = default_model
    settings = pipeline.RankSettings(**SMALL)
    return pipeline.plan_ranking(text=text, model=model, params=params, latents=latents, settings=settings)


# ---- splitting and --regenerate -----------------------------------------------------------------------------


def test_bars_are_manual_split_points():
    tok = ClvpTokenizer.from_pretrained()
    assert split_at_marks("One.  Two |three  four. || ... | five", tok) == ["One. Two", "three four.", "five"]
    plain = "A sentence. " * 40
    assert split_at_marks(plain, tok) == split_text(plain, tok)  # no bar: the automatic split
    # A piece between bars is one chunk whatever its length in characters, unless it does not fit the tokens.
    long_piece = "word " * 120
    assert split_at_marks(f"{long_piece}| end", tok, max_tokens=399) == [long_piece.strip(), "end"]
    cut = split_at_marks(f"{long_piece}| end", tok, max_tokens=50)
    assert len(cut) > 2 and cut[-1] == "end" and all(len(tok.encode(c)) <= 50 for c in cut)


@pytest.mark.parametrize(
    ("spec", "want"), [(None, set()), ("3,7", {3, 7}), ("2-4", {2, 3, 4}), (" 0, 9 ", {0, 9}), ("1,1", {1})]
)
def test_regenerate_takes_indices_and_ranges(spec, want):
    assert long_text.parse_regenerate(spec, 10) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [("10", "chunk 10 is out of range"), ("-1", "numbered 0 to 9"), ("4-2", "runs backwards; write it low to high")],
)
def test_regenerate_out_of_range_names_the_range(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        long_text.parse_regenerate(spec, 10)
    assert "numbered 0 to 9" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="like 3,7 or 2-4"):
        long_text.parse_regenerate("three", 10)


# ---- codes: streaming, resume, --regenerate, interruption ---------------------------------------------------


def test_codes_stream_in_groups_resume_and_regenerate(default_model, latents, tmp_path, monkeypatch):
    model, params = default_model
    plan = _plan(default_model, latents)
    assert [len(c) > 0 for c in plan.chunks] == [True] * 3
    out = tmp_path / "out"
    weights = long_text.digest(params)
    groups, on_disk = [], []
    real = pipeline.rank_group

    def spy(plan, indices, **kw):
        groups.append(list(indices))
        on_disk.append(sorted(p.name for p in (out / "chunks").glob("[0-9]*")))
        return real(plan, indices, **kw)

    monkeypatch.setattr(pipeline, "rank_group", spy)
    reports = []
    kw = dict(model=model, params=params, out=out, weights=weights, group_size=2)
    made = long_text.write_codes(plan, **kw, report=lambda i, n, s: reports.append((i, n, s)))
    # Bounded: at most 2 chunks at once, and chunk 0 and 1 are written before the second group starts.
    assert made == [0, 1, 2] and groups == [[0, 1], [2]] and on_disk == [[], ["0000", "0001"]]
    assert reports == [(0, 3, "made"), (1, 3, "made"), (2, 3, "made")]
    first = {i: (out / "chunks" / f"{i:04d}" / "candidates.npz").read_bytes() for i in range(3)}
    combined = dict(np.load(out / "candidates.npz"))
    info = json.loads((out / "candidates.json").read_text())
    assert [c["text"] for c in info["chunks"]] == plan.chunks and info["weights"] == weights
    assert combined["sequences"].shape == (3, 2, 7) and combined["best_index"].shape == (3,)
    for i, chunk in enumerate(info["chunks"]):  # the pair agrees
        assert chunk["best"]["index"] == combined["best_index"][i]
    # The same as one call of every chunk (rank_speech): chunk i draws from its index, whatever its group.
    whole = pipeline.rank_speech(text=THREE, model=model, params=params, latents=latents, **SMALL)
    np.testing.assert_array_equal(combined["sequences"], whole.arrays["sequences"])
    np.testing.assert_array_equal(combined["text_ids"], whole.arrays["text_ids"])
    # Other shapes reorder a few float32 sums in the CLVP towers: scores agree to rounding.
    np.testing.assert_allclose(combined["candidate_scores"], whole.arrays["candidate_scores"], rtol=1e-5, atol=1e-5)

    # A rerun with the same key keeps every chunk (nothing generated) and rebuilds the joined pair.
    groups.clear()
    reports.clear()
    (out / "candidates.npz").unlink()
    assert long_text.write_codes(plan, **kw, report=lambda i, n, s: reports.append(s)) == []
    assert groups == [] and reports == ["kept"] * 3
    np.testing.assert_array_equal(np.load(out / "candidates.npz")["sequences"], combined["sequences"])

    # --regenerate 1: only chunk 1, alone in its group, and it comes out the same (same key, same output).
    assert long_text.write_codes(plan, **kw, regenerate={1}) == [1] and groups == [[1]]
    for i in range(3):
        npz = out / "chunks" / f"{i:04d}" / "candidates.npz"
        np.testing.assert_array_equal(np.load(npz)["sequences"], np.load(io.BytesIO(first[i]))["sequences"])
        assert i == 1 or npz.read_bytes() == first[i]  # the kept chunks are not rewritten

    # A changed chunk text (or seed, voice, weights) is made again; the other chunks are kept.
    groups.clear()
    edited = _plan(default_model, latents, text=THREE.replace("second", "2nd"))
    assert long_text.write_codes(edited, **kw) == [1] and groups == [[1]]
    groups.clear()
    assert long_text.write_codes(plan, **(kw | {"weights": "other"})) == [0, 1, 2]
    # A shorter text: the chunk folders past its end are removed, the joined pair has its chunks only.
    short = _plan(default_model, latents, text="The first chunk. | A second one, rather different!")
    assert long_text.write_codes(short, **(kw | {"weights": "other"})) == []
    assert sorted(p.name for p in (out / "chunks").glob("[0-9]*")) == ["0000", "0001"]
    assert np.load(out / "candidates.npz")["sequences"].shape[0] == 2
    assert _temporaries(tmp_path) == []


def test_an_interrupt_leaves_finished_chunks_whole_and_no_temporaries(default_model, latents, tmp_path, monkeypatch):
    model, params = default_model
    plan = _plan(default_model, latents)
    out = tmp_path / "out"
    real, calls = np.savez, []

    def interrupted(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # while chunk 1's folder is being written
            raise KeyboardInterrupt
        real(f, **arrays)

    monkeypatch.setattr(np, "savez", interrupted)
    kw = dict(model=model, params=params, out=out, weights="w", group_size=2)
    with pytest.raises(KeyboardInterrupt):
        long_text.write_codes(plan, **kw)
    monkeypatch.setattr(np, "savez", real)
    assert sorted(p.name for p in (out / "chunks").glob("[0-9]*")) == ["0000"]
    assert sorted(p.name for p in (out / "chunks" / "0000").iterdir()) == [
        ".clvp-jax-output",
        "candidates.json",
        "candidates.npz",
    ]
    assert not (out / "candidates.json").exists() and _temporaries(tmp_path) == []
    reports = []
    assert long_text.write_codes(plan, **kw, report=lambda i, n, s: reports.append((i, s))) == [1, 2]
    assert reports == [(0, "kept"), (1, "made"), (2, "made")]


def test_cli_generate_progress_per_chunk_and_regenerate_range(tmp_path, capsys):
    from clvp_jax.cli import main

    out = tmp_path / "o"
    argv = ["generate", "One here. | Two there.", "--out", str(out), "--num-samples", "2", "--max-new-tokens", "6"]
    argv += ["--seed", "5", "--chunk-group", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "chunk 1/2 (#0) made" in captured.err and "chunk 2/2 (#1) made" in captured.err
    assert "2 chunk(s), 0 kept" in captured.out
    assert main([*argv, "--quiet"]) == 0  # a rerun: both kept, no progress lines
    captured = capsys.readouterr()
    assert "2 chunk(s), 2 kept" in captured.out and "chunk 1/2" not in captured.err
    assert main([*argv, "--regenerate", "2"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "chunk 2 is out of range" in line and "numbered 0 to 1" in line
    assert main([*argv, "--chunk-group", "0"]) == 2
    assert "--chunk-group must be at least 1" in capsys.readouterr().err
    assert _temporaries(tmp_path) == []


def test_cli_generate_keys_record_the_sampling_flags_and_each_voice_resumes_apart(tmp_path, capsys):
    from clvp_jax.cli import main

    out = tmp_path / "o"
    argv = [
        "generate",
        "One here.",
        "-o",
        str(out),
        "--num-samples",
        "2",
        "--max-new-tokens",
        "4",
        "--voice",
        "lj,random",
    ]
    assert main([*argv, "-q", "--top-k", "50"]) == 0
    assert "1 chunk(s), 0 kept" in capsys.readouterr().out
    for name in ("lj", "random"):  # one resumable folder per voice, its chunk JSON with its own provenance
        chunk = json.loads((out / name / "chunks" / "0000" / "candidates.json").read_text())
        assert chunk["key"]["settings"]["top_k"] == 50 and chunk["provenance"]["voice"]["spec"] == name
        assert chunk["provenance"]["chunks"] == [{"text": "One here.", "normalized": "one here."}]
    assert main([*argv, "-q", "--top-k", "50"]) == 0  # the same flags: both voices' chunk kept
    assert capsys.readouterr().out.count("1 chunk(s), 1 kept") == 2
    assert main([*argv, "-q", "--top-k", "40"]) == 0  # a changed sampling flag changes the key: made again
    assert capsys.readouterr().out.count("1 chunk(s), 0 kept") == 2
    joined = json.loads((out / "random" / "candidates.json").read_text())
    assert joined["settings"]["top_k"] == 40 and joined["provenance"]["options"]["top_k"] == 40
    assert _temporaries(tmp_path) == []


# ---- audio --------------------------------------------------------------------------------------------------


def test_speech_chunks_are_written_resumed_and_joined(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # the tiny original checkpoint is .pth files
    import soundfile as sf

    from clvp_jax import speech
    from clvp_jax.waveform.bundle import default_waveform_models

    model, params = pipeline.load_model(DATA / "tortoise_tiny")
    wm = default_waveform_models(model.config.decoder_config.hidden_size)
    text = "Hello world, this is the first sentence. | And here is another one."
    fast = dict(preset="ultra_fast", candidates=3, diffusion_steps=4, max_new_tokens=10, seed=3)
    settings = speech.speech_settings(**fast)
    plan = speech.plan_speech(text=text, model=model, params=params, waveform_models=wm, settings=settings)
    whole = speech.synthesize(text=text, model=model, params=params, waveform_models=wm, **fast)
    out = tmp_path / "speech.wav"
    kw = dict(model=model, params=params, waveform_models=wm, out=out, weights="w", group_size=1, comment="RANDOM")
    kw |= dict(label="RANDOM")  # the JSON's label (the CLI's random-weights warning); `comment` is the WAVs'
    assert long_text.write_speech(plan, **kw) == [0, 1]
    wav, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and sf.SoundFile(out).comment == "RANDOM"
    # Chunk by chunk (groups of one) gives the waveform of the whole text in one go.
    np.testing.assert_array_equal(wav, whole.waveform)
    info = json.loads(out.with_suffix(".json").read_text())
    assert [c["text"] for c in info["chunks"]] == plan.chunks and info["label"] == "RANDOM"
    assert info["chunks"][1]["outputs"][0]["samples"] == whole.chunks[1].waveform.size
    # Resumed: nothing is rendered again; --regenerate 0 renders chunk 0 only, to the same audio.
    rendered = []
    real = speech.render_chunk
    monkeypatch.setattr(speech, "render_chunk", lambda chunk, **k: rendered.append(k["index"]) or real(chunk, **k))
    out.unlink()
    assert long_text.write_speech(plan, **kw) == [] and rendered == []
    np.testing.assert_array_equal(sf.read(out, dtype="float32")[0], wav)
    assert long_text.write_speech(plan, **kw, regenerate={0}) == [0] and rendered == [0]
    np.testing.assert_array_equal(sf.read(out, dtype="float32")[0], wav)
    assert _temporaries(tmp_path) == []
