#!/usr/bin/env python3
"""End-to-end tests of chat templates in `kvserve serve` (Python stdlib only).

The model's Jinja template renders chat prompts by default; model.chat_template_file swaps
in another (here real ones: Qwen2.5, Gemma 3); a template the engine cannot parse stops the
server at start-up with a message naming the line, unless model.chat_template_fallback is
on; a template that raises (Gemma 3 on non-alternating roles) is a 400 quoting it, or, with
the fallback, the family formatter's prompt. The server keeps serving after each error.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_server import BIN, MODEL, FAILS, Server, check, free_port  # noqa: E402

SRC = os.environ.get("KVSERVE_SRC", ".")
TEMPLATES = os.path.join(SRC, "tests", "data", "templates")


def chat(srv, messages, **kw):
    st, _, out = srv.req("POST", "/v1/chat/completions",
                         dict(messages=messages, max_tokens=3, temperature=0, **kw))
    return st, json.loads(out)


def test_default_and_file():
    srv = Server()
    try:
        st, r = chat(srv, [{"role": "user", "content": "Hi"}])
        check(st == 200, "kjv-tiny's own (chatml) Jinja template renders")
        chatml_tokens = r["usage"]["prompt_tokens"]
    finally:
        srv.stop()
    tmpl = os.path.join(TEMPLATES, "Qwen-Qwen2.5-7B-Instruct.jinja")
    srv = Server('[model]\nchat_template_file = "%s"\n' % tmpl)
    try:
        st, r = chat(srv, [{"role": "user", "content": "Hi"}])
        # Qwen2.5 adds its default system prompt: the prompt is longer than plain chatml
        check(st == 200 and r["usage"]["prompt_tokens"] > chatml_tokens + 10,
              "model.chat_template_file renders Qwen2.5's template (default system prompt)")
    finally:
        srv.stop()


def test_unparsable_template():
    d = tempfile.mkdtemp(prefix="kvserve-tmpl-")
    bad = os.path.join(d, "bad.jinja")
    with open(bad, "w") as f:
        f.write("{% for m in messages %}{{ m.content }}\n{% endif %}")
    cfg = os.path.join(d, "c.toml")
    with open(cfg, "w") as f:
        f.write('[server]\nport = %d\n[model]\nchat_template_file = "%s"\n' % (free_port(), bad))
    p = subprocess.run([BIN, "serve", "--config", cfg, "--model", MODEL, "--threads", "1"],
                       capture_output=True, timeout=120)
    err = p.stderr.decode()
    check(p.returncode != 0 and "chat template line 2" in err and
          "chat_template_fallback" in err,
          "an unparsable template stops start-up naming its line and the fallback key")
    srv = Server('[model]\nchat_template_file = "%s"\nchat_template_fallback = true\n' % bad)
    try:
        st, r = chat(srv, [{"role": "user", "content": "Hi"}])
        check(st == 200, "with chat_template_fallback the family formatter serves")
    finally:
        srv.stop()


def test_raising_template():
    tmpl = os.path.join(TEMPLATES, "google-gemma-3-4b-it.jinja")
    bad_roles = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    srv = Server('[model]\nchat_template_file = "%s"\n' % tmpl)
    try:
        st, r = chat(srv, bad_roles)
        msg = r.get("error", {}).get("message", "")
        check(st == 400 and "Conversation roles must alternate" in msg and "line 15" in msg,
              "raise_exception in the template is a 400 quoting it with its line")
        st, r = chat(srv, [{"role": "user", "content": "a"}])
        check(st == 200, "the server keeps serving after a template error")
    finally:
        srv.stop()
    srv = Server('[model]\nchat_template_file = "%s"\nchat_template_fallback = true\n' % tmpl)
    try:
        st, r = chat(srv, bad_roles)
        check(st == 200, "with chat_template_fallback a raising template falls back")
    finally:
        srv.stop()


def main():
    if not os.path.exists(MODEL):
        print("model missing:", MODEL)
        return 1
    test_default_and_file()
    test_unparsable_template()
    test_raising_template()
    print("%d failures" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
