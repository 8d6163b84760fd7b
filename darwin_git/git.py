"""Every git call darwin-git makes passes through here: plumbing via the `git` CLI.

Why the CLI and not a library for writes: GitPython's Repo is not thread-safe and libgit2
writes flat notes trees (see shared/GIT.md); `git` itself is the reference implementation.
Writes follow one rule: write objects first, then move a ref, so a kill loses nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TypeVar

import dacite

from .errors import DarwinError

ZERO = "0" * 40


class GitError(DarwinError):
    """A git command failed; the message carries git's own words."""


# Hooks are scripts in .git/hooks (or core.hooksPath) that git runs on commit, checkout, merge and
# every ref update. The harness never runs them: they are not its code, and the repo is shared with
# untrusted genomes. People's own `git commit` still runs the repo's hooks (the pre-commit guard).
HOOKS_OFF = ("-c", "core.hooksPath=/dev/null")


def run(repo: Path | str, *args: str, input: str | bytes | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """The one place a git process starts: `git -C repo args...` with hooks off, bytes in and out."""
    return subprocess.run(
        ["git", *HOOKS_OFF, "-C", str(repo), *args], capture_output=True,
        input=input.encode() if isinstance(input, str) else input,
        env={**os.environ, **env} if env else None,
    )


def git(repo: Path | str, *args: str, input: str | bytes | None = None, check: bool = True,
        env: dict | None = None) -> str:
    """Run `git -C repo args...` and return stdout (text). Raise GitError with stderr on failure."""
    proc = run(repo, *args, input=input, env=env)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        first = (err.strip() or out.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise GitError(f"git {args[0]} failed: {first}")
    return out


def toplevel(path: Path | str = ".") -> Path:
    """The root of the git repository holding `path`, or a one-line error."""
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip())
    except (GitError, FileNotFoundError, NotADirectoryError):
        raise DarwinError(f"{os.path.abspath(path)} is not inside a git repository; "
                          "run this in an evolution repo (see `darwin-git init`)") from None


def init(path: Path | str, bare: bool = False) -> None:
    """A new repository at `path` whose first branch is main."""
    git(Path(path).parent, "init", "-q", *(["--bare"] if bare else ["-b", "main"]), str(path))


def config_get(repo: Path, key: str) -> str:
    """A git config value, or "" when it is not set."""
    return git(repo, "config", key, check=False).strip()


def config_set(repo: Path, key: str, value: str) -> None:
    git(repo, "config", key, value)


def commit_paths(repo: Path, paths: list[str], message: str) -> str:
    """Stage `paths` of the work tree and commit them on the current branch: the one commit made with an index."""
    git(repo, "add", *paths)
    git(repo, "commit", "-q", "-m", message)
    return resolve(repo, "HEAD")


def git_dir(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--absolute-git-dir").strip())


def resolve(repo: Path, rev: str, kind: str = "commit") -> str:
    """Full sha of `rev` peeled to `kind`, or a one-line error naming the bad revision."""
    out = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{{kind}}}", check=False).strip()
    if not out:
        raise DarwinError(f"unknown revision {rev!r}: no such {kind} in {repo}")
    return out


def exists(repo: Path, rev: str) -> bool:
    return bool(git(repo, "rev-parse", "--verify", "--quiet", rev, check=False).strip())


def tree_of(repo: Path, rev: str) -> str:
    return resolve(repo, rev, "tree")


def read_file(repo: Path, rev: str, path: str) -> str | None:
    out = run(repo, "show", f"{rev}:{path}")
    return out.stdout.decode("utf-8", errors="replace") if out.returncode == 0 else None


def list_files(repo: Path, rev: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", "-z", rev).split("\0")[:-1]


# ---- refs -------------------------------------------------------------------------------------

def update_ref(repo: Path, ref: str, new: str, old: str | None = None, message: str = "darwin-git") -> None:
    """Move `ref` to `new`; with `old` given ("" = must not exist) it is a compare-and-swap."""
    args = ["update-ref", "-m", message, ref, new]
    if old is not None:
        args.append(old or ZERO)
    git(repo, *args)


def update_refs(repo: Path, commands: list[str]) -> None:
    """Apply `update-ref --stdin` commands ("update REF NEW OLD", "create REF NEW", ...) in one
    transaction: every ref moves or none does, and each OLD is a compare-and-swap."""
    git(repo, "update-ref", "--stdin", input="\n".join(["start", *commands, "prepare", "commit"]) + "\n")


def refs(repo: Path, prefix: str) -> dict[str, str]:
    """Map ref name -> commit sha for every ref under `prefix`, in one git call."""
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines())


# ---- notes: JSON documents attached to commits --------------------------------------------------

@contextlib.contextmanager
def lock(repo: Path, name: str = "darwin.lock", wait: bool = True) -> Iterator[None]:
    """An flock in the git dir: serializes writers (concurrent `git notes add` loses notes)."""
    path = git_dir(repo) / name
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DarwinError(f"another darwin-git process holds {path}; wait for it to finish "
                              "(if none is running, the lock is released automatically)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def note_read(repo: Path, ref: str, obj: str) -> str | None:
    out = run(repo, "notes", "--ref", ref, "show", obj)
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def note_write(repo: Path, ref: str, obj: str, text: str) -> None:
    """Replace the note on `obj` under `ref` (callers hold `lock`)."""
    git(repo, "notes", "--ref", ref, "add", "-f", "-F", "-", obj, input=text)


def note_json(repo: Path, ref: str, obj: str) -> dict | None:
    """The JSON document noted on `obj`, None without a note; a note that is not a JSON object is a
    one-line error (CorruptRecord) naming it and its repair."""
    text = note_read(repo, ref, obj)
    return None if text is None else _note_object(ref, obj, text)


def note_append_jsonl(repo: Path, ref: str, obj: str, record: dict) -> None:
    """Append one JSON line to the note on `obj`: an append-only log (failures, reviews)."""
    with lock(repo, "notes.lock"):
        old = note_read(repo, ref, obj) or ""
        note_write(repo, ref, obj, old + json.dumps(record, sort_keys=True) + "\n")


def note_set_json(repo: Path, ref: str, obj: str, doc: dict) -> None:
    with lock(repo, "notes.lock"):
        note_write(repo, ref, obj, json.dumps(doc, sort_keys=True, indent=1) + "\n")


def notes_all(repo: Path, ref: str) -> dict[str, str]:
    """Every note under `ref` as {annotated object sha: text}, read with two git processes in total."""
    listing = git(repo, "notes", "--ref", ref, "list", check=False)
    pairs = [line.split() for line in listing.splitlines() if line.strip()]
    return dict(zip((obj for _, obj in pairs), read_blobs(repo, [blob for blob, _ in pairs])))


def notes_json(repo: Path, ref: str) -> dict[str, dict]:
    """Every JSON note under `ref` as {object sha: document}. A note that is not a JSON object stops the
    reader with a one-line error: skipping it would make a scored commit look unscored, and break the
    next write to it."""
    return {sha: _note_object(ref, sha, text) for sha, text in notes_all(repo, ref).items()}


# ---- records that are not what darwin-git wrote (hand edits, a disk that lied) -----------------------

class CorruptRecord(DarwinError):
    """A note or log entry that does not parse; the message names it and how to repair it."""


def json_object(text: str, fields: dict[str, tuple[type, ...]] | None = None) -> tuple[dict | None, str]:
    """(document, "") when `text` is a JSON object holding `fields` ({key: accepted types}), else
    (None, what is wrong with it), worded to follow the record's name."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        return None, f"is not JSON ({e})"
    if not isinstance(doc, dict):
        return None, f"is a JSON {type(doc).__name__}, not an object"
    return (None, problem) if (problem := shape(doc, fields or {})) else (doc, "")


def shape(doc: dict, fields: dict[str, tuple[type, ...]]) -> str:
    """What `doc` lacks of `fields` ({key: accepted types}; a bool is no number), or ""."""
    for key, kinds in fields.items():
        if key not in doc:
            return f"has no {key!r}"
        if not isinstance(doc[key], kinds) or (isinstance(doc[key], bool) and bool not in kinds):
            return f"has {key!r} = {json.dumps(doc[key])[:40]}, not {' or '.join(k.__name__ for k in kinds)}"
    return ""


Record = TypeVar("Record")
_TYPED = dacite.Config(cast=[float], strict=False)  # a whole-number float written as 2 still reads as 2.0


def typed(cls: type[Record], doc: dict) -> Record:
    """`doc` as the dataclass `cls`, nested records too; ValueError saying which field does not fit."""
    try:
        return dacite.from_dict(cls, doc, _TYPED)
    except (dacite.DaciteError, TypeError, ValueError, IndexError) as e:
        raise ValueError(str(e)) from None


def corrupt_note(ref: str, obj: str, problem: str, dropped: str = "") -> CorruptRecord:
    """The error for a bad note: what is wrong, then the two repairs (`dropped` says what dropping means)."""
    return CorruptRecord(f"the {ref} note on {obj} {problem}; drop it with `git notes --ref {ref} remove {obj}`"
                         f"{dropped} or fix it with `git notes --ref {ref} edit {obj}`")


def _note_object(ref: str, obj: str, text: str) -> dict:
    doc, problem = json_object(text)
    if problem:
        raise corrupt_note(ref, obj, problem)
    return doc


def corrupt_log(repo: Path, ref: str, path: str, problem: str) -> CorruptRecord:
    """The error for a bad log file: it, the commit that wrote it, and how to step the log back before it."""
    tip = git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).strip()
    out = git(repo, "log", "-1", "--format=%H %P", ref, "--", path, check=False).split()
    writer, parent = (out + ["", ""])[:2]
    rewind = f"git update-ref {ref} {parent} {tip}" if parent else f"git update-ref -d {ref} {tip}"
    return CorruptRecord(f"{ref}:{path} {problem}" + (f" (written by {writer[:10]})" if writer else "")
                         + f"; step the log back to before it with `{rewind}` (the later entries of the log "
                         "are dropped and redone or refiled; the reflog keeps them)")


def blob_bytes(repo: Path, blobs: list[str]) -> list[bytes]:
    """The content of many blobs, in order, from one `git cat-file --batch` process."""
    if not blobs:
        return []
    proc = run(repo, "cat-file", "--batch", input="".join(f"{blob}\n" for blob in blobs))
    if proc.returncode != 0:
        raise GitError(f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()}")
    data, pos, out = proc.stdout, 0, []
    for _ in blobs:
        header_end = data.index(b"\n", pos)
        size = int(data[pos:header_end].split()[2])
        out.append(data[header_end + 1: header_end + 1 + size])
        pos = header_end + 1 + size + 1
    return out


def read_blobs(repo: Path, blobs: list[str]) -> list[str]:
    """The text of many blobs, in order, from one `git cat-file --batch` process."""
    return [data.decode("utf-8", errors="replace") for data in blob_bytes(repo, blobs)]


# ---- logs: a commit chain whose tree holds small text files (JSON documents) ----------------------

def read_log(repo: Path, ref: str) -> dict[str, str]:
    """{path: text} of every file at the tip of `ref`, in three git processes whatever their number."""
    if not exists(repo, ref):
        return {}
    entries = [line.split("\t", 1) for line in git(repo, "ls-tree", "-r", "-z", ref).split("\0")[:-1]]
    texts = read_blobs(repo, [meta.split()[2] for meta, _ in entries])  # meta: "<mode> blob <sha>"
    return {path: text for (_, path), text in zip(entries, texts)}


def read_log_json(repo: Path, ref: str) -> dict[str, dict]:
    """{path: document} of every .json file at the tip of `ref`; one that is not a JSON object is a
    one-line error naming it and the commit that wrote it."""
    docs = {}
    for path, text in read_log(repo, ref).items():
        if path.endswith(".json"):
            doc, problem = json_object(text)
            if problem:
                raise corrupt_log(repo, ref, path, problem)
            docs[path] = doc
    return docs


def log_commit(repo: Path, ref: str, files: dict[str, str], message: str) -> tuple[str, str]:
    """(new, old): a commit on the tip of `ref` (a root commit if there is none) whose tree adds or
    replaces `files`. The ref is not moved: the caller moves it, alone or in a transaction."""
    old = resolve(repo, ref) if exists(repo, ref) else ""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        if old:
            git(repo, "read-tree", old, env=env)
        for path, text in files.items():
            blob = git(repo, "hash-object", "-w", "--stdin", input=text).strip()
            git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git(repo, "write-tree", env=env).strip()
    return commit_tree(repo, tree, [old] if old else [], message), old


# ---- commits without a checkout ------------------------------------------------------------------

def commit_message(title: str, reasoning: str, trailers: dict[str, str]) -> str:
    """A commit message: one-line subject (72 characters at most), body, then the trailers that have a value."""
    lines = "\n".join(f"{k}: {v}" for k, v in trailers.items() if v)
    return f"{title.strip().splitlines()[0][:72]}\n\n{reasoning.strip()}\n\n{lines}\n"


def commit_tree(repo: Path, tree: str, parents: list[str], message: str) -> str:
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return git(repo, *args, "-F", "-", input=message).strip()


@dataclass(frozen=True)
class TreeChange:
    """One path that differs between two trees, as `git diff-tree --raw` reports it."""

    path: str
    old_mode: str  # "000000" when added
    new_mode: str  # "000000" when deleted; 100644 file, 100755 executable, 120000 symlink, 160000 gitlink
    new_blob: str
    status: str  # A added, D deleted, M modified, T type changed


def tree_changes(repo: Path, old: str, new: str) -> list[TreeChange]:
    """Every path whose entry differs between trees `old` and `new`, with modes: what git wrote, not
    what a patch's text claims (no rename detection: a rename is a delete and an add)."""
    fields = git(repo, "diff-tree", "-r", "-z", "--raw", "--no-renames", old, new).split("\0")
    changes = []
    for meta, path in zip(fields[0:-1:2], fields[1::2]):  # ":<old mode> <new mode> <old> <new> <status>", path
        old_mode, new_mode, _, blob, status = meta.lstrip(":").split()
        changes.append(TreeChange(path, old_mode, new_mode, blob, status[0]))
    return changes


def apply_to_tree(repo: Path, base: str, patch: str) -> str:
    """Apply a unified diff to commit `base` in a private index; return the new tree sha.

    `--recount` repairs the hunk line counts LLMs get wrong; `--3way` falls back to a merge
    when context drifted. Raises GitError with git's reason when it does not apply.
    """
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git(repo, "read-tree", base, env=env)
        patch_file = os.path.join(tmp, "change.patch")
        Path(patch_file).write_text(patch if patch.endswith("\n") else patch + "\n")
        plain = run(repo, "apply", "--cached", "--recount", "--whitespace=nowarn", patch_file, env=env)
        if plain.returncode:
            # git's own words on where it failed ("patch failed: train.py:22"), for the model's repair round
            where = "; ".join(line.removeprefix("error: ").strip() for line in
                              plain.stderr.decode(errors="replace").splitlines()
                              if "patch failed:" in line or "corrupt patch" in line)
            try:
                git(repo, "apply", "--cached", "--recount", "--3way", "--whitespace=nowarn", patch_file, env=env)
            except GitError as e:
                path = str(e).partition(": U ")[2]  # --3way's last words list the conflicted paths ("U train.py")
                if path:
                    raise GitError(f"{where + '; ' if where else ''}git apply --3way: conflict in {path} (the lines "
                                   "around the change differ here)") from None
                raise GitError(f"{where}; {e}" if where else str(e)) from None
        return git(repo, "write-tree", env=env).strip()


def merge_trees(repo: Path, a: str, b: str) -> tuple[str | None, str]:
    """Merge commits a and b without a worktree: (tree, "") when clean, (None, conflict text) otherwise."""
    proc = run(repo, "merge-tree", "--write-tree", "--name-only", a, b)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode == 0:
        return out.split("\n", 1)[0].strip(), ""
    if proc.returncode == 1:
        return None, out.split("\n", 1)[1].strip() if "\n" in out else out
    raise GitError(f"git merge-tree failed: {proc.stderr.decode(errors='replace').strip()}")


# ---- worktrees ---------------------------------------------------------------------------------------

def worktree_add(repo: Path, path: Path, commit: str) -> None:
    with lock(repo, "worktree.lock"):
        git(repo, "worktree", "add", "--detach", "--force", str(path), commit)


def worktree_paths(repo: Path) -> list[Path]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [Path(line[len("worktree "):]) for line in out.splitlines() if line.startswith("worktree ")]


def worktree_remove(repo: Path, path: Path) -> None:
    with lock(repo, "worktree.lock"):
        git(repo, "worktree", "remove", "--force", str(path), check=False)
        git(repo, "worktree", "prune", check=False)


# ---- bundles: a commit and its history as bytes, for workers that do not share this repo ---------------

BUNDLE_REF = "refs/darwin/bundle"


def bundle(repo: Path, sha: str) -> bytes:
    """A v2 bundle of `sha` and its history. Hand-built because `git bundle create` refuses a bare sha
    without a ref, and the driver alone writes refs."""
    pack = run(repo, "pack-objects", "--stdout", "--revs", "-q", input=f"{sha}\n")
    if pack.returncode != 0:
        raise GitError(f"git pack-objects failed: {pack.stderr.decode(errors='replace').strip()}")
    return f"# v2 git bundle\n{sha} {BUNDLE_REF}\n\n".encode() + pack.stdout


def unbundle(repo: Path, data: bytes) -> None:
    """Store a `bundle`'s objects in `repo` (no ref is written; callers use the sha)."""
    with tempfile.NamedTemporaryFile(suffix=".bundle") as f:
        f.write(data)
        f.flush()
        git(repo, "bundle", "unbundle", f.name)


@dataclass
class CommitInfo:
    sha: str
    tree: str
    parents: list[str]
    subject: str
    body: str
    trailers: dict[str, str]


def commit_info(repo: Path, shas: list[str]) -> dict[str, CommitInfo]:
    """Subject, body and trailers of many commits in one `git log` call."""
    if not shas:
        return {}
    fmt = "%H%x1f%T%x1f%P%x1f%s%x1f%b%x1f%(trailers:only,unfold)%x1e"
    out = git(repo, "log", "--no-walk=unsorted", f"--format={fmt}", "--stdin", input="\n".join(shas) + "\n")
    info = {}
    for rec in out.split("\x1e"):
        parts = rec.strip("\n").split("\x1f")
        if len(parts) < 6:
            continue
        sha, tree, parents, subject, body, trailers = parts
        pairs = dict(line.split(": ", 1) for line in trailers.splitlines() if ": " in line)
        info[sha] = CommitInfo(sha, tree, parents.split(), subject, body.strip(), pairs)
    return info


def rev_list(repo: Path, *revs: str, globs: tuple[str, ...] = (), first_parent: bool = False,
             reverse: bool = False) -> list[str]:
    """Commits reachable from `revs` and the refs under each of `globs` (a prefix such as refs/heads/darwin/)."""
    flags = [*(["--first-parent"] if first_parent else []), *(["--reverse"] if reverse else [])]
    return git(repo, "rev-list", *flags, *revs, *(f"--glob={g}*" for g in globs)).split()


def parents_of(repo: Path, globs: tuple[str, ...]) -> dict[str, list[str]]:
    """{commit: its parents} for every commit reachable from the refs under `globs`, in one process."""
    out = git(repo, "rev-list", "--parents", *(f"--glob={g}*" for g in globs))
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def diff(repo: Path, old: str, new: str, stat: bool = False, full_index: bool = False) -> str:
    """The patch (or its --stat) from `old` to `new`, commits or trees."""
    return git(repo, "diff-tree", "--stat" if stat else "-p", *(["--full-index"] if full_index else []), old, new)


def diffs(repo: Path, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """{commit: its patch against the given parent} for many (commit, parent) pairs in one process."""
    if not pairs:
        return {}
    out = git(repo, "diff-tree", "--stdin", "-p", "--format=%x1e%H", input="".join(f"{c} {p}\n" for c, p in pairs))
    found = {}
    for record in out.split("\x1e")[1:]:
        sha, _, patch = record.partition("\n")
        found[sha] = patch.strip("\n")
    return found


def numstat(repo: Path, old: str, new: str) -> dict[str, tuple[int, int]]:
    """{path: (lines added, lines removed)} between two trees; a binary file counts (0, 0)."""
    counts = {}
    for line in git(repo, "diff-tree", "-r", "--numstat", old, new).splitlines():
        added, removed, path = line.split("\t", 2)
        counts[path] = (int(added), int(removed)) if added != "-" else (0, 0)
    return counts


def format_patch(repo: Path, sha: str) -> str:
    """One commit as `git format-patch` writes it: mail headers, message, diff; `git am` takes it."""
    return git(repo, "format-patch", "-1", "--stdout", sha)


def merge_base(repo: Path, a: str, b: str) -> str:
    return git(repo, "merge-base", a, b).strip()


def committer_name(repo: Path) -> str:
    """git's committer name (user.name or GIT_COMMITTER_NAME), "unknown" when there is none."""
    ident = git(repo, "var", "GIT_COMMITTER_IDENT", check=False)
    return ident.split(" <", 1)[0].strip() or "unknown"


def last_trailer(repo: Path, rev: str, key: str) -> str:
    """The `key` trailer's value on the commit `rev` names ("" when it has none)."""
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", rev).strip()


def history_trailer(repo: Path, rev: str, key: str) -> list[tuple[str, int, str]]:
    """(commit, its number of parents, the `key` trailer's value or "") for every commit reachable from rev."""
    out = git(repo, "log", f"--format=%H%x09%P%x09%(trailers:key={key},valueonly,separator=%x2C)", rev)
    rows = []
    for line in out.splitlines():
        sha, parents, value = (line.split("\t") + ["", ""])[:3]
        rows.append((sha, len(parents.split()), value.strip()))
    return rows
