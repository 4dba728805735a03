#!/usr/bin/python3
"""gen_quant_fixtures.py - test fixtures for the tensor types (tests/unit/test_quant_types.c).

Writes into tests/data/quant/:
  blocks-<type>.bin   hand-made blocks: random bits with sane fp16 scales (every quant and
                      scale pattern), followed by gguf-py's numpy dequantisation of them as
                      little-endian float32 (the independent reference);
  rt-<ftype>.gguf     a tiny random llama model quantised by llama.cpp's llama-quantize to
                      each file type users download (mixed types and fallbacks included);
  rt.txt              per tensor of those files: type, element count, FNV-1a 64 of gguf-py's
                      dequantised float32 bytes and three sample values (as float32 bits).

Run from the repository root (needs Debian's python3-numpy; tests do not run this):
  PYTHONPATH=../shared/anchors/gguf-py /usr/bin/python3 scripts/gen_quant_fixtures.py \
      [--quantize ../shared/anchors/llama.cpp-b9749/bin/llama-quantize]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = "tests/data/quant"

# weight type -> byte offsets of its fp16 scales (set to sane values; the rest is random)
BLOCK_TYPES = {
    T.Q4_1: [(0, 1.0), (2, -0.6)],
    T.Q5_0: [(0, 1.0)],
    T.Q5_1: [(0, 1.0), (2, -0.6)],
    T.Q2_K: [(80, 1.0), (82, 0.7)],
    T.Q3_K: [(108, 1.0)],
    T.Q5_K: [(0, 1.0), (2, 0.7)],
    T.IQ4_NL: [(0, 1.0)],
    T.IQ4_XS: [(0, 1.0)],
}

# file types made with llama-quantize (each mixes types; rows of 96 force fallbacks)
FTYPES = ["Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_M", "Q5_K_S",
          "Q5_K_M", "IQ4_NL", "IQ4_XS"]


def blocks_fixture(rng, qtype, scales, n_blocks=6):
    blck, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for b in range(n_blocks):
        for off, mul in scales:
            d = np.float16(mul * 0.001 * (1 + rng.integers(0, 100)))
            raw[b, off:off + 2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    ref = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32)
    assert ref.size == n_blocks * blck
    name = qtype.name.lower()
    with open(os.path.join(OUT, f"blocks-{name}.bin"), "wb") as f:
        f.write(raw.tobytes())
        f.write(ref.astype("<f4").tobytes())


def write_tiny_llama(path, rng):
    """A llama with rows of 256 (K-quants) and 96 (ffn_down: not a multiple of 256), F32 weights."""
    n_embd, n_ff, n_head, n_vocab = 256, 96, 4, 96
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(0)
    # a minimal SentencePiece vocabulary so kvserve can load the file as a model
    toks = ["<unk>", "<s>", "</s>"] + ["\u2581" + chr(97 + i % 26) * (1 + i // 26)
                                       for i in range(n_vocab - 3)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(n_vocab - 3)])
    w.add_token_types([2, 3, 3] + [1] * (n_vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def t(name, *shape):  # gguf-py shapes are numpy order: (rows, row length)
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
        t(f"blk.0.{n}.weight", n_embd, n_embd)
    t("blk.0.ffn_gate.weight", n_ff, n_embd)
    t("blk.0.ffn_up.weight", n_ff, n_embd)
    t("blk.0.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fnv64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def roundtrip_fixtures(quantize):
    rng = np.random.default_rng(11)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "tiny-f32.gguf")
        write_tiny_llama(src, rng)
        for ft in FTYPES:
            out = os.path.join(OUT, f"rt-{ft.lower()}.gguf")
            subprocess.run([quantize, src, out, ft], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            r = gguf.GGUFReader(out)
            for t in r.tensors:
                vals = quants.dequantize(t.data, t.tensor_type).astype("<f4").reshape(-1)
                n = vals.size
                picks = [0, n // 2 + 7, n - 1]
                bits = " ".join(f"{i}:{vals[i:i + 1].view('<u4')[0]:08x}" for i in picks)
                lines.append(f"rt-{ft.lower()}.gguf {t.name} {int(t.tensor_type)} {n} "
                             f"{fnv64(vals.tobytes()):016x} {bits}")
    with open(os.path.join(OUT, "rt.txt"), "w") as f:
        f.write("# file tensor ggml-type n_elements fnv1a64(f32 LE) index:f32bits x3\n")
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantize", default="../shared/anchors/llama.cpp-b9749/bin/llama-quantize")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    for qtype, scales in BLOCK_TYPES.items():
        blocks_fixture(rng, qtype, scales)
    roundtrip_fixtures(args.quantize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
