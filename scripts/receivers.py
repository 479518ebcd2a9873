"""Local notification receivers for the end-to-end tests.

One process, two listeners on free ports:

- an HTTP webhook receiver: records every POST (path, headers, body) and
  answers 200 — or, for paths starting with /fail-N/, 500 to the first N
  requests of that path (to exercise retries); GET /requests returns what
  was recorded as JSON;
- an SMTP sink (aiosmtpd): records every message; GET /mail on the HTTP
  port returns them as JSON.

Usage: receivers.py PORTS_FILE — writes "HTTP_PORT SMTP_PORT" to PORTS_FILE
once both listen, then runs until killed.
"""

import json
import socket
import sys
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

LOCK = threading.Lock()
REQUESTS = []
MAIL = []
FAILURES = {}


class Hooks(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            if self.path == "/requests":
                return self._answer(200, REQUESTS)
            if self.path == "/mail":
                return self._answer(200, MAIL)
        self._answer(404, {"error": "unknown"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = 200
        with LOCK:
            REQUESTS.append(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                }
            )
            parts = self.path.split("/")
            if len(parts) > 1 and parts[1].startswith("fail-"):
                allowed = int(parts[1][5:])
                seen = FAILURES.get(self.path, 0)
                FAILURES[self.path] = seen + 1
                if seen < allowed:
                    status = 500
        self._answer(status, {"status": status})


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content)
        with LOCK:
            MAIL.append(
                {
                    "from": envelope.mail_from,
                    "from_header": msg.get("From", ""),
                    "to": envelope.rcpt_tos,
                    "subject": msg.get("Subject", ""),
                    "body": msg.get_payload(decode=True).decode("utf-8", "replace")
                    if not msg.is_multipart()
                    else "",
                }
            )
        return "250 Message accepted for delivery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    http = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{http.server_address[1]} {smtp.port}\n")
    # Atomic: readers never see a half-written file.
    import os

    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    try:
        http.serve_forever()
    finally:
        smtp.stop()


if __name__ == "__main__":
    main()
