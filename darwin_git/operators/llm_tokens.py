"""Token counts for prompts and memory budgets: exact with tiktoken when its encoding is at hand,
else an estimate that says it is one. Never waits on the network for more than a few seconds.
"""
from __future__ import annotations

import functools
import threading

ENCODING = "o200k_base"  # the GPT-4o / 4.1 family; close enough for budgets on other models


@functools.cache
def _encoding():
    """tiktoken's encoding when cached (or fetched within seconds); None offline."""
    found = []

    def load() -> None:
        try:
            import tiktoken

            found.append(tiktoken.get_encoding(ENCODING))
        except Exception:  # not cached and no network, or any tiktoken failure: estimate instead
            pass

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(5)
    return found[0] if found else None


def count(text: str) -> int:
    enc = _encoding()
    return len(enc.encode(text, disallowed_special=())) if enc else (len(text) + 3) // 4


def method() -> str:
    """How `count` counts, for any text that states a token number."""
    return (f"counted with tiktoken {ENCODING}" if _encoding()
            else "estimated as characters / 4, since no tiktoken encoding is cached here")
