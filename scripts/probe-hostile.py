#!/usr/bin/env python3
"""probe-hostile.py - a held-out hostile-request battery, run beyond the repo's tests (issue 14,
"Must show"): well over 150 malformed or hostile HTTP requests against a running kvserve,
each checked for its expected 4xx status and an OpenAI-style JSON error body, and the server
checked alive (GET /health -> 200) after every one.

The cases are generated differently from tests/e2e/test_abuse.py (a matrix of every
generation parameter x wrong types and out-of-range values on both endpoints, message-shape
mutations, tool and response_format shapes, raw framings built from parts) so that they are
not the cases the code was written against.

Usage:
  scripts/probe-hostile.py                    # starts build/kvserve on kjv-tiny itself
  KVSERVE_BIN=/path/kvserve scripts/probe-hostile.py
  scripts/probe-hostile.py --port 8080        # probes a server already running (no API key)
Prints one line per failing case and a summary "N cases, F failed"; exits 1 on any failure.
"""
import argparse
import http.client
import json
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from e2e_util import Server, is_error_body, parse_response  # noqa: E402

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
U = [{"role": "user", "content": "Hi"}]

# Wrong values every numeric sampling parameter must refuse (type errors and nonsense).
WRONG_TYPE = ["1", [1], {"v": 1}]
PARAM_BAD = {
    "max_tokens": WRONG_TYPE + [-1, 0, 1.5, 2 ** 63],
    "temperature": WRONG_TYPE + [-0.5, 1e300],
    "top_p": WRONG_TYPE + [-0.1, 1.5],
    "top_k": WRONG_TYPE + [-2, 3.5],
    "min_p": WRONG_TYPE + [-1, 7],
    "presence_penalty": WRONG_TYPE + [-9, 9],
    "frequency_penalty": WRONG_TYPE + [-9, 9],
    "repeat_penalty": WRONG_TYPE + [-1],
    "seed": WRONG_TYPE + [0.25],
    "stream": ["true", 1, [True]],
    "stop": [7, [None], ["a", ["b"]], {"s": 1}],
    "n": ["1", 0, -1],
    "kv_policy": ["sink_window", 5, [], {"name": 5}, {"name": ""}, {"name": "full", "x": 1},
                  {"name": "sink_window", "window": -1}, {"name": "sink_window", "sink": "a"}],
}


def chat(**kw):
    b = {"messages": U, "max_tokens": 2}
    b.update(kw)
    return b


def cmpl(**kw):
    b = {"prompt": "In the beginning", "max_tokens": 2}
    b.update(kw)
    return b


def json_cases():
    """(name, method, path, body: dict or bytes, expected status)."""
    cases = []
    for param, values in PARAM_BAD.items():
        for v in values:
            for ep, mk in ((CHAT, chat), (CMPL, cmpl)):
                cases.append(("%s %s=%s" % (ep, param, json.dumps(v)), "POST", ep,
                              mk(**{param: v}), 400))
    msgs = [
        ("messages null", None), ("messages a number", 3), ("messages an object", {"a": 1}),
        ("message a list", [["user", "hi"]]), ("message null", [None]),
        ("role empty", [{"role": "", "content": "x"}]),
        ("role upper case", [{"role": "USER", "content": "x"}]),
        ("role a list", [{"role": ["user"], "content": "x"}]),
        ("role with NUL", [{"role": "us\u0000er", "content": "x"}]),
        ("content a bool", [{"role": "user", "content": True}]),
        ("content a nested list", [{"role": "user", "content": [["x"]]}]),
        ("content part without type", [{"role": "user", "content": [{"text": "x"}]}]),
        ("content part unknown type", [{"role": "user", "content": [{"type": "audio"}]}]),
        ("content part text missing", [{"role": "user", "content": [{"type": "text"}]}]),
        ("content part null", [{"role": "user", "content": [None]}]),
        ("system content a number", [{"role": "system", "content": 1}, U[0]]),
        ("tool_calls a string", [U[0], {"role": "assistant", "content": None,
                                        "tool_calls": "x"}]),
        ("tool_calls with a bad entry", [U[0], {"role": "assistant", "content": None,
                                                "tool_calls": [5]}]),
    ]
    for name, m in msgs:
        cases.append((name, "POST", CHAT, {"messages": m, "max_tokens": 2}, 400))
    tools = [
        ("tools a string", {"tools": "x"}), ("tools an object", {"tools": {}}),
        ("tool not an object", {"tools": [1]}),
        ("tool without function", {"tools": [{"type": "function"}]}),
        ("tool function name missing", {"tools": [{"type": "function", "function": {}}]}),
        ("tool_choice a number", {"tool_choice": 4}),
        ("tool_choice unknown word", {"tool_choice": "sometimes"}),
        ("response_format a string", {"response_format": "json"}),
        ("response_format unknown type", {"response_format": {"type": "yaml"}}),
        ("json_schema not an object", {"response_format": {"type": "json_schema",
                                                           "json_schema": 3}}),
    ]
    for name, extra in tools:
        cases.append((name, "POST", CHAT, chat(**extra), 400))
    prompts = [("prompt a number", 5), ("prompt null", None), ("prompt a bool", True),
               ("prompt list of lists", [[1, 2], "a"]), ("prompt float ids", [1.5, 2.5]),
               ("prompt list of objects", [{"a": 1}]), ("prompt id 2^40", [2 ** 40])]
    for name, p in prompts:
        cases.append((name, "POST", CMPL, cmpl(prompt=p), 400))
    bodies = [
        ("truncated JSON", b'{"messages": [{"role": "user", "content": "x"'),
        ("trailing garbage", b'{"messages": []} xyz'),
        ("JSON number body", b"42"), ("JSON null body", b"null"), ("JSON true body", b"true"),
        ("single quotes", b"{'messages': []}"),
        ("comment in JSON", b'{/* c */ "max_tokens": 2}'),
        ("lone surrogate escape", b'{"prompt": "\\ud800", "max_tokens": 2}'),
        ("NaN literal", b'{"prompt": "x", "temperature": NaN}'),
        ("Infinity literal", b'{"prompt": "x", "temperature": Infinity}'),
        ("overlong UTF-8", b'{"prompt": "\xc0\xaf", "max_tokens": 2}'),
        ("BOM then JSON", b'\xef\xbb\xbf{"prompt": "x"}'),
        ("deep objects", b'{"a":' * 50000 + b"1" + b"}" * 50000),
        ("whitespace only", b"   \n\t  "),
    ]
    for name, raw in bodies:
        cases.append((name + " (chat)", "POST", CHAT, raw, 400))
        cases.append((name + " (completion)", "POST", CMPL, raw, 400))
    other = [
        ("tokenize without content", "POST", "/tokenize", {}, 400),
        ("tokenize content a list", "POST", "/tokenize", {"content": ["a"]}, 400),
        ("detokenize tokens a string", "POST", "/detokenize", {"tokens": "1 2"}, 400),
        ("detokenize id out of range", "POST", "/detokenize", {"tokens": [10 ** 9]}, 400),
        ("detokenize negative id", "POST", "/detokenize", {"tokens": [-1]}, 400),
        ("unknown v1 path", "POST", "/v1/embeddingz", {}, 404),
        ("encoded traversal", "GET", "/%2e%2e/%2e%2e/etc/passwd", None, 404),
        ("PUT on completions", "PUT", CMPL, cmpl(), 405),
        ("PATCH on chat", "PATCH", CHAT, chat(), 405),
        ("DELETE on models", "DELETE", "/v1/models", None, 405),
        ("POST on health", "POST", "/health", {}, 405),
    ]
    return cases + other


def raw_cases():
    """(name, request bytes, expected status)."""
    body = json.dumps(cmpl()).encode()
    good_head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = [
        ("lower-case method", b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("tab in the request line", b"GET\t/health HTTP/1.1\r\n\r\n", 400),
        ("LF-only line ends with a bad version", b"GET /health HTTP/9.9\n\n", 400),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        ("absolute target with a bad scheme", b"GET ::: HTTP/1.1\r\n\r\n", 400),
        ("control byte in the target", b"GET /he\x01alth HTTP/1.1\r\n\r\n", 400),
        ("DEL in the target", b"GET /he\x7falth HTTP/1.1\r\n\r\n", 400),
        ("header without a colon", b"GET /health HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        ("header name with a slash", b"GET /health HTTP/1.1\r\nX/Y: 1\r\n\r\n", 400),
        ("NUL in a header value", b"GET /health HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        ("CR alone as a line end", b"GET /health HTTP/1.1\rX: 1\r\r\n\r\n", 400),
        ("Content-Length not a number", good_head + b"Content-Length: ten\r\n\r\n", 400),
        ("Content-Length with a plus", good_head + b"Content-Length: +5\r\n\r\n12345", 400),
        ("Content-Length hex", good_head + b"Content-Length: 0x10\r\n\r\n", 400),
        ("Content-Length overflowing 64 bits",
         good_head + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
        ("Content-Length list", good_head + b"Content-Length: 3, 4\r\n\r\nabcd", 400),
        ("Content-Length just over the limit", good_head + b"Content-Length: 1048577\r\n\r\n",
         413),
        ("unknown transfer coding", good_head + b"Transfer-Encoding: gzip\r\n\r\n", 400),
        ("chunked then identity", good_head + b"Transfer-Encoding: chunked, identity\r\n\r\n",
         400),
        ("chunk size overflow", good_head + b"Transfer-Encoding: chunked\r\n\r\n"
         b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n", 400),
        ("negative chunk size", good_head + b"Transfer-Encoding: chunked\r\n\r\n"
         b"-5\r\nabcde\r\n0\r\n\r\n", 400),
        ("chunk without its CRLF", good_head + b"Transfer-Encoding: chunked\r\n\r\n"
         b"3\r\nabcXX0\r\n\r\n", 400),
        ("one huge chunk over the limit", good_head + b"Transfer-Encoding: chunked\r\n\r\n"
         b"200000\r\n" + b"a" * 0x200000 + b"\r\n0\r\n\r\n", 413),
        ("invalid JSON in a chunked body", good_head + b"Transfer-Encoding: chunked\r\n\r\n"
         b"2\r\n{x\r\n0\r\n\r\n", 400),
        ("one long header line", b"GET /health HTTP/1.1\r\nX-Long: " + b"b" * 20000 +
         b"\r\n\r\n", 431),
        ("a long target", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
        ("200 tiny headers", b"GET /health HTTP/1.1\r\n" +
         b"".join(b"h%d: v\r\n" % i for i in range(200)) + b"\r\n", 431),
        ("Expect 100-continue over the limit", good_head + b"Expect: 100-continue\r\n"
         b"Content-Length: 5000000\r\n\r\n", 413),
        ("body shorter than Content-Length then EOF", good_head + b"Content-Length: %d\r\n\r\n"
         % (len(body) + 50) + body, None),
        ("random bytes 1", bytes((i * 37 + 11) % 256 for i in range(3000)), 400),
        ("random bytes 2", bytes((i * 101 + 7) % 256 for i in range(777)), 400),
        ("all 0xff", b"\xff" * 2048, 400),
        ("TLS ClientHello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 160, 400),
        ("CONNECT tunnel", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
         None),
        ("smuggling: CL then TE", b"POST /tokenize HTTP/1.1\r\nContent-Length: 4\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("smuggling: TE with a space", b"POST /tokenize HTTP/1.1\r\nTransfer-Encoding : chunked"
         b"\r\n\r\n0\r\n\r\n", 400),
    ]
    # Pipelined: a good request then a bad one; the last response must be the error.
    pip = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /health HTTP/7.0\r\n\r\n")
    cases.append(("pipelined good then bad", pip, 400))
    return cases


class Target:
    """A server: started here (Server) or already running on a port."""

    def __init__(self, port):
        self.srv = None if port else Server()
        self.port = port or self.srv.port

    def req(self, method, path, body):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        raw = body if isinstance(body, bytes) else (
            json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if raw is not None else {}
        c.request(method, path, body=raw, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, out

    def raw(self, data):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        out = b""
        try:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            while True:
                try:
                    b = s.recv(65536)
                except OSError:
                    break
                if not b:
                    break
                out += b
        finally:
            s.close()
        return out

    def alive(self):
        try:
            st, _ = self.req("GET", "/health", None)
            return st == 200 and (self.srv is None or self.srv.proc.poll() is None)
        except OSError:
            return False


def last_response(raw):
    """The last HTTP response in raw (pipelined answers come in order)."""
    i = raw.rfind(b"HTTP/1.1 ")
    return parse_response(raw[i:] if i >= 0 else raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="probe a server already running")
    ap.add_argument("-v", action="store_true", help="print every case")
    a = ap.parse_args()
    t = Target(a.port)
    n = fails = 0
    try:
        for name, method, path, body, want in json_cases():
            try:
                st, out = t.req(method, path, body)
            except OSError as e:
                st, out = -1, str(e).encode()
            ok = st == want and is_error_body(out)
            n, fails = n + 1, fails + (not ok)
            if not ok or a.v:
                print("%s: %s -> want %d, got %d %s" % ("ok" if ok else "FAIL", name, want, st,
                                                         out[:120]), flush=True)
            if not t.alive():
                fails += 1
                print("FAIL: server dead after " + name, flush=True)
                break
        for name, data, want in raw_cases():
            out = t.raw(data)
            st, _, body = last_response(out)
            # want None: any 4xx (or a close without an answer) is right, only 5xx/2xx is not
            ok = (st == want and is_error_body(body)) if want else \
                (st == 0 or (400 <= st < 500 and is_error_body(body)))
            n, fails = n + 1, fails + (not ok)
            if not ok or a.v:
                print("%s: raw %s -> want %s, got %d %s" % ("ok" if ok else "FAIL", name, want,
                                                             st, out[:120]), flush=True)
            if not t.alive():
                fails += 1
                print("FAIL: server dead after raw " + name, flush=True)
                break
    finally:
        if t.srv:
            rc = t.srv.stop()
            if rc != 0:
                fails += 1
                print("FAIL: server exit status %d" % rc)
    print("%d cases, %d failed" % (n, fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
