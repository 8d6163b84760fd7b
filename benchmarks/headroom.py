"""How much gain a search can find at a token budget: count models built from the tokens it serves.

A genome trained on N served tokens has seen N tokens of the train split. A count model built from
the same N tokens (random windows of the template's length, as its train.py samples them) and scored
the way the harness scores a genome (scoring.windows on the val split, each prediction made from the
window's earlier tokens only) shows where the easy structure ends: unigram, bigram and a trigram
interpolated down to the bigram and unigram. The interpolation weights are tuned on the val split
itself, so the trigram figure is an optimistic reference for what N tokens can teach, not a bound. The
search benchmark's gains read against it: `baseline bpb - trigram bpb` is roughly the gain on offer.

    python benchmarks/headroom.py                       # 20800 tokens (the search benchmark's budget), Shakespeare
    python benchmarks/headroom.py --budgets 20800 160000 --draws 3
"""
from __future__ import annotations

import argparse

import numpy as np

from darwin_git.config import EvalSettings
from darwin_git.corpus import prepare
from darwin_git.scoring import windows

WINDOW = 65  # the template's block_size + 1: one served row
CONTEXT = 64  # the template's block_size: the harness's scored windows hold CONTEXT + 1 tokens


def counts(rows: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uni = np.bincount(rows.ravel(), minlength=vocab).astype(np.float64)
    bi = np.zeros((vocab, vocab))
    np.add.at(bi, (rows[:, :-1].ravel(), rows[:, 1:].ravel()), 1)
    tri = np.zeros((vocab, vocab, vocab))
    np.add.at(tri, (rows[:, :-2].ravel(), rows[:, 1:-1].ravel(), rows[:, 2:].ravel()), 1)
    return uni, bi, tri


def bpb(rows: np.ndarray, val: np.ndarray, token_bytes: np.ndarray, vocab: int) -> dict[str, float]:
    """Bits per byte of each count model on the harness's val windows, the best interpolation kept."""
    uni, bi, tri = counts(rows, vocab)
    scored = EvalSettings().score_tokens  # as many predictions as the harness scores per split
    windows_ = np.stack([val[s:s + CONTEXT + 1] for s in windows(len(val), CONTEXT, scored)]).astype(np.int64)
    target = windows_[:, 1:].ravel()
    prev = windows_[:, :-1].ravel()
    has2 = np.tile(np.arange(CONTEXT) > 0, len(windows_))  # a window's first prediction has one token of context
    prev2 = np.concatenate([np.zeros((len(windows_), 1), np.int64), windows_[:, :-2]], axis=1).ravel()  # 0: unused
    nbytes = token_bytes[target].sum()
    p_uni = (uni[target] + 0.1) / (uni.sum() + 0.1 * vocab)
    n_bi = bi.sum(1)[prev]
    p_bi_ml = np.where(n_bi > 0, bi[prev, target] / np.maximum(n_bi, 1), 0.0)
    n_tri = np.where(has2, tri.sum(2)[prev2, prev], 0)
    p_tri_ml = np.where(n_tri > 0, tri[prev2, prev, target] / np.maximum(n_tri, 1), 0.0)

    def bits(p: np.ndarray) -> float:
        return float(-np.log2(p).sum() / nbytes)

    out = {"unigram": bits(p_uni), "bigram": float("inf"), "trigram": float("inf")}
    for k2 in (1, 2, 5, 10, 20, 50):  # Witten-Bell-like: trust a context in proportion to how often it was seen
        w2 = n_bi / (n_bi + k2)
        p_bi = w2 * p_bi_ml + (1 - w2) * p_uni
        out["bigram"] = min(out["bigram"], bits(p_bi))
        for k3 in (1, 2, 5, 10, 20, 50):
            w3 = n_tri / (n_tri + k3)
            out["trigram"] = min(out["trigram"], bits(w3 * p_tri_ml + (1 - w3) * p_bi))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shakespeare")
    ap.add_argument("--budgets", type=int, nargs="+", default=[20800], help="served tokens")
    ap.add_argument("--draws", type=int, default=3, help="random samples of the served windows per budget")
    args = ap.parse_args()
    corpus = prepare(args.data)
    train, val = corpus.tokens("train").astype(np.int64), corpus.tokens("val").astype(np.int64)
    vocab = int(corpus.meta["vocab_size"])
    token_bytes = np.asarray(corpus.meta["token_bytes"])
    print(f"{args.data}: vocabulary {vocab}, val bpb of count models built from the served tokens "
          f"({WINDOW}-token windows at random offsets; mean over {args.draws} draws)")
    print(f"{'tokens':>9} {'unigram':>8} {'bigram':>8} {'trigram':>8}")
    for budget in args.budgets:
        figures = []
        for draw in range(args.draws):
            offsets = np.random.default_rng(draw).integers(0, len(train) - WINDOW, size=max(1, budget // WINDOW))
            figures.append(bpb(np.stack([train[o:o + WINDOW] for o in offsets]), val, token_bytes, vocab))
        print(f"{budget:>9} " + " ".join(f"{np.mean([f[k] for f in figures]):>8.4f}"
                                        for k in ("unigram", "bigram", "trigram")))


if __name__ == "__main__":
    main()
