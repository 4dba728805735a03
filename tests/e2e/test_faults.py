#!/usr/bin/env python3
"""test_faults.py - fault injection against `kvserve serve`:
  - the spill disk full (ENOSPC) or failing reads (EIO) mid-run (KVSERVE_TEST_SPILL_FAIL):
    the retrieval request that spills fails cleanly with a 500 error object, a request
    running beside it completes, the server stays up and frees every KV block;
  - kill -9 while a request has a spill file, then a restart on the same directory: the
    stale spill file is removed at start-up;
  - the model file truncated under the running server: no SIGBUS crash; generation fails
    cleanly with an error naming the model file, /health reports it.
"""
import json
import os
import shutil
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import MODEL, Server, check, finish, is_error_body  # noqa: E402

LONG = " ".join(["and the earth was without form and void"] * 100)  # ~900 tokens
RETR = {"name": "retrieval", "window": 32, "top_k": 2, "block_tokens": 16, "chunk": 32,
        "n_sink": 4, "dense_layers": 0}


def spill_cfg(spill_dir):
    return ("[kvcache]\nblock_tokens = 16\n[kvcache.retrieval]\nspill_dir = \"%s\"\n"
            "ram_mb = 1\n" % spill_dir)


def run(srv, body, out, key):
    try:
        out[key] = srv.req("POST", "/v1/completions", body, timeout=120)
    except OSError as e:
        out[key] = (-1, {}, str(e).encode())


def kv_clean(srv):
    time.sleep(0.5)
    st, _, out = srv.req("GET", "/v1/kv")
    j = json.loads(out)
    return not j["sequences"] and j["blocks_used"] == j["prefix_cache"]["bytes"] // j["block_bytes"]


def spill_fault(kind, tmp):
    sd = os.path.join(tmp, "spill-" + kind)
    srv = Server(spill_cfg(sd), env={"KVSERVE_TEST_SPILL_FAIL": kind + ":0" if kind == "write"
                                     else "read:0"})
    try:
        res = {}
        a = threading.Thread(target=run, args=(srv, {"prompt": LONG, "max_tokens": 8,
                                                     "temperature": 0, "kv_policy": RETR},
                                               res, "a"))
        b = threading.Thread(target=run, args=(srv, {"prompt": "In the beginning",
                                                     "max_tokens": 64, "temperature": 0},
                                               res, "b"))
        a.start()
        b.start()
        a.join()
        b.join()
        st, _, out = res["a"]
        msg = json.loads(out)["error"]["message"] if is_error_body(out) else ""
        check(st == 500 and "spill" in msg,
              "spill %s failure: the spilling request fails cleanly (%d %s)" % (kind, st, msg))
        check(res["b"][0] == 200, "spill %s failure: the request beside it completes" % kind)
        st, _, _ = srv.req("POST", "/v1/completions", {"prompt": "In the", "max_tokens": 4})
        check(st == 200 and srv.alive(), "spill %s failure: the server goes on" % kind)
        check(kv_clean(srv), "spill %s failure: every KV block is freed" % kind)
    finally:
        srv.stop()


def kill9_restart(tmp):
    sd = os.path.join(tmp, "spill-kill")
    srv = Server(spill_cfg(sd))
    res = {}
    body = {"prompt": LONG, "max_tokens": 400, "temperature": 0, "kv_policy": RETR,
            "stream": True}
    t = threading.Thread(target=run, args=(srv, body, res, "a"))
    t.start()
    found = []
    deadline = time.time() + 60
    while time.time() < deadline and not found:
        found = [f for f in (os.listdir(sd) if os.path.isdir(sd) else [])
                 if f.startswith("kvserve-spill-")]
        time.sleep(0.01)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    t.join()
    left = [f for f in os.listdir(sd) if f.startswith("kvserve-spill-")] if found else []
    check(len(left) >= 1, "kill -9 leaves the spill file behind (%s)" % left)
    srv.stop()
    srv2 = Server(spill_cfg(sd))
    try:
        rest = [f for f in os.listdir(sd) if f.startswith("kvserve-spill-")]
        check(left and not rest and "stale spill file" in srv2.log_text(),
              "a restart removes the stale spill file (%s left)" % rest)
    finally:
        srv2.stop()


def truncated_model(tmp):
    copy = os.path.join(tmp, "model-copy.gguf")
    shutil.copyfile(MODEL, copy)
    srv = Server("[model]\npath = \"%s\"\n" % copy, model=copy)
    try:
        st, _, _ = srv.req("POST", "/v1/completions", {"prompt": "In the", "max_tokens": 4})
        check(st == 200, "the copied model serves")
        with open(copy, "r+b") as f:
            f.truncate(4096)
        os.posix_fadvise(os.open(copy, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
        st, _, out = srv.req("POST", "/v1/completions",
                             {"prompt": "And God said, let there be light", "max_tokens": 8})
        msg = json.loads(out)["error"]["message"] if is_error_body(out) else ""
        check(srv.proc.poll() is None, "a truncated model file does not crash the server")
        check(st in (500, 503) and "model file" in msg,
              "generation on a truncated model fails cleanly (%d %s)" % (st, msg))
        st, _, out = srv.req("GET", "/health")
        check(st == 503, "/health reports the damaged model (%d %s)" % (st, out[:100]))
    finally:
        srv.stop()


def main():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="kvserve-faults-")
    try:
        spill_fault("write", tmp)
        spill_fault("read", tmp)
        kill9_restart(tmp)
        truncated_model(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
