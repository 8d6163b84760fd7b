"""A small GPT: token + position embeddings, pre-norm transformer blocks, tied head.

Module names follow nanoGPT's (c_attn, c_proj, c_fc, wte, wpe, ln_1, ln_2, ln_f, lm_head).
The harness loads the checkpoint through `load()` and scores it through `GPT.step`
(or the forward): GENOME.md states that interface. Everything else may change.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """The model's shape: train.py sets it from its knobs and meta.json, the checkpoint stores it."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool = False  # biases in the linears and layer norms


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = cfg.n_head
        self.block_size = cfg.block_size
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        past = cache.get("n", 0) if cache else 0  # positions already seen (incremental scoring)
        if cache is not None:  # step(): one new position attends to the cached keys and values too
            if not past:  # buffers for the whole block, written in place: no copy of the past per step
                cache["k"] = k.new_empty(B, self.n_head, self.block_size, C // self.n_head)
                cache["v"] = torch.empty_like(cache["k"])
            cache["k"][:, :, past:past + T], cache["v"][:, :, past:past + T] = k, v
            cache["n"] = past + T
            k, v = cache["k"][:, :, :past + T], cache["v"][:, :, :past + T]
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=past == 0, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: fewer params, better small-data fit
        self.apply(self._init_weights)
        # Residual projections scaled down so the residual stream does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, caches=None):
        B, T = idx.shape
        past = caches[0].get("n", 0) if caches else 0
        assert past + T <= self.cfg.block_size, f"sequence {past + T} longer than block_size {self.cfg.block_size}"
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))
        return logits, loss

    def step(self, idx, cache=None):
        """Scoring, one token at a time: append idx (B,) to each row, return next-token logits (B, vocab).
        `cache` (None for new rows) keeps every layer's keys and values, so each call costs one position."""
        cache = cache if cache is not None else [{} for _ in self.blocks]
        logits, _ = self(idx[:, None], caches=cache)
        return logits[:, -1], cache

    def save(self, path: str) -> None:
        torch.save({"config": asdict(self.cfg), "state_dict": self.state_dict()}, path)

    @classmethod
    def from_checkpoint(cls, path: str, map_location="cpu") -> "GPT":
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(GPTConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model


def load(path: str, map_location="cpu") -> GPT:
    """Harness entry point: rebuild the trained model from its checkpoint."""
    return GPT.from_checkpoint(path, map_location=map_location)
