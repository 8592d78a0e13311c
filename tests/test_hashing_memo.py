"""`remembered_sha256`: a checkpoint folder's files are hashed once, and any change to a file is noticed."""

from __future__ import annotations

import hashlib
import os

from clvp_jax.checkpoint import hashing


def test_remembered_checksum_is_reused_and_follows_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("CLVP_JAX_HASH_MEMO", str(tmp_path / "cache"))
    weights = tmp_path / "models" / "autoregressive.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"a" * 1000)
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))

    first = hashing.checkpoint_fingerprint(weights.parent)
    assert len(calls) == 1 and (tmp_path / "cache" / hashing.MEMO_FILE).is_file()
    assert hashing.checkpoint_fingerprint(weights.parent) == first and len(calls) == 1  # remembered: not re-read
    expected = hashlib.sha256(f"autoregressive.pth {hashlib.sha256(b'a' * 1000).hexdigest()}\n".encode()).hexdigest()
    assert first == expected

    weights.write_bytes(b"b" * 1000)  # same size: the modification time (and content) change the key
    os.utime(weights, ns=(1, 1))
    changed = hashing.checkpoint_fingerprint(weights.parent)
    assert changed != first and len(calls) == 2
    memo = (tmp_path / "cache" / hashing.MEMO_FILE).read_text()
    assert memo.count(str(weights)) == 1  # the stale entry was replaced, not kept beside the new one


def test_an_unwritable_memo_only_costs_the_hash(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CLVP_JAX_HASH_MEMO", str(blocker / "cache"))  # under a file: mkdir fails
    weights = tmp_path / "vocoder.pth"
    weights.write_bytes(b"x")
    assert hashing.checkpoint_fingerprint(weights) == hashlib.sha256(b"x").hexdigest()
