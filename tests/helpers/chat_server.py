"""A small OpenAI-compatible chat-completions server for tests, run as its own process on a free loopback port.

It answers from the image it receives (several: their mean), deterministically: with `logprobs` requested,
P("Yes") is the image's mean red (split 3:1 over the tokens "Yes" and " yes", the rest on "No"); otherwise it rates
each `name: <number>` line of the prompt as 10 x the image's mean red, green, blue (cycling), and an all-black image
gets no rating. It records
every request (headers, body, image decoded, start and end times, requests in flight) and can be told to fail the
first N requests with a status, delay answers, redirect, drop logprobs, or answer with a non-API page.

  ChatServer()                    -> starts `python chat_server.py`; .url is its /v1 base URL
  server.configure(**behaviour)   -> replaces the behaviour and clears the record (see `_chat` for the keys)
  server.requests(), server.max_in_flight()
"""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """The script below as a subprocess; stopped by `close()` (or as a context manager)."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"chat_server did not start: {line}{self.log()}")
        self.port = int(line.split()[1])
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/v1"

    def _call(self, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        with urllib.request.urlopen(urllib.request.Request(self.root + path, data=data), timeout=10) as r:
            return json.loads(r.read())

    def configure(self, **behaviour) -> None:
        self._call("/_config", behaviour)

    def requests(self) -> list:
        return self._call("/_log")["requests"]

    def max_in_flight(self) -> int:
        return self._call("/_log")["max_in_flight"]

    def log(self) -> str:
        """What the server process wrote to stderr (tracebacks of its handlers)."""
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdout.close()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_lock = threading.Lock()
_state = {"config": {}, "log": [], "in_flight": 0, "max_in_flight": 0, "count": 0}


def _image(body: dict) -> dict:
    """The request's images: the first one's data URL head, format and size, their count, and the mean colour over
    all of them (several images: the frames of one clip)."""
    from PIL import Image, ImageStat

    found = []
    for message in body.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            if part.get("type") == "image_url":
                head, data = part["image_url"]["url"].split(",", 1)
                found.append((head, Image.open(io.BytesIO(base64.b64decode(data)))))
    if not found:
        return {}
    head, first = found[0]
    means = [[m / 255 for m in ImageStat.Stat(image.convert("RGB")).mean] for _, image in found]
    return {"head": head, "format": first.format, "size": [first.width, first.height], "count": len(found),
            "mean": [sum(m[k] for m in means) / len(means) for k in range(3)]}


def _text(body: dict) -> str:
    return "\n".join(part.get("text", "") for m in body.get("messages", []) if isinstance(m.get("content"), list)
                     for part in m["content"] if part.get("type") == "text")


def _answer(body: dict, image: dict, config: dict) -> tuple[str, object]:
    """(message content, logprobs object or None) for this request."""
    red = image["mean"][0]
    if body.get("logprobs") and config.get("logprobs", True):
        probs = {"Yes": 0.75 * red, " yes": 0.25 * red, "No": 1 - red}
        top = sorted(((t, math.log(p)) for t, p in probs.items() if p > 0), key=lambda x: -x[1])
        top = top[:int(body.get("top_logprobs") or 1)]
        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
        return top[0][0], {"content": [{**entries[0], "top_logprobs": entries}]}
    if max(image["mean"]) == 0:
        return "I cannot rate this image.", None
    names = [line.split(": <number>")[0] for line in _text(body).splitlines() if line.endswith(": <number>")]
    return "\n".join(f"{name}: {round(10 * image['mean'][k % 3], 3)}" for k, name in enumerate(names)), None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload, headers: dict = None, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/_log":
            with _lock:
                self._send(200, {"requests": _state["log"], "max_in_flight": _state["max_in_flight"]})
        elif self.path.endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "tiny-grader", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_config":
            with _lock:
                _state.update(config=body, log=[], in_flight=0, max_in_flight=0, count=0)
            self._send(200, {})
        elif self.path.endswith("/chat/completions"):
            self._chat(body)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict) -> None:
        """Config keys: fail {status, times, message, retry_after_ms}, redirect {status, location}, delay (s),
        delay_per_red (s per unit of mean red), logprobs (False: ignore them), html (True: a 200 web page)."""
        image = _image(body)
        with _lock:
            config = _state["config"]
            _state["count"] += 1
            attempt = _state["count"]
            _state["in_flight"] += 1
            _state["max_in_flight"] = max(_state["max_in_flight"], _state["in_flight"])
            record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                      "body": {k: v for k, v in body.items() if k != "messages"}, "text": _text(body),
                      "image": image, "start": time.monotonic()}
            _state["log"].append(record)
        try:
            time.sleep(config.get("delay", 0) + config.get("delay_per_red", 0) * image.get("mean", [0])[0])
            fail, redirect = config.get("fail"), config.get("redirect")
            if fail and attempt <= fail["times"]:
                headers = {"retry-after-ms": str(fail["retry_after_ms"])} if "retry_after_ms" in fail else {}
                self._send(fail["status"], {"error": {"message": fail.get("message", "injected failure"),
                                                      "code": fail["status"]}}, headers)
            elif redirect:
                self._send(redirect.get("status", 307), "", {"Location": redirect["location"]})
            elif config.get("html"):
                self._send(200, "<html><body>a web page</body></html>", content_type="text/html")
            else:
                content, logprobs = _answer(body, image, config)
                self._send(200, {"id": f"chat-{attempt}", "object": "chat.completion", "created": 0,
                                 "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        finally:
            with _lock:
                _state["in_flight"] -= 1
                record["end"] = time.monotonic()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
