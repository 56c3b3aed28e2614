"""A minimal LSP client for the real yaml-language-server (npm package `yaml-language-server`, run with
`--stdio`): initialize with workspace settings, open documents, collect `publishDiagnostics`.

Not installed by `.ci/setup` (it needs npm's registry): tests using it skip without it. Point
YAML_LANGUAGE_SERVER at its executable, e.g. `npm install yaml-language-server` in a temp dir and
YAML_LANGUAGE_SERVER=$dir/node_modules/.bin/yaml-language-server."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

REPLY_TIMEOUT = 30.0


def server_path() -> str | None:
    return os.environ.get("YAML_LANGUAGE_SERVER") or shutil.which("yaml-language-server")


class YamlLanguageServer:
    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        exe = server_path()
        assert exe is not None
        self.settings = {"yaml": {"validate": True, "schemaStore": {"enable": False}, **settings}}
        self.proc = subprocess.Popen([exe, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self._next_id = 0
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.request("initialize", {
            "processId": os.getpid(), "rootUri": root.as_uri(),
            "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
            "capabilities": {"workspace": {"configuration": True},
                             "textDocument": {"publishDiagnostics": {}}},
            "initializationOptions": {}})
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": self.settings})

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self._inbox.put(None)
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert length is not None
            self._inbox.put(json.loads(out.read(length)))

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: Any) -> Any:
        self._next_id += 1
        rid = self._next_id
        self._send({"id": rid, "method": method, "params": params})
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            msg = self._receive(deadline)
            if msg.get("id") == rid and "method" not in msg:
                return msg.get("result")

    def _receive(self, deadline: float) -> dict[str, Any]:
        try:
            msg = self._inbox.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise AssertionError("yaml-language-server did not answer in time") from None
        if msg is None:
            raise AssertionError("yaml-language-server exited")
        self._handle(msg)
        return msg

    def _handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "textDocument/publishDiagnostics":
            self.diagnostics[msg["params"]["uri"]] = msg["params"]["diagnostics"]
        elif method == "workspace/configuration" and "id" in msg:
            items = msg["params"]["items"]
            self._send({"id": msg["id"], "result": [self._section(i.get("section")) for i in items]})
        elif "id" in msg and method is not None:  # client/registerCapability and the like
            self._send({"id": msg["id"], "result": None})

    def _section(self, name: str | None) -> Any:
        value: Any = self.settings
        for part in (name or "").split("."):
            if part:
                value = value.get(part, {}) if isinstance(value, dict) else {}
        return value

    def check(self, path: Path) -> list[dict[str, Any]]:
        """Open `path` and return the diagnostics the server publishes for it (validation is async).
        Each path once per server: it stays open (closing one publishes empty diagnostics for it)."""
        uri = path.as_uri()
        assert uri not in self.diagnostics, f"{path} was checked already"
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "yaml", "version": 1, "text": path.read_text()}})
        deadline = time.monotonic() + REPLY_TIMEOUT
        while uri not in self.diagnostics:
            self._receive(deadline)
        # A second round trip: the server may publish again once a schema has loaded.
        self.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
        return self.diagnostics[uri]

    def close(self) -> None:
        try:
            self.request("shutdown", None)
            self.notify("exit", None)
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
