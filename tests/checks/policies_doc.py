#!/usr/bin/env python3
"""policies_doc.py - docs/policies.md is exactly what the descriptors generate.

Usage: policies_doc.py KVSERVE_BIN DOCS/policies.md

Runs `kvserve policies --markdown` and compares it with the committed file; on a difference
prints a unified diff and how to regenerate it.
"""
import difflib
import subprocess
import sys


def main():
    binary, doc = sys.argv[1], sys.argv[2]
    out = subprocess.run([binary, "policies", "--markdown"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    with open(doc, encoding="utf-8") as fh:
        committed = fh.read()
    if "## `full`" not in out or "| key | type |" not in out:
        print("FAIL: the generated table is missing its sections")
        return 1
    if out == committed:
        print("ok   %s matches `kvserve policies --markdown` (%d lines)" % (doc, out.count("\n")))
        return 0
    sys.stdout.writelines(difflib.unified_diff(committed.splitlines(True), out.splitlines(True),
                                               doc, "generated"))
    print("FAIL: regenerate with: build/kvserve policies --markdown > docs/policies.md")
    return 1


if __name__ == "__main__":
    sys.exit(main())
