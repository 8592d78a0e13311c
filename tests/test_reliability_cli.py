"""`clvp-jax generate / latents / score` reliability (issue 19): every bad input is one line with status 2 before
any work, no garbage is written with status 0, and the result pair appears whole.

The commands run in-process (`clvp_jax.cli.main`) on the tiny original checkpoint converted once; each case
asserts the status, the one line and the files afterwards. The expensive generation itself is replaced by a
stub where a case must be refused before it (so a refusal that came after the work would fail the test).
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from clvp_jax import cli, fs, pipeline
from clvp_jax.checkpoint.convert_cli import main as convert

TEXT = "Hello there."


@pytest.fixture(scope="module")
def checkpoints(tortoise_tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint, whole and autoregressive-only, as clvp-jax checkpoints (converted once)."""
    root = tmp_path_factory.mktemp("ck")
    assert convert([str(tortoise_tiny.folder), str(root / "full")]) == 0
    assert convert([str(tortoise_tiny.folder / "autoregressive.pth"), str(root / "ar")]) == 0
    return {"full": root / "full", "ar": root / "ar"}


@pytest.fixture(scope="module")
def latents_files(tmp_path_factory) -> dict[str, Path]:
    """Bad latents files of every class, 64 wide like the tiny decoder (so only the values are wrong)."""
    root = tmp_path_factory.mktemp("lat")
    files = {}
    for name, value in (("nan", np.nan), ("inf", np.inf), ("huge", 1e38)):
        files[name] = root / f"{name}.npy"
        np.save(files[name], np.full(64, value, np.float32))
    files["object"] = root / "object.npy"
    np.save(files["object"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["garbage"] = root / "garbage.npy"
    files["garbage"].write_bytes(os.urandom(256))
    return files


def _run(capsys, *argv: str, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return code, (err[-1] if err else "")


@pytest.fixture
def no_work(monkeypatch):
    """Generation that must not start: a refusal has to come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the input was refused")

    monkeypatch.setattr(pipeline, "rank_speech", refuse)
    monkeypatch.setattr(pipeline, "rank_group", refuse)  # what `generate` runs, a group of chunks at a time


# (arguments after `generate`, the message's key words): refused before loading or generating.
EARLY_CASES = [
    (["--num-samples", "0", TEXT], "--num-samples must be an integer >= 1, got 0"),
    (["--max-new-tokens", "0", TEXT], "--max-new-tokens must be an integer >= 1, got 0"),
    (["--candidates", "-3", TEXT], "--candidates must be an integer >= 1, got -3"),
    (["--seed", str(2**32), TEXT], "the seed must be an integer in [0, 2^32)"),
    (["--seed", "-1", TEXT], "the seed must be an integer in [0, 2^32)"),
    (["你好世界"], "nothing the model can say: it holds no Latin letters or digits, and normalisation left 'ni hao"),
    (["😀😀😀"], "normalisation left nothing"),
    (["..."], "normalisation left '...'"),
    (["abc\x00\x01def"], "holds control characters (U+0000, U+0001): it looks like binary data"),
]


@pytest.mark.parametrize("argv, message", EARLY_CASES)
def test_bad_generate_arguments_are_refused_before_the_work(tmp_path, capsys, no_work, argv, message):
    out = tmp_path / "out"
    code, line = _run(capsys, "generate", "--out", str(out), "--quiet", *argv)
    assert code == 2 and line.startswith("clvp-jax: error: ") and message in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_text_sources_name_the_source(tmp_path, capsys, monkeypatch, no_work):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")  # Latin-1, not UTF-8
    code, line = _run(capsys, "generate", "--out", str(tmp_path / "o"), "--text-file", str(bad))
    assert code == 2 and f"{bad} is not UTF-8 text (invalid continuation byte at byte 3)" in line, line
    binary = bytes(range(256)) * 4
    code, line = _run(capsys, "generate", "--out", str(tmp_path / "o"), stdin=binary, monkeypatch=monkeypatch)
    assert code == 2 and "standard input" in line and ("not UTF-8" in line or "control characters" in line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]


def test_unusable_outputs_are_refused_before_the_work(tmp_path, capsys, no_work):
    (tmp_path / "afile").write_text("x")
    code, line = _run(capsys, "generate", "--out", str(tmp_path / "afile"), TEXT)
    assert code == 2 and "exists and is not a folder" in line
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, line = _run(capsys, "generate", "--out", str(mine), "--force", TEXT)
    assert code == 2 and "is not an output of clvp-jax" in line and (mine / "notes.txt").read_text() == "keep"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        code, line = _run(capsys, "generate", "--out", str(ro / "out"), TEXT)
        assert code == 2 and "permission denied" in line
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(
    "name, message",
    [
        ("nan", "holds NaN or infinite values"),
        ("inf", "holds NaN or infinite values"),
        ("huge", "reaches 1e+38, beyond the 10000 a voice latent can hold"),
        (
            "object",
            "expected a float32 .npy of the voice latent [width], or a version-2 .npz archive); it is damaged or holds objects",
        ),
        ("garbage", "neither a .npy array nor a version-2 archive"),
    ],
)
def test_bad_latents_are_refused_where_they_enter(checkpoints, latents_files, tmp_path, capsys, no_work, name, message):
    code, line = _run(
        capsys,
        "generate",
        "--checkpoint",
        str(checkpoints["full"]),
        "--latents",
        str(latents_files[name]),
        "--out",
        str(tmp_path / "o"),
        TEXT,
    )
    assert code == 2 and message in line and str(latents_files[name]) in line, line
    assert list(tmp_path.iterdir()) == []


def test_latents_enter_generate_only_when_finite_and_bounded(checkpoints):
    from clvp_jax.generation import generate
    from clvp_jax.generation.latents import LatentsFileError, check_latent_values
    from clvp_jax.generation.presets import preset_options

    assert check_latent_values(np.full(4, 9e3), "x").dtype == np.float32  # within the bound
    model, params = pipeline.load_model(checkpoints["full"])
    options = preset_options("ultra_fast", config=model.config, candidates=1, max_new_tokens=4)
    for bad in (np.nan, -np.inf, 2e4):
        with pytest.raises(LatentsFileError, match="conditioning_latents: the conditioning latent"):
            generate(
                model,
                params,
                np.ones((1, 4), np.int32),
                conditioning_latents=np.full(64, bad, np.float32),
                rng=jax.random.key(0),
                options=options,
            )


def test_an_autoregressive_only_checkpoint_cannot_rank_or_score(checkpoints, tmp_path, capsys, no_work):
    for argv in (["generate", "--out", str(tmp_path / "o"), TEXT], ["score", "--speech-ids", "1,2,3", TEXT]):
        code, line = _run(capsys, argv[0], "--checkpoint", str(checkpoints["ar"]), *argv[1:])
        assert code == 2 and "this checkpoint has no CLVP towers" in line and "--clvp clvp2.pth" in line, line
    assert list(tmp_path.iterdir()) == []


def test_score_refuses_what_does_not_fit(checkpoints, capsys):
    model, _ = pipeline.load_model(checkpoints["full"])
    text_limit, speech_limit = pipeline.score_limits(model)
    ck = str(checkpoints["full"])
    code, line = _run(capsys, "score", "--checkpoint", ck, "--speech-ids", ",".join(["5"] * (speech_limit + 1)), TEXT)
    assert code == 2 and f"{speech_limit + 1} codes is longer than the {speech_limit}" in line, line
    code, line = _run(capsys, "score", "--checkpoint", ck, "--speech-ids", "1,2", "hello world " * 200)
    assert code == 2 and f"more than the {text_limit} the CLVP text tower takes" in line, line


def test_non_finite_scores_are_an_error_never_json(checkpoints):
    model, params = pipeline.load_model(checkpoints["full"])
    damaged = dict(params)
    damaged["speech_encoder_model"] = jax.tree_util.tree_map(lambda x: x * np.nan, params["speech_encoder_model"])
    with pytest.raises(FloatingPointError, match="CLVP scores are not finite"):
        pipeline.score(text=TEXT, speech_ids=[[1, 2, 3]], model=model, params=damaged)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json.dumps({"score": float("nan")}, allow_nan=False)  # what the writer uses: a NaN never reaches the file


def test_latents_written_under_any_name_are_read_back(checkpoints, tmp_path, capsys):
    ck = str(checkpoints["full"])
    for name in ("voice.bin", "voice", "voice.npz"):
        assert cli.main(["latents", "--checkpoint", ck, "--out", str(tmp_path / name)]) == 0
    code = cli.main(
        [
            "generate",
            "--checkpoint",
            ck,
            "--latents",
            str(tmp_path / "voice.bin"),
            "--num-samples",
            "1",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            TEXT,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert _pair_tag_ok(tmp_path / "out")
    code, line = _run(capsys, "latents", "--checkpoint", ck, "--out", str(tmp_path))
    assert code == 2 and "is a folder; give a file name" in line


def _pair_tag_ok(out: Path) -> bool:
    data = json.loads((out / "candidates.json").read_text())
    with np.load(out / "candidates.npz") as npz:
        return len(data["chunks"]) == npz["sequences"].shape[0] and (out / fs.OUTPUT_MARKER).is_file()


def test_an_unusable_compile_cache_only_warns(checkpoints, capsys, monkeypatch):
    from clvp_jax.generation import compiling

    def read_only_home(path=None):
        raise PermissionError(errno.EACCES, "Permission denied", "/home/user/.cache/clvp_jax/xla")

    monkeypatch.setattr(compiling, "enable_compilation_cache", read_only_home)
    code = cli.main(["score", "--checkpoint", str(checkpoints["full"]), "--speech-ids", "1,2,3", TEXT])
    captured = capsys.readouterr()
    assert code == 0 and "sequence 0: 3 codes" in captured.out
    assert "warning: compiled programs will not be cached" in captured.err and "CLVP_JAX_CACHE" in captured.err
