#!/usr/bin/env python3
"""policy_names.py - a policy's name appears only in its own file.

Usage: policy_names.py SOURCE_ROOT NAME=FILE...   (meson passes kvcache's policy list)

Adding a policy must touch only its file, kvcache/meson.build and a test, so no other C
source may know a policy by name. For every registered policy NAME this scans the C sources
(.c, .h) of the program - everything but tests/ and bench/ (drivers that select policies by
name, as configs and docs do) - with comments and #include lines removed, and fails on any
identifier that is exactly NAME, or any string literal that is NAME, starts with "NAME:" (a
policy spec) or contains "kvcache.NAME" (a TOML key), outside the policy's own file and the
private header beside it with the same stem. (English words in messages, such as "the pool
is full", are not names.)
"""
import os
import re
import sys

SKIP_DIRS = {"tests", "bench", "build", ".git", "docs", "configs"}
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|[A-Za-z_][A-Za-z0-9_]*')


COMMENT_OR_STRING = re.compile(
    r'//[^\n]*|/\*.*?\*/|("(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')', re.S)


def strip_comments(text):
    """Comments become blanks (keeping their newlines); strings stay."""
    def keep(m):
        return m.group(1) if m.group(1) is not None else "\n" * m.group(0).count("\n") or " "
    return COMMENT_OR_STRING.sub(keep, text)


def sources(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs
                   if x not in SKIP_DIRS and not x.startswith(("build", "."))]
        for f in files:
            if f.endswith((".c", ".h", ".c.in")):
                yield os.path.join(d, f)


def main():
    root = os.path.realpath(sys.argv[1])
    own = {}
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        path = os.path.realpath(path)
        stem = os.path.splitext(path)[0]
        own[name] = {path, stem + ".h"}
    if len(own) < 2:
        print("FAIL: no policy list given")
        return 1
    word = {n: re.compile(r'^["\'](%s(["\']$|:)|.*kvcache\.%s(?![A-Za-z0-9_]))'
                          % (re.escape(n), re.escape(n))) for n in own}
    bad = 0
    scanned = 0
    for path in sorted(sources(root)):
        scanned += 1
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8", errors="replace") as fh:
            code = strip_comments(fh.read())
        code = re.sub(r"(?m)^[ \t]*#[ \t]*include[^\n]*", "", code)
        mine = {n for n, files in own.items() if os.path.realpath(path) in files}
        for m in TOKEN.finditer(code):
            tok = m.group(0)
            is_str = tok[0] in "\"'"
            if not is_str and tok not in own:
                continue
            for name in own:
                if name in mine:
                    continue
                hit = word[name].search(tok) if is_str else tok == name
                if hit:
                    line = code.count("\n", 0, m.start()) + 1
                    print("FAIL %s:%d: policy name %r in %s" % (rel, line, name, tok[:60]))
                    bad += 1
    print("%d files scanned, %d policies, %d violations" % (scanned, len(own), bad))
    return 1 if bad or scanned < 20 else 0


if __name__ == "__main__":
    sys.exit(main())
