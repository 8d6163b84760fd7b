"""A small OpenAI-compatible chat endpoint on 127.0.0.1 for the tests: it answers POST
/v1/chat/completions from a script and records every request, so the real `openai` client,
its HTTP stack and our retry loop all run for real.

A script step is a dict:
  {"content": str}                      200 with a chat.completion (usage: chars/4, or "usage": (p, c);
                                        "finish_reason": "length" for a reply cut off at max_tokens)
  {"status": 429, "headers": {...}}     an error response with that status
  {"status": 400, "message": "..."}     e.g. a server that refuses response_format
  {"sleep": seconds, ...}               wait first (to outlive the client's timeout), then answer
Once the script runs out, every request gets a 500 "script exhausted", so stray requests show.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Endpoint:
    def __init__(self, script: list[dict]):
        self.script, self.requests = list(script), []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append({"path": self.path, "body": body})
                    step = endpoint.script.pop(0) if endpoint.script else {"status": 500, "message": "script exhausted"}
                time.sleep(step.get("sleep", 0))
                try:
                    self._answer(step, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nobody is listening any more

            def _answer(self, step: dict, body: dict) -> None:
                if "content" in step:
                    prompt = sum(len(m["content"]) for m in body["messages"]) // 4
                    p, c = step.get("usage", (prompt, len(step["content"]) // 4))
                    status, doc = 200, {
                        "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": step.get("finish_reason", "stop"),
                                     "message": {"role": "assistant", "content": step["content"]}}],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}
                else:
                    status = step["status"]
                    doc = {"error": {"message": step.get("message", f"status {status}"), "type": "stub",
                                     "param": None, "code": None}}
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in step.get("headers", {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def messages(self, i: int = -1) -> list[dict]:
        return self.requests[i]["body"]["messages"]

    def __enter__(self) -> "Endpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
