#!/usr/bin/env python3
"""test_soak.py - soak test: N clients (default 16) send a mix of completion and chat
requests, streamed or not, under mixed KV policies (server default, full, sink_window, h2o,
snapkv, retrieval with a spill directory), and randomly disconnect mid-request, for
KVSERVE_SOAK_S seconds (default 60; the long run is 600). It asserts:
  - no server error (no 5xx, no malformed or stalled response: every stream that was read
    to its end ends with data: [DONE]; a 60 s silence counts as a stall),
  - afterwards the KV pool holds only the prefix cache's blocks (read from /v1/kv),
  - RSS is flat: at the end it is within a small margin of RSS after the warm-up,
  - the server is alive and shuts down cleanly.
Prints the figures (requests, disconnects, tokens, RSS) for docs/reliability.md.
"""
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import Server, check, finish  # noqa: E402

DURATION = float(os.environ.get("KVSERVE_SOAK_S", "60"))
CLIENTS = int(os.environ.get("KVSERVE_SOAK_CLIENTS", "16"))
WORDS = ("in the beginning god created the heaven and the earth and the earth was without "
         "form and void and darkness was upon the face of the deep").split()
POLICIES = [None, {"name": "full"}, {"name": "sink_window", "n_sink": 4, "window": 64},
            {"name": "h2o", "heavy": 32, "recent": 32}, {"name": "snapkv", "budget": 64},
            {"name": "retrieval", "window": 64, "top_k": 2, "block_tokens": 16, "chunk": 64,
             "n_sink": 4}]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return -1


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = self.disconnects = self.errors = self.ok = self.tokens = 0
        self.statuses = {}
        self.problems = []

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def problem(self, what):
        with self.lock:
            self.errors += 1
            if len(self.problems) < 20:
                self.problems.append(what)


def one_request(port, rng, st):
    chat = rng.random() < 0.5
    stream = rng.random() < 0.6
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 120))]
    body = {"max_tokens": rng.randint(1, 48), "temperature": rng.choice([0, 0.8]),
            "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": " ".join(words)}]
    else:
        body["prompt"] = " ".join(words)
    pol = rng.choice(POLICIES)
    if pol:
        body["kv_policy"] = pol
    data = json.dumps(body).encode()
    path = "/v1/chat/completions" if chat else "/v1/completions"
    disconnect = rng.random() < 0.2
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), len(data))
                  + data)
        out = b""
        cut = rng.randint(1, 400) if disconnect else -1
        while True:
            try:
                b = s.recv(4096)
            except socket.timeout:
                st.problem("stall: no data for 60 s (%s)" % body)
                return
            if not b:
                break
            out += b
            if disconnect and len(out) >= cut:
                st.add(disconnects=1)
                return
        head, _, rest = out.partition(b"\r\n\r\n")
        parts = head.split(b" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        with st.lock:
            st.statuses[status] = st.statuses.get(status, 0) + 1
        if status != 200:
            st.problem("status %d: %s" % (status, out[:200]))
            return
        if stream:
            if b"data: [DONE]" not in rest:
                st.problem("stream without [DONE]: %s" % out[-200:])
                return
            st.add(ok=1, tokens=rest.count(b"data: {") - 1)
        else:
            j = json.loads(rest[rest.index(b"{"):])
            st.add(ok=1, tokens=j["usage"]["completion_tokens"])
    except (OSError, ValueError) as e:
        st.problem("client error %r" % e)
    finally:
        s.close()
        st.add(n=1)


def client(port, seed, deadline, st):
    rng = random.Random(seed)
    while time.time() < deadline:
        one_request(port, rng, st)


def kv_state(srv):
    st, _, out = srv.req("GET", "/v1/kv")
    j = json.loads(out)
    return j["blocks_used"], j["prefix_cache"]["bytes"] // max(1, j["block_bytes"]), \
        len(j["sequences"])


def main():
    env = {}
    if "ASAN_OPTIONS" in os.environ:
        # AddressSanitizer keeps freed memory in a quarantine (256 MiB by default) that grows
        # RSS with every allocation: cap it so that RSS measures the server, not the tool.
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + \
            ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
    srv = Server("[server]\nmax_queue = 256\n[kvcache]\nmemory_mb = 8\nblock_tokens = 16\n"
                 "[kvcache.retrieval]\nspill_dir = \"%s\"\nram_mb = 1\n"
                 % os.path.join(tempfile_dir(), "spill"), env=env, threads=2)  # the pool under load
    st = Stats()
    try:
        t0 = time.time()
        deadline = t0 + DURATION
        threads = [threading.Thread(target=client, args=(srv.port, 1000 + i, deadline, st))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(min(10.0, DURATION / 5))
        rss_warm = rss_kb(srv.proc.pid)
        rss_max = rss_warm
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            rss_max = max(rss_max, rss_kb(srv.proc.pid))
        for t in threads:
            t.join()
        elapsed = time.time() - t0
        rss_end = rss_kb(srv.proc.pid)
        time.sleep(1)  # cancelled sequences are reaped at the worker's next step
        used, cached, seqs = kv_state(srv)
        print("soak: %d clients, %.0f s, %d requests (%d ok, %d disconnected), %d tokens, "
              "statuses %s, RSS warm %d KiB, max %d KiB, end %d KiB, KV blocks %d (prefix %d)"
              % (CLIENTS, elapsed, st.n, st.ok, st.disconnects, st.tokens, st.statuses,
                 rss_warm, rss_max, rss_end, used, cached), flush=True)
        for p in st.problems:
            print("  problem:", p)
        check(st.errors == 0, "no server errors or stalls in %d requests" % st.n)
        check(st.ok > 0 and st.disconnects > 0, "the mix ran (ok and disconnected requests)")
        check(seqs == 0 and used == cached,
              "KV blocks back to the prefix cache's (%d used, %d cached)" % (used, cached))
        check(rss_end - rss_warm < 32 * 1024,
              "RSS flat: %d KiB after warm-up, %d KiB at the end" % (rss_warm, rss_end))
        check(srv.alive(), "alive after the soak")
    finally:
        rc = srv.stop()
    check(rc == 0, "clean shutdown after the soak (exit %d)" % rc)
    finish()


_TMP = []


def tempfile_dir():
    import tempfile
    d = tempfile.mkdtemp(prefix="kvserve-soak-")
    _TMP.append(d)
    return d


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        for d in _TMP:
            shutil.rmtree(d, ignore_errors=True)
