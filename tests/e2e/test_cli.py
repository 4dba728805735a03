#!/usr/bin/env python3
"""test_cli.py - every program's command line, from outside.

Runs kvserve (and each subcommand) and every bench program given on the command line with
--help: exit status 0 and a usage line on stdout generated from the option table. Then bad
flags: an unknown flag, a value of the wrong type, a value out of range and a missing
required option each exit non-zero (2) with a message naming the flag and what it wants.
"""
import os
import subprocess
import sys

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def main():
    kvserve = os.environ["KVSERVE_BIN"]
    benches = sys.argv[1:]
    check(len(benches) >= 8, "meson passes the bench programs (%d)" % len(benches))
    progs = [[kvserve]] + [[kvserve, c] for c in ("serve", "run", "perplexity", "tokenize")]
    progs += [[b] for b in benches]
    for argv in progs:
        name = " ".join(os.path.basename(a) for a in argv)
        for h in ("--help", "-h"):
            rc, out, err = run(argv + [h])
            check(rc == 0 and out.startswith("usage: "), "%s %s: exit 0 and usage (%d, %r)"
                  % (name, h, rc, (out + err)[:80]))
        if len(argv) > 1 or argv[0] != kvserve:
            rc, out, err = run(argv + ["--bogus-flag"])
            check(rc == 2 and "unknown option '--bogus-flag'" in err,
                  "%s: unknown flag refused (%d, %r)" % (name, rc, err[:120]))
            check("--help" in (out + err) or "usage" in (out + err), "%s: points at --help" % name)

    rc, out, _ = run([kvserve, "run", "--help"])
    check("--n-predict N, -n" in out and "(default 128)" in out and "--kv-policy SPEC" in out,
          "run --help lists the options with defaults")
    bad = [
        ([kvserve, "run", "-m", "x", "-p", "y", "--n-predict", "x"],
         "kvserve run: --n-predict: expected an integer in [0, 16777216], got 'x'"),
        ([kvserve, "run", "-m", "x", "-p", "y", "--temp", "-1"],
         "kvserve run: --temp: expected a number in [0, 100], got '-1'"),
        ([kvserve, "run", "-m", "x", "-p", "y", "--kv-dtype", "q4"],
         "kvserve run: --kv-dtype: expected one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, kivi4, kivi2, got 'q4'"),
        ([kvserve, "run", "-m", "x", "-p", "y", "--kv-policy", "nope"],
         "kvserve run: --kv-policy: expected NAME or NAME:key=value,... (unknown KV policy 'nope')"),
        ([kvserve, "run", "-m", "x", "--n-predict"],
         "kvserve run: --n-predict: expected an integer in [0, 16777216], got nothing"),
        ([kvserve, "run", "--prompt", "y"], "kvserve run: --model is required"),
        ([kvserve, "serve", "--port", "70000"],
         "kvserve serve: --port: expected an integer in [0, 65535], got '70000'"),
        ([kvserve, "perplexity", "-m", "x", "-f", "y", "--attn", "slow"],
         "kvserve perplexity: --attn: expected one of exact, flash, fast, got 'slow'"),
        ([kvserve, "tokenize"], "kvserve tokenize: --model is required"),
        ([kvserve, "nosuch"], "kvserve: unknown command 'nosuch'"),
    ]
    by_name = {os.path.basename(b): b for b in benches}
    if "bench_model" in by_name:
        bad.append(([by_name["bench_model"], "--model", "m", "--threads", "0"],
                    "bench_model: --threads: expected an integer in [1, 256], got '0'"))
    if "bench_load" in by_name:
        bad.append(([by_name["bench_load"], "127.0.0.1"], "bench_load: PORT is required"))
    for argv, msg in bad:
        rc, out, err = run(argv)
        check(rc == 2 and msg in err, "%s -> %r (%d, %r)" % (" ".join(argv[1:]), msg, rc, err[:160]))
    if FAILS:
        print("%d failures" % len(FAILS))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
