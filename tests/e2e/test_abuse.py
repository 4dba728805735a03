#!/usr/bin/env python3
"""test_abuse.py - the HTTP abuse battery: hostile and malformed requests of many kinds
(JSON bodies, every generation parameter's type and range, chat message shapes, prompts,
raw HTTP framing, authentication, cross-origin posts), each with its expected status and an
OpenAI error object as body, and the server checked alive after every one. Also the
special-token injection probe: control-token text in user content stays text.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import Server, check, finish, is_error_body, parse_response  # noqa: E402

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
U = [{"role": "user", "content": "Hi"}]


def chat(**kw):
    b = dict(messages=U, max_tokens=2)
    b.update(kw)
    return b


def cmpl(**kw):
    b = dict(prompt="In the beginning", max_tokens=2)
    b.update(kw)
    return b


# (name, method, path, body (dict = JSON, bytes = raw body), expected status, param or None)
JSON_CASES = [
    ("invalid JSON", "POST", CHAT, b"{nope", 400, None),
    ("body is a list", "POST", CHAT, b"[1,2]", 400, None),
    ("body is a string", "POST", CHAT, b'"x"', 400, None),
    ("empty body", "POST", CHAT, b"", 400, None),
    ("deeply nested JSON", "POST", CHAT, b"[" * 100000 + b"]" * 100000, 400, None),
    ("invalid UTF-8 in a string", "POST", CHAT,
     b'{"messages":[{"role":"user","content":"\xff\xfe"}]}', 400, None),
    ("number literal overflow", "POST", CHAT, b'{"max_tokens": 1e999}', 400, None),
    ("messages missing", "POST", CHAT, {"max_tokens": 2}, 400, "messages"),
    ("messages not a list", "POST", CHAT, {"messages": "hi"}, 400, "messages"),
    ("messages empty", "POST", CHAT, {"messages": []}, 400, "messages"),
    ("message not an object", "POST", CHAT, {"messages": ["hi"]}, 400, "messages[0].role"),
    ("role missing", "POST", CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0].role"),
    ("role a number", "POST", CHAT, {"messages": [{"role": 1, "content": "x"}]}, 400,
     "messages[0].role"),
    ("unknown role", "POST", CHAT,
     {"messages": [{"role": "user", "content": "a"}, {"role": "root", "content": "x"}]}, 400,
     "messages[1].role"),
    ("content missing", "POST", CHAT, {"messages": [{"role": "user"}]}, 400,
     "messages[0].content"),
    ("content null", "POST", CHAT, {"messages": [{"role": "user", "content": None}]}, 400,
     "messages[0].content"),
    ("content a number", "POST", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400,
     "messages[0].content"),
    ("content an object", "POST", CHAT, {"messages": [{"role": "user", "content": {}}]}, 400,
     "messages[0].content"),
    ("content part not an object", "POST", CHAT,
     {"messages": [{"role": "user", "content": ["x"]}]}, 400, "messages[0].content"),
    ("content part image", "POST", CHAT,
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content"),
    ("content part without a type", "POST", CHAT,
     {"messages": [{"role": "user", "content": [{"text": "x"}]}]}, 400, "messages[0].content"),
    ("tool_calls entry not an object", "POST", CHAT,
     {"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": None, "tool_calls": [5]}]}, 400,
     "messages[1].tool_calls"),
    ("tool_calls function without a name", "POST", CHAT,
     {"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": "b", "tool_calls": [{"function": {}}]}]},
     400, "messages[1].tool_calls"),
    ("content part text not a string", "POST", CHAT,
     {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, 400,
     "messages[0].content"),
    ("content with NUL", "POST", CHAT, {"messages": [{"role": "user", "content": "a\u0000b"}]},
     400, None),
    ("assistant null content without tool_calls", "POST", CHAT,
     {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}]},
     400, "messages[1].content"),
    ("max_tokens 0", "POST", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens negative", "POST", CHAT, chat(max_tokens=-5), 400, "max_tokens"),
    ("max_tokens a string", "POST", CHAT, chat(max_tokens="9"), 400, "max_tokens"),
    ("max_tokens huge", "POST", CHAT, chat(max_tokens=2 ** 62), 400, "max_tokens"),
    ("max_completion_tokens a float", "POST", CHAT, chat(max_completion_tokens=1.5), 400,
     "max_completion_tokens"),
    ("temperature a string", "POST", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("temperature negative", "POST", CHAT, chat(temperature=-1), 400, "temperature"),
    ("temperature enormous", "POST", CHAT, chat(temperature=1e308), 400, "temperature"),
    ("top_p 0", "POST", CHAT, chat(top_p=0), 400, "top_p"),
    ("top_p 2", "POST", CHAT, chat(top_p=2), 400, "top_p"),
    ("top_k negative", "POST", CHAT, chat(top_k=-1), 400, "top_k"),
    ("top_k a float", "POST", CHAT, chat(top_k=2.5), 400, "top_k"),
    ("min_p 2", "POST", CHAT, chat(min_p=2), 400, "min_p"),
    ("presence_penalty 5", "POST", CHAT, chat(presence_penalty=5), 400, "presence_penalty"),
    ("frequency_penalty a string", "POST", CHAT, chat(frequency_penalty="x"), 400,
     "frequency_penalty"),
    ("repeat_penalty 0", "POST", CHAT, chat(repeat_penalty=0), 400, "repeat_penalty"),
    ("repeat_last_n negative", "POST", CHAT, chat(repeat_last_n=-3), 400, "repeat_last_n"),
    ("seed a string", "POST", CHAT, chat(seed="x"), 400, "seed"),
    ("seed a float", "POST", CHAT, chat(seed=1.5), 400, "seed"),
    ("stop a number", "POST", CHAT, chat(stop=5), 400, "stop"),
    ("stop empty", "POST", CHAT, chat(stop=""), 400, "stop"),
    ("stop list with a number", "POST", CHAT, chat(stop=["a", 1]), 400, "stop"),
    ("stop list too long", "POST", CHAT, chat(stop=["s%d" % i for i in range(17)]), 400, "stop"),
    ("stream a string", "POST", CHAT, chat(stream="yes"), 400, "stream"),
    ("stream_options a list", "POST", CHAT, chat(stream_options=[]), 400, "stream_options"),
    ("stream_options include_usage a string", "POST", CHAT,
     chat(stream_options={"include_usage": "y"}), 400, "stream_options"),
    ("chat logprobs a string", "POST", CHAT, chat(logprobs="x"), 400, "logprobs"),
    ("top_logprobs a string", "POST", CHAT, chat(top_logprobs="x"), 400, "top_logprobs"),
    ("top_logprobs too large", "POST", CHAT, chat(logprobs=True, top_logprobs=50), 400,
     "top_logprobs"),
    ("top_logprobs without logprobs", "POST", CHAT, chat(top_logprobs=3), 400, "top_logprobs"),
    ("completion logprobs too large", "POST", CMPL, cmpl(logprobs=100), 400, "logprobs"),
    ("n 0", "POST", CHAT, chat(n=0), 400, "n"),
    ("n a string", "POST", CHAT, chat(n="2"), 400, "n"),
    ("kv_policy a string", "POST", CHAT, chat(kv_policy="full"), 400, "kv_policy"),
    ("kv_policy without name", "POST", CHAT, chat(kv_policy={"window": 3}), 400, "kv_policy"),
    ("kv_policy unknown", "POST", CHAT, chat(kv_policy={"name": "magic"}), 400, "kv_policy"),
    ("kv_policy unknown parameter", "POST", CHAT,
     chat(kv_policy={"name": "sink_window", "bogus": 1}), 400, "kv_policy"),
    ("kv_policy parameter of the wrong type", "POST", CHAT,
     chat(kv_policy={"name": "sink_window", "window": "big"}), 400, "kv_policy"),
    ("kv_policy window beyond the context", "POST", CHAT,
     chat(kv_policy={"name": "sink_window", "window": 1000000}), 400, "kv_policy"),
    ("kv_policy retrieval top_k beyond the context", "POST", CHAT,
     chat(kv_policy={"name": "retrieval", "top_k": 100000}), 400, "kv_policy"),
    ("prompt missing", "POST", CMPL, {"max_tokens": 2}, 400, "prompt"),
    ("prompt empty", "POST", CMPL, cmpl(prompt=""), 400, "prompt"),
    ("prompt empty list", "POST", CMPL, cmpl(prompt=[]), 400, "prompt"),
    ("prompt an object", "POST", CMPL, cmpl(prompt={"a": 1}), 400, "prompt"),
    ("prompt mixed list", "POST", CMPL, cmpl(prompt=[1, "a"]), 400, "prompt"),
    ("prompt token id out of range", "POST", CMPL, cmpl(prompt=[1, 10 ** 9]), 400, "prompt"),
    ("prompt token id negative", "POST", CMPL, cmpl(prompt=[1, -4]), 400, "prompt"),
    ("prompt longer than the context", "POST", CMPL, cmpl(prompt="and " * 6000), 400, "prompt"),
    ("parse_special not a boolean", "POST", CMPL, cmpl(parse_special="yes"), 400, "prompt"),
    ("tokenize content a number", "POST", "/tokenize", {"content": 3}, 400, "content"),
    ("tokenize parse_special a string", "POST", "/tokenize",
     {"content": "x", "parse_special": "no"}, 400, "parse_special"),
    ("detokenize bad ids", "POST", "/detokenize", {"tokens": [1, "x"]}, 400, "tokens"),
    ("unknown endpoint", "GET", "/v1/nothing", None, 404, None),
    ("path traversal", "GET", "/../../etc/passwd", None, 404, None),
    ("GET on a POST endpoint", "GET", CHAT, None, 405, None),
    ("DELETE /health", "DELETE", "/health", None, 405, None),
]

RAW_CASES = [
    ("Content-Length over the limit", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: 99999999\r\n\r\n", 413),
    ("header block over the limit", b"GET /health HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n",
     431),
    ("too many headers", b"GET /health HTTP/1.1\r\n" +
     b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    ("malformed request line", b"HELLO\r\n\r\n", 400),
    ("request line without a version", b"GET /health\r\n\r\n", 400),
    ("unknown HTTP version", b"GET /health HTTP/3.7\r\n\r\n", 400),
    ("NUL in the target", b"GET /hea\x00lth HTTP/1.1\r\n\r\n", 400),
    ("space in a header name", b"GET /health HTTP/1.1\r\nBad Header: 1\r\n\r\n", 400),
    ("bad chunk size", b"POST /tokenize HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nab\r\n0\r\n\r\n", 400),
    ("Content-Length with Transfer-Encoding", b"POST /tokenize HTTP/1.1\r\n"
     b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("negative Content-Length", b"POST /tokenize HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    ("two Content-Lengths", b"POST /tokenize HTTP/1.1\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
    ("chunked body over the limit", b"POST /tokenize HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n" + b"".join(b"4000\r\n" + b"a" * 0x4000 + b"\r\n" for _ in range(80)) +
     b"0\r\n\r\n", 413),
    ("binary garbage", bytes(range(256)) * 4, 400),
]


def run_json_cases(srv):
    for name, method, path, body, want, param in JSON_CASES:
        raw = body if isinstance(body, bytes) else None
        js = body if isinstance(body, dict) else None
        try:
            st, _, out = srv.req(method, path, js, raw=raw)
        except OSError as e:
            st, out = -1, str(e).encode()
        ok = st == want and is_error_body(out)
        if ok and param:
            ok = json.loads(out)["error"].get("param") == param
        check(ok, "%s -> %d %s (got %d %s)" % (name, want, param or "", st, out[:160]))
        check(srv.alive(), "alive after: " + name)


def run_raw_cases(srv):
    for name, data, want in RAW_CASES:
        out = srv.raw(data)
        st, _, body = parse_response(out)
        check(st == want and is_error_body(body),
              "raw %s -> %d (got %d %s)" % (name, want, st, out[:160]))
        check(srv.alive(), "alive after raw: " + name)


def ntok(srv, text, parse_special):
    st, _, out = srv.req("POST", "/tokenize", {"content": text, "parse_special": parse_special})
    return len(json.loads(out)["tokens"]) if st == 200 else -1


def injection_probe(srv):
    """Control-token text written by a user is tokenized as text, in chat contents and in
    completion prompts unless parse_special is set."""
    ctl = "</s>"
    n_plain, n_special = ntok(srv, "x" + ctl, False), ntok(srv, "x" + ctl, True)
    check(n_special > 0 and n_plain > n_special, "a control token's text is several plain tokens")

    def usage(path, body):
        st, _, out = srv.req("POST", path, body)
        return json.loads(out)["usage"]["prompt_tokens"] if st == 200 else -1

    base = usage(CHAT, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
    inj = usage(CHAT, {"messages": [{"role": "user", "content": "x" + ctl}], "max_tokens": 1})
    check(inj - base == n_plain - ntok(srv, "x", False),
          "chat content with control-token text is tokenized as text (%d vs %d)" % (inj, base))
    plain = usage(CMPL, {"prompt": "x" + ctl, "max_tokens": 1})
    special = usage(CMPL, {"prompt": "x" + ctl, "max_tokens": 1, "parse_special": True})
    check(plain == n_plain + 1 and special == n_special + 1,
          "completion prompts: plain by default (%d), special with parse_special (%d)"
          % (plain, special))
    parts = usage(CHAT, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "text", "text": ctl}]}], "max_tokens": 1})
    check(parts == inj, "text parts are joined and tokenized as text")


def auth_cases():
    srv = Server('[server]\napi_key = "sekret"\n')
    try:
        cases = [("no key", {}), ("wrong key", {"Authorization": "Bearer nope"}),
                 ("Basic auth", {"Authorization": "Basic c2VrcmV0"}),
                 ("key prefix", {"Authorization": "Bearer sekre"}),
                 ("key with suffix", {"Authorization": "Bearer sekretX"})]
        for name, h in cases:
            st, hd, out = srv.req("POST", CHAT, chat(), headers=h)
            check(st == 401 and is_error_body(out), "auth: %s -> 401 (got %d)" % (name, st))
            check(srv.alive(), "alive after auth: " + name)
        st, _, _ = srv.req("POST", CHAT, chat(), headers={"Authorization": "Bearer sekret"})
        check(st == 200, "auth: the right key -> 200")
    finally:
        srv.stop()


def main():
    srv = Server()
    try:
        run_json_cases(srv)
        run_raw_cases(srv)
        injection_probe(srv)
        n = len(JSON_CASES) + len(RAW_CASES) + 5
        check(n >= 60, "the battery has %d kinds of hostile request" % n)
        check(srv.proc.poll() is None, "the server survived the battery")
    finally:
        srv.stop()
    auth_cases()
    finish()


if __name__ == "__main__":
    main()
