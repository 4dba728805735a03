#!/usr/bin/env python3
"""End-to-end tests of structured output against the real binary on kjv-tiny.

response_format (json_object, json_schema) and `grammar` on both endpoints, streamed and
not: every finished output must parse and satisfy its schema (checked here with plain Python
against the schema's meaning); logit_bias bans and forces tokens; ignore_eos runs to
max_tokens; echo; top_logprobs and
logprobs up to 20; and bad input (unsupported keyword, recursive $ref, undefined rule,
out-of-range logit_bias id, suffix without FIM tokens) gets a 400 naming the place while the
server keeps serving.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (shared Server and check helpers)

check = ts.check


def gen(srv, chat, body, stream=False):
    """Returns (status, text, finish_reason, parsed JSON response or SSE events)."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = dict(body)
    if chat:
        body.setdefault("messages", [{"role": "user", "content": "Answer in JSON."}])
    else:
        body.setdefault("prompt", "And God said")
    body.setdefault("temperature", 0)
    body.setdefault("max_tokens", 400)
    if not stream:
        st, _, out = srv.req("POST", path, body)
        j = json.loads(out)
        if st != 200:
            return st, None, None, j
        c = j["choices"][0]
        text = c["message"]["content"] if chat else c["text"]
        return st, text, c["finish_reason"], j
    st, _, raw = ts.stream(srv, path, body)
    if st != 200:
        return st, None, None, json.loads(raw)
    events = ts.parse_sse(raw)
    text, finish = "", None
    for e in events:
        for c in e["choices"]:
            piece = c["delta"].get("content") if chat else c.get("text")
            text += piece or ""
            finish = c.get("finish_reason") or finish
    return st, text, finish, events


PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 12},
                         "age": {"type": "integer", "minimum": 18, "maximum": 99},
                         "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]},
                                  "maxItems": 3},
                         "email": {"type": "string", "maxLength": 5}},
          "required": ["name", "age", "tags"], "additionalProperties": False}


def person_ok(v):
    return (isinstance(v, dict) and set(v) <= {"name", "age", "tags", "email"}
            and {"name", "age", "tags"} <= set(v)
            and isinstance(v["name"], str) and 1 <= len(v["name"]) <= 12
            and isinstance(v["age"], int) and 18 <= v["age"] <= 99
            and isinstance(v["tags"], list) and len(v["tags"]) <= 3
            and all(t in ("a", "b", "c") for t in v["tags"])
            and (("email" not in v) or (isinstance(v["email"], str) and len(v["email"]) <= 5)))


def test_json_schema(srv):
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                 "strict": True}}
    for chat in (False, True):
        for stream in (False, True):
            what = "json_schema %s %s" % ("chat" if chat else "completions",
                                          "stream" if stream else "json")
            st, text, finish, _ = gen(srv, chat, {"response_format": rf}, stream)
            check(st == 200 and finish == "stop", what + ": 200, finished by the grammar")
            try:
                v = json.loads(text)
            except (ValueError, TypeError):
                v = None
            check(person_ok(v), what + ": output satisfies the schema: %r" % text)
    # seeded sampling at a high temperature still yields valid instances
    for seed in range(4):
        st, text, finish, _ = gen(srv, True, {"response_format": rf, "temperature": 1.3,
                                              "seed": seed, "max_tokens": 400})
        if finish == "stop":
            check(person_ok(json.loads(text)), "sampled output %d satisfies the schema" % seed)
        else:
            check(finish == "length", "sampled output %d ran out of tokens" % seed)


def test_json_object_and_grammar(srv):
    st, text, finish, _ = gen(srv, True, {"response_format": {"type": "json_object"},
                                          "max_tokens": 300})
    check(st == 200, "json_object: 200")
    if finish == "stop":
        check(isinstance(json.loads(text), dict), "json_object: output is a JSON object")
    else:
        check(text.lstrip().startswith("{"), "json_object: output starts an object")
    g = 'root ::= ("yes" | "no") "." | "maybe " [0-9]{2}'
    for chat in (False, True):
        for stream in (False, True):
            st, text, finish, _ = gen(srv, chat, {"grammar": g}, stream)
            check(st == 200 and finish == "stop"
                  and re.fullmatch(r"(yes|no)\.|maybe [0-9]{2}", text) is not None,
                  "grammar (chat=%s, stream=%s): %r" % (chat, stream, text))
    # a grammar forcing digits under sampling
    st, text, finish, _ = gen(srv, False, {"grammar": "root ::= [0-9]{5}", "temperature": 1,
                                           "seed": 7})
    check(st == 200 and re.fullmatch(r"[0-9]{5}", text) is not None, "digits grammar: %r" % text)


def token_id(srv, text):
    st, _, out = srv.req("POST", "/tokenize", {"content": text})
    return json.loads(out)["tokens"][-1]


def test_logit_bias(srv):
    st, base = ts.complete(srv, "And God said", 1)
    first = base["choices"][0]["text"].strip()  # SentencePiece: the space was stripped
    tid = token_id(srv, "And God said " + first)
    st, j = ts.complete(srv, "And God said", 1, logit_bias={str(tid): -100})
    check(st == 200 and j["choices"][0]["text"] != first,
          "logit_bias -100 bans the greedy token (%r -> %r)" % (first, j["choices"][0]["text"]))
    forced = token_id(srv, " Moses")
    st, j = ts.complete(srv, "And God said", 4, logit_bias={str(forced): 100},
                        logprobs=1)
    toks = j["choices"][0]["logprobs"]["tokens"] if st == 200 else []
    check(st == 200 and len(toks) == 4 and len(set(toks)) == 1,
          "logit_bias +100 forces one token: %r" % toks)


def test_echo_logprobs(srv):
    st, j = ts.complete(srv, "And God said", 5, echo=True)
    check(st == 200 and j["choices"][0]["text"].startswith("And God said"), "echo prepends the prompt")
    st, j2 = ts.complete(srv, "And God said", 5)
    check(j["choices"][0]["text"] == "And God said " + j2["choices"][0]["text"].lstrip(),
          "echo: prompt + completion, with the space between them: %r" % j["choices"][0]["text"])
    st, _, raw = ts.stream(srv, "/v1/completions", dict(prompt="And God said", max_tokens=3,
                                                        temperature=0, echo=True))
    events = ts.parse_sse(raw)
    check(st == 200 and events[0]["choices"][0]["text"] == "And God said",
          "streamed echo: the first chunk is the prompt")
    st, j = ts.complete(srv, "And God said", 2, logprobs=20)
    tops = j["choices"][0]["logprobs"]["top_logprobs"] if st == 200 else []
    check(st == 200 and all(len(t) == 20 for t in tops), "completions logprobs=20")
    st, j = ts.complete(srv, "And God said", 2, logprobs=21)
    check(st == 400, "completions logprobs=21 -> 400")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": True,
            "top_logprobs": 20}
    st, _, out = srv.req("POST", "/v1/chat/completions", body)
    c = json.loads(out)["choices"][0] if st == 200 else {}
    check(st == 200 and all(len(e["top_logprobs"]) == 20 for e in c["logprobs"]["content"]),
          "chat top_logprobs=20")
    st, _, out = srv.req("POST", "/v1/chat/completions", dict(body, top_logprobs=21))
    check(st == 400 and json.loads(out)["error"]["param"] == "top_logprobs",
          "chat top_logprobs=21 -> 400")


def test_bad_input(srv):
    rec = {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
           "$ref": "#/$defs/node"}
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {
                "a": {"type": "string", "pattern": "^x"}}}}}},
         "response_format", "/properties/a/pattern"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": rec}}},
         "response_format", "recursive $ref"),
        ({"grammar": 'root ::= "a" item\nitem ::= "b" missing\n'}, "grammar",
         "line 2, column 14: undefined rule 'missing'"),
        ({"grammar": 'root ::= "a" ("b"'}, "grammar", "line 1, column 18"),
        ({"logit_bias": {"4096": 5}}, "logit_bias", "out of range"),
        ({"logit_bias": {"12": 101}}, "logit_bias", "-100..100"),
        ({"response_format": {"type": "xml"}}, "response_format", "not one of"),
        ({"suffix": "}"}, "suffix", "fill-in-the-middle"),
    ]
    for body, param, text in cases:
        for chat in (False, True):
            if param == "suffix" and chat:
                continue
            st, _, _, j = gen(srv, chat, body)
            err = j.get("error", {})
            check(st == 400 and err.get("param") == param and text in err.get("message", ""),
                  "bad %s (chat=%s) -> 400 naming %r: %s" % (param, chat, text, err.get("message")))
    st, text, finish, _ = gen(srv, True, {"grammar": 'root ::= "ok"'})
    check(st == 200 and text == "ok", "the server keeps serving after bad input")


def test_fim():
    """suffix on a vocabulary with FIM tokens (the qwen2 reference model): the prompt is
    <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>."""
    model = os.path.join(ts.SHARED, "models", "ref", "ref-qwen2-q8_0.gguf")
    saved, ts.MODEL = ts.MODEL, model
    try:
        srv = ts.Server()
    finally:
        ts.MODEL = saved
    try:
        prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
        n_pre = len(json.loads(srv.req("POST", "/tokenize", {"content": prefix})[2])["tokens"])
        n_suf = len(json.loads(srv.req("POST", "/tokenize", {"content": suffix})[2])["tokens"])
        st, j = ts.complete(srv, prefix, 4, suffix=suffix)
        check(st == 200 and j["usage"]["prompt_tokens"] == n_pre + n_suf + 3,
              "suffix: prompt is prefix + suffix + 3 FIM tokens (%s)" % j.get("usage"))
        st, j = ts.complete(srv, [1, 2, 3], 4, suffix=suffix)
        check(st == 400 and j["error"]["param"] == "prompt",
              "suffix needs a string prompt")
        st, j = ts.complete(srv, prefix, 4, suffix=suffix, echo=True)
        check(st == 400, "suffix with echo -> 400")
        check(srv.stop() == 0, "FIM server: clean shutdown")
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


def eos_id():
    """The model's EOS id, read from the GGUF by bench/gguf_info.py (not kvserve's reader)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "bench"))
    import gguf_info
    return int(gguf_info.Reader(ts.MODEL).meta["tokenizer.ggml.eos_token_id"])


def test_ignore_eos(srv):
    """ignore_eos (llama-server's flag): with EOS forced by logit_bias the output ends at once;
    with ignore_eos too it runs to max_tokens on both endpoints, streamed or not."""
    bias = {str(eos_id()): 100}
    st, j = ts.complete(srv, "And God said", 8, logit_bias=bias)
    check(st == 200 and j["choices"][0]["finish_reason"] == "stop"
          and j["usage"]["completion_tokens"] <= 1,
          "EOS forced by logit_bias ends the output: %r" % (j.get("usage"),))
    for chat in (False, True):
        for stream in (False, True):
            body = {"max_tokens": 8, "logit_bias": bias, "ignore_eos": True,
                    "stream_options": {"include_usage": True}} if stream else \
                {"max_tokens": 8, "logit_bias": bias, "ignore_eos": True}
            st, text, finish, out = gen(srv, chat, body, stream)
            usage = (out[-1].get("usage") if stream else out.get("usage")) or {}
            check(st == 200 and finish == "length" and usage.get("completion_tokens") == 8
                  and text,
                  "ignore_eos runs to max_tokens (chat %s, stream %s): %r %r" %
                  (chat, stream, finish, usage))
    st, j = ts.complete(srv, "And God said", 8, ignore_eos=False, logit_bias=bias)
    check(st == 200 and j["choices"][0]["finish_reason"] == "stop",
          "ignore_eos false keeps EOS")
    for bad in ("yes", 1, [True]):
        st, _, out = srv.req("POST", "/v1/completions",
                             {"prompt": "x", "max_tokens": 2, "ignore_eos": bad})
        err = json.loads(out).get("error", {})
        check(st == 400 and err.get("param") == "ignore_eos"
              and "boolean" in err.get("message", ""),
              "ignore_eos %r is rejected naming the param: %d %r" % (bad, st, err))


def main():
    if not os.path.exists(ts.MODEL):
        print("model missing:", ts.MODEL)
        return 1
    srv = ts.Server()
    try:
        test_json_schema(srv)
        test_json_object_and_grammar(srv)
        test_logit_bias(srv)
        test_ignore_eos(srv)
        test_echo_logprobs(srv)
        test_bad_input(srv)
        check(srv.stop() == 0, "clean shutdown")
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
    test_fim()
    print("%d failures" % len(ts.FAILS))
    return 1 if ts.FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
