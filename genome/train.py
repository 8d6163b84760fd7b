"""Train the GPT in model.py on the data the harness serves, until the harness stops serving it.

Read top to bottom: knobs, harness contract, data, model, optimizer, loop, report.
The harness sets DARWIN_* variables, runs `python train.py`, serves training windows
through the data channel (metered: that is the budget), then scores the checkpoint written
to DARWIN_OUT on held-out text this script never sees. GENOME.md states that contract.
"""
import json
import math
import os
import resource
import struct
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
compile_model = False  # torch.compile: pays off on CUDA once the budget is minutes (compiling takes tens of s)

# ---- harness contract -----------------------------------------------------------
data_dir = os.environ["DARWIN_DATA"]  # meta.json: vocab_size, train_tokens (no data files)
out_dir = os.environ["DARWIN_OUT"]  # write ckpt.pt (and, if you like, metrics.json) here
seed = int(os.environ.get("DARWIN_SEED", "1337"))
device = os.environ.get("DARWIN_DEVICE", "cpu")

torch.manual_seed(seed)
rng = np.random.default_rng(seed)
use_cuda = device.startswith("cuda")
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else torch.autocast("cpu", enabled=False)
torch.backends.cuda.matmul.allow_tf32 = True  # what autocast leaves in fp32 still runs on tensor cores
torch.backends.cudnn.allow_tf32 = True

# ---- data: windows of the train split, served and counted by the harness -------------
with open(os.path.join(data_dir, "meta.json")) as f:
    meta = json.load(f)
request_fd, reply_fd = (int(fd) for fd in os.environ["DARWIN_CHANNEL"].split(","))
requests = os.fdopen(request_fd, "wb")
replies = os.fdopen(reply_fd, "rb")
progress = 0.0  # share of the budget used so far, as the harness counts it


def fetch(offsets, length):
    """Windows of `length` tokens starting at `offsets`; None once the budget is spent."""
    global progress
    requests.write(struct.pack("<qq", len(offsets), length) + np.asarray(offsets, dtype="<i8").tobytes())
    requests.flush()
    granted, progress = struct.unpack("<qd", replies.read(16))
    if granted < 0:
        raise SystemExit("the harness refused a malformed data request")
    if granted == 0:
        return None
    return np.frombuffer(replies.read(granted * length * 2), dtype="<u2").reshape(granted, length)


def get_batch():
    ix = rng.integers(0, meta["train_tokens"] - block_size - 1, size=batch_size)
    rows = fetch(ix, block_size + 1)
    if rows is None:
        return None
    rows = torch.from_numpy(rows.astype(np.int64))
    if use_cuda:  # pinned host memory: the copy to the GPU overlaps the step before it
        rows = rows.pin_memory().to(device, non_blocking=True)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


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
    lr=learning_rate, betas=(beta1, beta2), fused=use_cuda,  # one kernel for all parameters on CUDA
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


# ---- training loop: until the harness stops serving data --------------------------
t0 = time.time()
step = 0
train_loss = float("nan")
while (batch := get_batch()) is not None:
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, progress)
    x, y = batch
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
train_s = time.time() - t0

# ---- report: the checkpoint the harness scores, and this script's own view of the run ---------
os.makedirs(out_dir, exist_ok=True)
model.save(os.path.join(out_dir, "ckpt.pt"))
peak_mem = torch.cuda.max_memory_allocated() if use_cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
metrics = {"train_loss": train_loss, "steps": step, "train_s": train_s, "peak_mem": peak_mem}
with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
print(json.dumps(metrics))
