"""Proposals becoming commits: trailers and notes plain git reads, patch validation, crossover merges."""
from __future__ import annotations

import difflib
import json

import pytest

from darwin_git import breeding, memory, patches
from darwin_git.generation import agent_of
from darwin_git.population import init_repo

from .conftest import darwin_refs, evo_config, generation_doc, git, note


def diff(path: str, old: str, new: str) -> str:
    """A git-style unified diff turning `old` into `new` (3 lines of context)."""
    body = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
    return f"diff --git a/{path} b/{path}\n{body}"


@pytest.fixture(scope="module")
def template(tmp_path_factory, corpus_file) -> tuple:
    """(repo, root sha, train.py text) of an unevaluated evolution repo: apply() needs no training."""
    repo = tmp_path_factory.mktemp("mut") / "evo"
    init_repo(repo, evo_config(corpus_file))
    root = git(repo, "rev-parse", "darwin/ada").strip()
    return repo, root, (repo / "train.py").read_text()


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ---- commits made by a generation ----------------------------------------------------------------

def test_child_commit_carries_trailers_reasoning_and_notes(evolved_repo):
    plan = generation_doc(evolved_repo, 1, "plan")
    everything = {**darwin_refs(evolved_repo, "refs/darwin/archive/"),
                  **darwin_refs(evolved_repo, "refs/heads/darwin/")}
    made = [s for s in plan["slots"] if s["child"] in everything]
    assert made
    for slot in made:
        sha = everything[slot["child"]]

        def trailer(key: str) -> str:
            return git(evolved_repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha).strip()

        assert trailer("Darwin-Parent") == " ".join(p["sha"] for p in slot["parents"])
        assert git(evolved_repo, "log", "-1", "--format=%P", sha).split() == [p["sha"] for p in slot["parents"]]
        assert trailer("Darwin-Generation") == "1" and trailer("Darwin-Slot") == str(slot["slot"])
        assert trailer("Darwin-Agent") == agent_of(slot["child"]) == agent_of(slot["parents"][0]["name"])
        operator = trailer("Darwin-Operator")
        assert operator == "crossover" if slot["kind"] == "crossover" else operator.startswith("offline:")

        notes = json.loads(note(evolved_repo, "mutation", sha))
        assert notes["operator"] == operator
        body = git(evolved_repo, "log", "-1", "--format=%b", sha)
        reasoning = body.split("\n\nDarwin-")[0].strip()
        if slot["kind"] == "mutation":
            assert notes["reasoning"].strip() == reasoning and len(reasoning) > 40
            assert notes["generation"] == 1 and notes["target"] == slot["parents"][0]["name"]
        assert json.loads(note(evolved_repo, "fitness", sha))["status"]


# ---- patch validation ----------------------------------------------------------------------------

def test_malformed_and_empty_patches_are_rejected(template):
    repo, root, _ = template
    for garbage in ("this is not a diff\nat all\n", "@@ -1,2 +1,2 @@\n-a\n+b\n"):
        with pytest.raises(patches.Rejected, match="malformed"):
            patches.apply(repo, root, garbage)
    for empty in ("", "  \n\n"):
        with pytest.raises(patches.Rejected, match="empty patch"):
            patches.apply(repo, root, empty)


def test_patches_touching_evaluator_owned_files_are_rejected(template):
    repo, root, _ = template
    settings = git(repo, "show", f"{root}:darwin.toml")
    with pytest.raises(patches.Rejected, match="evaluator owns"):
        patches.apply(repo, root, diff("darwin.toml", settings, settings.replace("20800tokens", "2000000tokens")))
    hook = "--- /dev/null\n+++ b/hooks/pre-commit\n@@ -0,0 +1 @@\n+exit 0\n"
    with pytest.raises(patches.Rejected, match="evaluator owns"):
        patches.apply(repo, root, "diff --git a/hooks/pre-commit b/hooks/pre-commit\nnew file mode 100755\n" + hook)
    ignore = ("diff --git a/.gitignore b/.gitignore\nnew file mode 100644\n"
              "--- /dev/null\n+++ b/.gitignore\n@@ -0,0 +1 @@\n+*\n")
    with pytest.raises(patches.Rejected, match="evaluator owns"):
        patches.apply(repo, root, ignore)
    escape = "--- a/../outside.py\n+++ b/../outside.py\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(patches.Rejected, match="outside the genome"):
        patches.apply(repo, root, escape)


# ---- the result is checked, not the patch text: git headers unidiff does not report ------------------

def hunks(patch: str) -> str:
    """The hunks of a one-file diff, without its file headers."""
    return patch[patch.index("\n@@") + 1:]


def decoy(train: str) -> str:
    """An honest-looking edit of train.py, the part of an attack unidiff reports."""
    return diff("train.py", train, edit(train, "learning_rate = 2e-3\n", "learning_rate = 3e-3\n"))


def attacks(repo, root: str, train: str, tmp_path) -> dict[str, tuple[str, str]]:
    """{name: (patch, words of the reason it is refused)}: each, applied by `git apply`, would commit a
    tree holding what a genome may not (the rename and copy ones pass every check on the patch text)."""
    settings = git(repo, "show", f"{root}:darwin.toml")
    longer = hunks(diff("darwin.toml", settings, settings.replace('"20800tokens"', '"2000000tokens"')))
    binary = tmp_path / "binary"  # a GIT binary patch, as `git diff --binary` writes one
    binary.mkdir()
    git(binary, "init", "-q")
    (binary / "weights.py").write_bytes(b"\xff\xfe not utf-8 \x00\x01")
    git(binary, "add", "weights.py")
    return {
        "rename onto darwin.toml": ("diff --git a/train.py b/darwin.toml\nsimilarity index 90%\n"
                                    "rename from train.py\nrename to darwin.toml\n", "darwin.toml"),
        "rename headers under a train.py header": (
            decoy(train) + "diff --git a/train.py b/train.py\nrename from darwin.toml\nrename to darwin.toml\n"
            + longer, "the change touches 'darwin.toml', which the evaluator owns"),
        "copy to hooks/pre-commit": (
            decoy(train) + "diff --git a/train.py b/train.py\ncopy from train.py\ncopy to hooks/pre-commit\n",
            "the change touches 'hooks/pre-commit', which the evaluator owns"),
        "copy to .gitattributes": (
            decoy(train) + "diff --git a/train.py b/train.py\ncopy from model.py\ncopy to .gitattributes\n",
            "the change touches '.gitattributes', which the evaluator owns"),
        "symlink to the cache": (
            "diff --git a/cache b/cache\nnew file mode 120000\n--- /dev/null\n+++ b/cache\n@@ -0,0 +1 @@\n"
            "+/home/user/.cache/darwin-git\n\\ No newline at end of file\n", "makes 'cache' a symlink"),
        "executable bit": ("diff --git a/train.py b/train.py\nold mode 100644\nnew mode 100755\n",
                           "makes 'train.py' an executable file"),
        "new executable": (
            "diff --git a/run.py b/run.py\nnew file mode 100755\n--- /dev/null\n+++ b/run.py\n@@ -0,0 +1 @@\n"
            "+print('hi')\n", "makes 'run.py' an executable file"),
        "gitlink": (
            f"diff --git a/vendor b/vendor\nnew file mode 160000\nindex 0000000..{root[:7]}\n--- /dev/null\n"
            f"+++ b/vendor\n@@ -0,0 +1 @@\n+Subproject commit {root}\n", "makes 'vendor' a submodule"),
        "NUL byte in a text hunk": (
            "diff --git a/data.py b/data.py\nnew file mode 100644\n--- /dev/null\n+++ b/data.py\n@@ -0,0 +1 @@\n"
            "+x = 'a\0b'\n", "makes 'data.py' binary"),
        "binary patch": (git(binary, "diff", "--cached", "--binary"), "makes 'weights.py' binary"),
    }


def test_what_a_patch_would_commit_is_checked_on_the_tree_git_writes(template, tmp_path):
    repo, root, train = template
    refs = git(repo, "for-each-ref")
    for name, (patch, words) in attacks(repo, root, train, tmp_path).items():
        with pytest.raises(patches.Rejected) as e:
            patches.apply(repo, root, patch)
        assert words in str(e.value), (name, str(e.value))
    assert git(repo, "for-each-ref") == refs
    tree = patches.apply(repo, root, decoy(train))  # the honest part alone still applies
    assert "learning_rate = 3e-3\n" in git(repo, "cat-file", "blob", f"{tree}:train.py")
    with pytest.raises(patches.Rejected, match="not UTF-8 text"):
        patches.apply(repo, root, decoy(train).replace("3e-3", "3e-3  # \ud800"))


def test_an_attack_from_an_operator_is_a_recorded_failure_and_no_commit(tmp_path, corpus_file):
    from darwin_git.generation import Generation
    from darwin_git.operators import Proposal

    from .conftest import quiet

    repo = tmp_path / "evo"
    cfg = evo_config(corpus_file, population=1, offspring=1)
    init_repo(repo, cfg)
    root = git(repo, "rev-parse", "darwin/ada").strip()
    patch = attacks(repo, root, git(repo, "show", f"{root}:train.py"), tmp_path)["copy to hooks/pre-commit"][0]

    class Attacker:
        name = "attacker"

        def digest(self, evidence, previous):
            return None

        def usage(self):
            return {}

        def resume(self, spent):
            pass

        def propose(self, files, context, rng, check=None):
            return Proposal("Tune the learning rate", "Looks like a learning-rate change.", patch, "attacker")

    generation = Generation(repo, cfg, quiet(), operator=Attacker())
    plan = generation._plan(1)
    assert generation._breed(1, plan, memory.history(repo, cfg)) == {}
    assert darwin_refs(repo, "refs/heads/darwin/") == {"ada": root}
    [failure] = breeding.failures(repo, cfg)
    assert "hooks/pre-commit" in failure.reason and failure.patch == patch


def test_noop_and_invalid_python_are_rejected(template):
    repo, root, train = template
    change = diff("train.py", train, edit(train, "learning_rate = 2e-3\n", "learning_rate = 3e-3\n"))
    same = change.replace("+learning_rate = 3e-3", "+learning_rate = 2e-3")  # removes a line, adds it back
    with pytest.raises(patches.Rejected, match="no-op"):
        patches.apply(repo, root, same)
    broken = diff("train.py", train, edit(train, "learning_rate = 2e-3\n", "learning_rate = (2e-3\n"))
    with pytest.raises(patches.Rejected, match="not valid Python"):
        patches.apply(repo, root, broken)
    stale = diff("train.py", train.replace("n_layer = 4", "n_layer = 99"), train.replace("n_layer = 4", "n_layer = 5"))
    with pytest.raises(patches.Rejected, match="does not apply"):
        patches.apply(repo, root, stale)


def test_wrong_hunk_line_counts_still_apply(template):
    repo, root, train = template
    good = diff("train.py", train, edit(train, "batch_size = 16\n", "batch_size = 8\n"))
    header = next(line for line in good.splitlines() if line.startswith("@@"))
    assert header == "@@ -22,7 +22,7 @@"  # 3 lines of context each side
    wrong = good.replace(header, "@@ -20,3 +20,3 @@")  # the kind of count an LLM gets wrong
    tree = patches.apply(repo, root, wrong)
    assert tree == patches.apply(repo, root, good)
    assert "batch_size = 8\n" in git(repo, "cat-file", "blob", f"{tree}:train.py")
    # a count larger than the hunk, too, with another file after it (unidiff alone calls this malformed)
    model = git(repo, "show", f"{root}:model.py")
    second = diff("model.py", model, edit(model, "import math\n", "import math  # for sqrt\n"))
    both = patches.apply(repo, root, good.replace(header, "@@ -20,12 +20,12 @@") + second)
    assert "batch_size = 8\n" in git(repo, "cat-file", "blob", f"{both}:train.py")
    assert "import math  # for sqrt\n" in git(repo, "cat-file", "blob", f"{both}:model.py")


# ---- crossover -----------------------------------------------------------------------------------

@pytest.fixture
def branches(tmp_path, corpus_file):
    """An evolution repo plus three hand-made genome branches off the root: a and b merge, a and c conflict."""
    repo = tmp_path / "evo"
    cfg = evo_config(corpus_file)
    init_repo(repo, cfg)
    shas = {}
    for name, old, new in (("ada", "n_layer = 4", "n_layer = 5"), ("bo", "weight_decay = 0.1", "weight_decay = 0.05"),
                           ("cy", "n_layer = 4", "n_layer = 3")):
        git(repo, "checkout", "-q", "-B", f"darwin/{name}", "main")
        path = repo / "train.py"
        path.write_text(edit(path.read_text(), old, new))
        git(repo, "commit", "-qam", f"{name}: {new}")
        shas[name] = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    return repo, cfg, shas


def test_crossover_merges_two_parents_into_a_two_parent_commit(branches):
    repo, cfg, shas = branches
    tree = patches.merge(repo, shas["ada"], shas["bo"])
    merged = git(repo, "cat-file", "blob", f"{tree}:train.py")
    assert "n_layer = 5\n" in merged and "weight_decay = 0.05\n" in merged
    trailers = {"Darwin-Agent": "ada", "Darwin-Parent": f"{shas['ada']} {shas['bo']}",
                "Darwin-Operator": "crossover", "Darwin-Generation": "1"}
    child = breeding.commit_child(repo, cfg, "ada-g1-0", tree, [shas["ada"], shas["bo"]], "Crossover: bo into ada",
                                  "Both edits, together.", trailers, {"operator": "crossover"})
    assert git(repo, "log", "--format=%P", "-1", child.sha).split() == [shas["ada"], shas["bo"]]
    assert git(repo, "rev-parse", "darwin/ada-g1-0").strip() == child.sha
    assert git(repo, "log", "-1", "--format=%(trailers:key=Darwin-Parent,valueonly)", child.sha).strip() \
        == f"{shas['ada']} {shas['bo']}"
    with pytest.raises(Exception, match="reference already exists|cannot lock ref"):
        breeding.commit_child(repo, cfg, "ada-g1-0", tree, [shas["ada"], shas["bo"]], "again", "again", trailers, {})
    with pytest.raises(patches.Rejected, match="adds nothing"):
        patches.merge(repo, shas["ada"], child.sha)


def test_conflicting_crossover_is_rejected(branches):
    repo, _, shas = branches
    with pytest.raises(patches.Rejected, match="conflict") as e:
        patches.merge(repo, shas["ada"], shas["cy"])
    assert "train.py" in str(e.value)


def test_crossover_is_checked_on_the_merged_tree(branches):
    repo, _, shas = branches
    git(repo, "checkout", "-q", "-B", "darwin/dee", shas["bo"])  # a person's branch, made with plain git
    (repo / "tool.py").write_text("print('tool')\n")
    (repo / "tool.py").chmod(0o755)
    git(repo, "add", "tool.py")
    git(repo, "commit", "-qm", "A script")
    dee = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    with pytest.raises(patches.Rejected, match="makes 'tool.py' an executable file"):
        patches.merge(repo, shas["ada"], dee)
