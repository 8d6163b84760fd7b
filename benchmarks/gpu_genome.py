"""The genome on a device, measured by the harness: tokens/s and MFU at the template's config and at
nanoGPT's shakespeare-char config (6 layers, 6 heads, 384 wide, context 256, batch 64, dropout 0.2).

Each config is the template with its knobs edited, committed to a scratch repo and evaluated like
any genome (sandbox, metered data channel, harness clock). MFU is printed twice: the harness's own
(6 x parameters FLOPs per token, against the device's datasheet peak or a measured matmul peak)
and nanoGPT's (6N + 12 * layers * width * context, attention included), so the figure can be set
beside nanoGPT's report for the same config.

    python benchmarks/gpu_genome.py --device cuda --budget 120s --compile
    python benchmarks/gpu_genome.py --device cpu --budget 20800tokens      # a dry run on a CPU
"""
from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from darwin_git.config import EvalSettings
from darwin_git.corpus import prepare
from darwin_git.evaluator import evaluate, peak_flops
from fitness_cost import template_repo

CONFIGS = {"template": {},
           "shakespeare-char": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 64,
                                "dropout": 0.2, "learning_rate": 1e-3}}


def knob(text: str, name: str) -> float:
    return float(re.search(rf"^{name} = ([^\s#]+)", text, re.M)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", default="120s")
    ap.add_argument("--compile", action="store_true", help="set compile_model = True (torch.compile)")
    ap.add_argument("--data", default="shakespeare")
    args = ap.parse_args()
    corpus = prepare(args.data, "char")
    settings = EvalSettings(data=args.data, device=args.device, budget=args.budget, timeout_s=1800,
                            score_tokens=8192, memory_mb=32000)
    with tempfile.TemporaryDirectory(prefix="darwin-gpu-") as tmp:
        repo = template_repo(Path(tmp))
        print(f"device {args.device}, budget {args.budget}, compile {args.compile}")
        print(f"{'config':<18} {'params':>11} {'tokens/s':>12} {'MFU (6N)':>9} {'MFU nanoGPT':>12} {'val bpb':>8}")
        for name, knobs in CONFIGS.items():
            train = (repo / "train.py").read_text()
            for key, value in {**knobs, **({"compile_model": True} if args.compile else {})}.items():
                train = re.sub(rf"^{key} = [^\s#]+", f"{key} = {value!r}", train, count=1, flags=re.M)
            (repo / "train.py").write_text(train)
            subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam",
                            name, "--allow-empty"], check=True)
            record = evaluate(repo, "HEAD", settings, corpus, test=False)
            if record.status != "ok":
                print(f"{name:<18} {record.status} at {record.stage}: {record.error[:300]}")
                continue
            attention = 12 * knob(train, "n_layer") * knob(train, "n_embd") * knob(train, "block_size")
            nanogpt = (6 * record.params + attention) * record.tokens_per_s / peak_flops(settings, record.device.split(": ", 1)[1])
            print(f"{name:<18} {record.params:>11,} {record.tokens_per_s:>12,.0f} {record.mfu:>9.2%} {nanogpt:>12.2%} "
                  f"{record.val_bpb:>8.4f}")
            subprocess.run(["git", "-C", str(repo), "checkout", "-q", "HEAD~1", "--", "train.py"], check=True)


if __name__ == "__main__":
    main()
