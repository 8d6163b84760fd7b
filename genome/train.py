"""Train the GPT in model.py for exactly the budget the harness grants.

Read top to bottom: knobs, harness contract, data, model, optimizer, loop, report.
The harness sets DARWIN_* environment variables, runs `python train.py`, then scores
the checkpoint written to DARWIN_OUT on held-out text this script never sees.
"""
import json
import math
import os
import resource
import time

import numpy as np
import torch

from model import GPT, GPTConfig

# ---- knobs: plain values, edited by mutations ---------------------------------
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 16
dropout = 0.0
learning_rate = 2e-3
min_lr_ratio = 0.1  # floor of the decay, as a fraction of learning_rate
lr_schedule = "cosine"  # "cosine", "linear" or "constant" after warmup
warmup_steps = 50
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
compile_model = False  # torch.compile; pays off on CUDA for long budgets
val_batches = 8  # batches for the self-reported val loss at the end

# ---- harness contract -----------------------------------------------------------
data_dir = os.environ["DARWIN_DATA"]  # train.bin, val.bin, meta.json (no test split)
out_dir = os.environ["DARWIN_OUT"]  # write ckpt.pt and metrics.json here
budget = os.environ.get("DARWIN_BUDGET", "60s")  # "60s", "300steps" or "100000tokens"
seed = int(os.environ.get("DARWIN_SEED", "1337"))
device = os.environ.get("DARWIN_DEVICE", "cpu")
peak_flops = float(os.environ.get("DARWIN_PEAK_FLOPS", "1e11"))

for unit in ("steps", "tokens", "s"):
    if budget.endswith(unit):
        budget_kind, budget_amount = unit, float(budget[: -len(unit)])
        break
else:
    raise SystemExit(f"unknown budget {budget!r}")

torch.manual_seed(seed)
rng = np.random.default_rng(seed)
use_cuda = device.startswith("cuda")
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else torch.autocast("cpu", enabled=False)

# ---- data -------------------------------------------------------------------------
with open(os.path.join(data_dir, "meta.json")) as f:
    meta = json.load(f)
train_data = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
val_data = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")


def get_batch(data):
    ix = rng.integers(0, len(data) - block_size - 1, size=batch_size)
    x = torch.from_numpy(np.stack([data[i : i + block_size] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + block_size] for i in ix]).astype(np.int64))
    return x.to(device), y.to(device)


# ---- model and optimizer ---------------------------------------------------------
cfg = GPTConfig(
    vocab_size=meta["vocab_size"], block_size=block_size, n_layer=n_layer,
    n_head=n_head, n_embd=n_embd, dropout=dropout,
)
model = GPT(cfg).to(device)
# Weight decay on matrices (linears and embeddings) only; norm gains and biases are left alone.
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=learning_rate, betas=(beta1, beta2),
)
train_model = torch.compile(model) if compile_model else model


def lr_at(step: int, progress: float) -> float:
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    if lr_schedule == "constant":
        return learning_rate
    if lr_schedule == "linear":
        decay_frac = 1.0 - progress
    else:
        decay_frac = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return learning_rate * (min_lr_ratio + (1.0 - min_lr_ratio) * decay_frac)


# ---- training loop: stop exactly at the budget ------------------------------------
tokens_per_step = batch_size * block_size
t0 = time.time()
step = 0
tokens = 0
train_loss = float("nan")
while True:
    elapsed = time.time() - t0
    done = {"s": elapsed, "steps": step, "tokens": tokens}[budget_kind]
    if done >= budget_amount:
        break
    progress = done / budget_amount
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, progress)
    x, y = get_batch(train_data)
    with autocast:
        _, loss = train_model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    train_loss = loss.item()
    if not math.isfinite(train_loss):
        raise SystemExit(f"loss is {train_loss} at step {step}: diverged")
    step += 1
    tokens += tokens_per_step
train_s = time.time() - t0

# ---- report: self-measured numbers (the harness scores the test split itself) ------
model.eval()
with torch.no_grad(), autocast:
    val_loss = sum(model(*get_batch(val_data))[1].item() for _ in range(val_batches)) / val_batches
os.makedirs(out_dir, exist_ok=True)
model.save(os.path.join(out_dir, "ckpt.pt"))
if use_cuda:
    peak_mem = torch.cuda.max_memory_allocated()
else:
    peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tokens_per_s = tokens / max(train_s, 1e-9)
metrics = {
    "train_loss": train_loss,
    "val_loss": val_loss,
    "steps": step,
    "tokens": tokens,
    "tokens_per_s": tokens_per_s,
    "params": model.num_params(),
    "flops_per_token": model.flops_per_token(),
    "mfu": model.flops_per_token() * tokens_per_s / peak_flops,
    "peak_mem": peak_mem,
    "wall_s": time.time() - t0,
}
with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
print(json.dumps(metrics))
