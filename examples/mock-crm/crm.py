#!/usr/bin/env python3
"""A small mock CRM that integrates with Custos through its public API only.

What it shows an integrator:
  * it registers a webhook at start (with an admin token) and checks every delivery's
    Custos-Signature before trusting it;
  * a `request.created` event for a request that is not yet tied to a ticket opens a new
    ticket (a customer asked for help through a portal);
  * a CRM user opens a case (POST /tickets): the CRM asks Custos for a connection code tagged
    with the ticket id (the external ref) and stores the code and invite link in the ticket;
  * `session.ended` (and `survey.submitted`) pull the session's record (transcript, files,
    timings, survey) back into the ticket with the agent's API token.

Standard library only. Run:

    python3 crm.py --custos https://custos.example.org:8443 --cafile custos-cert.pem \
        --admin-token cst_... --agent-token cst_... --listen 127.0.0.1:8081 \
        --public-url http://127.0.0.1:8081

The CRM's own API (JSON): GET /tickets, GET /tickets/ID, POST /tickets {"subject": "..."}.
Deliveries arrive at POST /custos/webhook. Duplicate deliveries (delivery is at least once) are
recognised by their event id and ignored.
"""

import argparse
import hashlib
import hmac
import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Deliveries older than this are refused (a replayed request).
SIGNATURE_TOLERANCE_S = 300


class Custos:
    """A minimal client for the Custos REST API."""

    def __init__(self, base, cafile, token):
        self.base = base.rstrip("/")
        self.token = token
        # With --cafile, the appliance's own (self-signed) certificate is the only one trusted.
        self.ctx = ssl.create_default_context(cafile=cafile)

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.token))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as res:
                text = res.read()
                return json.loads(text) if text else {}
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {detail}") from None


class Crm:
    def __init__(self, custos, agent_token):
        self.custos = custos
        self.agent_token = agent_token
        self.secret = None
        self.lock = threading.Lock()
        self.tickets = {}
        self.by_session = {}
        self.seen_events = set()
        self.next_id = 1

    # --- tickets ---------------------------------------------------------------------------

    def open_ticket(self, subject, source, session=None):
        with self.lock:
            tid = f"T-{self.next_id}"
            self.next_id += 1
            t = {"id": tid, "subject": subject, "source": source, "status": "open",
                 "session": session, "code": None, "invite_url": None, "record": None,
                 "history": [f"opened from {source}"]}
            self.tickets[tid] = t
            if session:
                self.by_session[session] = tid
        return t

    def open_case(self, subject):
        """A CRM user opens a case and gives the customer a code to join a session."""
        t = self.open_ticket(subject, "crm")
        code = self.custos.call("POST", "/api/v1/codes", {"ref": t["id"], "ttl_s": 3600},
                                token=self.agent_token)
        with self.lock:
            t["code"] = code["code"]
            t["invite_url"] = code["invite_url"]
            t["history"].append(f"connection code {code['code']} issued")
        return t

    def ticket_for(self, session, ref):
        with self.lock:
            if session in self.by_session:
                return self.tickets[self.by_session[session]]
            if ref and ref in self.tickets:
                self.by_session[session] = ref
                self.tickets[ref]["session"] = session
                return self.tickets[ref]
        return None

    def pull_record(self, t):
        """Copies the session's record into the ticket (the agent's token: its own sessions)."""
        rec = self.custos.call("GET", f"/api/v1/sessions/{t['session']}", token=self.agent_token)
        with self.lock:
            t["record"] = {
                "status": rec.get("status"),
                "agent": rec.get("agent"),
                "timings": rec.get("timings"),
                "transcript": [
                    {"from": m.get("from"), "text": m.get("text")}
                    for m in rec.get("transcript", []) if m.get("type") == "chat"
                ],
                "files": [f.get("name") for f in rec.get("files", [])],
                "survey": rec.get("survey"),
            }

    # --- webhooks --------------------------------------------------------------------------

    def verify(self, header, body):
        try:
            parts = dict(p.split("=", 1) for p in header.split(","))
            t = int(parts["t"])
            given = parts["v1"]
        except (KeyError, ValueError):
            return False
        if abs(time.time() - t) > SIGNATURE_TOLERANCE_S:
            return False
        want = hmac.new(self.secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, given)

    def on_event(self, ev):
        with self.lock:
            if ev["id"] in self.seen_events:
                return
            self.seen_events.add(ev["id"])
        kind, data = ev["type"], ev["data"]
        session, ref = data.get("session"), data.get("ref")
        if kind == "request.created":
            t = self.ticket_for(session, ref)
            if t is None:
                self.open_ticket(f"Support request in portal {data.get('portal')}", "portal", session)
            else:
                with self.lock:
                    t["history"].append("the customer joined with the code")
        elif kind == "session.ended":
            t = self.ticket_for(session, ref)
            if t is not None:
                self.pull_record(t)
                with self.lock:
                    t["status"] = "resolved"
                    t["history"].append("session ended; record attached")
        elif kind == "survey.submitted":
            t = self.ticket_for(session, ref)
            if t is not None:
                with self.lock:
                    t["history"].append(f"survey rated {data.get('rating')} of 5")
                self.pull_record(t)


def handler_for(crm):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            sys.stderr.write("crm: " + fmt % args + "\n")

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path == "/tickets":
                with crm.lock:
                    self.reply(200, {"tickets": list(crm.tickets.values())})
            elif self.path.startswith("/tickets/"):
                with crm.lock:
                    t = crm.tickets.get(self.path.rsplit("/", 1)[1])
                self.reply(200, t) if t else self.reply(404, {"error": "no such ticket"})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            raw = self.body()
            if self.path == "/custos/webhook":
                if not crm.verify(self.headers.get("Custos-Signature", ""), raw):
                    self.reply(401, {"error": "bad signature"})
                    return
                try:
                    crm.on_event(json.loads(raw))
                except RuntimeError as e:
                    # Custos will retry the delivery.
                    self.reply(503, {"error": str(e)})
                    return
                self.reply(200, {"ok": True})
            elif self.path == "/tickets":
                try:
                    subject = json.loads(raw or b"{}").get("subject", "New case")
                    self.reply(201, crm.open_case(subject))
                except (ValueError, RuntimeError) as e:
                    self.reply(502, {"error": str(e)})
            else:
                self.reply(404, {"error": "not found"})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--custos", required=True, help="the appliance's base URL")
    ap.add_argument("--cafile", help="PEM certificate to trust for the appliance")
    ap.add_argument("--admin-token", required=True, help="registers the webhook")
    ap.add_argument("--agent-token", required=True, help="issues codes and reads sessions")
    ap.add_argument("--listen", default="127.0.0.1:8081")
    ap.add_argument("--public-url", help="how Custos reaches this CRM (default: http://LISTEN)")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), None)
    public = a.public_url or f"http://{host}:{server.server_address[1]}"
    custos = Custos(a.custos, a.cafile, a.admin_token)
    crm = Crm(custos, a.agent_token)
    hook = custos.call("POST", "/api/v1/webhooks", {
        "url": public + "/custos/webhook",
        "events": ["request.created", "session.ended", "survey.submitted"],
        "description": "mock CRM",
    })
    crm.secret = hook["secret"]
    server.RequestHandlerClass = handler_for(crm)
    print(f"crm listening on {public}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
