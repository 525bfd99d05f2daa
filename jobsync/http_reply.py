"""The request handler both read-only HTTP servers build on: health and the dashboard.

``GetHandler`` answers ``GET`` and ``HEAD`` through one ``answer`` (``HEAD``
sends the same status and headers, no body) and writes every response with
``reply``: the status, the content type and length, the server's own extra
headers, then the body.  What each path answers is the subclass's.

It sits beside the layers and imports nothing of jobsync, because the
runtime (health) and the dashboard may not import each other.  Importing it
imports ``http.server``: the health server imports it only when it starts,
so that ``import jobsync`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


class GetHandler(BaseHTTPRequestHandler):
    """A handler whose ``GET`` and ``HEAD`` are one ``answer``; ``reply`` writes it."""

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def answer(self, send_body: bool) -> None:
        """Answer the request for ``self.path`` with ``reply`` (``send_body``: not HEAD)."""
        raise NotImplementedError

    def reply(
        self, status: int, body: bytes, kind: str, send_body: bool, headers: Mapping[str, str]
    ) -> None:
        """One response: ``status``, content type ``kind``, ``headers``, then ``body``
        unless ``send_body`` is false (its length is sent either way)."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)
