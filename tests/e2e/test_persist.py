#!/usr/bin/env python3
"""End-to-end tests of the prefix cache on disk (kvcache.persist_dir), Python stdlib only.

Restart: serve with persist_dir, send a long prompt, SIGTERM, start again, send it again:
cached_tokens > 0 and the same greedy output. The saved file is mode 0600 in a 0700 directory.
A corrupt file, a file written for other KV types and a full disk (RLIMIT_FSIZE makes the
write fail, like ENOSPC) each leave a server that starts, warns and serves. POST /v1/kv/save
and /v1/kv/restore with a name: names with path components are refused, a saved name restores
into a fresh server and its prompt is then served from cache. /v1/kv and /metrics report the
KV types and bytes per token by layer.
"""
import functools
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the Server helper and check())

check = ts.check


def long_prompt():
    path = os.path.join(ts.SHARED, "models", "kjv-tiny", "heldout-public.txt")
    with open(path) as f:
        return f.read()[:1500]  # about 400 tokens: several 64-token blocks


def toml(pdir, extra=""):
    return '[kvcache]\npersist_dir = "%s"\n%s' % (pdir, extra)


def log_text(srv):
    srv.log.flush()
    with open(os.path.join(srv.dir, "log")) as f:
        return f.read()


def cached(j):
    return j["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_restart(pdir, prompt):
    srv = ts.Server(toml(pdir))
    st, a = ts.complete(srv, prompt, 12)
    check(st == 200 and cached(a) == 0, "first run: nothing cached (%s)" % st)
    check(srv.stop() == 0, "SIGTERM exits 0")
    f = os.path.join(pdir, "prefix.kvpc")
    check(os.path.exists(f), "prefix.kvpc written at shutdown")
    if os.path.exists(f):
        check(stat.S_IMODE(os.stat(f).st_mode) == 0o600, "file mode 0600")
    check(stat.S_IMODE(os.stat(pdir).st_mode) == 0o700, "persist_dir mode 0700")
    srv = ts.Server(toml(pdir))
    check("restored" in log_text(srv), "restart: restore logged")
    st, b = ts.complete(srv, prompt, 12)
    check(st == 200 and cached(b) > 0, "after restart: cached_tokens %d" % cached(b))
    check(b["choices"][0]["text"] == a["choices"][0]["text"], "after restart: same output")
    srv.stop()
    return a["choices"][0]["text"]


def test_corrupt(pdir, prompt, want):
    f = os.path.join(pdir, "prefix.kvpc")
    with open(f, "r+b") as fh:
        fh.seek(os.path.getsize(f) // 2)
        fh.write(b"\xff\x00\xff\x00")
    srv = ts.Server(toml(pdir))
    check("checksum" in log_text(srv), "corrupt file: warned and skipped")
    st, j = ts.complete(srv, prompt, 12)
    check(st == 200 and cached(j) == 0 and j["choices"][0]["text"] == want,
          "corrupt file: serves, nothing loaded")
    srv.stop()
    with open(f, "r+b") as fh:  # truncated
        fh.truncate(os.path.getsize(f) - 100)
    srv = ts.Server(toml(pdir))
    st, j = ts.complete(srv, prompt, 4)
    check("skipped" in log_text(srv) and st == 200, "truncated file: warned, serves")
    srv.stop()


def test_mismatch(pdir, prompt):
    srv = ts.Server(toml(pdir))  # write a good f16 file first
    ts.complete(srv, prompt, 4)
    srv.stop()
    srv = ts.Server(toml(pdir, 'dtype = "q8_0"\n'))
    check("other KV types" in log_text(srv), "file for other KV types: warned and skipped")
    st, j = ts.complete(srv, prompt, 4)
    check(st == 200 and cached(j) == 0, "mismatched file: serves, nothing loaded")
    # kjv-tiny: 4 layers x 2 KV heads x (34 + 34) bytes per q8_0 row of 32
    st, _, out = srv.req("GET", "/v1/kv")
    kv = json.loads(out)
    check(kv.get("k_dtype") == "q8_0" and kv.get("v_dtype") == "q8_0" and
          kv.get("bytes_per_token_per_layer") == [136] * 4 and kv.get("bytes_per_token") == 544,
          "/v1/kv reports q8_0 and 544 bytes per token (%s)" % {k: kv.get(k) for k in
                                                               ("k_dtype", "bytes_per_token")})
    st, _, out = srv.req("GET", "/metrics")
    check('kvserve_kv_bytes_per_token{layer="3"} 136' in out.decode(),
          "/metrics reports bytes per token per layer")
    # a request may state the server's KV types, not change them
    st, j = ts.complete(srv, "In the beginning", 2,
                        kv_policy={"name": "full", "k_dtype": "q8_0", "v_dtype": "q8_0"})
    check(st == 200, "request kv_policy with the server's KV types: 200")
    for kt, want in (("q4_0", "stores K as q8_0"), ("q9", "expected one of"), (7, "expected")):
        st, j = ts.complete(srv, "In the beginning", 2,
                            kv_policy={"name": "full", "k_dtype": kt})
        check(st == 400 and want in json.dumps(j), "request k_dtype %r refused (%d)" % (kt, st))
    srv.stop()


def test_full_disk(prompt):
    pdir = os.path.join(tempfile.mkdtemp(prefix="kvserve-persist-"), "p")
    # the server inherits a 64 KiB file size limit with SIGXFSZ ignored, so writing the cache
    # file fails with EFBIG part-way, as a full disk fails with ENOSPC
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    lim = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, lim[1]))
    popen = subprocess.Popen
    subprocess.Popen = functools.partial(popen, restore_signals=False)
    try:
        srv = ts.Server(toml(pdir))
    finally:
        subprocess.Popen = popen
        resource.setrlimit(resource.RLIMIT_FSIZE, lim)
        signal.signal(signal.SIGXFSZ, old)
    st, j = ts.complete(srv, prompt, 4)
    check(st == 200, "full disk: serves")
    check(srv.stop() == 0, "full disk: clean exit")
    txt = log_text(srv)
    check("not saved" in txt and "write failed" in txt, "full disk: save failure warned")
    check(not os.path.exists(os.path.join(pdir, "prefix.kvpc")) and
          not os.path.exists(os.path.join(pdir, "prefix.kvpc.tmp")), "full disk: no partial file")


def test_named(pdir, prompt):
    srv = ts.Server(toml(pdir))
    for bad in ["../x", "a/b", "", ".", "..", "x" * 65, "prefix", "a b"]:
        st, _, _ = srv.req("POST", "/v1/kv/save", {"name": bad})
        check(st == 400, "save name %r refused (%d)" % (bad, st))
    st, _, out = srv.req("POST", "/v1/kv/restore", {"name": "never-saved"})
    check(st == 404, "restore of an unknown name: 404 (%d)" % st)
    st, a = ts.complete(srv, prompt, 6)
    st, _, out = srv.req("POST", "/v1/kv/save", {"name": "slot-1"})
    j = json.loads(out)
    check(st == 200 and j.get("prompt_blocks_saved", 0) > 0, "named save: %s" % out[:80])
    srv.stop()
    os.remove(os.path.join(pdir, "prefix.kvpc"))
    srv = ts.Server(toml(pdir))
    st, _, out = srv.req("POST", "/v1/kv/restore", {"name": "slot-1"})
    j = json.loads(out)
    check(st == 200 and j.get("prompt_blocks_restored", 0) > 0, "named restore: %s" % out[:80])
    st, b = ts.complete(srv, prompt, 6)
    check(cached(b) > 0 and b["choices"][0]["text"] == a["choices"][0]["text"],
          "named restore: prompt served from cache (%d)" % cached(b))
    srv.stop()
    srv = ts.Server("")  # no persist_dir
    st, _, _ = srv.req("POST", "/v1/kv/save", {"name": "x"})
    check(st == 400, "save without persist_dir: 400")
    srv.stop()


def main():
    if not os.path.exists(ts.MODEL):
        print("model missing:", ts.MODEL)
        return 1
    prompt = long_prompt()
    base = tempfile.mkdtemp(prefix="kvserve-persist-")
    pdir = os.path.join(base, "cache")
    want = test_restart(pdir, prompt)
    test_corrupt(pdir, prompt, want)
    test_mismatch(os.path.join(base, "m"), prompt)
    test_full_disk(prompt)
    test_named(os.path.join(base, "n"), prompt)
    print("%d failures" % len(ts.FAILS))
    return 1 if ts.FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
