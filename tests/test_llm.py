"""The LLM operator through the real `openai` client against a scripted local endpoint.

Each case breeds a generation's children with `Generation._breed` after recording a plan, then
checks with plain git what came of it: branches, trailers, notes and failure notes. One test
runs a whole generation, and one (skipped without OPENAI_API_KEY) talks to the real API.
"""
from __future__ import annotations

import difflib
import json
import random
import os
import time
from dataclasses import replace

import pytest

from darwin_git import breeding, config, memory, population
from darwin_git.config import Config, resolved_operator
from darwin_git.errors import DarwinError
from darwin_git.generation import Generation, operator_for
from darwin_git.git import typed
from darwin_git.operators.llm import LlmOperator
from darwin_git.population import Plan, agent_of

from .conftest import assert_one_line_error, cli, clone_repo, darwin_refs, generation_doc, git, note, quiet
from .openai_stub import Endpoint

MODEL = "stub-model"
LIVE, ARCHIVE = "refs/heads/darwin/", "refs/darwin/archive/"
RAISE_LR = [{"path": "train.py", "search": "learning_rate = 2e-3\n", "replace": "learning_rate = 3e-3\n"}]
HALVE_WARMUP = [{"path": "train.py", "search": "warmup_steps = 50\n", "replace": "warmup_steps = 25\n"}]


def reply(edits, title: str = "Raise the learning rate",
          reasoning: str = "A higher peak rate fits more learning into a 20-step budget.") -> dict:
    return {"content": json.dumps({"reasoning": reasoning, "title": title, "edits": edits})}


def llm_config(repo, url: str, offspring: int = 1, **llm) -> Config:
    cfg = config.load(repo)
    cfg.evolution = replace(cfg.evolution, offspring=offspring)
    cfg.llm = replace(cfg.llm, **{"model": MODEL, "base_url": url, "api_key_env": "DARWIN_TEST_UNSET_KEY",
                                  "timeout_s": 5.0, "max_retries": 2, **llm})
    return cfg


def operator(cfg: Config) -> LlmOperator:
    return LlmOperator(cfg.llm, budget=cfg.evaluation.budget, device=cfg.evaluation.device, backoff_s=0.05)


def breed(repo, cfg: Config, g: int = 1) -> tuple[dict, dict]:
    """Plan generation g, record the plan, and make its children with a fresh LLM operator."""
    generation = Generation(repo, cfg, quiet(), operator=operator(cfg))
    plan = generation._plan(g)
    population.record_generation(repo, plan, f"generation {g}: plan")
    return generation._breed(g, plan, memory.history(repo, cfg)), plan


def trailer(repo, sha: str, key: str) -> str:
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha).strip()


def failures(repo, sha: str) -> list[dict]:
    return [json.loads(line) for line in (note(repo, "failures", sha) or "").splitlines()]


def template_diff(repo, old: str, new: str) -> str:
    train = git(repo, "show", "darwin/ada:train.py")
    body = "".join(difflib.unified_diff(train.splitlines(True), train.replace(old, new, 1).splitlines(True),
                                        "a/train.py", "b/train.py"))
    return "diff --git a/train.py b/train.py\n" + body


@pytest.fixture
def repo(baseline_repo, tmp_path):
    return clone_repo(baseline_repo, tmp_path / "evo")


# ---- replies that become children ----------------------------------------------------------------------

def test_json_diff_reply_becomes_a_child_commit(repo):
    patch = template_diff(repo, "learning_rate = 2e-3\n", "learning_rate = 3e-3\n")
    with Endpoint([reply(patch)]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    slot = plan.slots[0]
    sha = darwin_refs(repo, LIVE)[slot.child]
    assert made == {slot.child: sha}
    assert "+learning_rate = 3e-3" in git(repo, "diff", slot.parents[0].sha, sha)
    assert git(repo, "log", "-1", "--format=%s", sha).strip() == "Raise the learning rate"
    assert (trailer(repo, sha, "Darwin-Operator"), trailer(repo, sha, "Darwin-Model")) == ("llm", MODEL)
    assert trailer(repo, sha, "Darwin-Agent") == trailer(repo, sha, "Darwin-Author") == agent_of(slot.child)
    meta = json.loads(note(repo, "mutation", sha))
    sent = sum(len(m["content"]) for m in endpoint.messages(0)) // 4  # what the stub reports as prompt tokens
    assert meta["usage"]["prompt_tokens"] == sent and meta["usage"]["requests"] == 1
    assert len(meta["prompt_sha256"]) == 64 and meta["model"] == MODEL
    body = endpoint.requests[0]["body"]
    assert body["response_format"] == {"type": "json_object"} and body["model"] == MODEL


def test_search_replace_reply_becomes_a_child(repo):
    edits = [{"path": "train.py", "search": "  warmup_steps = 50", "replace": "  warmup_steps = 25"},  # indent off
             {"path": "train.py", "search": "beta2 = 0.95\n", "replace": "beta2 = 0.99\n"}]
    with Endpoint([reply(edits, "Shorter warmup, longer beta2 average")]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    sha = made[plan.slots[0].child]
    train = git(repo, "show", f"{sha}:train.py")
    assert "\nwarmup_steps = 25\n" in train and "\nbeta2 = 0.99\n" in train
    assert git(repo, "diff", "--numstat", f"{sha}^", sha).split()[:2] == ["2", "2"]


def test_diff_with_wrong_hunk_numbers_is_recounted(repo):
    good = template_diff(repo, "batch_size = 16\n", "batch_size = 8\n")
    wrong = good.replace("@@ -22,7 +22,7 @@", "@@ -3,4 +3,9 @@")  # start and counts both off
    assert wrong != good
    with Endpoint([reply(wrong, "Halve the batch")]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    sha = made[plan.slots[0].child]
    assert "\nbatch_size = 8\n" in git(repo, "show", f"{sha}:train.py")
    assert len(endpoint.requests) == 1  # no repair round was needed


def test_server_without_json_mode_gets_plain_text_parsed(repo):
    prose = ("Title: Halve the warmup\nOn a 20-step budget most steps are warmup; halving it gives the peak rate "
             "more steps.\n\ntrain.py\n```python\n<<<<<<< SEARCH\nwarmup_steps = 50\n=======\nwarmup_steps = 25\n"
             ">>>>>>> REPLACE\n```\n")
    script = [{"status": 400, "message": "response_format is not supported by this server"}, {"content": prose}]
    with Endpoint(script) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    sha = made[plan.slots[0].child]
    assert ["response_format" in r["body"] for r in endpoint.requests] == [True, False]
    assert git(repo, "log", "-1", "--format=%s", sha).strip() == "Halve the warmup"
    body = git(repo, "log", "-1", "--format=%b", sha)
    assert body.startswith("On a 20-step budget most steps are warmup") and "SEARCH" not in body


def test_failed_patch_gets_one_repair_round_with_the_exact_error(repo):
    stale = template_diff(repo, "learning_rate = 2e-3\n", "learning_rate = 3e-3\n").replace("2e-3", "5e-3")
    with Endpoint([reply(stale), reply(RAISE_LR)]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    assert plan.slots[0].child in made
    repair = endpoint.messages(1)
    assert repair[-2] == {"role": "assistant", "content": reply(stale)["content"]}
    assert repair[-1]["role"] == "user" and "patch does not apply" in repair[-1]["content"]
    assert "patch failed: train.py:" in repair[-1]["content"]  # git's own words on where it failed
    assert "context lines copied exactly" in repair[-1]["content"] and "search texts" not in repair[-1]["content"]
    meta = json.loads(note(repo, "mutation", made[plan.slots[0].child]))
    assert meta["usage"]["requests"] == 2


def test_a_patch_that_re_emits_an_unchanged_line_applies(repo):
    """LLMs often write an untouched line as a -/+ pair; git's count of the result rightly never shows it."""
    patch = template_diff(repo, "learning_rate = 2e-3\n", "learning_rate = 3e-3\n")
    assert "\n dropout = 0.0\n" in patch
    patch = patch.replace("\n dropout = 0.0\n", "\n-dropout = 0.0\n+dropout = 0.0\n")
    with Endpoint([reply(patch)]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    sha = made[plan.slots[0].child]
    assert "\nlearning_rate = 3e-3\n" in git(repo, "show", f"{sha}:train.py") and len(endpoint.requests) == 1


def test_smoke_turns_let_the_model_read_its_patch_fail_before_it_is_taken(repo):
    """With [llm] smoke_turns, a patch that compiles but crashes in training is smoked in the sandbox, the
    model reads the error and answers again; the child is the fixed change, the rounds are in its note."""
    crash = [{"path": "train.py", "search": "    step += 1\n", "replace": "    step += 1\n    raise RuntimeError('boom in the loop')\n"}]
    with Endpoint([reply(crash, "Add a check in the loop"), reply(RAISE_LR)]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url, smoke_turns=2))
    sha = made[plan.slots[0].child]
    assert "\nlearning_rate = 3e-3\n" in git(repo, "show", f"{sha}:train.py")
    assert "boom in the loop" not in git(repo, "show", f"{sha}:train.py")
    told = endpoint.messages(1)[-1]["content"]
    assert "check and smoke stages" in told and "crashed at the smoke stage" in told and "boom in the loop" in told
    usage = json.loads(note(repo, "mutation", sha))["usage"]
    assert (usage["requests"], usage["smoke_runs"]) == (2, 2) and usage["smoke_s"] > 0  # the fix was smoked too
    assert len(endpoint.requests) == 2


# ---- replies that become recorded failures -------------------------------------------------------------

def test_a_reply_cut_off_mid_json_is_a_recorded_failure_not_a_crash(repo):
    """JSON cut by max_tokens (an unclosed brace): the model is told, and the slot fails with its spend."""
    cut = {"content": '{"reasoning": "Raise the rate", "edits": [{"path": "train.py", "search": "learn',
           "finish_reason": "length"}
    with Endpoint([cut, cut]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    assert made == {} and len(endpoint.requests) == 2
    assert "cut off at max_tokens = 4096" in endpoint.messages(1)[-1]["content"]
    [record] = failures(repo, plan.slots[0].parents[0].sha)
    assert record["reason"].startswith("unusable reply after a repair round: the reply was cut off")
    assert record["usage"]["requests"] == 2 and record["usage"]["completion_tokens"] > 0


def test_a_resumed_generation_counts_what_it_already_spent_against_the_caps(repo):
    """Killed after slot 0 spent the whole request cap: the resumed run sends nothing more."""
    cfg = llm_config(repo, "", offspring=2, max_requests=2)
    generation = Generation(repo, cfg, quiet(), operator=operator(cfg))
    plan = generation._plan(1)
    population.record_generation(repo, plan, "generation 1: plan")
    first = plan.slots[0]
    breeding.record_failure(repo, cfg, first.parents[0].sha, 1, 0, "unusable reply", "llm",
                            usage={"requests": 2, "prompt_tokens": 900, "completion_tokens": 50, "cost_usd": 0.0})
    with Endpoint([reply(RAISE_LR)]) as endpoint:
        cfg.llm = replace(cfg.llm, base_url=endpoint.url)
        Generation(repo, cfg, quiet(), operator=operator(cfg)).run()
    assert endpoint.requests == []
    second = failures(repo, plan.slots[1].parents[0].sha)
    assert any(r["slot"] == 1 and r["reason"].startswith("cost cap reached: 2 requests") for r in second)


def test_garbage_is_a_recorded_failure_after_one_repair_round(repo):
    first, second = "Sure! I would make the model better.", "I really think it would help a lot."
    with Endpoint([{"content": first}, {"content": second}]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    assert made == {} and len(endpoint.requests) == 2
    assert "no edits found" in endpoint.messages(1)[-1]["content"]
    [record] = failures(repo, plan.slots[0].parents[0].sha)
    assert (record["generation"], record["slot"], record["operator"]) == (1, 0, "llm")
    assert record["reason"].startswith("unusable reply after a repair round: no edits found")
    assert record["patch"] == second
    assert record["usage"]["requests"] == 2  # a failed proposal's spend is recorded, not lost
    assert set(darwin_refs(repo, LIVE)) == {"ada", "bo"}


def test_patch_touching_darwin_toml_is_rejected_and_recorded(repo):
    settings = git(repo, "show", "darwin/ada:darwin.toml")
    cheat = ("diff --git a/darwin.toml b/darwin.toml\n--- a/darwin.toml\n+++ b/darwin.toml\n@@ -1 +1 @@\n"
             f"-{settings.splitlines()[0]}\n+# mine now\n")
    with Endpoint([reply(cheat, "Own the settings")] * 2) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url))
    assert made == {} and "which the evaluator owns" in endpoint.messages(1)[-1]["content"]
    [record] = failures(repo, plan.slots[0].parents[0].sha)
    assert "darwin.toml" in record["reason"] and "evaluator owns" in record["reason"]
    assert record["patch"] == cheat and record["title"] == "Own the settings"


# ---- the endpoint misbehaving --------------------------------------------------------------------------

def test_rate_limit_is_retried(repo):
    with Endpoint([{"status": 429, "message": "slow down", "headers": {"Retry-After": "0"}}, reply(RAISE_LR)]) as ep:
        made, plan = breed(repo, llm_config(repo, ep.url))
    assert len(ep.requests) == 2 and plan.slots[0].child in made
    assert json.loads(note(repo, "mutation", made[plan.slots[0].child]))["usage"]["requests"] == 2


def test_hung_endpoint_is_a_prompt_recorded_failure(repo):
    with Endpoint([{"sleep": 4, **reply(RAISE_LR)}] * 2) as endpoint:
        t0 = time.monotonic()
        made, plan = breed(repo, llm_config(repo, endpoint.url, timeout_s=1.0, max_retries=1))
        elapsed = time.monotonic() - t0
    assert made == {} and len(endpoint.requests) == 2 and elapsed < 4
    [record] = failures(repo, plan.slots[0].parents[0].sha)
    assert record["reason"] == "the endpoint failed 2 times: no reply within timeout_s = 1s"


@pytest.mark.parametrize("caps, sent", [({"max_requests": 1}, 1),
                                        ({"max_cost_usd": 0.5, "prices": {MODEL: [100.0, 200.0]}}, 0)])
def test_cost_cap_fails_later_slots_without_sending(repo, caps, sent):
    with Endpoint([reply(RAISE_LR)]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url, offspring=3, **caps))
    assert len(endpoint.requests) == sent and len(made) == sent
    records = [r for sha in {s.parents[0].sha for s in plan.slots} for r in failures(repo, sha)]
    assert sorted(r["slot"] for r in records) == list(range(sent, 3))
    assert all(r["reason"].startswith("cost cap reached: ") for r in records)
    assert ("max_requests = 1" if sent else "max_cost_usd = 0.5") in records[0]["reason"]


# ---- memory in the prompt, cross-agent authors, a whole generation ------------------------------------

def test_cross_agent_mutation_is_written_from_the_authors_memory(repo):
    with Endpoint([reply(RAISE_LR), reply(HALVE_WARMUP, "Halve the warmup")]) as endpoint:
        made, plan = breed(repo, llm_config(repo, endpoint.url, offspring=2, target="other"))
    assert len(made) == 2
    for i, slot in enumerate(plan.slots):
        target = agent_of(slot.child)
        assert slot.author in {"ada", "bo"} and slot.author != target
        sha = made[slot.child]
        assert (trailer(repo, sha, "Darwin-Agent"), trailer(repo, sha, "Darwin-Author")) == (target, slot.author)
        meta = json.loads(note(repo, "mutation", sha))
        assert (meta["author"], meta["target"]) == (slot.author, slot.parents[0].name)
        assert f"# Memory of agent {slot.author}:" in endpoint.messages(i)[1]["content"]


def test_whole_generation_with_the_llm_operator_and_the_next_prompt(repo):
    cfg = llm_config(repo, "", offspring=1)
    cfg.evolution = replace(cfg.evolution, reevaluations=0)  # one 20-step training run in all: the test stays fast
    with Endpoint([reply(RAISE_LR)]) as endpoint:
        cfg.llm = replace(cfg.llm, base_url=endpoint.url)
        summary = Generation(repo, cfg, quiet(), operator=operator(cfg)).run()
    assert summary.generation == 1 and summary.failures == [] and len(endpoint.requests) == 1
    plan = generation_doc(repo, 1, "plan")
    everything = {**darwin_refs(repo, ARCHIVE), **darwin_refs(repo, LIVE)}
    for slot in plan["slots"]:
        sha = everything[slot["child"]]
        assert trailer(repo, sha, "Darwin-Operator") == "llm"
        assert json.loads(note(repo, "fitness", sha))["status"] == "ok"
    board = json.loads(cli("status", "--json", "-C", repo).output)
    sent = sum(sum(len(m["content"]) for m in r["body"]["messages"]) // 4 for r in endpoint.requests)
    assert board["usage"]["requests"] == 1 and board["usage"]["prompt_tokens"] == sent

    # generation 2: slot 0's author writes for another lineage where one is alive; its prompt shows
    # the target's code and the author's scored trajectory, numbers straight from the fitness notes
    first = plan["slots"][0]
    author, child = first["author"], everything[first["child"]]
    before = json.loads(note(repo, "fitness", first["parents"][0]["sha"]))["fitness"]
    after = json.loads(note(repo, "fitness", child))["fitness"]
    live = darwin_refs(repo, LIVE)
    target = next((n for n in sorted(live) if agent_of(n) != author), sorted(live)[0])
    slot = {"slot": 0, "kind": "mutation", "child": f"{agent_of(target)}-g2-0", "author": author,
            "parents": [{"name": target, "sha": live[target]}]}
    plan2 = typed(Plan, {"generation": 2, "population": live, "slots": [slot], "parents": {slot["child"]: live[target]}})
    population.record_generation(repo, plan2, "generation 2: plan")
    shown = cli("memory", author, "-C", repo).output.strip()
    edit = [{"path": "train.py", "search": "beta2 = 0.95\n", "replace": "beta2 = 0.99\n"}]
    with Endpoint([reply(edit, "Raise beta2")]) as endpoint:
        cfg.llm = replace(cfg.llm, base_url=endpoint.url)
        made = Generation(repo, cfg, quiet(), operator=operator(cfg))._breed(2, plan2, memory.history(repo, cfg))
    prompt = endpoint.messages(0)[1]["content"]
    assert git(repo, "show", f"{live[target]}:train.py").rstrip() in prompt
    assert f"{before:.4f} -> {after:.4f} bpb" in prompt and first["child"] in prompt
    assert shown in prompt  # `darwin-git memory` prints exactly what the model was shown
    sha = made[slot["child"]]
    assert (trailer(repo, sha, "Darwin-Agent"), trailer(repo, sha, "Darwin-Author")) == (agent_of(target), author)


# ---- configuration, status and doctor ------------------------------------------------------------------

def test_auto_operator_and_llm_settings_round_trip(monkeypatch):
    cfg = Config()
    assert cfg.evolution.operator == "auto" and resolved_operator(cfg) == "offline"
    cfg.llm = replace(cfg.llm, model="gpt-4o-mini", api_key_env="DARWIN_TEST_KEY")
    monkeypatch.delenv("DARWIN_TEST_KEY", raising=False)
    assert resolved_operator(cfg) == "offline"
    monkeypatch.setenv("DARWIN_TEST_KEY", "sk-test")
    assert resolved_operator(cfg) == "llm"
    monkeypatch.delenv("DARWIN_TEST_KEY")
    cfg.llm = replace(cfg.llm, base_url="http://localhost:11434/v1", prices={**cfg.llm.prices, "llama3": [0.0, 0.0]})
    assert resolved_operator(cfg) == "llm"
    text = cfg.to_toml()
    assert '[llm.prices]\n"gpt-4o-mini" = [0.15, 0.6]' in text and "sk-test" not in text
    assert Config.from_toml(text) == cfg
    for bad, words in (('[llm.prices]\n"m" = [1]\n', "[llm.prices] 'm' must be"),
                       ('[llm]\ntarget = "anyone"\n', "must be one of self, other, mixed"),
                       ('[llm]\ntemperature = "hot"\n', "must be a number"),
                       ('[llm]\nkey = "sk-x"\n', "unknown setting [llm] key")):
        with pytest.raises(DarwinError) as e:
            Config.from_toml(bad)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DarwinError, match="needs an API key in \\$DARWIN_TEST_KEY"):
        operator_for(replace(cfg, llm=replace(cfg.llm, base_url=""), evolution=replace(cfg.evolution, operator="llm")))


def test_doctor_status_and_a_dead_endpoint(repo):
    with Endpoint([{"content": "ok", "usage": (12, 1)}]) as endpoint:
        (repo / "darwin.toml").write_text(llm_config(repo, endpoint.url).to_toml())
        result = cli("doctor", "-C", repo)
    assert result.exit_code == 0, result.output
    assert MODEL in result.output and endpoint.url in result.output and "$DARWIN_TEST_UNSET_KEY" in result.output
    assert "12 prompt + 1 completion tokens" in result.output and "'ok' in" in result.output
    assert endpoint.requests[0]["body"]["max_tokens"] == 5
    assert "operator: llm (stub-model)" in cli("status", "-C", repo).output

    (repo / "darwin.toml").write_text(llm_config(repo, "http://127.0.0.1:9/v1", max_retries=0).to_toml())
    assert_one_line_error(cli("doctor", "-C", repo), "cannot reach http://127.0.0.1:9/v1")


@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY for the real API")
def test_one_real_generation_against_the_configured_model(repo):
    cfg = config.load(repo)
    cfg.evolution = replace(cfg.evolution, offspring=1, reevaluations=0)
    cfg.llm = replace(cfg.llm, model=os.environ.get("DARWIN_TEST_MODEL", "gpt-4o-mini"), timeout_s=90.0)
    summary = Generation(repo, cfg, quiet(), operator=operator_for(cfg)).run()
    plan = generation_doc(repo, 1, "plan")
    child = plan["slots"][0]["child"]
    everything = {**darwin_refs(repo, ARCHIVE), **darwin_refs(repo, LIVE)}
    if child in everything:
        meta = json.loads(note(repo, "mutation", everything[child]))
        assert meta["usage"]["prompt_tokens"] > 0 and meta["model"] == cfg.llm.model
    else:
        assert summary.failures and summary.failures[0].operator == "llm"


def test_several_models_share_proposals_by_gain_per_dollar(repo):
    """[llm] models: each model once, then the one whose changes gained most per dollar; the choice, its
    reason and the per-model figures are in the mutation note, the model in the Darwin-Model trailer."""
    from darwin_git.operators import Outcome
    from darwin_git.operators.llm import choose_model

    models = ["cheap-model", "dear-model"]
    assert choose_model(models, [], random.Random(0))[0] == "cheap-model"
    seen = [Outcome(1, "a", -0.05, False, "llm", "cheap-model", 0.01, 1000),
            Outcome(1, "b", -0.10, False, "llm", "dear-model", 0.50, 1000),
            Outcome(1, "c", None, True, "llm", "dear-model", 0.50, 1000)]
    picks = [choose_model(models, seen, random.Random(s)) for s in range(50)]
    assert sum(m == "cheap-model" for m, _ in picks) >= 35  # 5 bpb per $ against 0.1; some draws explore
    model, why = next(p for p in picks if p[0] == "cheap-model" and "most" in p[1]["why"])
    assert why["why"] == "most val bpb gained per dollar" and why["stats"]["dear-model"]["proposals"] == 2
    cfg = llm_config(repo, "", offspring=2, models=models)
    with Endpoint([reply(RAISE_LR), reply(HALVE_WARMUP, "Halve the warmup")]) as endpoint:
        cfg.llm = replace(cfg.llm, base_url=endpoint.url)
        made, plan = breed(repo, cfg)
    assert [r["body"]["model"] for r in endpoint.requests] == models  # neither tried yet: each gets a turn
    for slot, model in zip(plan.slots, models):
        sha = made[slot.child]
        meta = json.loads(note(repo, "mutation", sha))
        assert trailer(repo, sha, "Darwin-Model") == meta["model"] == model
        assert meta["choice"]["why"] == "not tried yet" and set(meta["choice"]["stats"]) == set(models)
