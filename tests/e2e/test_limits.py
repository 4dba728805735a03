#!/usr/bin/env python3
"""test_limits.py - connection and request limits of `kvserve serve`: the connection cap
(503 beyond it), slowloris headers and stalled bodies cut off (408), idle keep-alive
connections closed, the global cap on buffered request bytes (503 and bounded RSS), the API
key checked before the body is read, buffers that grow with the data (many idle connections
cost little memory), and cross-origin browser requests (refused unless listed, CORS headers
and preflight for listed origins).
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import Server, check, finish, is_error_body, parse_response  # noqa: E402

LIMITS = """[server]
max_connections = 16
header_timeout_s = 1
body_timeout_s = 2
idle_timeout_s = 2
max_buffered_mb = 8
"""


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return -1


def connect(srv):
    return socket.create_connection(("127.0.0.1", srv.port), timeout=20)


def read_all(s, limit_s=20):
    """Bytes until the server closes (or limit_s passes: then what came so far)."""
    s.settimeout(limit_s)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, OSError):
        pass
    return out


def test_connection_cap(srv):
    held = [connect(srv) for _ in range(16)]
    extra = connect(srv)
    st, _, body = parse_response(read_all(extra, 10))
    check(st == 503 and is_error_body(body), "connection 17 of 16 gets 503 (%d)" % st)
    extra.close()
    for s in held:
        s.close()
    # the server sees the 16 closes asynchronously; until it has, a new connection may still
    # be over the cap (503), so poll /health for a bounded while
    ok = False
    for _ in range(50):
        ok = srv.alive()
        if ok or srv.proc.poll() is not None:
            break
        time.sleep(0.1)
    check(ok, "alive after the connection cap")


def test_slowloris(srv):
    s = connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: ")
    got = b""
    s.settimeout(0.5)
    for _ in range(40):  # one byte every 0.5 s: 20 s if never cut off
        try:
            s.sendall(b"a")
        except OSError:
            break
        try:
            b = s.recv(65536)
            if not b:
                break
            got += b
        except socket.timeout:
            pass
    got += read_all(s, 2)
    s.close()
    st, _, body = parse_response(got)
    check(st == 408 and is_error_body(body), "slowloris headers are cut off with 408 (%d)" % st)


def test_stalled_body(srv):
    s = connect(srv)
    s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"content\"")
    st, _, body = parse_response(read_all(s, 20))
    s.close()
    check(st == 408 and is_error_body(body), "a stalled body is cut off with 408 (%d)" % st)


def test_idle_keepalive(srv):
    s = connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    out = read_all(s, 20)
    s.close()
    st, h, _ = parse_response(out)
    check(st == 200 and h.get("connection") == "keep-alive" and out.endswith(b"}"),
          "an idle keep-alive connection is closed by the server after its answer")


def test_buffered_cap(srv):
    base = rss_kb(srv.proc.pid)
    socks, answers = [], []
    chunk = b"x" * 65536
    for _ in range(14):  # 14 x 900 KB = 12.6 MB declared and sent against an 8 MiB cap
        s = connect(srv)
        s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        try:
            for _ in range(14):
                s.sendall(chunk)
        except OSError:
            pass
        socks.append(s)
    peak = rss_kb(srv.proc.pid)
    for s in socks:
        answers.append(parse_response(read_all(s, 10)))
        s.close()
    busy = [a for a in answers if a[0] == 503 and is_error_body(a[2])]
    check(len(busy) >= 1, "requests past the buffered-bytes cap get 503 (%d of 14)" % len(busy))
    check(peak - base < 24 * 1024, "RSS bounded by the cap: +%d KiB for 12.6 MB sent"
          % (peak - base))
    check(srv.alive(), "alive after the buffered-bytes flood")


def test_idle_connections_cheap():
    srv = Server("[server]\nmax_connections = 300\nidle_timeout_s = 60\n")
    try:
        base = rss_kb(srv.proc.pid)
        socks = [connect(srv) for _ in range(250)]
        for s in socks:
            s.sendall(b"GET /hea")  # a started request: its buffer exists
        time.sleep(0.5)
        st, _, _ = srv.req("GET", "/health")
        grown = rss_kb(srv.proc.pid) - base
        check(st == 200 and grown < 8 * 1024,
              "250 open connections cost %d KiB (buffers grow with the data)" % grown)
        for s in socks:
            s.close()
    finally:
        srv.stop()


def test_key_before_body():
    srv = Server('[server]\napi_key = "k"\n')
    try:
        s = connect(srv)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n")
        st, h, body = parse_response(read_all(s, 20))  # no body byte sent
        s.close()
        check(st == 401 and is_error_body(body) and h.get("www-authenticate") == "Bearer",
              "the API key is checked before the body is read (%d)" % st)
        check(srv.alive(), "alive after the keyless body")
    finally:
        srv.stop()


def test_origins():
    srv = Server('[server]\ncors_origins = "http://ok.example"\n')
    try:
        body = {"prompt": "In the beginning", "max_tokens": 2}
        st, h, out = srv.req("POST", "/v1/completions", body,
                             headers={"Origin": "http://evil.example"})
        check(st == 403 and is_error_body(out), "a cross-origin POST is refused (%d)" % st)
        st, h, _ = srv.req("GET", "/v1/models", headers={"Origin": "http://evil.example"})
        check(st == 200 and "Access-Control-Allow-Origin" not in h,
              "a cross-origin GET gets no CORS header")
        st, _, _ = srv.req("POST", "/v1/completions", body,
                           headers={"Origin": "http://127.0.0.1:%d" % srv.port})
        check(st == 200, "a same-origin POST is served")
        st, h, _ = srv.req("POST", "/v1/completions", body,
                           headers={"Origin": "http://ok.example"})
        check(st == 200 and h.get("Access-Control-Allow-Origin") == "http://ok.example",
              "a listed origin is served with Access-Control-Allow-Origin")
        st, h, _ = srv.req("OPTIONS", "/v1/completions", headers={
            "Origin": "http://ok.example", "Access-Control-Request-Method": "POST"})
        check(st == 200 and "POST" in h.get("Access-Control-Allow-Methods", ""),
              "a listed origin's preflight is answered")
        st, _, out = srv.req("OPTIONS", "/v1/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        check(st == 403 and is_error_body(out), "an unlisted origin's preflight is refused")
    finally:
        srv.stop()


def test_never_fits():
    """Head-of-line probe: a request that can never fit is refused at once with a reason, and
    a small request sent after it is served."""
    srv = Server("[server]\nrequest_timeout_s = 600\n[kvcache]\nmemory_mb = 1\n")
    try:
        body = {"prompt": "and " * 3000, "max_tokens": 2, "kv_policy": {"name": "full"}}
        st, _, out = srv.req("POST", "/v1/completions", body, timeout=120)
        msg = json.loads(out)["error"]["message"] if is_error_body(out) else ""
        check(st == 400 and ("never fit" in msg or "pool limit" in msg) and "memory_mb" in msg,
              "a request larger than the whole KV pool gets 400 at once (%d %s)" % (st, msg[:80]))
        st, _, _ = srv.req("POST", "/v1/completions", {"prompt": "In the", "max_tokens": 2})
        check(st == 200, "a small request after it is served")
    finally:
        srv.stop()


def test_per_client_limit():
    """max_client_concurrent = 1: while a client's long stream runs, its second request gets
    429; another client (another Authorization) is served; once the stream is gone, the
    first client is served again."""
    srv = Server("[server]\nmax_client_concurrent = 1\n")
    try:
        body = json.dumps({"prompt": "In the beginning", "max_tokens": 3000, "temperature": 0,
                           "stream": True}).encode()
        a = connect(srv)
        a.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer one\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        first = a.recv(4096)  # the stream has started: the request is in flight
        check(b" 200 " in first.split(b"\r\n")[0], "the long stream started")
        small = {"prompt": "In the", "max_tokens": 2}
        st, _, out = srv.req("POST", "/v1/completions", small,
                             headers={"Authorization": "Bearer one"})
        check(st == 429 and is_error_body(out) and b"max_client_concurrent" in out,
              "a second request of the same client gets 429 (%d)" % st)
        st, _, _ = srv.req("POST", "/v1/completions", small,
                           headers={"Authorization": "Bearer two"})
        check(st == 200, "another client is served (%d)" % st)
        a.close()
        for _ in range(100):  # the server notices the disconnect on its next read
            st, _, _ = srv.req("POST", "/v1/completions", small,
                               headers={"Authorization": "Bearer one"})
            if st == 200:
                break
            time.sleep(0.05)
        check(st == 200, "the client is served again once its stream is gone (%d)" % st)
    finally:
        srv.stop()


def main():
    srv = Server(LIMITS)
    try:
        test_connection_cap(srv)
        test_slowloris(srv)
        test_stalled_body(srv)
        test_idle_keepalive(srv)
        test_buffered_cap(srv)
        check(srv.proc.poll() is None, "the server survived the limits")
    finally:
        srv.stop()
    test_idle_connections_cheap()
    test_key_before_body()
    test_origins()
    test_never_fits()
    test_per_client_limit()
    finish()


if __name__ == "__main__":
    main()
