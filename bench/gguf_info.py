#!/usr/bin/env python3
"""gguf_info.py - a GGUF file's metadata and the bytes decode reads per token, in plain Python.

No numpy (the machines have none): it parses the header with struct. Used by bench/compare.sh
for the roofline (weights + K/V bytes read per decoded token) and by the e2e tests for a
model's special token ids, independently of kvserve's own reader.

  gguf_info.py FILE KEY               print one metadata value
  gguf_info.py FILE --bytes DEPTH     bytes read to decode one token after DEPTH tokens:
                                      every weight once (token_embd only as a tied output,
                                      otherwise one row) plus K and V in f16 of DEPTH tokens
"""
import struct
import sys

# ggml type -> (elements per block, bytes per block)
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
         14: (256, 210), 15: (256, 292), 20: (32, 18), 23: (256, 136), 30: (1, 2)}
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
          12: "d"}


class Reader:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.b = f.read(64 << 20)  # metadata and tensor infos sit at the front
        self.o = 0
        if self.take("4s") != b"GGUF":
            raise ValueError("%s: not a GGUF file" % path)
        self.version = self.take("I")
        n_tensors, n_kv = self.take("Q"), self.take("Q")
        self.meta = {}
        for _ in range(n_kv):
            k = self.string()
            self.meta[k] = self.value(self.take("I"))
        self.tensors = []
        for _ in range(n_tensors):
            name = self.string()
            dims = [self.take("Q") for _ in range(self.take("I"))]
            t = self.take("I")
            self.take("Q")
            n = 1
            for d in dims:
                n *= d
            per, size = BLOCK.get(t, (0, 0))
            self.tensors.append((name, dims, t, n // per * size if per else -1))

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.o)
        self.o += struct.calcsize("<" + fmt)
        return v[0]

    def string(self):
        n = self.take("Q")
        s = self.b[self.o:self.o + n].decode("utf-8", "replace")
        self.o += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("I"), self.take("Q")
            return [self.value(et) for _ in range(n)]
        return self.take(SCALAR[t])


def bytes_per_token(r, depth):
    arch = r.meta["general.architecture"]
    names = {t[0] for t in r.tensors}
    w = 0
    for name, dims, _, size in r.tensors:
        if name == "token_embd.weight" and "output.weight" in names:
            size = size // dims[-1]  # the input embedding reads one row per token
        w += size
    n_head = r.meta[arch + ".attention.head_count"]
    hd = r.meta.get(arch + ".attention.key_length", r.meta[arch + ".embedding_length"] // n_head)
    n_kv = r.meta.get(arch + ".attention.head_count_kv", n_head)
    return w + 2 * 2 * r.meta[arch + ".block_count"] * n_kv * hd * depth


def main():
    if len(sys.argv) != 3 and not (len(sys.argv) == 4 and sys.argv[2] == "--bytes"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    r = Reader(sys.argv[1])
    if sys.argv[2] == "--bytes":
        print(bytes_per_token(r, int(sys.argv[3])))
    else:
        print(r.meta[sys.argv[2]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
