"""The built-in, network-free mutator: a catalogue of known training-code changes.

Each recipe edits the parent's source text directly, anchored on the exact lines it
changes, and declines (returns None) when those lines are gone: already applied, or
rewritten by an earlier mutation. `OfflineMutator` picks an applicable recipe with the
caller's rng and turns the edit into a unified diff; with `learn`, it picks by the effect each
recipe and knob direction has had in this repo so far (a bandit over the scored history).
"""
from __future__ import annotations

import ast
import difflib
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from . import Check, Context, Outcome, Proposal, RequestDraft

STRUCTURAL_SHARE = 0.6  # chance that a named recipe is tried before a random knob perturbation
PLATEAU = 6  # scored changes in a row without a gain before the author asks people for data
EXPLOIT = 0.5  # with `learn`: share of proposals that repeat the arms that lowered val bpb here
KNOB_TITLE = re.compile(r"^Set (\w+) to (\S+) \(was (\S+)\)$")  # the title Perturbation writes

Files = dict[str, str]


@dataclass(frozen=True)
class Mutation:
    """A concrete edit: the files it rewrites (path -> new text) and why."""

    title: str
    reasoning: str
    files: Files


# ---- text helpers -------------------------------------------------------------------------


def _replace(text: str, *pairs: tuple[str, str]) -> str | None:
    """Apply each (old, new) replacement once; None if any `old` is missing or ambiguous."""
    for old, new in pairs:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    return text


def _drop_unused_math_import(text: str) -> str:
    """Remove `import math` from a model.py that no longer uses it."""
    if "math." in text:
        return text
    return text.replace("import math\n", "", 1)


_KNOB = r"^{name} = (?P<value>[^#\n]*?)(?P<comment>[ \t]*#.*)?$"


def _knob(text: str, name: str) -> object | None:
    """The literal value of a top-level `name = value` line, or None if absent or not a literal."""
    m = re.search(_KNOB.format(name=re.escape(name)), text, re.M)
    if not m:
        return None
    try:
        return ast.literal_eval(m["value"])
    except (ValueError, SyntaxError):
        return None


def _set_knobs(text: str, values: dict[str, int | float | str]) -> str | None:
    """Rewrite `name = value` lines, keeping trailing comments; None if a knob is missing."""
    for name, value in values.items():
        pattern = re.compile(_KNOB.format(name=re.escape(name)), re.M)
        if not pattern.search(text):
            return None
        line = f"{name} = {_literal(value)}"
        text = pattern.sub(lambda m: line + (m["comment"] or ""), text, count=1)
    return text


def _literal(value: int | float | str) -> str:
    """Python source for a knob value: ints as-is, floats to 4 significant digits, strings quoted."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int):
        return str(value)
    return repr(float(f"{value:.4g}"))


def _num(text: str, name: str) -> int | float | None:
    """A knob's value if it is a plain (non-bool) number."""
    value = _knob(text, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _edit_knobs(files: Files, values: dict[str, int | float | str]) -> Files | None:
    text = files.get("train.py")
    new = _set_knobs(text, values) if text is not None else None
    return {"train.py": new} if new is not None and new != text else None


def _round_width(width: float, n_head: int) -> int:
    """Nearest width whose heads have an even size (RoPE rotates channel pairs)."""
    step = 2 * n_head
    return max(step, step * round(width / step))


# ---- model.py recipes ---------------------------------------------------------------------

RMSNORM_CLASS = '''class RMSNorm(nn.Module):
    """Scale-only normalization: no mean subtraction and no bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


class CausalSelfAttention(nn.Module):'''


def rmsnorm(files: Files) -> Files | None:
    """LayerNorm -> RMSNorm: cheaper, and the default in Llama and modded-nanogpt."""
    text = files.get("model.py", "")
    if "class RMSNorm" in text or "nn.LayerNorm(cfg.n_embd, bias=cfg.bias)" not in text:
        return None
    new = _replace(text, ("class CausalSelfAttention(nn.Module):", RMSNORM_CLASS))
    if new is None:
        return None
    return {"model.py": new.replace("nn.LayerNorm(cfg.n_embd, bias=cfg.bias)", "RMSNorm(cfg.n_embd)")}


ROTARY_FN = '''def apply_rotary(x, cos, sin):
    """Rotate the two halves of each head's channels by position-dependent angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):'''

ROTARY_INIT = '''        self.n_head = cfg.n_head
        head_dim = cfg.n_embd // cfg.n_head
        assert head_dim % 2 == 0, "rotary embeddings need an even head size"
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(cfg.block_size).float(), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
'''

ROTARY_APPLY = '''        cos, sin = self.rope_cos[past:past + T].to(q.dtype), self.rope_sin[past:past + T].to(q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # before caching: cached keys keep their angle
        if cache is not None:'''


def rope(files: Files) -> Files | None:
    """Learned absolute positions -> rotary embeddings on q and k (relative positions)."""
    text = files.get("model.py", "")
    if "apply_rotary" in text:
        return None
    new = _replace(
        text,
        ("class CausalSelfAttention(nn.Module):", ROTARY_FN),
        ("        self.n_head = cfg.n_head\n", ROTARY_INIT),
        ("        if cache is not None:", ROTARY_APPLY),
        ("        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)\n", ""),
        ("        pos = torch.arange(past, past + T, device=idx.device)\n", ""),
        ("self.wte(idx) + self.wpe(pos)", "self.wte(idx)"),
    )
    if new is None:
        return None
    return {"model.py": new.replace("token + position embeddings", "token embeddings, rotary positions", 1)}


def relu_squared(files: Files) -> Files | None:
    """GELU -> ReLU^2 in the MLP, as in Primer and modded-nanogpt."""
    new = _replace(files.get("model.py", ""), ("F.gelu(self.c_fc(x))", "F.relu(self.c_fc(x)).square()"))
    return {"model.py": new} if new is not None else None


def swiglu(files: Files) -> Files | None:
    """GELU MLP -> SwiGLU with hidden 8/3 * n_embd, so the parameter count stays about the same."""
    new = _replace(
        files.get("model.py", ""),
        ("        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)\n"
         "        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)\n",
         "        hidden = int(8 / 3 * cfg.n_embd)\n"
         "        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden, bias=cfg.bias)  # gate and up, fused\n"
         "        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)\n"),
        ("        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))\n",
         "        gate, up = self.c_fc(x).chunk(2, dim=-1)\n"
         "        return self.dropout(self.c_proj(F.silu(gate) * up))\n"),
    )
    return {"model.py": new} if new is not None else None


def qk_norm(files: Files) -> Files | None:
    """RMS-normalize q and k per head before attention, bounding the attention logits."""
    text = files.get("model.py", "")
    if "F.rms_norm(q" in text:
        return None
    new = _replace(text, (
        "        y = F.scaled_dot_product_attention(",
        "        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))  # QK-norm\n"
        "        y = F.scaled_dot_product_attention(",
    ))
    return {"model.py": new} if new is not None else None


def untie_head(files: Files) -> Files | None:
    """Give the output head its own weights instead of sharing the token embedding."""
    text = files.get("model.py", "")
    new = re.sub(r"^[ \t]*self\.lm_head\.weight = self\.wte\.weight.*\n", "", text, count=1, flags=re.M)
    if new == text:
        return None
    return {"model.py": new.replace("blocks, tied head.", "blocks, untied head.", 1)}


def zero_init_proj(files: Files) -> Files | None:
    """Start attention and MLP output projections at zero: every block begins as the identity."""
    new = _replace(
        files.get("model.py", ""),
        ("nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))", "nn.init.zeros_(p)"),
    )
    if new is None:
        return None
    new = new.replace(
        "# Residual projections scaled down so the residual stream does not grow with depth.",
        "# Residual projections start at zero, so each block starts as the identity.", 1)
    return {"model.py": _drop_unused_math_import(new)}


# ---- train.py recipes ---------------------------------------------------------------------


def lr_linear(files: Files) -> Files | None:
    """Cosine (or constant) -> linear decay after warmup."""
    text = files.get("train.py", "")
    if 'lr_schedule == "linear"' not in text or _knob(text, "lr_schedule") in (None, "linear"):
        return None
    return _edit_knobs(files, {"lr_schedule": "linear"})


def min_lr_zero(files: Files) -> Files | None:
    """Decay the learning rate all the way to zero instead of to a floor."""
    ratio = _num(files.get("train.py", ""), "min_lr_ratio")
    return _edit_knobs(files, {"min_lr_ratio": 0.0}) if ratio else None


def shorter_warmup(files: Files) -> Files | None:
    """Halve the warmup, giving more of a short budget to full-rate steps."""
    warmup = _num(files.get("train.py", ""), "warmup_steps")
    if not isinstance(warmup, int) or warmup < 2:
        return None
    return _edit_knobs(files, {"warmup_steps": warmup // 2})


def adam_beta2(files: Files) -> Files | None:
    """beta2 0.95 -> 0.99: a longer second-moment average for noisy small-batch gradients."""
    beta2 = _num(files.get("train.py", ""), "beta2")
    if beta2 is None or beta2 >= 0.99:
        return None
    return _edit_knobs(files, {"beta2": 0.99})


def _scale_batch(files: Files, factor: float) -> Files | None:
    text = files.get("train.py", "")
    batch, lr = _num(text, "batch_size"), _num(text, "learning_rate")
    if not isinstance(batch, int) or lr is None:
        return None
    new_batch = max(1, round(batch * factor))
    if new_batch == batch:
        return None
    return _edit_knobs(files, {"batch_size": new_batch, "learning_rate": lr * math.sqrt(new_batch / batch)})


def double_batch(files: Files) -> Files | None:
    """Twice the batch, learning rate x sqrt(2): fewer, less noisy steps."""
    return _scale_batch(files, 2.0)


def halve_batch(files: Files) -> Files | None:
    """Half the batch, learning rate / sqrt(2): more, noisier steps."""
    return _scale_batch(files, 0.5)


def _reshape(files: Files, layer_delta: int) -> Files | None:
    """Change depth by `layer_delta` and rescale width so n_layer * n_embd^2 stays about constant."""
    text = files.get("train.py", "")
    n_layer, n_head, n_embd = (_num(text, k) for k in ("n_layer", "n_head", "n_embd"))
    if not all(isinstance(v, int) for v in (n_layer, n_head, n_embd)) or n_layer + layer_delta < 1:
        return None
    new_layer = n_layer + layer_delta
    new_embd = _round_width(n_embd * math.sqrt(n_layer / new_layer), n_head)
    if new_embd == n_embd:
        return None
    return _edit_knobs(files, {"n_layer": new_layer, "n_embd": new_embd})


def deeper_narrower(files: Files) -> Files | None:
    """One more layer, narrower, at about the same parameter count."""
    return _reshape(files, +1)


def wider_shallower(files: Files) -> Files | None:
    """One fewer layer, wider, at about the same parameter count."""
    return _reshape(files, -1)


# ---- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A named, fixed change with the reasoning that goes into its commit message."""

    name: str
    title: str
    reasoning: str
    edit: Callable[[Files], Files | None]

    def apply(self, files: Files, rng: random.Random) -> Mutation | None:
        changed = self.edit(files)
        return Mutation(self.title, self.reasoning, changed) if changed else None


CATALOGUE: list[Recipe] = [
    Recipe("rmsnorm", "Replace LayerNorm with RMSNorm", (
        "Swap every LayerNorm for an RMSNorm (scale only, no mean subtraction, no bias). "
        "RMSNorm is the norm of Llama and of the modded-nanogpt speedruns; it matches or slightly "
        "beats LayerNorm at equal steps and is a little cheaper, so expect val bpb unchanged to "
        "slightly lower, with a small throughput gain on time budgets."), rmsnorm),
    Recipe("rope", "Use rotary position embeddings instead of learned positions", (
        "Remove the learned position embedding and rotate q and k by position-dependent angles "
        "(RoPE, base 10000) in every attention layer. Attention then sees relative offsets, which "
        "generalize across the window and cost no parameters; in nanoGPT-scale experiments and the "
        "modded-nanogpt speedrun RoPE lowers loss at equal steps, so expect a small bpb drop."), rope),
    Recipe("relu2", "Use ReLU^2 as the MLP activation", (
        "Replace GELU in the MLP with squared ReLU. Primer (So et al. 2021) found ReLU^2 a consistent "
        "win for language-model MLPs and modded-nanogpt adopted it; expect a small bpb improvement "
        "at the same parameter count and speed."), relu_squared),
    Recipe("swiglu", "Use a SwiGLU MLP", (
        "Replace the 4x GELU MLP with a gated SwiGLU MLP whose hidden size is 8/3 * n_embd, keeping "
        "the parameter count about the same. Gated linear units (Shazeer 2020, used by Llama) reach "
        "lower loss than GELU MLPs at equal parameters; expect a small bpb drop, at a slight cost in "
        "speed from the extra elementwise work."), swiglu),
    Recipe("qk_norm", "Normalize queries and keys before attention", (
        "RMS-normalize q and k per head before the dot product (QK-norm). It bounds attention "
        "logits, which stabilizes training at high learning rates; modded-nanogpt and OLMo-2 use it. "
        "Expect bpb about equal or slightly better, and more headroom for a higher learning rate."),
        qk_norm),
    Recipe("untie_head", "Untie the output head from the token embedding", (
        "Give the output head its own weight matrix instead of reusing the token embedding. "
        "Input and output roles of a token want different vectors and modded-nanogpt unties them; "
        "with a small character vocabulary this adds few parameters, so expect a small bpb drop. "
        "With a large vocabulary it adds vocab * n_embd parameters and costs throughput."), untie_head),
    Recipe("zero_init_proj", "Zero-initialize the residual output projections", (
        "Initialize the attention and MLP output projections to zero, so every block starts as "
        "the identity and the network grows its residual contributions from there. modded-nanogpt "
        "uses this; it usually speeds up early training slightly, so expect a small bpb gain on "
        "short budgets."), zero_init_proj),
    Recipe("lr_linear", "Decay the learning rate linearly after warmup", (
        "Switch the post-warmup schedule to linear decay towards the floor. Linear decay spends "
        "more of the run at moderate learning rates than cosine and recent comparisons "
        "(e.g. 'Straight to Zero', Bergsma et al. 2025) find it matches or beats cosine; expect a "
        "small bpb change, probably downwards."), lr_linear),
    Recipe("min_lr_zero", "Decay the learning rate to zero", (
        "Set min_lr_ratio to 0 so the schedule anneals all the way to zero. The last low-rate steps "
        "average out gradient noise, and decaying to zero beat decaying to 10% in Bergsma et al. "
        "2025; expect a small bpb drop, most visible on short budgets."), min_lr_zero),
    Recipe("shorter_warmup", "Halve the learning-rate warmup", (
        "Halve warmup_steps. Small pre-norm models with AdamW tolerate short warmups, and on a fixed "
        "budget every warmup step runs below the peak rate; expect a slight bpb gain, with a small "
        "risk of an early loss spike."), shorter_warmup),
    Recipe("adam_beta2", "Raise AdamW beta2 to 0.99", (
        "Increase beta2 from its current value to 0.99. With about a thousand tokens per step the "
        "gradients are noisy, and a longer second-moment average gives steadier step sizes; "
        "nanoGPT's small character-level config uses 0.99 for this reason. Expect a small bpb gain, "
        "or none if the budget is very short."), adam_beta2),
    Recipe("double_batch", "Double the batch size, scale the learning rate by sqrt(2)", (
        "Double batch_size and multiply learning_rate by sqrt(2), the square-root scaling rule for "
        "Adam (Malladi et al. 2022). Each step sees twice the tokens with less gradient noise; on a "
        "token budget that means half the steps, on a time budget better hardware use. Expect "
        "bpb to improve if the current batch is below the critical batch size, else to worsen slightly."),
        double_batch),
    Recipe("halve_batch", "Halve the batch size, divide the learning rate by sqrt(2)", (
        "Halve batch_size and divide learning_rate by sqrt(2) (square-root scaling for Adam). On a "
        "fixed token budget this doubles the number of optimizer steps; small models early in "
        "training often gain more from extra steps than from cleaner gradients. Expect a bpb drop "
        "if the batch was above the critical batch size, else a small loss."), halve_batch),
    Recipe("deeper_narrower", "Add a layer and narrow the model at equal parameters", (
        "Add one transformer layer and shrink n_embd so n_layer * n_embd^2 stays about constant "
        "(head size kept even). At a fixed parameter count, depth tends to help language modelling "
        "until layers get very thin (Kaplan et al. 2020 find shape matters little near the optimum); "
        "expect a small bpb change either way, and slightly lower throughput."), deeper_narrower),
    Recipe("wider_shallower", "Remove a layer and widen the model at equal parameters", (
        "Remove one transformer layer and widen n_embd so n_layer * n_embd^2 stays about constant. "
        "Wider, shallower models run faster per parameter on parallel hardware, so on a time budget "
        "they see more tokens; expect a small bpb change either way."), wider_shallower),
]


class Perturbation:
    """Scale one numeric knob at the top of train.py by a random factor in [0.5, 2] (log-uniform)."""

    name = "perturb"

    def apply(self, files: Files, rng: random.Random, knob: str | None = None,
              up: bool | None = None) -> Mutation | None:
        """A random knob by a random factor, or `knob` moved up or down (`up`) by a factor in [1.25, 2]."""
        head = self.head(files)
        if head is None:
            return None
        names = [knob] if knob else re.findall(r"^(\w+) = ", head, re.M)
        rng.shuffle(names)
        for name in names:
            old = _num(head, name)
            if not old:
                continue
            if up is None:
                factor = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            else:
                factor = math.exp(rng.uniform(math.log(1.25), math.log(2.0)))
                new = self._scaled(head, name, old, factor)
                if new is not None and (new > old) != up:
                    factor = 1 / factor
            new = self._scaled(head, name, old, factor)
            if new is None or new == old or (up is not None and (new > old) != up):
                continue
            edited = _edit_knobs(files, {name: new})
            if edited:
                return Mutation(
                    f"Set {name} to {_literal(new)} (was {_literal(old)})",
                    f"Perturb the knob {name}: {_literal(old)} -> {_literal(new)} (factor {factor:.2f}"
                    f"{' on 1 - ' + name if name.startswith('beta') else ''}). This is a random local "
                    "step in hyperparameter space rather than a known recipe, so the expected bpb "
                    "change is small and of unknown sign; selection keeps it only if val bpb improves.",
                    edited)
        return None

    @staticmethod
    def head(files: Files) -> str | None:
        """The knobs block at the top of train.py, or None when the genome has none."""
        text = files.get("train.py")
        if text is None or "\n# ---- harness contract" not in text:
            return None
        return text.split("\n# ---- harness contract", 1)[0]

    def knobs(self, files: Files) -> list[str]:
        head = self.head(files) or ""
        return [n for n in re.findall(r"^(\w+) = ", head, re.M) if _num(head, n)]

    @staticmethod
    def _scaled(head: str, name: str, old: int | float, factor: float) -> int | float | None:
        """The perturbed value, kept valid: betas move in 1 - beta, widths keep even head sizes."""
        if name.startswith("beta"):
            beta = float(_literal(1.0 - (1.0 - old) * factor))
            return beta if 0 < old < 1 and beta < 1 else None
        if isinstance(old, float):
            return float(_literal(min(old * factor, 0.95) if old < 1 else old * factor))
        n_head, n_embd = _num(head, "n_head"), _num(head, "n_embd")
        if name == "n_embd" and isinstance(n_head, int):
            return _round_width(old * factor, n_head)
        if name == "n_head" and isinstance(n_embd, int):
            heads = [h for h in range(1, n_embd + 1) if n_embd % (2 * h) == 0]
            return min(heads, key=lambda h: abs(math.log(h / (old * factor))))
        return max(1, round(old * factor))


PERTURBATION = Perturbation()
RECIPES: list[Recipe | Perturbation] = [*CATALOGUE, PERTURBATION]


# ---- the operator -------------------------------------------------------------------------


def unified_diff(old_files: Files, new_files: Files) -> str:
    """A git-style unified diff of every file that changed or is new (new texts end with a newline)."""
    chunks = []
    for path in sorted(new_files):
        old, new, created = old_files.get(path, ""), new_files[path], path not in old_files
        if not new.endswith("\n"):
            new += "\n"
        lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                     fromfile="/dev/null" if created else f"a/{path}", tofile=f"b/{path}")
        body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in lines)
        if body:
            mode = "new file mode 100644\n" if created else ""
            chunks.append(f"diff --git a/{path} b/{path}\n{mode}{body}")
    return "".join(chunks)


def plateau_request(context: Context) -> RequestDraft | None:
    """A data request when the author's last PLATEAU scored changes since its last request all failed
    to lower val bpb: the catalogue is stuck and only people can change the data. Deterministic, and
    at most once per plateau."""
    since = max(context.asked, default=-1)
    recent = [o.delta for o in context.tried if o.generation > since and o.delta is not None][-PLATEAU:]
    if len(recent) < PLATEAU or any(d < 0 for d in recent):
        return None
    deltas = ", ".join(f"{d:+.4f}" for d in recent)
    return RequestDraft(
        "data", "More or different training text for this search",
        f"My last {PLATEAU} scored changes all failed to lower val bpb against their parents ({deltas}). "
        "The catalogue of training-code recipes looks exhausted for this lineage under this budget; more "
        "(or cleaner, or different) training text is the lever left, and only people can supply it.",
        f"val bpb change vs parent of the last {PLATEAU} scored changes: {deltas}")


def arm_of(operator: str, title: str) -> str:
    """The bandit arm a change belongs to: its recipe, or the knob it moved and which way; a change
    no catalogue wrote (an LLM's, a crossover) is an arm of its own title."""
    m = KNOB_TITLE.match(title) if operator == "offline:perturb" else None
    if m:
        try:
            return f"{m[1]}:{'up' if float(m[2]) > float(m[3]) else 'down'}"
        except ValueError:
            return "perturb"
    return operator.removeprefix("offline:") if operator.startswith("offline:") else title


def ranked(arms: list[str], observed: list[Outcome], rng: random.Random, parent: str = "") -> list[str]:
    """`arms` in the order to try them, learned from the deltas seen per arm in this repo (each arm's
    mean shrunk towards zero by one pseudo-observation): on EXPLOIT of the draws, the arms that lowered
    val bpb come first, best first; otherwise every arm in a random order; either way the arms that
    raised it go last, and the arms already tried on `parent` itself go after them: a parent asked for
    a change again kept its place against what that arm made of it (or the arm's child already exists),
    a knob direction that paid from a smaller value need not pay from this one (widening a model stops
    paying somewhere), and asking again is how a bandit without context wastes a climb. With two dozen
    evaluations and some forty arms, plain Thompson sampling would spend nearly every draw exploring."""
    effects: dict[str, list[float]] = defaultdict(list)
    spent: set[str] = set()
    for o in observed:
        arm = arm_of(o.operator, o.title)
        if o.delta is not None:
            effects[arm].append(o.delta)
        if parent and o.parent == parent:
            spent.add(arm)
    mean = {arm: sum(effects[arm]) / (len(effects[arm]) + 1) for arm in arms if arm in effects}
    order = [a for a in arms if a not in spent]
    rng.shuffle(order)
    won = sorted((a for a in order if mean.get(a, 0) < 0), key=mean.__getitem__)
    lost = [a for a in order if mean.get(a, 0) > 0]
    last = lost + [a for a in arms if a in spent]
    if won and rng.random() < EXPLOIT:
        return won + [a for a in order if a not in won and a not in lost] + last
    return [a for a in order if a not in lost] + last


class OfflineMutator:
    """Proposes one catalogue recipe or knob perturbation: chosen with the caller's rng, or, with
    `learn`, by the effects recipes and knob directions have had in this repo."""

    name = "offline"

    def __init__(self, learn: bool = False):
        self.learn = learn

    def propose(self, files: Files, context: Context, rng: random.Random,
                check: Check | None = None) -> Proposal | None:
        for mutation, arm in (self._learned(files, context, rng) if self.learn else self._shuffled(files, context, rng)):
            patch = unified_diff(files, mutation.files) if mutation else ""
            if patch:
                return Proposal(title=mutation.title, reasoning=mutation.reasoning, patch=patch,
                                operator=f"offline:{arm}", request=plateau_request(context))
        return None

    @staticmethod
    def _shuffled(files: Files, context: Context, rng: random.Random):
        """Recipes in a random order, the author's tried ones last; the perturbation first or last."""
        named = list(CATALOGUE)
        rng.shuffle(named)
        tried = {o.title for o in context.tried}
        named.sort(key=lambda r: r.title in tried)  # recipes already tried go last
        order = [*named, PERTURBATION] if rng.random() < STRUCTURAL_SHARE else [PERTURBATION, *named]
        for recipe in order:
            yield recipe.apply(files, rng), recipe.name

    @staticmethod
    def _learned(files: Files, context: Context, rng: random.Random):
        """Arms (recipes, and each knob up or down) in the order `ranked` learns; a recipe that no longer
        applies (already in the genome) is passed over."""
        recipes = {r.name: r for r in CATALOGUE}
        arms = [*recipes, *(f"{k}:{d}" for k in PERTURBATION.knobs(files) for d in ("up", "down"))]
        for arm in ranked(arms, context.observed, rng, context.parent):
            if arm in recipes:
                yield recipes[arm].apply(files, rng), arm
            else:
                knob, direction = arm.split(":")
                yield PERTURBATION.apply(files, rng, knob, direction == "up"), PERTURBATION.name

    def digest(self, evidence: str, previous: str) -> None:
        """The catalogue writes no prose: the deterministic digest stands."""
        return None

    def usage(self) -> dict[str, float]:
        return {}

    def resume(self, spent: dict[str, float]) -> None:
        """The catalogue costs nothing: no caps to carry over."""
