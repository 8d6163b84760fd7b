"""Untrusted text to a checked tree: the one gate every patch and merge passes before anything commits it.

A proposal is untrusted text. It must parse as a unified diff (unidiff), touch only the
genome's editable surface, apply with `git apply --recount` (3-way as fallback), change the
tree, and apply in full (diff-tree counts must match the patch). The surface is checked twice:
on the patch text for a readable early reason, then on the tree git wrote (`check_tree`), which
is what counts, for mutations, crossovers and requests alike. Crossover is a `git merge-tree`
of two parents. Nothing here writes a ref: breeding.py and review.py commit what passes.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

from . import git
from .config import CONFIG

OWNED_PREFIXES = (".git", "hooks/")
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")


class Rejected(Exception):
    """A proposal that cannot become a commit; the message is the recorded reason."""


def owned(path: str) -> bool:
    """True for files the evaluator owns: no mutation may touch them."""
    return path == CONFIG or path.startswith(OWNED_PREFIXES) or "/.git" in path


def _strip(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def recount(patch: str) -> str:
    """Rewrite each hunk header's line counts from the hunk's own lines, like `git apply --recount`.

    LLMs get the counts wrong; unidiff trusts them, so a hunk longer than its header says is
    silently cut short and a shorter one is "malformed". Recounted, both parse as git applies them.
    """
    lines = patch.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        m = HUNK.match(lines[i].rstrip("\n"))
        if not m:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j][:1] in (" ", "-", "+", "\\", "\n") and not (
                lines[j].startswith("--- ") and j + 1 < len(lines) and lines[j + 1].startswith("+++ ")):
            j += 1  # the hunk ends at the next file header, hunk header or non-diff line
        while j > i + 1 and lines[j - 1] == "\n":
            j -= 1  # blank lines after a hunk separate it from what follows
        body = lines[i + 1:j]
        old = sum(1 for line in body if line[:1] in (" ", "-", "\n"))
        new = sum(1 for line in body if line[:1] in (" ", "+", "\n"))
        out += [f"@@ -{m[1]},{old} +{m[2]},{new} @@{m[3]}\n", *body]
        i = j
    return "".join(out)


def validate(patch: str) -> PatchSet:
    """Parse the diff and check its paths; raise Rejected with the reason."""
    if not patch.strip():
        raise Rejected("empty patch")
    try:
        patch.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. from "\ud800" in an LLM's JSON reply
        raise Rejected(f"patch is not UTF-8 text: {e.reason} at character {e.start}") from None
    try:
        patchset = PatchSet(patch)
    except UnidiffParseError as e:
        raise Rejected(f"malformed patch: {e}") from None
    if not len(patchset):
        raise Rejected("malformed patch: no file headers (--- a/FILE / +++ b/FILE) found")
    for f in patchset:
        for path in {_strip(f.source_file), _strip(f.target_file)} - {"/dev/null", "dev/null"}:
            if path.startswith("/") or ".." in path.split("/"):
                raise Rejected(f"patch touches {path!r}, outside the genome")
            if owned(path):
                raise Rejected(f"patch touches {path!r}, which the evaluator owns")
    return patchset


def apply(repo: Path, parent: str, patch: str) -> str:
    """Validated, fully applied tree for `patch` on `parent`; Rejected otherwise."""
    patch = recount(patch)
    patchset = validate(patch)
    try:
        tree = git.apply_to_tree(repo, parent, patch)
    except git.GitError as e:
        raise Rejected(f"patch does not apply: {e}") from None
    base = git.tree_of(repo, parent)
    check_tree(repo, base, tree)
    if tree == base:
        raise Rejected("no-op patch: the tree is unchanged")
    applied = git.numstat(repo, base, tree)
    for f in patchset:
        path = _strip(f.target_file if f.target_file not in ("/dev/null",) else f.source_file)
        want, got = _net(f), applied.get(path)
        if want != (0, 0) and (got is None or (got != want and sum(got) < sum(want))):
            raise Rejected(f"patch applied only in part to {path}: expected +{want[0]}/-{want[1]}, got {got}")
        if path.endswith(".py") and not f.is_removed_file:
            source = git.read_file(repo, tree, path)
            if source is None:  # its git headers renamed or deleted what its hunks claim to edit
                raise Rejected(f"patch edits {path} but leaves no {path} behind")
            try:
                ast.parse(source)
            except SyntaxError as e:
                raise Rejected(f"patched {path} is not valid Python: {e.msg} at line {e.lineno}") from None
    return tree


def _net(f: PatchedFile) -> tuple[int, int]:
    """(added, removed) lines once a hunk's identical removed-and-added lines cancel: LLMs often re-emit
    an unchanged line as a -/+ pair, which git's count of the result rightly never shows."""
    added = removed = 0
    for hunk in f:
        minus = Counter(line.value for line in hunk if line.is_removed)
        plus = Counter(line.value for line in hunk if line.is_added)
        same = sum((minus & plus).values())
        added, removed = added + sum(plus.values()) - same, removed + sum(minus.values()) - same
    return added, removed


MODES = {"100755": "an executable file", "120000": "a symlink", "160000": "a submodule (gitlink)"}


def check_tree(repo: Path, base: str, tree: str) -> None:
    """Rejected unless `tree`, made from untrusted text, differs from `base` only in genome files that are
    plain UTF-8 text: the one check for every tree a mutation, crossover or request commits.

    Judged on the trees git wrote, never on a patch's text: `git apply` obeys rename, copy and mode
    headers that unidiff does not report, and a merge brings whatever the other side holds.
    """
    changes = git.tree_changes(repo, base, tree)
    for c in changes:
        if owned(c.path):
            raise Rejected(f"the change touches {c.path!r}, which the evaluator owns")
        if c.status != "D" and c.new_mode != "100644":
            raise Rejected(f"the change makes {c.path!r} {MODES.get(c.new_mode, f'mode {c.new_mode}')}; "
                           "genome files are regular, non-executable files (mode 100644)")
    written = [c for c in changes if c.status != "D"]
    for c, data in zip(written, git.blob_bytes(repo, [c.new_blob for c in written])):
        if b"\0" in data or not _utf8(data):
            raise Rejected(f"the change makes {c.path!r} binary (a NUL byte or invalid UTF-8); "
                           "genome files are UTF-8 text")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def merge(repo: Path, a: str, b: str) -> str:
    """Crossover tree of commits a and b (no checkout touched); Rejected on conflict or no gain."""
    tree, conflict = git.merge_trees(repo, a, b)
    if tree is None:
        files = ", ".join(line for line in conflict.splitlines()[:5] if line.strip())
        raise Rejected(f"crossover conflict in: {files}")
    if tree in (git.tree_of(repo, a), git.tree_of(repo, b)):
        raise Rejected("crossover adds nothing: one parent already contains the other")
    check_tree(repo, git.tree_of(repo, a), tree)
    return tree
