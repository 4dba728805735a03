#!/usr/bin/env python3
"""bench_ui_feed.py - what one live-view viewer costs decode speed.

Usage: bench/bench_ui_feed.py [--bin build/kvserve] [--model M] [--pairs 15]
                              [--tokens 1000] [--interval-ms 100] [--policy full] [--threads 2]

Starts `kvserve serve` on a free port, then runs pairs of identical greedy streaming
completions, interleaved: one without a viewer, one with a viewer following it through
GET /v1/kv/stream (tag, so the viewer sees it from its first step) at the given refresh
interval. Decode tokens/s is measured by the client from the first to the last streamed
token. Prints each pair, the medians, and the cost: 1 - the median over pairs of
with / without (pairs run back to back, so the ratio cancels drift in machine load).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import test_ui  # noqa: E402  (its Server and Feed helpers)


def decode_tps(srv, prompt, n, policy, tag):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=300)
    body = json.dumps(dict(prompt=prompt, max_tokens=n, temperature=0, stream=True,
                           kv_policy=policy)).encode()
    hdr = "X-KV-View: %s\r\n" % tag if tag else ""
    s.sendall(("POST /v1/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
               "%sContent-Length: %d\r\n\r\n" % (hdr, len(body))).encode() + body)
    buf, times = b"", []
    while True:
        b = s.recv(65536)
        if not b:
            break
        now = time.perf_counter()
        buf += b
        while b"\n\n" in buf:
            ev, _, buf = buf.partition(b"\n\n")
            if b'"text"' in ev and b'"finish_reason":null' in ev:
                times.append(now)
    s.close()
    return (len(times) - 1) / (times[-1] - times[0]), len(times)


def viewer(srv, tag, interval, frames):
    f = test_ui.Feed(srv, "tag=%s&interval_ms=%d" % (tag, interval))
    while (e := f.event()) is not None:
        frames.append(e)
    f.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "kvserve"))
    ap.add_argument("--model", default=os.path.join(HERE, "..", "models", "kjv-tiny-q8_0.gguf"))
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--policy", default="full")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    test_ui.BIN, test_ui.MODEL = a.bin, a.model
    srv = test_ui.Server(threads=a.threads)
    prompt = "And the LORD said unto Moses"
    policy = {"name": a.policy}
    base, watched, n_frames = [], [], []
    try:
        decode_tps(srv, prompt, 64, policy, None)  # warm-up
        for i in range(a.pairs):
            for with_viewer in ((False, True) if i % 2 == 0 else (True, False)):
                tag = "bench%04d%s" % (i, "v" if with_viewer else "n") if with_viewer else None
                frames = []
                t = None
                if with_viewer:
                    t = threading.Thread(target=viewer, args=(srv, tag, a.interval_ms, frames))
                    t.start()
                    time.sleep(0.05)  # the viewer is attached before the request starts
                tps, n = decode_tps(srv, prompt, a.tokens, policy, tag)
                if t:
                    t.join()
                    watched.append(tps)
                    n_frames.append(len(frames))
                else:
                    base.append(tps)
            print("pair %2d: without %.0f tokens/s, with viewer %.0f tokens/s (%d frames, %d tokens)"
                  % (i, base[-1], watched[-1], n_frames[-1], n), flush=True)
    finally:
        srv.stop()
    mb, mw = statistics.median(base), statistics.median(watched)
    ratio = statistics.median(w / b for w, b in zip(watched, base))
    print("median decode tokens/s: without %.0f, with one viewer %.0f (interval %d ms, %.1f "
          "frames per run); median ratio with/without over %d pairs %.3f: cost %.1f%%"
          % (mb, mw, a.interval_ms, statistics.mean(n_frames), len(base), ratio,
             100 * (1 - ratio)))


if __name__ == "__main__":
    main()
