#!/usr/bin/env python3
"""gen_persist_corpus.py - writes tests/fuzz/corpus/persist/*.kvpc, the seed inputs of the
prefix-cache file fuzz target (format: include/kvserve/persist.h). The key matches
fuzz_persist.c: model hash 0x6b767365727665, K f16, V q8_0, 1 layer, 2 KV heads, head dim
32, 8-token blocks (block bytes 8 * (64 + 34) = 784)."""
import os
import random
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fuzz", "corpus", "persist")
BT, NT, BB = 8, 2, 8 * (64 + 34)


def fnv1a(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def image(entries, model=0x6b767365727665):
    hdr = b"KVSPFX01" + struct.pack("<II", 1, 0) + struct.pack("<Q", model)
    hdr += struct.pack("<8I", 1, 8, 1, 2, 32, BT, BB, 0) + struct.pack("<Q", len(entries))
    body = b""
    rnd = random.Random(7)
    for parent, toks in entries:
        body += struct.pack("<ii", parent, 0) + struct.pack("<%di" % BT, *toks)
        body += bytes(rnd.getrandbits(8) & 0x3f for _ in range(NT * BB))  # finite f16 / q8
    data = hdr + body
    return data + struct.pack("<Q", fnv1a(data))


def main():
    os.makedirs(OUT, exist_ok=True)
    two = image([(-1, range(1, 9)), (0, range(9, 17))])
    files = {"two.kvpc": two, "truncated.kvpc": two[:-300],
             "bad-parent.kvpc": image([(-1, range(8)), (5, range(8))]),
             "other-model.kvpc": image([(-1, range(8))], model=1),
             "empty.kvpc": image([])}
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
