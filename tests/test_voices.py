"""`clvp_jax.voices`: voice specs as Tortoise's do_tts.py takes them, voice folders, latents files and the cache.

Everything runs on a voices layout built in tmp_path (no model, no audio decoding: the clips are tiny valid WAVs,
and resolution never reads them), plus the packaged `lj`.
"""

from __future__ import annotations

import os
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from clvp_jax import voice_latents as voice_latents_module
from clvp_jax.voice_latents import combine_latents, load_latents_file, save_cached_latents, voice_latents
from clvp_jax.voices import (
    CACHE_FILE,
    PACKAGED_VOICES_DIR,
    VoiceError,
    VoiceLatents,
    describe_source,
    format_voice_list,
    list_voices,
    resolve_voices,
)

D, E = 8, 6  # tiny latent widths for the fake model


def _wav(path: Path, samples: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.zeros(samples, np.int16).tobytes())
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A: lj (2 clips, hides the packaged lj), emma (3), pat (a Tortoise .pth), empty, junk, two_latents;
    B: emma (1 clip, hidden by A's when A comes first), tom (1); loose: files given by path."""
    import torch

    a, b, loose = tmp_path / "A", tmp_path / "B", tmp_path / "loose"
    for name in ("1.wav", "2.wav"):
        _wav(a / "lj" / name)
    for name in ("a.wav", "b.wav", "c.wav"):
        _wav(a / "emma" / name)
    (a / "pat").mkdir()
    torch.save((torch.ones(1, D), torch.full((1, E), 2.0)), a / "pat" / "pat.pth")  # as get_conditioning_latents.py
    (a / "empty").mkdir()
    (a / "junk").mkdir()
    (a / "junk" / "notes.txt").write_text("no clips here")
    (a / "two_latents").mkdir()
    np.save(a / "two_latents" / "x.npy", np.zeros(D, np.float32))
    np.save(a / "two_latents" / "y.npy", np.zeros(D, np.float32))
    (a / ".hidden").mkdir()  # dot-folders are not voices
    _wav(b / "emma" / "x.wav")
    _wav(b / "tom" / "1.wav")
    _wav(loose / "clip1.wav")
    _wav(loose / "clip2.wav")
    _wav(loose / "a,b&c.wav")  # a path that holds the separators
    (loose / "weird.txt").write_text("x")
    (loose / "empty.wav").write_bytes(b"")
    np.save(loose / "lat.npy", np.arange(D, dtype=np.float32)[None])  # [1, D], as Tortoise keeps a batch axis
    return {"A": a, "B": b, "loose": loose, "root": tmp_path}


def _dirs(layout, names: str) -> list[Path]:
    return [layout[n] for n in names]


# (spec, voice dirs, expected voices: [(label, [(source kind, folder or file relative to root)...], clips)])
RESOLVE_CASES = [
    ("lj", "", [("lj", [("named", "PACKAGED/lj")], 1)]),
    ("lj", "A", [("lj", [("named", "A/lj")], 2)]),  # --voices-dir wins over the packaged voice
    ("emma", "AB", [("emma", [("named", "A/emma")], 3)]),  # the first folder that has the name wins
    ("emma", "BA", [("emma", [("named", "B/emma")], 1)]),
    ("tom", "AB", [("tom", [("named", "B/tom")], 1)]),  # later folders are still searched
    ("lj&emma", "A", [("lj&emma", [("named", "A/lj"), ("named", "A/emma")], 5)]),
    ("lj,emma", "A", [("lj", [("named", "A/lj")], 2), ("emma", [("named", "A/emma")], 3)]),
    (
        " lj , emma&tom ",
        "AB",
        [("lj", [("named", "A/lj")], 2), ("emma&tom", [("named", "A/emma"), ("named", "B/tom")], 4)],
    ),
    ("random", "", [("random", [], 0)]),
    ("random,lj", "", [("random", [], 0), ("lj", [("named", "PACKAGED/lj")], 1)]),
    ("pat", "A", [("pat", [("latents", "A/pat/pat.pth")], 0)]),
    ("{loose}/clip1.wav", "", [("{loose}/clip1.wav", [("file", "loose/clip1.wav")], 1)]),
    (
        "{loose}/clip1.wav&{loose}/clip2.wav",
        "",
        [("{loose}/clip1.wav&{loose}/clip2.wav", [("file", "loose/clip1.wav"), ("file", "loose/clip2.wav")], 2)],
    ),
    ("{A}/emma", "", [("{A}/emma", [("folder", "A/emma")], 3)]),  # a folder path needs no voices dir
    ("{loose}/lat.npy", "", [("{loose}/lat.npy", [("latents", "loose/lat.npy")], 0)]),
    ("{loose}/a,b&c.wav", "", [("{loose}/a,b&c.wav", [("file", "loose/a,b&c.wav")], 1)]),  # taken literally
    (
        ["{loose}/clip1.wav", "{loose}/clip2.wav"],
        "",
        [("{loose}/clip1.wav&{loose}/clip2.wav", [("file", "loose/clip1.wav"), ("file", "loose/clip2.wav")], 2)],
    ),
    (["lj,emma"], "A", [("lj", [("named", "A/lj")], 2), ("emma", [("named", "A/emma")], 3)]),  # one entry: parsed
    (Path("lj&emma"), "A", [("lj&emma", [("named", "A/lj"), ("named", "A/emma")], 5)]),  # argparse type=Path
]


def _fill(value, layout):
    if isinstance(value, list):
        return [_fill(v, layout) for v in value]
    if isinstance(value, Path):
        return value
    return value.replace("{loose}", str(layout["loose"])).replace("{A}", str(layout["A"]))


def _where(rel: str, layout) -> Path:
    top, _, rest = rel.partition("/")
    base = PACKAGED_VOICES_DIR if top == "PACKAGED" else layout["root"] / top
    return base / rest


@pytest.mark.parametrize(("spec", "dirs", "expected"), RESOLVE_CASES, ids=[str(c[0]) for c in RESOLVE_CASES])
def test_resolve(layout, spec, dirs, expected):
    got = resolve_voices(_fill(spec, layout), _dirs(layout, dirs))
    assert [v.label for v in got] == [_fill(label, layout) for label, _, _ in expected]
    for voice, (_, sources, clips) in zip(got, expected, strict=True):
        assert [(s.kind, s.path if s.kind != "latents" else s.latents_file) for s in voice.sources] == [
            (kind, _where(rel, layout)) for kind, rel in sources
        ]
        assert len(voice.clips) == clips and voice.is_random == (not sources)
        assert all(c.is_file() for c in voice.clips)


def test_clip_order_names_and_cache_locations(layout):
    (emma,) = resolve_voices("emma", [layout["A"]])
    assert [c.name for c in emma.clips] == ["a.wav", "b.wav", "c.wav"]  # name order, as load_voice reads them
    assert emma.sources[0].cache_path == layout["A"] / "emma" / CACHE_FILE and emma.sources[0].cache is None
    (lj,) = resolve_voices("lj")
    assert lj.sources[0].cache_path is None  # the package folder is not the user's to write in
    (loose,) = resolve_voices(f"{layout['loose']}/clip1.wav&{layout['A']}/emma")
    assert loose.name == "clip1&emma" and loose.sources[0].cache_path is None
    assert resolve_voices("lj&emma", [layout["A"]])[0].name == "lj&emma"
    assert resolve_voices("random")[0].name == "random"
    assert resolve_voices(f"{layout['loose']}/a,b&c.wav")[0].name == "a_b_c"  # file-name safe


def test_bare_names_are_names_first_then_paths(layout, monkeypatch):
    monkeypatch.chdir(layout["A"])  # the working folder holds folders 'emma' and 'junk'
    _wav(layout["A"] / "mine" / "1.wav")
    (emma,) = resolve_voices("emma", [layout["B"]])
    assert emma.sources[0].kind == "named" and emma.sources[0].path == layout["B"] / "emma"  # the name wins
    (mine,) = resolve_voices("mine", [layout["B"]])
    assert mine.sources[0].kind == "folder" and mine.sources[0].path == Path("mine")  # no such name: the path
    (dot,) = resolve_voices("./emma", [layout["B"]])
    assert dot.sources[0].kind == "folder"  # an explicit path is always a path


ERROR_CASES = [
    (
        "bob",
        "AB",
        r"unknown voice 'bob': no voice of that name in .*A, .*B, .*assets/voices.*"
        r"Known voices: emma, empty, junk, lj, pat, tom, two_latents, and 'random'",
    ),
    ("lj&bob", "A", r"unknown voice 'bob'"),
    ("empty", "A", r"voice 'empty' \(folder .*empty\) holds no audio files \(\.wav, .*it is empty"),
    ("junk", "A", r"holds no audio files .*it holds notes\.txt\. Put the voice's clips in it"),
    ("two_latents", "A", r"no audio clips and several latents files \(x\.npy, y\.npy\)"),
    ("lj&&emma", "A", r"empty voice name in 'lj&&emma'"),
    ("lj,", "A", r"empty voice name in ''"),
    ("   ", "A", r"the voice is empty; give a voice name \(.*lj.*\), a path or 'random'"),
    ([], "", r"no voice given"),
    ("random&lj", "", r"'random&lj': the random voice cannot be joined"),
    ("lj&pat", "A", r"'lj&pat' joins voices given as clips with voices given as latents files \(pat\)"),
    ("{loose}/missing.wav", "", r"no file or folder at .*missing\.wav"),
    ("{loose}/weird.txt", "", r"weird\.txt is neither an audio file .* nor a latents file"),
    ("{loose}/empty.wav", "", r"voice clip .*empty\.wav is empty \(0 bytes\)"),
]


@pytest.mark.parametrize(("spec", "dirs", "message"), ERROR_CASES, ids=[str(c[0]) for c in ERROR_CASES])
def test_errors_name_what_was_looked_for(layout, spec, dirs, message):
    with pytest.raises(VoiceError, match=message):
        resolve_voices(_fill(spec, layout), _dirs(layout, dirs))


def test_bad_voices_dirs(layout):
    with pytest.raises(VoiceError, match=r"voices folder .*nope does not exist; pass a folder"):
        resolve_voices("lj", [layout["root"] / "nope"])
    with pytest.raises(VoiceError, match=r"voices folder .*weird\.txt is a file, not a folder"):
        list_voices([layout["loose"] / "weird.txt"])


def test_empty_clip_inside_a_voice_folder(layout):
    (layout["A"] / "lj" / "3.wav").write_bytes(b"")
    with pytest.raises(VoiceError, match=r"voice 'lj' \(folder .*lj\): 3\.wav is empty \(0 bytes\)"):
        resolve_voices("lj", [layout["A"]])


def test_list_voices(layout):
    entries = {e.name: e for e in list_voices([layout["A"], layout["B"]])}
    assert list(entries) == sorted(entries) == ["emma", "empty", "junk", "lj", "pat", "tom", "two_latents"]
    assert entries["lj"].folder == layout["A"] / "lj" and entries["lj"].shadows == (PACKAGED_VOICES_DIR / "lj",)
    assert entries["emma"].shadows == (layout["B"] / "emma",) and not entries["emma"].packaged
    assert entries["empty"].source is None and "it is empty" in entries["empty"].problem
    assert entries["pat"].source.kind == "latents" and entries["tom"].problem is None
    packaged = {e.name: e for e in list_voices()}
    assert packaged["lj"].packaged and len(packaged["lj"].source.clips) == 1
    text = format_voice_list(list_voices([layout["A"], layout["B"]]))
    lines = text.splitlines()
    assert len(lines) == len(entries) + 1 and lines[-1].startswith("random ")
    assert "2 clips" in lines[3] and f"hides {PACKAGED_VOICES_DIR / 'lj'}" in lines[3]
    assert "UNUSABLE: voice 'empty'" in lines[1] and "latents file pat.pth" in lines[4]


# ---- latents: files, cache, combining -------------------------------------------------------------------------


def _clip_vector(clip: Path) -> np.ndarray:
    """The fake model's per-clip latent: fixed by the clip's name."""
    rng = np.random.default_rng(zlib.crc32(clip.name.encode()))
    return rng.standard_normal(D + E).astype(np.float32)


class FakeModel:
    """compute(clips) as the real pipeline does it: the mean over clips of per-clip latents (auto | diffusion)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, clips) -> VoiceLatents:
        self.calls.append(tuple(c.name for c in clips))
        mean = np.mean([_clip_vector(c) for c in clips], axis=0)
        return VoiceLatents(mean[:D], mean[D:])


def test_cache_written_reused_and_invalidated(layout):
    dirs = [layout["A"]]
    model, lines = FakeModel(), []
    (emma,) = resolve_voices("emma", dirs)
    first = voice_latents(emma, checkpoint="ck1", compute=model, report=lines.append)
    assert model.calls == [("a.wav", "b.wav", "c.wav")] and (layout["A"] / "emma" / CACHE_FILE).is_file()
    assert "computed from 3 clip(s)" in lines[-1] and "cached in" in lines[-1]

    (emma,) = resolve_voices("emma", dirs)  # the cache is found by resolution, without a model
    cache = emma.sources[0].cache
    assert cache.stale is None and cache.checkpoint == "ck1" and cache.clips == ("a.wav", "b.wav", "c.wav")
    assert cache.has_diffusion and cache.problem("ck1") is None and "reused" in describe_source(emma.sources[0], "ck1")
    again = voice_latents(emma, checkpoint="ck1", compute=model, need_diffusion=True, report=lines.append)
    assert len(model.calls) == 1 and "cached latents reused" in lines[-1]  # not recomputed
    np.testing.assert_array_equal(again.auto, first.auto)  # a float32 file round trip is exact
    np.testing.assert_array_equal(again.diffusion, first.diffusion)

    assert "made by checkpoint ck1, not ck2" in cache.problem("ck2")  # other weights: recomputed
    voice_latents(emma, checkpoint="ck2", compute=model, report=lines.append)
    assert len(model.calls) == 2 and "cache not reused: made by checkpoint ck1" in lines[-1]

    clip = layout["A"] / "emma" / "b.wav"
    future = (layout["A"] / "emma" / CACHE_FILE).stat().st_mtime + 10
    os.utime(clip, (future, future))  # an edited clip
    (emma,) = resolve_voices("emma", dirs)
    assert emma.sources[0].cache.stale == "b.wav changed since it was made (size or modification time)"
    assert "not reused: b.wav changed" in describe_source(emma.sources[0], "ck2")
    past = future - 1000
    os.utime(clip, (past, past))  # replaced by an older file: still a change
    (emma,) = resolve_voices("emma", dirs)
    assert emma.sources[0].cache.stale.startswith("b.wav changed")

    _wav(layout["A"] / "emma" / "d.wav")
    (layout["A"] / "emma" / "a.wav").unlink()
    (emma,) = resolve_voices("emma", dirs)
    assert emma.sources[0].cache.stale == "the clips changed since it was made (added: d.wav) (removed: a.wav)"

    (layout["A"] / "emma" / CACHE_FILE).write_bytes(b"not a zip")
    (emma,) = resolve_voices("emma", dirs)
    assert emma.sources[0].cache.stale.startswith("unreadable (")
    voice_latents(emma, checkpoint="ck2", compute=model)
    (emma,) = resolve_voices("emma", dirs)
    assert emma.sources[0].cache.problem("ck2") is None  # rewritten whole


def test_cache_without_diffusion_is_recomputed_when_needed(layout):
    (lj,) = resolve_voices("lj", [layout["A"]])
    save_cached_latents(lj.sources[0], VoiceLatents(np.zeros(D, np.float32)), checkpoint="ck")
    (lj,) = resolve_voices("lj", [layout["A"]])
    assert lj.sources[0].cache.problem("ck") is None
    assert lj.sources[0].cache.problem("ck", need_diffusion=True) == "it holds no diffusion latent"
    model = FakeModel()
    voice_latents(lj, checkpoint="ck", compute=model, need_diffusion=True)
    assert model.calls == [("1.wav", "2.wav")]


def test_unwritable_cache_is_reported_not_raised(layout, monkeypatch):
    from clvp_jax.fs import OutputError

    def refuse(*_args, **_kwargs):
        raise OutputError("cannot write here (permission denied)")

    monkeypatch.setattr(voice_latents_module, "atomic_file", refuse)  # the cache writer lives there
    lines = []
    (lj,) = resolve_voices("lj", [layout["A"]])
    voice_latents(lj, checkpoint="ck", compute=FakeModel(), report=lines.append)
    assert "cache not written (cannot write here (permission denied))" in lines[-1]
    (packaged,) = resolve_voices("lj")
    with pytest.raises(VoiceError, match="has no cache location"):
        save_cached_latents(packaged.sources[0], VoiceLatents(np.zeros(D, np.float32)), checkpoint="ck")
    voice_latents(packaged, checkpoint="ck", compute=FakeModel(), report=lines.append)
    assert "cached" not in lines[-1]  # nothing written into the package


def test_joined_clip_voices_average_over_all_clips(layout):
    # Tortoise concatenates the clip lists of `a&b`, so the latent is the mean over all 5 clips; here each voice
    # is computed (and cached) alone and weighted by its clip count, which must give the same numbers.
    model = FakeModel()
    dirs = [layout["A"]]
    (emma,) = resolve_voices("emma", dirs)
    voice_latents(emma, checkpoint="ck", compute=model)  # emma now comes from its cache
    (joined,) = resolve_voices("lj&emma", dirs)
    got = voice_latents(joined, checkpoint="ck", compute=model)
    want = np.mean([_clip_vector(c) for c in joined.clips], axis=0)
    # float32 means of 2 and 3 vectors, re-weighted in float64: a few ulps of values ~1.
    np.testing.assert_allclose(got.auto, want[:D], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.diffusion, want[D:], rtol=1e-6, atol=1e-6)
    assert model.calls == [("a.wav", "b.wav", "c.wav"), ("1.wav", "2.wav")]


def test_latents_files(layout, tmp_path):
    import torch

    (pat,) = resolve_voices("pat", [layout["A"]])
    got = voice_latents(pat, checkpoint="ck", compute=FakeModel(), need_diffusion=True)
    np.testing.assert_array_equal(got.auto, np.ones(D, np.float32))  # Tortoise's [1, D] tuple, read as is
    np.testing.assert_array_equal(got.diffusion, np.full(E, 2.0, np.float32))
    np.testing.assert_array_equal(load_latents_file(layout["loose"] / "lat.npy").auto, np.arange(D))
    (npy,) = resolve_voices(f"{layout['loose']}/lat.npy")
    with pytest.raises(VoiceError, match=r"lat\.npy holds no diffusion latent"):
        voice_latents(npy, checkpoint="ck", compute=FakeModel(), need_diffusion=True)
    both = resolve_voices(f"pat&{layout['loose']}/lat.npy", [layout["A"]])[0]
    joined = voice_latents(both, checkpoint="ck", compute=FakeModel())  # latents files: equal weights, as Tortoise
    np.testing.assert_allclose(joined.auto, (1 + np.arange(D)) / 2, rtol=0, atol=1e-7)  # exact halves up to 1 ulp
    assert joined.diffusion is None  # only one of the two has one
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(VoiceError, match=r"bad\.npy: the autoregressive latent has shape \(2, 3, 4\)"):
        load_latents_file(tmp_path / "bad.npy")
    torch.save({"a": 1}, tmp_path / "dict.pth")
    with pytest.raises(
        VoiceError, match=r"dict\.pth: expected Tortoise's \(autoregressive, diffusion\) latent tensors"
    ):
        load_latents_file(tmp_path / "dict.pth")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(VoiceError, match=r"no 'auto' latent in it \(keys: x\)"):
        load_latents_file(tmp_path / "other.npz")


def test_combine_latents_and_random(layout):
    with pytest.raises(VoiceError, match="different widths"):
        combine_latents([(VoiceLatents(np.zeros(3, np.float32)), 1), (VoiceLatents(np.zeros(4, np.float32)), 1)])
    weighted = combine_latents([(VoiceLatents(np.zeros(2, np.float32)), 1), (VoiceLatents(np.ones(2, np.float32)), 3)])
    np.testing.assert_array_equal(weighted.auto, [0.75, 0.75])  # exact in binary
    (random,) = resolve_voices("random")
    with pytest.raises(VoiceError, match="random_voice_latents"):
        voice_latents(random, checkpoint="ck", compute=FakeModel())


def test_packaged_lj_is_the_default_clip():
    from clvp_jax.assets import default_voice_path

    (lj,) = resolve_voices("lj")
    assert lj.clips == (PACKAGED_VOICES_DIR / "lj" / "1.wav",)
    assert lj.clips[0] == default_voice_path()  # one file: the default voice is the packaged lj


def test_a_voice_computed_earlier_in_the_run_is_reused(layout):
    model = FakeModel()
    first, second = resolve_voices("lj&emma,lj", [layout["A"]])  # resolved before any cache exists
    voice_latents(first, checkpoint="ck", compute=model)
    voice_latents(second, checkpoint="ck", compute=model)
    assert model.calls == [("1.wav", "2.wav"), ("a.wav", "b.wav", "c.wav")]  # lj once, not twice
