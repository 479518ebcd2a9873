"""A test double of the Stripe API for the calls SecureNet makes, checking
each request as Stripe would. Python standard library only.

Why not localstripe (PyPI): it implements the legacy Plans API (no Prices,
no lookup_keys), has no `POST /v1/invoices/{id}/finalize` and ignores
`Idempotency-Key` — the three things SecureNet's Stripe calls rely on.

What it checks, as Stripe documents it:
- `Authorization: Bearer sk_test_…` (else 401);
- form-encoded parameters, unknown ones refused (400 "Received unknown
  parameter"), required ones present, amounts integers;
- `Idempotency-Key`: a repeated key with the same parameters gets the first
  answer again (header `Idempotent-Replayed: true`); with other parameters,
  400 `idempotency_error`;
- invoices: created as drafts for an existing customer, items attached to a
  draft of the same customer, invoice numbers unique, finalising a draft
  makes it `open`, finalising twice is refused.

Test controls (no auth): `POST /_seed` makes a customer with a subscription
and a price per plan (lookup_key = plan); `POST /_faults` makes the next
`count` requests to `method path` fail with `status` (no side effect);
`GET /_requests` lists every request; `GET /_state` the objects.

Usage: stripe_double.py — prints `port N` once listening on 127.0.0.1.
"""
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {
    "customers": {},
    "prices": {},
    "subscriptions": {},
    "invoices": {},
    "invoiceitems": {},
}
REQUESTS = []
FAULTS = []
IDEMPOTENCY = {}
COUNTER = [0]


def new_id(prefix):
    COUNTER[0] += 1
    return "%s_%06d" % (prefix, COUNTER[0])


class StripeError(Exception):
    def __init__(self, status, message, kind="invalid_request_error", param=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message}}
        if param:
            self.body["error"]["param"] = param


def allowed(params, names, prefixes=("metadata[",)):
    for key in params:
        if key not in names and not key.startswith(prefixes):
            raise StripeError(400, "Received unknown parameter: %s" % key, param=key)


def required(params, name):
    if not params.get(name):
        raise StripeError(400, "Missing required param: %s." % name, param=name)
    return params[name]


def metadata(params):
    return {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")}


def integer(params, name):
    try:
        return int(required(params, name))
    except ValueError:
        raise StripeError(400, "Invalid integer: %s" % params[name], param=name)


def invoice_view(inv):
    out = dict(inv)
    out["lines"] = {"object": "list", "data": [STATE["invoiceitems"][i] for i in inv["lines"]]}
    out["total"] = sum(STATE["invoiceitems"][i]["amount"] for i in inv["lines"])
    out["amount_due"] = out["total"]
    return out


def route(method, path, params):
    parts = path.strip("/").split("/")
    if method == "GET" and path == "/v1/prices":
        keys = [v for k, v in params.items() if k.startswith("lookup_keys[")]
        data = [p for p in STATE["prices"].values() if not keys or p["lookup_key"] in keys]
        return 200, {"object": "list", "data": data[: int(params.get("limit", "10"))]}
    if len(parts) == 3 and parts[:2] == ["v1", "subscriptions"]:
        sub = STATE["subscriptions"].get(parts[2])
        if sub is None:
            raise StripeError(404, "No such subscription: '%s'" % parts[2], param="id")
        if method == "GET":
            return 200, sub
        allowed(params, {"items[0][id]", "items[0][price]", "proration_behavior"})
        if "items[0][id]" in params:
            item = next((i for i in sub["items"]["data"] if i["id"] == params["items[0][id]"]), None)
            if item is None:
                raise StripeError(400, "No such subscription item", param="items[0][id]")
            price = STATE["prices"].get(params.get("items[0][price]", ""))
            if price is None:
                raise StripeError(400, "No such price", param="items[0][price]")
            item["price"] = price
        if params.get("proration_behavior") not in (None, "none", "create_prorations", "always_invoice"):
            raise StripeError(400, "Invalid proration_behavior", param="proration_behavior")
        sub["metadata"].update(metadata(params))
        sub["proration_behavior_last"] = params.get("proration_behavior")
        return 200, sub
    if method == "POST" and path == "/v1/invoices":
        allowed(params, {"customer", "currency", "collection_method", "auto_advance",
                         "pending_invoice_items_behavior", "number", "description"})
        customer = required(params, "customer")
        if customer not in STATE["customers"]:
            raise StripeError(400, "No such customer: '%s'" % customer, param="customer")
        number = params.get("number")
        if number and any(i["number"] == number for i in STATE["invoices"].values()):
            raise StripeError(400, "Invoice number %s is already in use" % number, param="number")
        inv = {"id": new_id("in"), "object": "invoice", "customer": customer,
               "currency": params.get("currency", "usd"), "status": "draft",
               "number": number, "description": params.get("description"),
               "collection_method": params.get("collection_method", "charge_automatically"),
               "metadata": metadata(params), "lines": []}
        STATE["invoices"][inv["id"]] = inv
        return 200, invoice_view(inv)
    if method == "POST" and path == "/v1/invoiceitems":
        allowed(params, {"customer", "invoice", "amount", "currency", "description"})
        customer = required(params, "customer")
        amount = integer(params, "amount")
        inv = STATE["invoices"].get(required(params, "invoice"))
        if inv is None or inv["customer"] != customer:
            raise StripeError(400, "No such invoice for this customer", param="invoice")
        if inv["status"] != "draft":
            raise StripeError(400, "Items can only be added to a draft invoice", param="invoice")
        item = {"id": new_id("ii"), "object": "invoiceitem", "customer": customer,
                "invoice": inv["id"], "amount": amount, "currency": required(params, "currency"),
                "description": params.get("description"), "metadata": metadata(params)}
        STATE["invoiceitems"][item["id"]] = item
        inv["lines"].append(item["id"])
        return 200, item
    if len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "finalize" and method == "POST":
        allowed(params, {"auto_advance"})
        inv = STATE["invoices"].get(parts[2])
        if inv is None:
            raise StripeError(404, "No such invoice: '%s'" % parts[2], param="id")
        if inv["status"] != "draft":
            raise StripeError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.")
        inv["status"] = "open"
        if not inv["number"]:
            inv["number"] = new_id("NUM")
        return 200, invoice_view(inv)
    if len(parts) == 3 and parts[:2] == ["v1", "invoices"] and method == "GET":
        inv = STATE["invoices"].get(parts[2])
        if inv is None:
            raise StripeError(404, "No such invoice: '%s'" % parts[2], param="id")
        return 200, invoice_view(inv)
    raise StripeError(404, "Unrecognized request URL (%s: %s)." % (method, path))


def seed(body):
    customer = {"id": new_id("cus"), "object": "customer", "email": body.get("email")}
    STATE["customers"][customer["id"]] = customer
    for plan in body.get("plans", []):
        if not any(p["lookup_key"] == plan for p in STATE["prices"].values()):
            price = {"id": new_id("price"), "object": "price", "lookup_key": plan,
                     "currency": "usd", "unit_amount": 0}
            STATE["prices"][price["id"]] = price
    start = next(p for p in STATE["prices"].values() if p["lookup_key"] == body.get("plan"))
    sub = {"id": new_id("sub"), "object": "subscription", "customer": customer["id"],
           "status": "active", "metadata": {},
           "items": {"object": "list", "data": [{"id": new_id("si"), "price": start}]}}
    STATE["subscriptions"][sub["id"]] = sub
    return {"customer": customer["id"], "subscription": sub["id"]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        path = url.path
        with LOCK:
            if path.startswith("/_"):
                return self.control(method, path, raw)
            query = url.query if method == "GET" else raw
            params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
            key = self.headers.get("Idempotency-Key")
            entry = {"method": method, "path": path, "params": params,
                     "idempotency_key": key, "content_type": self.headers.get("Content-Type")}
            REQUESTS.append(entry)
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer sk_test_"):
                entry["status"] = 401
                return self.reply(401, {"error": {"type": "invalid_request_error",
                                                  "message": "Invalid API Key provided"}})
            for fault in FAULTS:
                if fault["count"] > 0 and fault["method"] == method and path.startswith(fault["path"]):
                    fault["count"] -= 1
                    entry["status"] = fault["status"]
                    return self.reply(fault["status"], {"error": {"type": "api_error",
                                                                  "message": "injected fault"}})
            if method == "POST" and self.headers.get("Content-Type", "").split(";")[0] not in (
                    "application/x-www-form-urlencoded", ""):
                entry["status"] = 400
                return self.reply(400, {"error": {"type": "invalid_request_error",
                                                  "message": "Invalid request: form encoding expected"}})
            if method == "POST" and key:
                seen = IDEMPOTENCY.get(key)
                if seen is not None:
                    if seen["request"] != (method, path, params):
                        entry["status"] = 400
                        return self.reply(400, {"error": {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the "
                                       "same parameters they were first used with."}})
                    entry["status"] = seen["status"]
                    entry["replayed"] = True
                    return self.reply(seen["status"], seen["body"],
                                      [("Idempotent-Replayed", "true")])
            try:
                status, body = route(method, path, params)
            except StripeError as e:
                status, body = e.status, e.body
            entry["status"] = status
            if method == "POST" and key:
                IDEMPOTENCY[key] = {"request": (method, path, params), "status": status, "body": body}
            return self.reply(status, body)

    def control(self, method, path, raw):
        if method == "POST" and path == "/_seed":
            return self.reply(200, seed(json.loads(raw or "{}")))
        if method == "POST" and path == "/_faults":
            FAULTS.append(json.loads(raw))
            return self.reply(200, {"faults": FAULTS})
        if method == "GET" and path == "/_requests":
            return self.reply(200, {"requests": REQUESTS})
        if method == "GET" and path == "/_state":
            invoices = [invoice_view(i) for i in STATE["invoices"].values()]
            return self.reply(200, {"invoices": invoices, "subscriptions": list(STATE["subscriptions"].values())})
        return self.reply(404, {"error": {"message": "no such control"}})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
