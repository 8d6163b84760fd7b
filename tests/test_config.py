"""darwin.toml: every setting is one it can mean, or a one-line error naming it."""
from __future__ import annotations

import pytest

from darwin_git.config import Config
from darwin_git.errors import DarwinError

from .conftest import assert_one_line_error, cli, evo_config

BAD = [
    ("[evolution]\npopulation = 0\n", "[evolution] population must be at least 1, got 0"),
    ("[evolution]\noffspring = -2\n", "[evolution] offspring must be at least 1, got -2"),
    ("[evolution]\npopulation = 2.5\n", "[evolution] population must be a whole number, got 2.5"),
    ("[evolution]\npopulation = true\n", "[evolution] population must be a number, got True"),
    ("[evolution]\ncrossover_rate = 1.5\n", "[evolution] crossover_rate must be between 0 and 1, got 1.5"),
    ("[evolution]\ncrossover_rate = -0.1\n", "[evolution] crossover_rate must be between 0 and 1, got -0.1"),
    ("[evolution]\nreevaluations = -1\n", "[evolution] reevaluations must be at least 0, got -1"),
    ("[evolution]\ntournament = 0\n", "[evolution] tournament must be at least 1, got 0"),
    ('[evaluation]\nsandbox = "bwarp"\n', "[evaluation] sandbox must be one of auto, bwrap, none, got 'bwarp'"),
    ('[evaluation]\ndevice = "gpu"\n', "[evaluation] device must be cpu, cuda or cuda:N (a GPU index), got 'gpu'"),
    ('[evaluation]\ndevice = "cuda:x"\n', "[evaluation] device must be cpu, cuda or cuda:N"),
    ('[evaluation]\ntokenizer = "bpe"\n', "[evaluation] tokenizer must be one of char, gpt2, got 'bpe'"),
    ('[evaluation]\nbudget = "10min"\n', "[evaluation] budget must be a training budget such as 60s"),
    ("[evaluation]\nmemory_mb = 0\n", "[evaluation] memory_mb must be at least 1, got 0"),
    ("[evaluation]\nsmoke_timeout_s = 0\n", "[evaluation] smoke_timeout_s must be more than 0 (seconds), got 0"),
    ("[evaluation]\nscore_timeout_s = -5\n", "[evaluation] score_timeout_s must be more than 0"),
    ("[evaluation]\ntimeout_s = -1\n", "[evaluation] timeout_s must be at least 0, got -1"),
    ("[evaluation]\nthreads = 0\n", "[evaluation] threads must be at least 1, got 0"),
    ("[executor]\nslots = -1\n", "[executor] slots must be at least 0, got -1"),
    ("[executor]\nper_device = 0\n", "[executor] per_device must be at least 1, got 0"),
    ('[executor]\nkind = "slurm"\n', "[executor] kind must be one of local, ray, got 'slurm'"),
    ("[llm]\ntimeout_s = 0\n", "[llm] timeout_s must be more than 0"),
    ("[llm]\nmax_tokens = 0\n", "[llm] max_tokens must be at least 1, got 0"),
    ("[llm]\nmax_cost_usd = -1.0\n", "[llm] max_cost_usd must be at least 0, got -1.0"),
    ("[evolutoin]\npopulation = 2\n", "unknown section [evolutoin]; remove it or check its spelling"),
    ("evolution = 3\n", "evolution must be a table"),
]


@pytest.mark.parametrize("text,words", BAD)
def test_a_setting_out_of_range_or_choice_is_a_one_line_error(text, words):
    with pytest.raises(DarwinError) as e:
        Config.from_toml(text)
    assert f"darwin.toml: {words}" in str(e.value) and "\n" not in str(e.value)


def test_documented_zeros_and_every_default_are_accepted(corpus_file):
    cfg = Config.from_toml('[evaluation]\ntimeout_s = 0\npeak_flops = 0\ndevice = "cuda:1"\n'
                           '[executor]\nslots = 0\n[llm]\nmax_requests = 0\ndigest_every = 0\n')
    assert (cfg.evaluation.timeout_s, cfg.evaluation.device, cfg.executor.slots) == (0, "cuda:1", 0)
    assert Config.from_toml(Config().to_toml()) == Config()
    assert Config.from_toml(evo_config(corpus_file).to_toml()) == evo_config(corpus_file)
    assert Config.from_toml("[evaluation]\nsmoke_timeout_s = 30.5\n").evaluation.smoke_timeout_s == 30.5


def test_the_cli_refuses_settings_it_cannot_mean(tmp_path, corpus_file):
    for flags, words in ((("--population", "0"), "darwin-git init: [evolution] population must be at least 1, got 0"),
                         (("--offspring", "0"), "darwin-git init: [evolution] offspring must be at least 1, got 0"),
                         (("--device", "gpu"), "darwin-git init: [evaluation] device must be cpu, cuda or cuda:N")):
        assert_one_line_error(cli("init", tmp_path / "evo", "--data", corpus_file, *flags), words)
        assert not (tmp_path / "evo").exists()
    assert cli("init", tmp_path / "evo", "--population", "1", "--data", corpus_file).exit_code == 0
    assert_one_line_error(cli("eval", "--device", "tpu", "-C", tmp_path / "evo"),
                          "darwin-git eval: [evaluation] device must be cpu, cuda or cuda:N")
    with open(tmp_path / "evo" / "darwin.toml", "a") as f:
        f.write("\n[sandbox]\nmode = \"none\"\n")
    assert_one_line_error(cli("status", "-C", tmp_path / "evo"), "darwin.toml: unknown section [sandbox]")
