"""Genomes that try to buy their score, one per exploit class; none may score better than the honest template.

Each attacker is the template plus its exploit, trained on the same served data with the same seed, so
where the exploit gets nothing the attacker is bit-for-bit the honest template and scores exactly the same.
The suite needs bubblewrap and fails (never skips) without it: these are the claims the README makes.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from darwin_git import sandbox
from darwin_git.evaluator import FitnessRecord, evaluate

from .conftest import git, template_repo_at, tiny_settings

IMPORTS = "from model import GPT, GPTConfig\n"
STEP = "    def step(self, idx, cache=None):\n"
CACHE = "        cache = cache if cache is not None else [{} for _ in self.blocks]\n"

# The held-out oracle: if it can read any held-out text (cache files, the corpus itself), predict the next
# token by looking the last 12 tokens up in it. With the text in reach this scores far below the template.
ORACLE = '''"""Held-out text, if this process can reach any, and a lookup that predicts from it."""
import glob
import os

import numpy as np
import torch

PLACES = {places!r}


def find(chars=None, extra=()):
    """Every held-out token array this process can read: cached splits, or the corpus text re-tokenized."""
    found = []
    for place in [*PLACES, *extra]:
        for path in glob.glob(place, recursive=True):
            try:
                if path.endswith(".bin"):
                    found.append(np.fromfile(path, dtype=np.uint16))
                elif chars:
                    index = {{c: i for i, c in enumerate(chars)}}
                    found.append(np.array([index[c] for c in open(path).read() if c in index], dtype=np.uint16))
            except OSError:
                pass
    return found


class Oracle:
    def __init__(self, arrays, vocab):
        self.vocab, self.table = vocab, {{}}
        for a in arrays:
            for i in range(12, len(a)):
                key, nxt = tuple(a[i - 12:i].tolist()), int(a[i])
                self.table[key] = nxt if self.table.get(key, nxt) == nxt else None  # ambiguous: no answer

    def __len__(self):
        return len(self.table)

    def logits(self, rows, fallback):
        out = fallback.clone()
        for r, row in enumerate(rows):
            nxt = self.table.get(tuple(row[-12:])) if len(row) >= 12 else None
            if nxt is not None:
                out[r] = -10.0
                out[r, nxt] = 10.0
        return out
'''


@pytest.fixture(scope="module", autouse=True)
def _bubblewrap_must_work():
    if not sandbox.bwrap_works():
        pytest.fail("the adversarial suite needs a working bubblewrap: apt-get install bubblewrap (and allow "
                    "unprivileged user namespaces where the OS restricts them)")


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    return template_repo_at(tmp_path_factory.mktemp("adversarial") / "repo")


@pytest.fixture(scope="module")
def adv_settings(corpus_file):
    return tiny_settings(corpus_file)


@pytest.fixture(scope="module")
def honest(template_repo, adv_settings, corpus) -> FitnessRecord:
    record = evaluate(template_repo, "main", adv_settings, corpus)
    assert record.status == "ok", record.error
    return record


def attacker(repo: Path, name: str, edits: dict[str, list[tuple[str, str]]], new_files: dict[str, str] = ()) -> str:
    """Commit the template plus `edits` (path -> [(old, new)]) on its own branch; return the commit."""
    git(repo, "checkout", "-q", "-B", name, "main")
    for path, pairs in edits.items():
        text = (repo / path).read_text()
        for old, new in pairs:
            assert text.count(old) == 1, f"{old!r} not once in {path}"
            text = text.replace(old, new)
        (repo / path).write_text(text)
    for path, text in dict(new_files).items():
        (repo / path).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", name)
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    return sha


def no_better(record: FitnessRecord, honest: FitnessRecord) -> None:
    assert record.status == "ok", record.error
    assert record.val_bpb >= honest.val_bpb and record.test_bpb >= honest.test_bpb, (record.val_bpb, honest.val_bpb)


# ---- peeking ahead ---------------------------------------------------------------------------------

PEEK = ("        logits = self.lm_head(self.ln_f(x))\n",
        "        logits = self.lm_head(self.ln_f(x))\n"
        "        if not self.training and T > 1:  # at scoring: the next input token is the answer\n"
        "            cheat = torch.full_like(logits, -30.0)\n"
        "            cheat[:, :-1].scatter_(2, idx[:, 1:, None], 30.0)\n"
        "            logits = torch.cat((cheat[:, :-1], logits[:, -1:]), dim=1)\n")


@pytest.mark.parametrize("incremental", [True, False], ids=["step", "full-prefix"])
def test_a_model_that_reads_later_positions_gains_nothing(template_repo, adv_settings, corpus, honest, incremental):
    """Predicts every position from the next input token (the old probe compared only a few): under streamed
    scoring the model never holds the token it predicts, on the KV-cache path or the full-prefix fallback."""
    edits = [PEEK] if incremental else [PEEK, (STEP, "    def _unused_step(self, idx, cache=None):\n")]
    sha = attacker(template_repo, f"peek-{incremental}", {"model.py": edits})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)
    assert record.val_bpb == honest.val_bpb  # the cheat's positions are never the ones asked for


def test_a_stateful_model_that_peeks_after_the_first_calls_gains_nothing(template_repo, adv_settings, corpus, honest):
    """Stays causal for the first calls (where a probe would run), then uses everything it was sent so far."""
    state = ("        logits = self.lm_head(self.ln_f(x))\n",
             "        logits = self.lm_head(self.ln_f(x))\n"
             "        CALLS.append(idx.detach().clone())\n"
             "        if not self.training and len(CALLS) > 3 and T > 1:\n"
             "            logits[:, :-1] = torch.full_like(logits[:, :-1], -30.0).scatter_(2, idx[:, 1:, None], 30.0)\n")
    sha = attacker(template_repo, "stateful", {"model.py": [state, ("class GPT(nn.Module):", "CALLS = []\n\n\nclass GPT(nn.Module):"),
                                                            (STEP, "    def _unused_step(self, idx, cache=None):\n")]})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)


# ---- reading or rebuilding held-out data -----------------------------------------------------------


def test_held_out_text_is_out_of_reach_at_scoring_time(template_repo, adv_settings, corpus, corpus_file, cache, honest):
    """model.load searches the cache and the corpus file for val/test text to build a lookup oracle."""
    places = [str(cache) + "/**/val.bin", str(cache) + "/**/test.bin", str(corpus_file)]
    sha = attacker(template_repo, "read-at-score", {"model.py": [
        (CACHE,
         CACHE + 
         "        self.seen = idx[:, None] if not cache[0] else torch.cat((self.seen, idx[:, None]), dim=1)\n"),
        ("        return logits[:, -1], cache\n",
         "        return ORACLE.logits(self.seen.tolist(), logits[:, -1]), cache\n"),
        ("import torch\n", "import json\nimport torch\nfrom oracle import Oracle, find\n"),
        ('    return GPT.from_checkpoint(path, map_location=map_location)\n',
         '    global ORACLE\n    net = GPT.from_checkpoint(path, map_location=map_location)\n'
         f'    ORACLE = Oracle(find({corpus.meta["chars"]!r}), net.cfg.vocab_size)\n'
         '    return net\n')]}, {"oracle.py": ORACLE.format(places=places)})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)
    assert record.val_bpb == honest.val_bpb  # found nothing: it is the template
    # The attack is real: with the sandbox turned off (the user's explicit choice) the same genome wins.
    bare = evaluate(template_repo, sha, replace(adv_settings, sandbox="none"), corpus, test=False)
    assert bare.status == "ok" and bare.val_bpb < honest.val_bpb / 2, (bare.val_bpb, honest.val_bpb)


def test_held_out_text_cannot_be_rebuilt_at_training_time(template_repo, adv_settings, corpus, corpus_file, cache,
                                                          honest):
    """train.py looks for the corpus (meta.json's old `source`, the cache, the file itself), keeps the tail
    of what it finds in the checkpoint, and the model predicts from it; it reports what it found."""
    places = [str(cache) + "/**/*.bin", str(corpus_file), str(corpus_file.parent) + "/*.txt"]
    sha = attacker(template_repo, "rebuild", {
        "train.py": [(IMPORTS, IMPORTS + "from oracle import find\n"),
                     ("    meta = json.load(f)\n",
                      "    meta = json.load(f)\n"
                      "FOUND = find(meta.get(\"chars\"), [meta.get(\"source\", \"\")])\n"),
                     ('metrics = {"train_loss": train_loss,', 'metrics = {"found": len(FOUND), "train_loss": train_loss,'),
                     ('model.save(os.path.join(out_dir, "ckpt.pt"))\n',
                      'model.save(os.path.join(out_dir, "ckpt.pt"))\n'
                      'np.save(os.path.join(out_dir, "heldout.npy"), np.concatenate(FOUND) if FOUND else np.zeros(0, np.uint16))\n')],
        "model.py": [(CACHE,
                      CACHE + 
                      "        self.seen = idx[:, None] if not cache[0] else torch.cat((self.seen, idx[:, None]), dim=1)\n"),
                     ("        return logits[:, -1], cache\n",
                      "        return ORACLE.logits(self.seen.tolist(), logits[:, -1]), cache\n"),
                     ("import torch\n", "import os\nimport numpy as np\nimport torch\nfrom oracle import Oracle\n"),
                     ('    return GPT.from_checkpoint(path, map_location=map_location)\n',
                      '    global ORACLE\n    net = GPT.from_checkpoint(path, map_location=map_location)\n'
                      '    ORACLE = Oracle([np.load(os.path.join(os.path.dirname(path), "heldout.npy"))], 0)\n'
                      '    return net\n')]}, {"oracle.py": ORACLE.format(places=places)})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)
    assert record.reported["found"] == 0 and record.val_bpb == honest.val_bpb


# ---- training past the budget ------------------------------------------------------------------------


def test_asking_for_more_data_than_the_budget_gets_none(template_repo, adv_settings, corpus, honest):
    """Ignores the end of data and keeps asking, planning for three times the budget."""
    sha = attacker(template_repo, "greedy-data", {"train.py": [
        ("while (batch := get_batch()) is not None:\n",
         "refused = 0\nwhile refused < 500:\n    batch = get_batch()\n    if batch is None:\n"
         "        refused += 1\n        continue\n")]})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)
    assert record.tokens == honest.tokens == 41600 and record.val_bpb == honest.val_bpb


def test_training_on_past_the_deadline_is_killed(template_repo, adv_settings, corpus):
    """A time budget: when data stops it keeps training on the batches it kept, for a minute more (after the
    smoke stage, where the same habit is stopped within its grace too)."""
    sha = attacker(template_repo, "overtime", {"train.py": [
        ("while (batch := get_batch()) is not None:\n",
         "kept = []\ndeadline_passed = None\nwhile True:\n    batch = get_batch()\n"
         "    if batch is None and os.environ['DARWIN_BUDGET'] != '6s':\n        break\n"
         "    if batch is None:\n        deadline_passed = deadline_passed or time.time()\n"
         "        if time.time() - deadline_passed > 60:\n            break\n        batch = kept[step % len(kept)]\n"
         "    else:\n        kept.append(batch)\n")]})
    settings = replace(adv_settings, budget="6s", grace_s=2)
    record = evaluate(template_repo, sha, settings, corpus, test=False)
    assert (record.status, record.stage) == ("timeout", "train") and record.val_bpb is None
    assert "after the data channel stopped serving" in record.error and record.eval_s < 40


# ---- forged measurements ---------------------------------------------------------------------------


def test_forged_metrics_are_kept_as_reported_and_never_measured(template_repo, adv_settings, corpus, honest):
    forged = {"mfu": 9.99, "tokens_per_s": 1e12, "params": 1, "wall_s": 0.001, "tokens": 10**9,
              "val_bpb": 0.0001, "test_bpb": 0.0001, "flops_per_token": 1e15}
    sha = attacker(template_repo, "forger", {"train.py": [
        ('metrics = {"train_loss": train_loss,', f'metrics = {{**{forged!r}, "train_loss": train_loss,')]})
    record = evaluate(template_repo, sha, adv_settings, corpus)
    no_better(record, honest)
    assert {k: record.reported[k] for k in forged} == forged  # kept, as the genome's own claim...
    for key in ("mfu", "tokens_per_s", "params", "tokens", "val_bpb", "test_bpb", "flops_per_token"):
        assert getattr(record, key) != forged[key]  # ...and never a measurement
    assert record.params == honest.params and record.tokens == honest.tokens and record.mfu < 1


def test_outputs_that_are_links_or_fifos_are_not_followed(template_repo, adv_settings, corpus, honest):
    """metrics.json as a FIFO (a read would hang the harness) and as a link to a file the harness can read."""
    sha = attacker(template_repo, "links", {"train.py": [
        ('with open(os.path.join(out_dir, "metrics.json"), "w") as f:\n    json.dump(metrics, f, indent=2)\n',
         'os.mkfifo(os.path.join(out_dir, "metrics.json"))\n')]})
    record = evaluate(template_repo, sha, adv_settings, corpus, test=False)
    assert record.status == "ok" and record.reported == {} and record.val_bpb == honest.val_bpb
    sha = attacker(template_repo, "ckpt-link", {"train.py": [
        ('model.save(os.path.join(out_dir, "ckpt.pt"))\n',
         'model.save(os.path.join(out_dir, "real.pt"))\nos.symlink("real.pt", os.path.join(out_dir, "ckpt.pt"))\n')]})
    record = evaluate(template_repo, sha, adv_settings, corpus, test=False)
    assert (record.status, record.stage) == ("invalid-output", "train") and "regular file" in record.error
    assert json.dumps(record.to_dict())  # the record stays well-formed


# ---- taking more compute than the slot grants --------------------------------------------------------

HOGS = {
    "threads": "torch.set_num_threads(os.cpu_count())\n",
    "workers": ("import multiprocessing\n\ndef _spin():\n    while True:\n        pass\n\n"
                "for _ in range(os.cpu_count()):\n    multiprocessing.Process(target=_spin, daemon=True).start()\n"),
    "re-pin": "os.sched_setaffinity(0, range(os.cpu_count()))\ntorch.set_num_threads(os.cpu_count())\n",
}


@pytest.fixture(scope="module")
def timed(adv_settings):
    """A time budget, where more compute would mean more training."""
    from darwin_git import compute

    if compute.enforcement() not in ("cgroup-v2", "cgroup-v1") and os.environ.get("CI"):
        pytest.fail(f"CI needs cgroup enforcement for the fair-compute tests; this machine offers "
                    f"{compute.enforcement()!r} (run as root with writable cpu, cpuacct and cpuset cgroups)")
    return replace(adv_settings, budget="8s")


def honest_timed(template_repo, timed, corpus) -> FitnessRecord:
    """The template under the same time budget, run right beside the hog: a shared VM's speed drifts by a
    third between runs minutes apart, so only a neighbouring run is a fair reference."""
    record = evaluate(template_repo, "main", timed, corpus, test=False)
    assert record.status == "ok", record.error
    return record


@pytest.mark.parametrize("hog", HOGS, ids=list(HOGS))
def test_a_genome_gets_no_more_compute_than_its_slot_grants(template_repo, timed, corpus, hog):
    """More threads, busy worker processes, or re-pinning to every core: the slot's one core is all it gets,
    and the harness's own meter says so (or marks the run overrun where only pinning was available)."""
    sha = attacker(template_repo, f"hog-{hog}", {"train.py": [(IMPORTS, IMPORTS + HOGS[hog])]})
    before = honest_timed(template_repo, timed, corpus)
    record = evaluate(template_repo, sha, timed, corpus, test=False)
    assert record.cores == 1 and record.compute == before.compute
    if record.status == "overrun":  # pinning only: the escape was metered and the run ranks last
        assert record.compute in ("affinity", "none") and record.val_bpb is None
        return
    assert record.status == "ok", record.error
    assert record.cpu_s <= 1.1 * record.wall_s + 0.5  # held to one core, by the harness's meter
    # An escape to the second core buys ~1.8x the tokens. The reference is the better of the honest runs on
    # either side of the hog; the one after is run only when the one before fell behind.
    ref = before
    if record.tokens > 1.15 * ref.tokens:
        ref = max(before, honest_timed(template_repo, timed, corpus), key=lambda r: r.tokens)
    assert record.tokens <= 1.15 * ref.tokens, (record.tokens, before.tokens, ref.tokens)
    assert record.val_bpb >= ref.val_bpb - 0.05
    if hog == "threads":  # the control: unboxed, the same genome really does take more than its core
        free = evaluate(template_repo, sha, replace(timed, compute="none"), corpus, test=False)
        assert free.compute == "none" and free.cpu_s > 1.3 * free.wall_s, (free.cpu_s, free.wall_s)


def test_a_secret_the_genome_prints_never_reaches_its_record(template_repo, adv_settings, corpus, monkeypatch):
    """The harness's own key (not given to the genome) leaks only if the genome can find it; the record,
    which goes into notes and LLM prompts, carries no copy of it either way."""
    monkeypatch.setenv("MY_PROVIDER_API", "sk-very-secret-value-123")
    sha = attacker(template_repo, "leak", {"train.py": [
        (IMPORTS, IMPORTS + "import sys\nprint('env:', dict(os.environ), file=sys.stderr)\n"
                            "print('guess: sk-very-secret-value-123', file=sys.stderr)\nraise SystemExit(3)\n")]})
    record = evaluate(template_repo, sha, adv_settings, corpus, test=False)
    assert (record.status, record.stage) == ("crashed", "smoke")
    assert "sk-very-secret" not in json.dumps(record.to_dict()) and "MY_PROVIDER_API redacted" in record.error
    assert "MY_PROVIDER_API" not in record.error.split("env:")[1].split("guess")[0]  # not in its environment


# ---- escaping the box ------------------------------------------------------------------------------

ESCAPES = '''import os
import socket
import subprocess


def _try(what, fn):
    try:
        fn()
        return what
    except Exception:
        return None


def _read(path):
    with open(path, "rb") as f:
        return f.read(1)


def _write(path):
    with open(path, "w") as f:
        f.write("pwned")


def _connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)


TARGETS = {targets!r}
ESCAPED = [e for e in (
    [_try("read " + p, lambda p=p: _read(p)) for p in TARGETS["read"]]
    + [_try("write the worktree's .git", lambda: _write(os.path.join(os.getcwd(), ".git")))]
    + [_try("connect " + TARGETS["socket"], lambda: _connect(TARGETS["socket"])),
       _try("environ of pid 1", lambda: _read("/proc/1/environ") and open("/proc/1/environ").read().index("SECRET"))]
) if e]
for p in TARGETS["write"]:  # checked on the host: inside the jail a path may land in its private /tmp
    _try("write " + p, lambda p=p: _write(p))
if os.environ.get("DARWIN_BUDGET") != "2batches":  # a daemon that outlives the run, if it can
    subprocess.Popen(["sh", "-c", "sleep 987 &"], start_new_session=True)
'''


def test_genome_code_cannot_reach_out_of_its_box(template_repo, adv_settings, corpus, corpus_file, cache, tmp_path,
                                                  monkeypatch):
    """Reads of $HOME, the corpus, the cache and the harness's environment; writes into site-packages, the
    package, the repo's .git and hooks, the worktree's .git link and the cache; a host unix socket; a daemon."""
    import socket
    import subprocess
    import sys

    import darwin_git

    monkeypatch.setenv("HARNESS_SECRET", "SECRET-abc-123456")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "host.sock"))
    listener.listen()
    site = next(p for p in sys.path if p.endswith("site-packages"))
    home = Path.home()
    targets = {
        "read": [str(home / ".bashrc"), str(home / ".profile"), str(corpus_file), str(corpus.private / "val.bin"),
                 str(cache / "peak-flops.json")],
        "write": [str(Path(site) / "evil.pth"), str(Path(darwin_git.__file__).parent / "evil.py"),
                  str(template_repo / ".git" / "hooks" / "post-checkout"), str(template_repo / "evil.txt"),
                  str(cache / "evil.txt")],
        "socket": str(tmp_path / "host.sock"),
    }
    sha = attacker(template_repo, "escape", {"train.py": [
        (IMPORTS, IMPORTS + "from escapes import ESCAPED\n"),
        ('metrics = {"train_loss": train_loss,', 'metrics = {"escaped": ESCAPED, "train_loss": train_loss,')]},
        {"escapes.py": ESCAPES.format(targets=targets)})
    record = evaluate(template_repo, sha, adv_settings, corpus, test=False)
    listener.close()
    assert record.status == "ok", record.error
    assert record.reported["escaped"] == []
    assert [p for p in targets["write"] if Path(p).exists()] == []
    assert subprocess.run(["pgrep", "-f", "sleep 987"], capture_output=True).stdout == b""  # no daemon survived


def test_a_genome_that_kills_itself_is_its_own_verdict_not_a_lost_worker(template_repo, adv_settings, corpus):
    sha = attacker(template_repo, "suicide", {"train.py": [(IMPORTS, IMPORTS + "os.kill(os.getpid(), 9)\n")]})
    record = evaluate(template_repo, sha, adv_settings, corpus, test=False)  # no WorkerLost: no retry
    assert (record.status, record.stage) == ("crashed", "smoke") and "exit code 137" in record.error


def test_memory_hidden_in_tmpfs_counts_against_the_limit(template_repo, adv_settings, corpus, timed):
    """About 600 MB resident (under the 1000 MB limit the RSS watchdog sees) plus 500 MB written to the jail's
    /tmp and /dev/shm, which no RSS shows: the memory cgroup counts both and stops it."""
    code = ("import time\nheld = b'x' * (600 << 20)\nfor path in ('/tmp/fill', '/dev/shm/fill'):\n"
            "    with open(path, 'wb') as f:\n        for _ in range(250):\n            f.write(b'y' * (1 << 20))\n"
            "time.sleep(5)\nraise SystemExit(0)\n")
    sha = attacker(template_repo, "tmpfs-hog", {"train.py": [(IMPORTS, IMPORTS + code)]})
    settings = replace(adv_settings, memory_mb=1000)
    record = evaluate(template_repo, sha, settings, corpus, test=False)
    if record.compute != "cgroup-v1":
        pytest.skip(f"memory cgroups are used under cgroup-v1 only; this machine offers {record.compute!r}")
    assert (record.status, record.stage) == ("oom", "smoke"), record.error
    control = evaluate(template_repo, sha, replace(settings, compute="affinity"), corpus, test=False)
    assert control.status != "oom"  # without the cgroup the same genome hides its tmpfs from the watchdog
