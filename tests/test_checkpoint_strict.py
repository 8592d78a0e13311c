"""The strict converter machinery of the waveform-stage files (`clvp_jax.checkpoint.strict`) and the one mismatch
error, on hand-made tables (no model is built: each case is a few leaves)."""

from __future__ import annotations

import builtins

import jax
import numpy as np
import pytest
import torch

from clvp_jax.checkpoint import strict
from clvp_jax.checkpoint.errors import CheckpointError, WeightsMismatchError
from clvp_jax.checkpoint.strict import LeafRename, Naming, key_table

F32 = np.dtype("float32")
# Leaves of a made-up model: an indexed stack, a doubly indexed conv, a norm gain, an embedding table.
LEAVES = {
    ("layers_0", "conv", "weight"): jax.ShapeDtypeStruct((4, 2, 3), F32),
    ("layers_0", "conv", "bias"): jax.ShapeDtypeStruct((4,), F32),
    ("layers_1", "norm", "scale"): jax.ShapeDtypeStruct((4,), F32),
    ("blocks_2_3", "bias"): jax.ShapeDtypeStruct((4,), F32),
    ("emb", "embedding"): jax.ShapeDtypeStruct((5, 4), F32),
    ("temperature",): jax.ShapeDtypeStruct((), F32),
}
# One-to-one renames, so that `flax_path` inverts `torch_key` (a bare ("embedding",) -> "weight" would not: every
# `x.weight` would read back as an embedding).
NAMING = Naming((LeafRename(("norm", "scale"), "norm.weight"), LeafRename(("emb", "embedding"), "emb.weight")))
KEYS = ["layers.0.conv.weight", "layers.0.conv.bias", "layers.1.norm.weight", "blocks.2.3.bias", "emb.weight"]
KEYS += ["temperature"]
BUFFER = {"rotary.inv_freq": np.arange(3, dtype=np.float32)}


def state_dict() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    table = key_table(LEAVES, NAMING)
    return {k: rng.standard_normal(t.shape).astype(t.dtype) for k, t in table.items()} | dict(BUFFER)


def test_naming_both_ways():
    assert [NAMING.torch_key(p) for p in LEAVES] == KEYS
    assert [NAMING.flax_path(k) for k in KEYS] == list(LEAVES)
    # A root parameter keeps its name: a rename applies inside a submodule only.
    diffusion_like = Naming((LeafRename(("scale",), "weight"),))
    assert diffusion_like.torch_key(("gn", "scale")) == "gn.weight" and diffusion_like.torch_key(("scale",)) == "scale"
    assert NAMING.flax_path("norm.weight") == ("norm", "scale")  # the rename's tail may be the whole key
    assert (
        strict.PLAIN.torch_key(("res_stack_0", "residual_convs_2_3", "weight"))
        == "res_stack.0.residual_convs.2.3.weight"
    )
    assert strict.PLAIN.flax_path("convs1.0.weight_v") == ("convs1_0", "weight_v")


def test_key_table_refuses_two_leaves_on_one_key():
    with pytest.raises(ValueError, match="a/scale and a/weight both name torch key a.weight"):
        key_table({("a", "scale"): LEAVES[("layers_0", "conv", "bias")], ("a", "weight"): LEAVES[("emb", "embedding")]},
                  Naming((LeafRename(("scale",), "weight"),)))  # fmt: skip


def test_round_trip_is_exact_and_accepts_torch_tensors():
    sd = state_dict()
    table = key_table(LEAVES, NAMING)
    tree = strict.tree_from_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, table, buffers=BUFFER)
    assert tree["layers_1"]["norm"]["scale"].shape == (4,) and "rotary" not in tree
    back = strict.state_dict_from_tree(tree, LEAVES, NAMING, buffers=BUFFER)
    assert list(back) == [*KEYS, "rotary.inv_freq"]
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].flags.c_contiguous
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_every_problem_is_listed_before_any_tensor_is_read():
    class Lazy(dict):
        """A reader whose specs say one thing; reading any tensor fails the test."""

        def specs(self):
            return {k: type("Spec", (), {"shape": v.shape, "dtype": v.dtype})() for k, v in self.items()}

        def __getitem__(self, key):
            raise AssertionError(f"{key} was read before the check failed")

    sd = state_dict()
    del sd["blocks.2.3.bias"]  # missing
    sd["layers.0.conv.bias"] = sd["layers.0.conv.bias"][:3]  # mis-shaped
    sd["emb.weight"] = sd["emb.weight"].astype(np.float16)  # mis-typed
    sd["stray.weight"] = np.zeros(2, np.float32)  # unexpected
    sd["old.mask"] = np.zeros(2, np.float32)  # ignored
    del sd["rotary.inv_freq"]  # a missing buffer
    with pytest.raises(WeightsMismatchError) as info:
        strict.tree_from_state_dict(
            Lazy(sd), key_table(LEAVES, NAMING), ignored={"old.mask"}, buffers=BUFFER, context="toy"
        )
    error, message = info.value, str(info.value)
    assert error.missing == ["blocks.2.3.bias", "rotary.inv_freq"] and error.unexpected == ["stray.weight"]
    assert error.mismatched == [("layers.0.conv.bias", (3,), (4,))]
    assert error.mistyped == [("emb.weight", "float16", "float32")]
    assert message.startswith("checkpoint does not match the config (toy):\n")
    assert message.splitlines()[-1] == "The model holds float32 weights: cast the tensors to float32 first."
    assert "dtype= / --dtype" not in message  # the autoregressive converter's advice is not given here


def test_a_buffer_must_hold_the_recomputed_value_and_a_subclass_keeps_its_hint():
    class ToyError(WeightsMismatchError):
        HINT = "Pass the toy's state dict."

    sd = state_dict()
    sd["rotary.inv_freq"] = sd["rotary.inv_freq"] + np.float32(1e-6)
    with pytest.raises(ToyError, match=r"wrong value \(1\): rotary.inv_freq") as info:
        strict.tree_from_state_dict(sd, key_table(LEAVES, NAMING), buffers=BUFFER, error=ToyError)
    assert str(info.value).endswith("\nPass the toy's state dict.")
    tree = strict.tree_from_state_dict(state_dict(), key_table(LEAVES, NAMING), buffers=BUFFER)
    tree["extra"] = {"bias": np.zeros(1, np.float32)}
    tree["temperature"] = np.float64(1.0)
    del tree["emb"]
    with pytest.raises(ToyError) as info:
        strict.state_dict_from_tree(tree, LEAVES, NAMING, error=ToyError)
    assert info.value.missing == ["emb/embedding"] and info.value.unexpected == ["extra/bias"]
    assert info.value.mistyped == [("temperature", "float64", "float32")]


def test_the_autoregressive_message_is_kept():
    error = WeightsMismatchError(["a"], [], [("b", (2,), (3,))], "parameter tree", [("c", "float16", "float32")])
    assert str(error).splitlines() == [
        "checkpoint does not match the config (parameter tree):",
        "  missing (1): a",
        "  mis-shaped: b: checkpoint (2,), config expects (3,)",
        "  mis-typed: c: checkpoint float16, expected float32",
        "A floating dtype other than the stored one can be asked for (dtype= / --dtype) to cast.",
        "Check that config.json belongs to these weights (layer counts, widths, vocabulary sizes).",
    ]
    many = WeightsMismatchError([f"k{i}" for i in range(25)])
    assert "missing (25): k0, k1" in str(many) and ", ... (5 more)" in str(many)


def test_load_pth(tmp_path, monkeypatch):
    sd = state_dict()
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "toy.pth")
    loaded = strict.load_pth(tmp_path / "toy.pth")
    assert sorted(loaded) == sorted(sd) and all(isinstance(v, np.ndarray) for v in loaded.values())
    np.testing.assert_array_equal(loaded["emb.weight"], sd["emb.weight"])
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        strict.load_pth(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="missing weights file"):
        strict.load_pth(tmp_path / "absent.pth")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r"needs torch: pip install 'clvp-jax\[torch\]'"):
        strict.load_pth(tmp_path / "toy.pth")
