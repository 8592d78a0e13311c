"""`generate` and `speak` share their voice and sampling flags: `--voice a,b|a&b|random`, `--voices-dir`,
`--list-voices`, Tortoise's sampling knobs (`--num-samples` drawn, `--candidates` kept), `-o/--output`, `--version`,
`-v/-q`, and the outputs' provenance.

Commands run in-process (`clvp_jax.cli.main`) on the packaged default (tiny random weights), so the compiled
programs are shared between the cases. The refusals run with the model load replaced by a stub that fails the test:
a refusal that came after the load would be caught.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clvp_jax import cli, pipeline, tts
from clvp_jax.assets import default_voice_path
from clvp_jax.voices import CACHE_FILE

TEXT = "Hello there."
TINY_RUN = ["--num-samples", "1", "--max-new-tokens", "4", "-q"]  # the cheapest generation that ranks


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.fixture
def no_load(monkeypatch):
    """A model load that fails the test: refusals must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr(pipeline, "load_model", refuse)
    monkeypatch.setattr(tts.TextToSpeech, "__init__", refuse)


@pytest.fixture
def voices_dir(tmp_path):
    """A user's voices folder with one voice, `emma` (a copy of the packaged clip)."""
    root = tmp_path / "my_voices"
    (root / "emma").mkdir(parents=True)
    shutil.copy(default_voice_path(), root / "emma" / "1.wav")
    return root


# (flags, the one-line message): the same for generate and speak, refused before the model load.
EARLY = [
    (["--top-p", "1.5"], "--top-p must be a finite number in (0, 1], got 1.5"),
    (["--top-p", "0"], "--top-p must be a finite number in (0, 1], got 0.0"),
    (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
    (["--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
    (["--top-k", "0"], "--top-k must be an integer >= 1, got 0"),
    (["--repetition-penalty", "nan"], "--repetition-penalty must be a finite number > 0, got nan"),
    (["--length-penalty", "inf"], "--length-penalty must be a finite number (any sign), got inf"),
    (["--num-samples", "0"], "--num-samples must be an integer >= 1, got 0"),
    (["--candidates", "0"], "--candidates must be an integer >= 1, got 0"),
    (["--num-samples", "2", "--candidates", "3"], "--candidates must be at most --num-samples = 2"),
    (["-k", "17"], "--candidates must be at most the 16 candidates drawn per chunk, got 17"),  # ultra_fast: 16
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, got 0"),
    (["--seed", "-1"], "the seed must be an integer in [0, 2^32)"),
    (["--voice", "nosuch"], "unknown voice 'nosuch': no voice of that name in"),
    (["--voice", "lj&random"], "the random voice cannot be joined with other voices"),
    (["--voice", "lj,"], "empty voice name in ''"),
    (["--voices-dir", "/nonexistent/voices"], "voices folder /nonexistent/voices does not exist"),
]


@pytest.mark.parametrize("command", ["generate", "speak"])
@pytest.mark.parametrize("flags, message", EARLY)
def test_bad_flags_are_one_line_before_the_model_load(tmp_path, capsys, no_load, command, flags, message):
    out = tmp_path / ("out" if command == "generate" else "out.wav")
    code, _, err = _run(capsys, command, TEXT, "-o", str(out), "-q", *flags)
    lines = [line for line in err.splitlines() if line.startswith("clvp-jax: error: ")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command", ["generate", "speak"])
def test_the_random_voice_needs_the_generators_of_a_checkpoint_folder(tmp_path, capsys, no_load, command):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "rlg_auto.pth").write_bytes(b"")  # present (its content is read after the load); rlg_diffuser missing
    code, _, err = _run(capsys, command, TEXT, "--voice", "random", "--checkpoint", str(folder))
    assert code == 2 and f"--voice random needs rlg_diffuser.pth in {folder}" in err, err


@pytest.mark.parametrize("command", ["generate", "speak"])
def test_list_voices_needs_no_text_and_no_model(capsys, no_load, voices_dir, command):
    code, out, _ = _run(capsys, command, "--list-voices", "--voices-dir", str(voices_dir))
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ["emma", "lj", "random"], out
    assert str(voices_dir) in lines[0] and "[packaged]" in lines[1] and "1 clip" in lines[0]


def test_version_and_the_flag_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == "clvp-jax 0.1.0"
    parser = cli.build_parser()
    for spelling in ("-k", "--keep", "--candidates"):  # speak's old -k/--keep stay names of the kept count
        assert parser.parse_args(["speak", "x", spelling, "2"]).keep == 2
    for spelling in ("-o", "--output", "--out"):
        assert str(parser.parse_args(["generate", "x", spelling, "d"]).out) == "d"
        assert str(parser.parse_args(["speak", "x", spelling, "a.wav"]).out) == "a.wav"
    args = parser.parse_args(["generate", "x", "-vv", "-q"])
    assert (args.verbose, args.quiet) == (2, 1)


@pytest.mark.parametrize("command", ["generate", "speak"])
def test_help_says_drawn_and_kept(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "candidates DRAWN per chunk" in text and "candidates KEPT per chunk" in text
    assert "--voices-dir" in text and "--list-voices" in text and "'a,b' renders each" in text


def test_generate_renders_each_voice_reuses_caches_and_records_provenance(tmp_path, capsys, voices_dir):
    out = tmp_path / "out"
    base = ["generate", TEXT, "--voices-dir", str(voices_dir), "--num-samples", "1", "--max-new-tokens", "4"]
    code, _, err = _run(capsys, *base, "-q", "-o", str(out), "--voice", "emma,random,lj&emma")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["emma", "lj&emma", "random"]
    results = {name: json.loads((out / name / "candidates.json").read_text()) for name in ("emma", "random")}
    for name, result in results.items():
        record = result["provenance"]
        assert record["voice"]["spec"] == name and record["random_weights"] is True
        assert record["checkpoint_sha256"] == "packaged-0.1.0" and record["options"]["candidates"] == 1
        assert record["chunks"] == [{"text": TEXT, "normalized": "hello there."}]
        assert record["command"][:2] == ["clvp-jax", "generate"] and "emma,random,lj&emma" in record["command"]
    assert results["emma"]["provenance"]["voice"]["sources"][0]["clips"] == [str(voices_dir / "emma" / "1.wav")]
    assert (voices_dir / "emma" / CACHE_FILE).is_file()  # the user's voice folder now caches its latents
    with np.load(out / "emma" / "candidates.npz") as a:
        assert a["kept_index"].shape == (1, 1) and a["sequences"].shape == (1, 1, 5)
    # The default voice is the packaged lj (never cached: its folder is not the user's); -v says where each came from.
    code, _, err = _run(capsys, *base, "-o", str(tmp_path / "lj"), "-v")
    assert code == 0 and "lj: latents computed from 1 clip(s)" in err, err
    # The cache is reused on the next run and gives the same candidates.
    code, _, err = _run(capsys, *base, "-o", str(tmp_path / "again"), "--voice", "emma", "-v")
    assert code == 0 and f"emma: cached latents reused ({voices_dir / 'emma' / CACHE_FILE})" in err, err
    assert json.loads((tmp_path / "again" / "candidates.json").read_text())["chunks"] == results["emma"]["chunks"]


def test_speak_writes_one_set_of_files_per_voice(tmp_path, capsys):
    import soundfile as sf

    out = tmp_path / "x.wav"
    argv = ["speak", TEXT, "--voice", "lj,random", "-o", str(out), "--diffusion-steps", "2", *TINY_RUN]
    code, stdout, err = _run(capsys, *argv, "--top-k", "50")
    assert code == 0, err
    names = ["x.lj.chunks", "x.lj.json", "x.lj.wav", "x.random.chunks", "x.random.json", "x.random.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for name in ("lj", "random"):
        info = json.loads((tmp_path / f"x.{name}.json").read_text())
        assert info["provenance"]["voice"]["spec"] == name and info["settings"]["top_k"] == 50
        chunk = json.loads((tmp_path / f"x.{name}.chunks" / "0000" / "chunk.json").read_text())
        assert chunk["provenance"]["voice"]["spec"] == name and chunk["key"]["settings"]["top_k"] == 50
        for wav in (tmp_path / f"x.{name}.wav", tmp_path / f"x.{name}.chunks" / "0000" / "rank0.wav"):
            with sf.SoundFile(wav) as f:
                assert f"voice {name}; seed 0" in f.comment and "RANDOM weights" in f.comment
    # A rerun resumes each voice's output on its own: its finished chunk is kept, nothing is rendered again.
    code, stdout, err = _run(capsys, *argv, "--top-k", "50")
    assert code == 0 and stdout.count("1 chunk(s), 1 kept") == 2, err
    # A folder in the way that is not ours: refused before the model load, nothing replaced.
    (tmp_path / "x.lj.chunks" / ".clvp-jax-output").unlink()
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"{tmp_path / 'x.lj.chunks'} exists and is not an output of clvp-jax" in err


def test_the_packaged_random_voice_is_drawn_from_the_seed():
    from clvp_jax.cli_voice import random_latents

    def draw(seed):
        return random_latents(seed=seed, checkpoint=None, auto_width=64, diffusion_width=96, random_weights=True)

    first, again, other = draw(0), draw(0), draw(1)
    assert first.auto.shape == (64,) and first.diffusion.shape == (96,) and first.auto.dtype == np.float32
    np.testing.assert_array_equal(first.auto, again.auto)  # same seed, same program: bit-identical
    np.testing.assert_array_equal(first.diffusion, again.diffusion)
    assert np.abs(first.auto - other.auto).max() > 0.1  # another seed is another voice
    assert np.isfinite(first.auto).all() and np.abs(first.auto).max() > 0


@pytest.mark.parametrize(
    "voice, message",
    [
        ("nosuch", "unknown voice 'nosuch'"),
        ("random", "latents makes one voice's latents from its clips; --voice random names no clips"),
        ("lj,lj", "--voice lj,lj names 2 voices"),
    ],
)
def test_latents_takes_voice_names_and_refuses_before_the_load(tmp_path, capsys, no_load, voice, message):
    code, _, err = _run(capsys, "latents", "--voice", voice, "--out", str(tmp_path / "v.npy"))
    assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_text_after_voice_gets_a_hint(tmp_path, capsys, no_load):
    code, _, err = _run(capsys, "generate", "--voice", "lj", "Hello there.", "-o", str(tmp_path / "o"))
    assert code == 2 and "unknown voice 'Hello there.'" in err
    assert "--voice took 2 values, 'lj' 'Hello there.': put the text before --voice, or end the voices with --" in err


def test_a_latents_file_of_another_width_is_one_line(tmp_path, capsys):
    wrong = tmp_path / "wide.npy"
    np.save(wrong, np.ones(1024, np.float32))  # a real-size latent; the packaged default is 64 wide
    code, _, err = _run(capsys, "generate", TEXT, "--voice", str(wrong), "-o", str(tmp_path / "o"), *TINY_RUN)
    assert code == 2 and f"voice {str(wrong)!r}: its latent has width 1024 but the model expects 64" in err, err
    assert not (tmp_path / "o").exists()
