"""darwin.toml: every setting of an evolution repo, committed in its root commit.

The file is evaluator-owned: patches that touch it are rejected and the pre-commit hook
refuses hand edits on genome branches, so every genome of a run is scored alike.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import DarwinError
from .evaluator import EvalSettings

CONFIG = "darwin.toml"


@dataclass
class Evolution:
    population: int = 4  # survivors kept after each generation (mu)
    offspring: int = 4  # children made per generation (lambda)
    crossover_rate: float = 0.25  # share of offspring made by merging two parents
    seed: int = 1337  # drives parent choice and the offline mutator: same seed, same generation
    reevaluations: int = 1  # extra seeds run on each survivor, so fitness is a mean with a spread
    tournament: int = 2  # tournament size for parent choice
    operator: str = "offline"  # offline | llm


@dataclass
class Llm:
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"


@dataclass
class Notes:
    fitness: str = "refs/notes/darwin/fitness"
    mutation: str = "refs/notes/darwin/mutation"
    failures: str = "refs/notes/darwin/failures"


@dataclass
class Config:
    evolution: Evolution = field(default_factory=Evolution)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    llm: Llm = field(default_factory=Llm)
    notes: Notes = field(default_factory=Notes)

    def to_toml(self) -> str:
        lines = ["# darwin-git settings. Evaluator-owned: genomes cannot change this file.", ""]
        for section, obj in asdict(self).items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in obj.items()]
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str, where: str = CONFIG) -> "Config":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DarwinError(f"{where} is not valid TOML ({e}); fix it by hand") from None
        cfg = cls()
        for f in fields(cls):
            section, values = getattr(cfg, f.name), raw.get(f.name, {})
            known = {g.name: g.type for g in fields(section)}
            for key, value in values.items():
                if key not in known:
                    raise DarwinError(f"{where}: unknown setting [{f.name}] {key}; remove it or check its spelling")
                default = getattr(section, key)
                if isinstance(default, (int, float)) and not isinstance(default, bool) \
                        and not isinstance(value, (int, float)):
                    raise DarwinError(f"{where}: [{f.name}] {key} must be a number, got {value!r}")
                setattr(section, key, type(default)(value) if isinstance(default, float) else value)
        return cfg


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def load(repo: Path) -> Config | None:
    """The repo's darwin.toml, or None when `repo` is not an evolution repo."""
    path = Path(repo) / CONFIG
    return Config.from_toml(path.read_text(), str(path)) if path.is_file() else None
