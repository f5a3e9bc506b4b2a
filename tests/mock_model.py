"""A Responses-API stand-in on 127.0.0.1 so the real Codex CLI runs offline in tests."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Union

Reply = Callable[[dict], Union[List[dict], "HttpError"]]


class HttpError:
    """A reply that is an HTTP error instead of a stream (e.g. a 400 the real API sends)."""

    def __init__(self, status: int, body: dict) -> None:
        self.status = status
        self.body = body


def text_reply(text: str = "ok") -> Reply:
    """A model that answers every request with one assistant message."""

    def reply(_request: dict) -> List[dict]:
        return [{
            "type": "message",
            "role": "assistant",
            "id": "msg_mock",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }]

    return reply


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class MockModelServer:
    """Serves POST /v1/responses as an SSE stream; the reply function picks the output items."""

    def __init__(self, reply: Optional[Reply] = None) -> None:
        self.reply = reply or text_reply()
        self.requests: List[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, b'{"object":"list","data":[],"models":[]}')
                else:  # a WebSocket upgrade attempt: make Codex fall back to HTTP
                    self._send(426, b'{"error":"upgrade not supported"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {}
                server.requests.append(request)
                items = server.reply(request)
                if isinstance(items, HttpError):
                    self._send(items.status, json.dumps(items.body).encode())
                    return
                n = len(server.requests)
                rid = f"resp_{n}"
                chunks = [_sse("response.created", {"type": "response.created",
                                                     "response": {"id": rid}})]
                for item in items:
                    chunks.append(_sse("response.output_item.done",
                                       {"type": "response.output_item.done", "item": item}))
                chunks.append(_sse("response.completed", {
                    "type": "response.completed",
                    "response": {"id": rid, "usage": {
                        "input_tokens": 10, "input_tokens_details": None,
                        "output_tokens": 5, "output_tokens_details": None,
                        "total_tokens": 15}}}))
                body = b"".join(chunks)
                self._send(200, body, "text/event-stream")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "MockModelServer":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ScriptedAgent:
    """A model that runs the given shell commands one per request through `exec_command`, then
    says "done". Every tool output Codex sends back is kept in `outputs`."""

    def __init__(self, commands: List[dict]) -> None:
        self.commands = list(commands)
        self.outputs: List[str] = []
        self.tool_names: List[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> List[dict]:
        with self._lock:
            if not self.tool_names:
                self.tool_names = [t.get("name", "") for t in request.get("tools", [])]
            for item in request.get("input", []):
                if item.get("type") == "function_call_output" and item.get("call_id", "").startswith("call_agent_"):
                    n = int(item["call_id"].rsplit("_", 1)[1])
                    while len(self.outputs) <= n:
                        self.outputs.append("")
                    out = item.get("output")
                    self.outputs[n] = out if isinstance(out, str) else json.dumps(out)
            step = len([o for o in request.get("input", []) if o.get("type") == "function_call"
                        and o.get("call_id", "").startswith("call_agent_")])
            if step < len(self.commands):
                return [{"type": "function_call", "name": "exec_command", "call_id": f"call_agent_{step}",
                         "arguments": json.dumps(self.commands[step])}]
            return text_reply("done")(request)


INVALID_ENCRYPTED_CONTENT = {"error": {
    "message": "The encrypted content for item rs_mock could not be verified.",
    "type": "invalid_request_error", "param": None, "code": "invalid_encrypted_content"}}


def encrypted_reasoning_reply(text: str = "ok", blob: str = "gAAAAABmock-encrypted-reasoning==",
                              reject_sent_back: bool = False) -> Reply:
    """A model that answers with an encrypted reasoning item before its message (as the real API
    does for reasoning models). With reject_sent_back, a request that sends such an item back
    (a resumed thread) gets the 400 the real API gives for content of another account/provider."""

    def reply(request: dict) -> Union[List[dict], HttpError]:
        sent = [i for i in request.get("input", []) if i.get("type") == "reasoning"
                and i.get("encrypted_content")]
        if reject_sent_back and sent:
            return HttpError(400, INVALID_ENCRYPTED_CONTENT)
        return [{"type": "reasoning", "id": "rs_mock", "summary": [],
                 "encrypted_content": blob}] + text_reply(text)(request)

    return reply
