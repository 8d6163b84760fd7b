"""Reading the population back when a record in git is broken: one line naming it and its repair,
exit 1, no traceback, and nothing trained or recorded on top of it."""
from __future__ import annotations

import difflib
import json
import shlex
import subprocess

import pytest

from darwin_git import config
from darwin_git import git as plumbing
from darwin_git.breeding import record_failure

from .conftest import assert_one_line_error, cli, clone_repo, darwin_refs, git

FITNESS = "refs/notes/darwin/fitness"
BAD_FITNESS = {
    "not JSON": "{'fitness': 1.9}\n",
    "a list": "[1.9, 0.0]\n",
    "no runs": json.dumps({"fitness": 1.9, "spread": 0.0, "n": 1, "status": "ok"}),
    "a run that is no record": json.dumps({"fitness": 1.9, "spread": 0.0, "n": 1, "status": "ok", "runs": [1.9]}),
}


def set_note(repo, ref: str, sha: str, text: str) -> None:
    subprocess.run(["git", "-C", str(repo), "notes", "--ref", ref, "add", "-f", "-F", "-", sha], input=text,
                   text=True, check=True, capture_output=True)


def write_log(repo, ref: str, path: str, text: str) -> None:
    """Replace one file of a log (refs/darwin/generations, refs/darwin/requests-log) as a hand edit would."""
    commit, old = plumbing.log_commit(repo, ref, {path: text}, "a hand edit")
    git(repo, "update-ref", ref, commit, old)


@pytest.fixture
def repo(evolved_repo, tmp_path):
    """A private copy of the evolved repo, with one request filed (so `review` has something to show)."""
    repo = clone_repo(evolved_repo, tmp_path / "evo")
    name = sorted(darwin_refs(repo, "refs/heads/darwin/"))[0]
    train = git(repo, "show", f"darwin/{name}:train.py")
    change = tmp_path / "change.patch"
    change.write_text(_diff(train))
    assert cli("propose", "--from", change, "--title", "Lower the lr", "--to", name, "-C", repo).exit_code == 0
    return repo


def _diff(train: str) -> str:
    old = next(line for line in train.splitlines(keepends=True) if line.startswith("learning_rate = "))
    new = train.replace(old, "learning_rate = 1e-4\n", 1)
    return "".join(difflib.unified_diff(train.splitlines(keepends=True), new.splitlines(keepends=True),
                                        "a/train.py", "b/train.py"))


@pytest.mark.parametrize("kind", BAD_FITNESS)
def test_a_broken_fitness_note_is_named_with_its_repair_and_nothing_trains(repo, kind):
    name, sha = sorted(darwin_refs(repo, "refs/heads/darwin/").items())[0]
    set_note(repo, FITNESS, sha, BAD_FITNESS[kind])
    everything = git(repo, "for-each-ref")
    for args in (("status",), ("status", "--all"), ("show", name), ("lineage", name), ("review", "r1")):
        result = cli(*args, "-C", repo)
        assert_one_line_error(result, f"the {FITNESS} note on {sha} ")
        assert f"`git notes --ref {FITNESS} remove {sha}` (the commit is then evaluated again)" in result.output
    for args in (("eval", f"darwin/{name}", "--note"), ("generation",), ("evolve", "-g", "1")):
        assert_one_line_error(cli(*args, "-C", repo), f"the {FITNESS} note on {sha} ")
    assert git(repo, "for-each-ref") == everything  # nothing planned, trained or written
    assert git(repo, "notes", "--ref", FITNESS, "show", sha) == BAD_FITNESS[kind].rstrip("\n") + "\n"

    git(repo, "notes", "--ref", FITNESS, "remove", sha)  # the repair the message gives
    assert cli("status", "-C", repo).exit_code == 0


def test_broken_failure_and_mutation_notes_are_named(repo):
    failures = "refs/notes/darwin/failures"
    parent = sorted(darwin_refs(repo, "refs/heads/darwin/").values())[0]
    record_failure(repo, config.load(repo), parent, 1, 0, "patch does not apply: no", "offline:test")
    old = git(repo, "notes", "--ref", failures, "show", parent)
    set_note(repo, failures, parent, old + "not a record\n")
    for args in (("status",), ("generation",)):
        assert_one_line_error(cli(*args, "-C", repo), f"the {failures} note on {parent} line "
                                                       f"{len(old.splitlines()) + 1} is not JSON")
    set_note(repo, failures, parent, old + json.dumps({"generation": 1}) + "\n")
    assert_one_line_error(cli("status", "-C", repo), "has no 'slot'")
    set_note(repo, failures, parent, old)

    mutation = "refs/notes/darwin/mutation"
    child = git(repo, "notes", "--ref", mutation, "list").split()[1]
    set_note(repo, mutation, child, "reasoning, not JSON\n")
    assert_one_line_error(cli("status", "-C", repo), f"the {mutation} note on {child} is not JSON")


def test_a_broken_generations_log_entry_is_named_with_the_command_that_steps_past_it(repo):
    log = "refs/darwin/generations"
    tip = git(repo, "rev-parse", log).strip()
    everything = git(repo, "for-each-ref")
    for text in ("{not json", "[]"):
        write_log(repo, log, "g0001/summary.json", text)
        for args in (("status",), ("generation",), ("evolve", "-g", "1")):
            result = cli(*args, "-C", repo)
            assert_one_line_error(result, f"{log}:g0001/summary.json is ")
        git(repo, "update-ref", log, tip)
    write_log(repo, log, "g0001/plan.json", "{")
    result = cli("lineage", sorted(darwin_refs(repo, "refs/heads/darwin/"))[0], "-C", repo)
    assert result.exit_code == 0  # lineage needs no generations log
    result = cli("status", "-C", repo)
    assert_one_line_error(result, f"{log}:g0001/plan.json is not JSON")
    rewind = result.output.split("step the log back to before it with `")[1].split("`")[0]
    assert rewind == f"git update-ref {log} {tip} {git(repo, 'rev-parse', log).strip()}"
    subprocess.run(shlex.split(rewind), cwd=repo, check=True)  # the repair the message gives
    assert cli("status", "-C", repo).exit_code == 0
    assert git(repo, "for-each-ref") == everything


def test_a_broken_requests_log_entry_is_named(repo):
    log = "refs/darwin/requests-log"
    doc = json.loads(git(repo, "show", f"{log}:r1.json"))
    for text, words in (("{oops", "is not JSON"), (json.dumps({**doc, "events": "filed"}), "has 'events' = "),
                        (json.dumps({k: v for k, v in doc.items() if k != "state"}), "has no 'state'"),
                        (json.dumps({**doc, "id": "r2"}), "holds request 'r2', not 'r1'")):
        write_log(repo, log, "r1.json", text)
        for args in (("requests",), ("requests", "--all"), ("review", "r1"), ("approve", "r1"),
                     ("memory", "ada")):
            result = cli(*args, "-C", repo)
            assert_one_line_error(result, f"{log}:r1.json {words}")
            assert f"`git update-ref {log} " in result.output
