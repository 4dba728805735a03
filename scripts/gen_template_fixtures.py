#!/usr/bin/env python3
"""gen_template_fixtures.py - records llama-server's rendering of each chat template under
tests/data/templates/ as the oracle the Jinja engine is tested against.

For every *.jinja file it starts llama.cpp's llama-server (b9749, --jinja, the template given
with --chat-template-file, on a free 127.0.0.1 port, serving kjv-tiny: the template is all that
matters to POST /apply-template), posts a fixed set of conversations (system/user/assistant,
multi-turn, tools, tool calls and tool responses, add_generation_prompt on and off, Qwen3
thinking on and off) and writes <template>.fixtures.json next to the template: the model's
bos/eos token texts, the clock used by strftime_now, and per case either the rendered prompt
or the fact that llama.cpp refused the conversation (the template raised).

Tests never run llama.cpp; run this script again only when templates or cases change:
    python3 scripts/gen_template_fixtures.py [--llama-bin DIR] [--model GGUF]
The kjv-tiny f32 file is used because the b9749 build's quantized kernels need AVX-VNNI,
which not every machine of this kind has; /apply-template computes nothing.
"""
import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
SHARED = os.path.join(SRC, "..", "shared")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city. Use \"metric\" units <by default>.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city"],
        },
    },
}
CALC = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}

SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello! How are you?"}
A1 = {"role": "assistant", "content": "I am fine, thank you."}
U2 = {"role": "user", "content": "  What is the weather in Paris?\n"}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call12345", "type": "function",
                    "function": {"name": "get_weather",
                                 "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}],
}
RESULT = {"role": "tool", "tool_call_id": "call12345", "content": "{\"temperature\": 21.5}"}
A_THINK = {"role": "assistant",
           "content": "<think>\nThe user greets me.\n</think>\n\nHi there, all good!"}

CASES = [
    ("user", {"messages": [U1]}),
    ("system_user", {"messages": [SYS, U1]}),
    ("multi_turn", {"messages": [SYS, U1, A1, U2]}),
    ("no_generation_prompt", {"messages": [U1, A1], "add_generation_prompt": False}),
    ("unicode_whitespace", {"messages": [{"role": "user",
                                          "content": "\n  héllo ✓ 日本語 \"quotes\" \\ \t\n"}]}),
    ("tools", {"messages": [SYS, U2], "tools": [WEATHER, CALC]}),
    ("tools_no_system", {"messages": [U2], "tools": [WEATHER]}),
    ("tool_round_trip", {"messages": [SYS, U2, CALL, RESULT], "tools": [WEATHER]}),
    ("tool_round_trip_answer", {"messages": [U2, CALL, RESULT,
                                             {"role": "assistant", "content": "It is 21.5 C."},
                                             {"role": "user", "content": "Thanks!"}],
                                "tools": [WEATHER]}),
    ("thinking_history", {"messages": [U1, A_THINK, {"role": "user", "content": "Bye"}]}),
    ("thinking_off", {"messages": [U1], "chat_template_kwargs": {"enable_thinking": False}}),
    ("thinking_on", {"messages": [U1], "chat_template_kwargs": {"enable_thinking": True}}),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/apply-template",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_ready(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError("llama-server exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("llama-server did not become ready")


def record(template, bin_dir, model):
    port = free_port()
    cmd = [os.path.join(bin_dir, "llama-server"), "-m", model, "--no-warmup", "--jinja",
           "--chat-template-file", template, "--host", "127.0.0.1", "--port", str(port),
           "-t", "1", "-c", "512"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        out = {"template": os.path.basename(template), "bos_token": "<s>", "eos_token": "</s>",
               "oracle": "llama.cpp b9749 llama-server --jinja, POST /apply-template",
               "cases": []}
        for name, body in CASES:
            now = int(time.time())
            status, resp = post(port, body)
            case = {"name": name, "request": body, "now": now}
            if status == 200 and "prompt" in resp:
                case["prompt"] = resp["prompt"]
            else:
                case["error"] = (resp.get("error") or {}).get("message", f"HTTP {status}")
            out["cases"].append(case)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-bin", default=os.path.join(SHARED, "anchors", "llama.cpp-b9749", "bin"))
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "kjv-tiny", "kjv-tiny-f32.gguf"))
    args = ap.parse_args()
    for t in sorted(glob.glob(os.path.join(SRC, "tests", "data", "templates", "*.jinja"))):
        fx = record(t, args.llama_bin, args.model)
        path = t[: -len(".jinja")] + ".fixtures.json"
        with open(path, "w", encoding="utf-8") as f:
            json.dump(fx, f, indent=1, ensure_ascii=False)
            f.write("\n")
        ok = sum("prompt" in c for c in fx["cases"])
        print(f"{os.path.basename(path)}: {ok} rendered, {len(fx['cases']) - ok} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
