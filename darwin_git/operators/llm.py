"""The LLM mutator: any OpenAI-compatible chat endpoint proposes one change and its reasoning.

The client's own retries are off: our loop checks the per-generation caps before every request
it sends, and ends a dead or hung endpoint in a recorded failure instead of a stuck generation.
Replies are untrusted text: JSON first, then a ```diff block or SEARCH/REPLACE blocks; a
change that would not commit is sent back once with the harness's exact error.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass

import openai

from . import llm_tokens
from ..assets import contract
from ..config import Config, Llm
from ..errors import DarwinError
from . import KINDS, Check, Context, OperatorError, Outcome, Proposal, RequestDraft
from .offline import unified_diff

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)  # timeouts included
BACKOFF_CAP_S = 60.0
TITLE_CHARS = 72

SYSTEM = """You improve a small GPT training script, one change at a time, in an evolutionary search run by darwin-git. The genome is a git repository; its GENOME.md, the contract between genome and harness, follows.

{contract}
This search's budget: {budget}; device: {device}.

Propose ONE focused change with a clear hypothesis about why it lowers validation bpb under this budget. Reply with a JSON object only:
{{"reasoning": "what you change and why it should lower validation bpb under this budget, 2 to 5 sentences",
 "title": "imperative one-line commit subject, at most 72 characters",
 "edits": [{{"path": "train.py", "search": "lines copied exactly from the file", "replace": "the new lines"}}],
 "request": "optional, see below"}}
Each search text must occur exactly once in its file: copy it verbatim, indentation included, with enough lines to be unique. `edits` may instead be one unified diff string (diff --git a/train.py b/train.py ...).
Add `request` only to ask the people running this search for what one change cannot give: {{"kind": "data" | "script" | "restructure" | "other", "title": "one line", "rationale": "why, citing fitness numbers from your memory", "edits": optional edits (same forms) that a person should review before they land}}. The search never waits for an answer; your memory shows it once people decide."""

REPAIR = """Your change cannot be applied: {error}
Reply again with the same JSON object and complete, corrected edits ({form})."""
REPAIR_FORMS = {"diff": "a unified diff against the files above, its context lines copied exactly",
                "blocks": "search texts copied exactly from the files above"}

SMOKE_FAILED = """The harness ran your change's check and smoke stages (compile, import, two training steps, a checkpoint) in its sandbox, and they failed:
{error}
Reply again with the same JSON object and corrected edits against the files above (not against your previous change)."""

DIGEST_SYSTEM = """You keep the "what worked" digest of an evolutionary search over GPT training scripts (fitness: test bits per byte, lower is better). Rewrite the digest from the evidence and the previous digest: at most 250 words of markdown bullets under the headings Worked, Did not work, Common failures, Worth trying next; give effect sizes in bpb where the evidence has them. Reply with the digest only."""


EXPLORE = 0.2  # with several models: share of proposals sent to a model drawn at random


def choose_model(models: list[str], observed: list[Outcome], rng: random.Random) -> tuple[str, dict]:
    """The model for the next proposal, and why: each model once, then mostly the one whose changes have
    gained the most val bpb per dollar here (per million tokens when the prices are not set), sometimes
    one at random so a model that started unlucky gets another look. Failed and not yet scored changes
    count as no gain."""
    stats = {m: {"proposals": 0, "gain_bpb": 0.0, "cost_usd": 0.0, "tokens": 0} for m in models}
    for o in observed:
        if o.model in stats:
            st = stats[o.model]
            st["proposals"] += 1
            st["gain_bpb"] += max(0.0, -(o.delta or 0.0))
            st["cost_usd"] += o.cost_usd
            st["tokens"] += o.tokens
    untried = [m for m in models if not stats[m]["proposals"]]
    priced = all(stats[m]["cost_usd"] > 0 for m in models)

    def rate(m: str) -> float:
        spent = stats[m]["cost_usd"] if priced else max(stats[m]["tokens"], 1) / 1e6
        return stats[m]["gain_bpb"] / spent

    if untried:
        model, why = untried[0], "not tried yet"
    elif rng.random() < EXPLORE:
        model, why = rng.choice(models), "drawn at random (exploration)"
    else:
        model, why = max(models, key=rate), f"most val bpb gained per {'dollar' if priced else 'million tokens'}"
    return model, {"model": model, "why": why, "stats": {m: {**st, "gain_bpb": round(st["gain_bpb"], 6),
                                                              "cost_usd": round(st["cost_usd"], 6)}
                                                          for m, st in stats.items()}}


class ReplyError(ValueError):
    """A reply that holds no usable edit; the message is what the model is told in the repair round."""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        self.cost_usd += other.cost_usd

    def as_dict(self) -> dict:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6)}


@dataclass
class Reply:
    title: str
    reasoning: str
    request: str | dict  # "" when the model asks for nothing
    patch: str  # a unified diff, or "" when the edits are search/replace blocks
    blocks: list[tuple[str, str, str]]  # (path, search, replace)


class LlmOperator:
    """One instance per generation: its counters are that generation's spend, checked against the caps."""

    name = "llm"

    def __init__(self, settings: Llm, api_key: str = "", budget: str = "", device: str = "",
                 backoff_s: float = 1.0):
        self.settings, self.backoff_s = settings, backoff_s
        self.system = SYSTEM.format(contract=contract(), budget=budget or "see DARWIN_BUDGET",
                                    device=device or "see DARWIN_DEVICE")
        self.client = openai.OpenAI(base_url=settings.base_url or None, api_key=api_key or "unused",
                                    timeout=settings.timeout_s, max_retries=0)
        self.model = settings.model  # digests and doctor use it; with [llm] models each proposal picks its own
        self.price = _price(settings, self.model)
        self.spent = Usage()
        self.json_mode = True  # cleared for good once the server refuses response_format
        self.jitter = random.Random()
        self.cut_off = False  # the last reply ended at max_tokens

    @classmethod
    def from_config(cls, cfg: Config) -> "LlmOperator":
        s = cfg.llm
        if not s.model:
            raise DarwinError('[llm] model is not set in darwin.toml; set it (e.g. "gpt-4o-mini") '
                              'or set [evolution] operator = "offline"')
        key = os.environ.get(s.api_key_env, "") if s.api_key_env else ""
        if not key and not s.base_url:
            raise DarwinError(f"the LLM operator needs an API key in ${s.api_key_env or 'OPENAI_API_KEY'} "
                              "(or [llm] base_url for a local server); export it or use the offline operator")
        return cls(s, key, cfg.evaluation.budget, cfg.evaluation.device)

    # ---- the operator protocol -----------------------------------------------------------------------
    def propose(self, files: dict[str, str], context: Context, rng: random.Random,
                check: Check | None = None) -> Proposal:
        choice = {}
        if self.settings.models:
            self.model, choice = choose_model(self.settings.models, context.observed, rng)
            self.price = _price(self.settings, self.model)
        messages = self.messages(files, context)
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        used = Usage()
        text = self._chat(messages, used, json_mode=True)
        reply, patch, error = self._try(text, files, check)
        smoked = None
        if error:
            form = REPAIR_FORMS["diff" if reply is not None and reply.patch else "blocks"]
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": REPAIR.format(error=error, form=form)}]
            try:
                text = self._chat(messages, used, json_mode=True)
            except OperatorError as e:
                raise OperatorError(f"{e} (while repairing: {error})", patch or text) from None
            repaired, new_patch, new_error = self._try(text, files, check)
            if repaired is None:
                raise OperatorError(f"unusable reply after a repair round: {new_error}", text)
            reply, patch = repaired, new_patch  # returned even if `check` still objects: the harness records why
        elif context.smoke and self.settings.smoke_turns:
            reply, patch, smoked = self._smoke_rounds(messages, text, reply, patch, files, context, used, check)
        reasoning = reply.reasoning.strip() or "(the model gave no reasoning)"
        usage = used.as_dict() | ({"smoke_runs": smoked[0], "smoke_s": round(smoked[1], 1)} if smoked else {})
        return Proposal(title=_title(reply, patch), reasoning=reasoning, patch=patch, operator="llm",
                        model=self.model, usage=usage, prompt_digest=digest,
                        request=request_draft(reply.request, files), choice=choice)

    def _smoke_rounds(self, messages: list[dict], text: str, reply: Reply, patch: str, files: dict[str, str],
                      context: Context, used: Usage, check: Check | None) -> tuple[Reply, str, tuple[int, float]]:
        """Up to `smoke_turns` rounds of: the harness smokes the patch, the model reads the failure and
        answers again. Fewer, deeper proposals; every round's tokens count against the caps as usual.
        Returns the last patch that applies (smoked clean, or the last one tried), and (runs, seconds)."""
        runs, spent = 0, 0.0
        for _ in range(self.settings.smoke_turns):
            t0 = time.monotonic()
            failure = context.smoke(patch)
            runs, spent = runs + 1, spent + time.monotonic() - t0
            if failure is None:
                break
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": SMOKE_FAILED.format(error=failure)}]
            try:
                text = self._chat(messages, used, json_mode=True)
            except OperatorError:
                break  # caps or the endpoint: the change as it stands is what the harness gets
            again, new_patch, error = self._try(text, files, check)
            if again is None or error:
                break
            reply, patch = again, new_patch
        return reply, patch, (runs, spent)

    def messages(self, files: dict[str, str], context: Context) -> list[dict]:
        """The whole prompt: the contract, the target's code, the author's memory, the population's lessons."""
        order = sorted(files, key=lambda p: (p not in ("train.py", "model.py"), p != "train.py", p))
        code = "".join(f"## {path}\n```python\n{files[path].rstrip()}\n```\n\n" for path in order)
        sections = [context.memory.strip(), *(item.strip() for item in context.inspiration)]
        head = context.brief.strip() or "# The genome to change"
        user = (f"{head}\n\n# Its code\n\n{code}" + "\n\n".join(s for s in sections if s)
                + "\n\nPropose one change to the genome above. Reply with the JSON object only.")
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def digest(self, evidence: str, previous: str) -> str:
        """Rewrite the population's "what worked" digest (refs/darwin/digest) from the fitness evidence."""
        user = f"Previous digest:\n{previous.strip() or '(none yet)'}\n\n{evidence}"
        text = self._chat([{"role": "system", "content": DIGEST_SYSTEM}, {"role": "user", "content": user}],
                          Usage(), json_mode=False)
        if not text.strip():
            raise OperatorError("the model returned an empty digest")
        return text

    def usage(self) -> dict[str, float]:
        return self.spent.as_dict()

    def resume(self, spent: dict[str, float]) -> None:
        """Count what this generation already spent (read back from git) before a kill, so the caps hold
        across a resume."""
        self.spent.add(Usage(int(spent.get("prompt_tokens", 0)), int(spent.get("completion_tokens", 0)),
                             int(spent.get("requests", 0)), float(spent.get("cost_usd", 0.0))))

    def ping(self) -> dict:
        """One tiny request: what `darwin-git doctor` reports."""
        used, t0 = Usage(), time.monotonic()
        text = self._chat([{"role": "user", "content": "Reply with the single word: ok"}], used, json_mode=False,
                          max_tokens=5)
        return {"reply": text.strip()[:60], "latency_s": round(time.monotonic() - t0, 2), **used.as_dict()}

    # ---- replies -------------------------------------------------------------------------------------
    def _try(self, text: str, files: dict[str, str], check: Check | None) -> tuple[Reply | None, str, str | None]:
        """(reply, patch, error): error is None when the patch passes `check`."""
        try:
            reply = parse_reply(text)
            patch = reply.patch or blocks_to_diff(files, reply.blocks)
        except ValueError as e:  # ReplyError, or any reply the parser cannot read: the model is told why
            error = str(e) or type(e).__name__
            if self.cut_off:
                error = (f"the reply was cut off at max_tokens = {self.settings.max_tokens} before it ended "
                         f"({error}); reply with a shorter change")
            return None, "", error
        return reply, patch, check(patch) if check else None

    # ---- the endpoint --------------------------------------------------------------------------------
    def _chat(self, messages: list[dict], used: Usage, json_mode: bool, max_tokens: int | None = None) -> str:
        """One completion, retried on 429/5xx/timeouts/connection errors with jittered exponential backoff."""
        s = self.settings
        max_tokens = max_tokens or s.max_tokens
        retries = 0
        while True:
            self._admit(messages, max_tokens)
            kwargs = {"model": self.model, "messages": messages, "temperature": s.temperature, "max_tokens": max_tokens}
            if json_mode and self.json_mode:
                kwargs["response_format"] = {"type": "json_object"}
            self.spent.requests += 1
            used.requests += 1
            try:
                response = self.client.chat.completions.create(**kwargs)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if "response_format" in kwargs:
                    self.json_mode = False  # the server takes no JSON mode: ask again, parse plain text
                    continue
                raise OperatorError(f"the endpoint refused the request: {_describe(e, s)}") from None
            except RETRYABLE as e:
                if retries >= s.max_retries:
                    raise OperatorError(f"the endpoint failed {retries + 1} times: {_describe(e, s)}") from None
                time.sleep(self._backoff(retries, e))
                retries += 1
                continue
            except openai.OpenAIError as e:  # auth, unknown model, bad reply: retrying will not help
                raise OperatorError(f"the endpoint failed: {_describe(e, s)}") from None
            text = (response.choices[0].message.content or "") if response.choices else ""
            self.cut_off = bool(response.choices) and response.choices[0].finish_reason == "length"
            self._account(messages, text, response.usage, used)
            return text

    def _admit(self, messages: list[dict], max_tokens: int) -> None:
        """Refuse to send when this request could take the generation past a cap (0 = no cap)."""
        s, spent = self.settings, self.spent
        if s.max_requests and spent.requests >= s.max_requests:
            raise OperatorError(f"cost cap reached: {spent.requests} requests sent this generation "
                                f"(max_requests = {s.max_requests})")
        prompt = llm_tokens.count(_text(messages))
        worst = prompt + max_tokens
        used = spent.prompt_tokens + spent.completion_tokens
        if s.max_tokens_total and used + worst > s.max_tokens_total:
            raise OperatorError(f"cost cap reached: {used} tokens used this generation and the next request may "
                                f"use {worst} (max_tokens_total = {s.max_tokens_total})")
        cost = (prompt * self.price[0] + max_tokens * self.price[1]) / 1e6
        if s.max_cost_usd and spent.cost_usd + cost > s.max_cost_usd:
            raise OperatorError(f"cost cap reached: ${spent.cost_usd:.4f} spent this generation and the next "
                                f"request may cost ${cost:.4f} (max_cost_usd = {s.max_cost_usd})")

    def _account(self, messages: list[dict], text: str, usage, used: Usage) -> None:
        """Add a reply's tokens and cost; servers that report no usage get estimates."""
        prompt = getattr(usage, "prompt_tokens", None) or llm_tokens.count(_text(messages))
        completion = getattr(usage, "completion_tokens", None) or llm_tokens.count(text)
        step = Usage(prompt, completion, 0, (prompt * self.price[0] + completion * self.price[1]) / 1e6)
        used.add(step)
        self.spent.add(step)

    def _backoff(self, retries: int, error: Exception) -> float:
        """Retry-After when the server gives one, else exponential with +-50% jitter."""
        response = getattr(error, "response", None)
        try:
            after = float(response.headers.get("retry-after")) if response is not None else None
        except (TypeError, ValueError):
            after = None
        if after is not None and after >= 0:
            return min(after, BACKOFF_CAP_S)
        return min(self.backoff_s * 2 ** retries * self.jitter.uniform(0.5, 1.5), BACKOFF_CAP_S)


def _price(s: Llm, model: str) -> tuple[float, float]:
    """USD per 1M (input, output) tokens: the longest [llm.prices] key the model name starts with."""
    keys = sorted((k for k in s.prices if model.startswith(k)), key=len, reverse=True)
    return tuple(s.prices[keys[0]]) if keys else (0.0, 0.0)


def _text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


def _describe(e: Exception, s: Llm) -> str:
    """One line: the status and the server's message, or what went wrong on the wire."""
    if isinstance(e, openai.APITimeoutError):
        text = f"no reply within timeout_s = {s.timeout_s:g}s"
    elif isinstance(e, openai.APIConnectionError):
        text = f"cannot reach {s.base_url or 'the OpenAI API'} ({e.__cause__ or e})"
    elif isinstance(e, openai.APIStatusError):
        text = f"HTTP {e.status_code}: {e.message}"
    else:
        text = str(e)
    return " ".join(text.split())[:300]


def _title(reply: Reply, patch: str) -> str:
    title = " ".join(reply.title.split()).strip("#*` ")
    if not title:
        first = re.split(r"(?<=[.!?])\s", " ".join(reply.reasoning.split()), maxsplit=1)[0]
        paths = sorted(set(re.findall(r"^\+\+\+ b/(\S+)", patch, re.M)))
        title = first if 0 < len(first) <= TITLE_CHARS else f"LLM change to {', '.join(paths) or 'the genome'}"
    return title[:TITLE_CHARS]


# ---- parsing replies -----------------------------------------------------------------------------------

BLOCK = re.compile(r"^<{7} ?SEARCH[^\n]*\n(.*?)^={7}[^\n]*\n(.*?)^>{7} ?REPLACE[^\n]*$", re.S | re.M)
FENCED_DIFF = re.compile(r"```(?:diff|patch)[^\n]*\n(.*?)```", re.S)
RAW_DIFF = re.compile(r"^(?:diff --git |--- (?:a/|/dev/null))", re.M)


def parse_reply(text: str) -> Reply:
    """The JSON object asked for, or, from servers without JSON mode, a diff or SEARCH/REPLACE blocks in prose."""
    doc = _json_object(text)
    if doc is not None:
        edits = doc.get("edits")
        meta = {k: doc.get(k) if isinstance(doc.get(k), str) else "" for k in ("title", "reasoning")}
        meta["request"] = doc.get("request") if isinstance(doc.get("request"), (str, dict)) else ""
        if isinstance(edits, str):
            patch, blocks, _ = _text_edits(edits)
            patch = patch or ("" if blocks else edits)  # not recognisably a diff: the harness says what is wrong
        elif isinstance(edits, list):
            patch, blocks = "", [_block(e, i) for i, e in enumerate(edits, 1)]
        else:
            raise ReplyError("the JSON reply needs `edits`: a unified diff string or a list of "
                             "{\"path\", \"search\", \"replace\"} objects")
        if not patch and not blocks:
            raise ReplyError("`edits` is empty: give at least one edit")
        return Reply(meta["title"], meta["reasoning"], meta["request"], patch, blocks)
    patch, blocks, prose = _text_edits(text)
    if not patch and not blocks:
        raise ReplyError("no edits found: reply with the JSON object asked for (or a ```diff block, or "
                         "SEARCH/REPLACE blocks each after a line naming the file)")
    title, reasoning = _split_title(prose)
    return Reply(title, reasoning, "", patch, blocks)


def request_draft(raw: str | dict, files: dict[str, str]) -> RequestDraft | None:
    """The model's `request`, a sentence or an object, as a draft to file; edits that cannot become a
    diff are left out with the reason, so a bad request never costs the change it came with."""
    if isinstance(raw, str):
        raw = {"rationale": raw}
    text = {k: str(raw.get(k) or "").strip() for k in ("kind", "title", "rationale", "evidence")}
    if not (text["title"] or text["rationale"]):
        return None
    kind = text["kind"].lower() if text["kind"].lower() in KINDS else "other"
    title = " ".join((text["title"] or re.split(r"(?<=[.!?])\s", text["rationale"], maxsplit=1)[0]).split())
    patch, rationale = "", text["rationale"] or title
    edits = raw.get("edits")
    if edits:
        try:
            if isinstance(edits, str):
                patch, blocks, _ = _text_edits(edits)
                patch = patch or (blocks_to_diff(files, blocks) if blocks else edits)
            elif isinstance(edits, list):
                patch = blocks_to_diff(files, [_block(e, i) for i, e in enumerate(edits, 1)])
            else:
                raise ReplyError("`edits` must be a unified diff string or a list of search/replace objects")
        except ReplyError as e:
            patch, rationale = "", f"{rationale}\n\n(The request's edits were left out: {e})"
    return RequestDraft(kind, title[:TITLE_CHARS], rationale, text["evidence"], patch)


def _json_object(text: str) -> dict | None:
    """A JSON object with `edits`, bare or fenced; None when the reply is not one."""
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*\n(\{.*?\})\s*```", text, re.S)
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:  # a reply cut off by max_tokens may open a brace it never closes
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and "edits" in doc:
            return doc
    return None


def _block(edit, i: int) -> tuple[str, str, str]:
    if not isinstance(edit, dict) or not all(isinstance(edit.get(k), str) for k in ("path", "search", "replace")):
        raise ReplyError(f"edit {i} must be an object with string fields path, search and replace")
    return _clean_path(edit["path"]), edit["search"], edit["replace"]


def _clean_path(line: str) -> str:
    path = line.strip().strip("`*#: ")
    path = re.sub(r"^(?:file|path|filename)\s*:\s*", "", path, flags=re.I).strip("`*: ")
    return path.removeprefix("./").removeprefix("a/").removeprefix("b/")


def _text_edits(text: str) -> tuple[str, list[tuple[str, str, str]], str]:
    """(unified diff, search/replace blocks, the remaining prose) found in free text."""
    blocks, spans = [], []
    for m in BLOCK.finditer(text):
        before = text[:m.start()].splitlines()
        while before and (not before[-1].strip() or before[-1].strip().startswith("```")):
            before.pop()
        if not before:
            raise ReplyError("a SEARCH/REPLACE block has no file path on the line before it")
        blocks.append((_clean_path(before[-1]), m[1], m[2]))
        spans.append((text.rfind(before[-1], 0, m.start()), m.end()))
    if blocks:
        return "", blocks, _cut(text, spans)
    fenced = [m for m in FENCED_DIFF.finditer(text)]
    if fenced:
        return "".join(m[1] for m in fenced), [], _cut(text, [m.span() for m in fenced])
    raw = RAW_DIFF.search(text)
    if raw:
        body = text[raw.start():]
        return body.split("\n```", 1)[0].rstrip("\n") + "\n", [], text[:raw.start()]
    return "", [], text


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    for start, end in sorted(spans, reverse=True):
        text = text[:max(start, 0)] + text[end:]
    return re.sub(r"^```\w*[ \t]*\n?", "", text, flags=re.M)  # fences left without their block


def _split_title(prose: str) -> tuple[str, str]:
    """A "Title:" line or a heading becomes the title; the rest of the prose is the reasoning."""
    lines = prose.strip().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(?:#+\s*|\**title\**\s*:\s*\**)(.+)$", line, re.I)
        if m:
            return m[1].strip("*` "), "\n".join(lines[:i] + lines[i + 1:]).strip()
    return "", prose.strip()


# ---- search/replace to a unified diff ------------------------------------------------------------------

def blocks_to_diff(files: dict[str, str], blocks: list[tuple[str, str, str]]) -> str:
    """Apply each block to the genome's text (exact match, then whitespace-normalized; must be unique)."""
    new = dict(files)
    for i, (path, search, replace) in enumerate(blocks, 1):
        where = f"edit {i} ({path})"
        if path not in new:
            if search.strip():
                raise ReplyError(f"{where}: no such file in the genome; the files are {', '.join(sorted(files))}")
            new[path] = replace  # an empty search creates a new file
            continue
        new[path] = _replace_once(new[path], search, replace, where)
    changed = {p: t for p, t in new.items() if t != files.get(p)}
    if not changed:
        raise ReplyError("the edits change nothing: each replace must differ from its search")
    return unified_diff(files, changed)


def _replace_once(text: str, search: str, replace: str, where: str) -> str:
    if not search.strip():
        raise ReplyError(f"{where}: empty search text; copy the lines to change from the file")
    n = text.count(search)
    if n == 1:
        if search.endswith("\n") and replace and not replace.endswith("\n"):
            replace += "\n"  # the line break after the last searched line stays
        return text.replace(search, replace)
    if n > 1:
        raise ReplyError(f"{where}: the search text occurs {n} times; add lines around it to make it unique")
    lines = text.splitlines(keepends=True)
    wanted = search.strip("\n").splitlines()
    norm = [" ".join(w.split()) for w in wanted]
    hits = [i for i in range(len(lines) - len(wanted) + 1)
            if all(" ".join(lines[i + k].split()) == norm[k] for k in range(len(wanted)))]
    if len(hits) != 1:
        raise ReplyError(f"{where}: the search text " + ("was not found" if not hits else f"matches {len(hits)} places")
                         + "; copy it exactly from the file, with enough lines to be unique")
    i = hits[0]
    have, said = _indent(lines[i]), _indent(wanted[0])
    body = replace.strip("\n").splitlines()
    body = [have + b[len(said):] if b.startswith(said) else b for b in body] if have != said else body
    new = "".join(b + "\n" for b in body)
    return "".join(lines[:i]) + new + "".join(lines[i + len(wanted):])


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]
