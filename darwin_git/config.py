"""darwin.toml: every setting of an evolution repo, committed in its root commit.

The file is evaluator-owned: patches that touch it are rejected and the pre-commit hook
refuses hand edits on genome branches, so every genome of a run is scored alike.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import DarwinError

CONFIG = "darwin.toml"
BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|steps|tokens)\s*$")
EXECUTORS = ("local", "ray")  # where evaluations run: this machine's slots or a Ray cluster
TOKEN_CAP_S = 600.0  # a token budget's wall-clock cap when [evaluation] timeout_s is 0
PRICES = {"gpt-4o-mini": [0.15, 0.6], "gpt-4o": [2.5, 10.0], "gpt-4.1": [2.0, 8.0], "gpt-4.1-mini": [0.4, 1.6],
          "gpt-4.1-nano": [0.1, 0.4]}
STRATEGIES = ("evolution", "greedy", "random", "climb")  # darwin_git/strategies/: one module each
CHOICES = {("evolution", "operator"): ("auto", "offline", "llm"), ("evolution", "strategy"): STRATEGIES, ("llm", "target"): ("self", "other", "mixed"),
           ("evaluation", "sandbox"): ("auto", "bwrap", "none"), ("evaluation", "tokenizer"): ("char", "gpt2"),
           ("evaluation", "compute"): ("auto", "affinity", "none"),
           ("executor", "kind"): EXECUTORS}
# (lowest, highest) of each number; a 0 allowed below a field's useful range is its documented "auto" or "off".
RANGES = {
    ("evolution", "population"): (1, None), ("evolution", "offspring"): (1, None),
    ("evolution", "crossover_rate"): (0, 1), ("evolution", "reevaluations"): (0, None),
    ("evolution", "tournament"): (1, None), ("evolution", "patience"): (1, None),
    ("evaluation", "memory_mb"): (1, None), ("evaluation", "timeout_s"): (0, None),  # 0: 600 s for tokens
    ("evaluation", "grace_s"): (0, None), ("evaluation", "score_context"): (1, None),  # grace 0: derived
    ("evaluation", "score_tokens"): (1, None), ("evaluation", "peak_flops"): (0, None),  # 0: looked up
    ("evaluation", "threads"): (1, None),
    ("executor", "slots"): (0, None), ("executor", "per_device"): (1, None),  # slots 0: one per device
    ("llm", "temperature"): (0, None), ("llm", "max_tokens"): (1, None), ("llm", "max_retries"): (0, None),
    ("llm", "digest_every"): (0, None), ("llm", "max_requests"): (0, None),  # caps: 0 turns one off
    ("llm", "smoke_turns"): (0, None),
    ("llm", "max_tokens_total"): (0, None), ("llm", "max_cost_usd"): (0, None),
}
POSITIVE = {("evaluation", "smoke_timeout_s"), ("evaluation", "score_timeout_s"), ("llm", "timeout_s")}
DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def parse_budget(text: str) -> tuple[str, float]:
    """'60s' -> ('s', 60.0); '100000tokens' -> ('tokens', 100000.0). One-line error otherwise."""
    m = BUDGET.match(str(text))
    if m and m.group(2) == "steps":
        raise DarwinError(f"budget {text!r}: step budgets are gone (the harness cannot count a genome's steps, and a "
                          "batch-size change makes them meaningless); set budget to Ntokens (the template serves "
                          f"{16 * 65} tokens a step) or Ns in darwin.toml")
    if not m or float(m.group(1)) <= 0:
        raise DarwinError(f"budget {text!r} not understood; use e.g. 60s or 100000tokens")
    return m.group(2), float(m.group(1))


@dataclass
class EvalSettings:
    """Everything that decides a fitness number; stored in darwin.toml for an evolution repo."""

    budget: str = "60s"  # Ns: the harness's clock; Ntokens: tokens the data channel serves
    device: str = "cpu"
    seed: int = 1337
    data: str = "shakespeare"
    tokenizer: str = "char"
    memory_mb: int = 8192
    timeout_s: float = 0  # a token budget's wall-clock cap (0: 600 s); data stops there too
    grace_s: float = 0  # after data stops, seconds to save the checkpoint and exit (0: max(2, 2% of the deadline))
    smoke: bool = True  # two served batches and a checkpoint before training: a crash at the end costs seconds
    smoke_timeout_s: float = 120
    score_timeout_s: float = 300  # per split
    score_tokens: int = 32768  # scored predictions per split
    score_context: int = 1024  # the longest context a prediction is made from (capped by the model's block size)
    peak_flops: float = 0  # 0: look up the GPU, or measure the CPU once
    sandbox: str = "auto"  # auto | bwrap | none
    compute: str = "auto"  # auto (the best this machine enforces: a cgroup, else pinning) | affinity | none
    threads: int = 1  # CPU threads per genome process: fixed, so fitness never depends on how many run at once

    def grace(self, deadline_s: float) -> float:
        return self.grace_s or max(2.0, 0.02 * deadline_s)


@dataclass
class ExecutorSettings:
    """[executor] in darwin.toml (or --executor/--slots/--address): where evaluations run, never what they score."""

    kind: str = "local"  # local | ray
    slots: int = 0  # evaluations at once; 0: one per visible GPU (x per_device), CPU cores // threads, Ray: cluster CPUs // threads
    per_device: int = 1  # evaluations packed on each GPU, for genomes too small to fill one
    address: str = ""  # ray: "" starts a local instance; "auto" or "ray://host:10001" joins a cluster


@dataclass
class Evolution:
    population: int = 1  # survivors kept after each generation (mu); evolution's init default: 4
    offspring: int = 1  # children made per generation (lambda); init's default: population
    crossover_rate: float = 0.25  # share of offspring made by merging two parents
    seed: int = 1337  # drives parent choice and the offline mutator: same seed, same generation
    reevaluations: int = 1  # extra seeds run on each survivor, so fitness is a mean with a spread
    tournament: int = 2  # tournament size for parent choice
    operator: str = "auto"  # auto | offline | llm; auto = llm when [llm] model and its key (or base_url) are set
    pause_on_requests: bool = False  # evolve stops between generations while requests wait for review
    # evolution (mu + lambda) | greedy (1 + 1) | random (best-of-N) | climb: darwin_git/strategies/. The default, with
    # novelty and paired on, is the best measured by benchmarks/search_compare.py at 24 children (README: Benchmarks).
    strategy: str = "greedy"
    patience: int = 2  # climb: children the best may have without being displaced before the search widens
    novelty: bool = True  # refuse, before training, a change already in the lineage, a revert, or a repeat of a lost one
    learn: bool = False  # offline operator: half the proposals repeat the recipes and knob directions that worked here
    paired: bool = True  # greedy: a child displaces its parent on their seed-by-seed differences, not their two spreads


@dataclass
class Llm:
    """The LLM mutator: any OpenAI-compatible endpoint. Caps apply per generation; 0 turns one off."""

    model: str = ""  # e.g. "gpt-4o-mini"; empty = no LLM
    models: list = field(default_factory=list)  # models to share proposals among, by observed gain per dollar ([] = model)
    base_url: str = ""  # e.g. http://localhost:8000/v1 for vLLM; empty = OpenAI
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the env var holding the key; the key is never stored
    temperature: float = 0.7
    max_tokens: int = 4096  # per reply
    timeout_s: float = 120.0  # per request
    max_retries: int = 3  # on 429, 5xx, timeouts and connection errors, with exponential backoff
    target: str = "self"  # self | other | mixed: whose memory writes a mutation of a genome
    digest_every: int = 5  # generations between rewrites of the population's "what worked" digest
    smoke_turns: int = 0  # rounds in which the model may run the smoke stage on its patch and read the error first
    max_requests: int = 20
    max_tokens_total: int = 500_000
    max_cost_usd: float = 1.0
    prices: dict = field(default_factory=lambda: dict(PRICES))  # model -> [USD per 1M input, per 1M output]


@dataclass
class Notes:
    fitness: str = "refs/notes/darwin/fitness"
    mutation: str = "refs/notes/darwin/mutation"
    failures: str = "refs/notes/darwin/failures"


@dataclass
class Config:
    evolution: Evolution = field(default_factory=Evolution)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    llm: Llm = field(default_factory=Llm)
    notes: Notes = field(default_factory=Notes)

    def to_toml(self) -> str:
        lines = ["# darwin-git settings. Evaluator-owned: genomes cannot change this file.", ""]
        for section, obj in asdict(self).items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in obj.items() if not isinstance(v, dict)]
            lines.append("")
            for k, table in obj.items():
                if isinstance(table, dict):  # e.g. [llm.prices], one quoted key per model
                    lines.append(f"[{section}.{k}]")
                    lines += [f"{_toml_value(str(name))} = {_toml_value(v)}" for name, v in table.items()]
                    lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str, where: str = CONFIG) -> "Config":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DarwinError(f"{where} is not valid TOML ({e}); fix it by hand") from None
        cfg = cls()
        sections = [f.name for f in fields(cls)]
        for name, values in raw.items():
            if name not in sections:
                raise DarwinError(f"{where}: unknown section [{name}]; remove it or check its spelling "
                                  f"(the sections are {', '.join(sections)})")
            if not isinstance(values, dict):
                raise DarwinError(f"{where}: {name} must be a table ([{name}] and settings under it), got {values!r}")
        for f in fields(cls):
            section, values = getattr(cfg, f.name), raw.get(f.name, {})
            known = {g.name: g.type for g in fields(section)}
            for key, value in values.items():
                if key not in known:
                    raise DarwinError(f"{where}: unknown setting [{f.name}] {key}; remove it or check its spelling")
                default = getattr(section, key)
                if isinstance(default, dict):
                    setattr(section, key, {**default, **_prices(value, f"{where}: [{f.name}.{key}]")})
                    continue
                if isinstance(default, bool) and not isinstance(value, bool):
                    raise DarwinError(f"{where}: [{f.name}] {key} must be true or false, got {value!r}")
                if isinstance(default, str) and not isinstance(value, str):
                    raise DarwinError(f"{where}: [{f.name}] {key} must be a string, got {value!r}")
                if isinstance(default, (int, float)) and not isinstance(default, bool) \
                        and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                    raise DarwinError(f"{where}: [{f.name}] {key} must be a number, got {value!r}")
                if known[key] in ("int", int) and not isinstance(value, int):  # by annotation: 0 defaults floats too
                    raise DarwinError(f"{where}: [{f.name}] {key} must be a whole number, got {value!r}")
                setattr(section, key, type(default)(value) if isinstance(default, float) else value)
        return check(cfg, where)


def check(cfg: Config, where: str = CONFIG) -> Config:
    """`cfg` if every setting is one it can mean, else a one-line error naming the first that is not:
    a typo ("bwarp") must stop a run, not quietly change what it measures."""
    for f in fields(cfg):
        check_section(f.name, getattr(cfg, f.name), where)
    return cfg


def check_section(name: str, section, where: str) -> None:
    """The ranges and choices of one section's settings ([evaluation] is EvalSettings)."""
    for f in fields(section):
        problem = _problem(name, f.name, getattr(section, f.name))
        if problem:
            raise DarwinError(f"{where}: [{name}] {f.name} {problem}")


def _problem(section: str, key: str, value) -> str:
    """Why `value` cannot be [section] key, or ""."""
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    if (section, key) == ("evaluation", "device") and not DEVICE.fullmatch(str(value)):
        return f"must be cpu, cuda or cuda:N (a GPU index), got {value!r}"
    if (section, key) == ("evaluation", "budget"):
        try:
            parse_budget(value)
        except DarwinError as e:
            return f"must be a training budget such as 60s or 100000tokens ({e})"
    low, high = RANGES.get((section, key), (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        return f"must be at least {low}, got {value!r}" if high is None else \
            f"must be between {low} and {high}, got {value!r}"
    if (section, key) in POSITIVE and value <= 0:
        return f"must be more than 0 (seconds), got {value!r}"
    return ""


def resolved_operator(cfg: Config) -> str:
    """The operator generations use: "auto" picks the LLM only when it can be reached (a key, or a local URL)."""
    if cfg.evolution.operator != "auto":
        return cfg.evolution.operator
    llm = cfg.llm
    return "llm" if llm.model and (os.environ.get(llm.api_key_env or "") or llm.base_url) else "offline"


def _prices(value, where: str) -> dict:
    """A [llm.prices] table: model -> [USD per 1M input tokens, USD per 1M output tokens]."""
    if not isinstance(value, dict):
        raise DarwinError(f'{where} must be a table of "model" = [input USD/1M, output USD/1M]')
    for model, pair in value.items():
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in pair)):
            raise DarwinError(f"{where} {model!r} must be [input USD per 1M tokens, output USD per 1M tokens], "
                              f"got {pair!r}")
    return {model: [float(x) for x in pair] for model, pair in value.items()}


def _toml_value(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def load(repo: Path) -> Config | None:
    """The repo's darwin.toml, or None when `repo` is not an evolution repo."""
    path = Path(repo) / CONFIG
    return Config.from_toml(path.read_text(), str(path)) if path.is_file() else None
