"""e2e_util.py - shared helpers of the end-to-end tests: a `kvserve serve` process on a free
port with its own temp dir and config, plain HTTP requests, raw-socket exchanges, and a
check() that records failures so that every test prints all of them and exits non-zero.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("KVSERVE_BIN", "build/kvserve")
SHARED = os.environ.get("KVSERVE_SHARED", "../shared")
MODEL = os.path.join(SHARED, "models", "kjv-tiny", "kjv-tiny-f16.gguf")
FAILS = []
_LOCK = threading.Lock()


def check(cond, what):
    with _LOCK:
        if not cond:
            FAILS.append(what)
            print("FAIL:", what, flush=True)
        else:
            print("ok:", what, flush=True)


def finish():
    print("%d failure(s)" % len(FAILS), flush=True)
    sys.exit(1 if FAILS else 0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """kvserve serve with [server] port + extra TOML; a private temp dir removed on stop.
    One compute thread by default: meson runs the tests side by side on few cores, where a
    second thread per server mostly spins; the soak keeps two to cover the pool."""

    def __init__(self, extra_toml="", env=None, model=None, threads=1):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="kvserve-e2e-")
        self.cfg = os.path.join(self.dir, "c.toml")
        toml = extra_toml
        if "[server]" in toml:
            toml = toml.replace("[server]", "[server]\nport = %d" % self.port, 1)
        else:
            toml = "[server]\nport = %d\n" % self.port + toml
        with open(self.cfg, "w") as f:
            f.write(toml)
        self.log = open(os.path.join(self.dir, "log"), "w+")
        e = dict(os.environ)
        if "ASAN_OPTIONS" in e and "quarantine_size_mb" not in e["ASAN_OPTIONS"]:
            # AddressSanitizer keeps freed memory in a quarantine (256 MiB by default) that
            # grows RSS with every allocation: cap it so that the tests that watch RSS measure
            # the server, not the tool
            e["ASAN_OPTIONS"] += ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
        e.update(env or {})
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.cfg, "--model", model or MODEL,
                                      "--threads", str(threads)], stderr=self.log, env=e)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                st, _, _ = self.req("GET", "/health")
                if st == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError("server did not become healthy: " + self.log.read()[-2000:])

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def req(self, method, path, body=None, headers=None, raw=None, timeout=60):
        c = self.conn(timeout)
        h = dict(headers or {})
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, dict(r.getheaders()), out

    def raw(self, data, timeout=10, shut=True):
        """Sends bytes on a fresh connection and returns all bytes until the server closes
        (or the timeout)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        out = b""
        try:
            try:
                s.sendall(data)
                if shut:
                    s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before taking everything
            while True:
                try:
                    b = s.recv(65536)
                except (socket.timeout, OSError):
                    break
                if not b:
                    break
                out += b
            return out
        finally:
            s.close()

    def alive(self):
        try:
            st, _, _ = self.req("GET", "/health", timeout=10)
            return st == 200 and self.proc.poll() is None
        except OSError:
            return False

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def parse_response(raw):
    """(status, headers dict lower-case, body bytes) of the first response in raw."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", len(body)))
    return status, hdrs, body[:n]


def is_error_body(body, status=None):
    try:
        j = json.loads(body)
    except ValueError:
        return False
    e = j.get("error") if isinstance(j, dict) else None
    return isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"] != "" \
        and isinstance(e.get("type"), str)
