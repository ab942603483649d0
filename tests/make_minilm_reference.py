#!/usr/bin/env python3
"""Reference sentence embeddings for the bundled all-MiniLM-L6-v2 (int8) model.

Computed independently of Ganglion: HF `tokenizers` for the token ids, `onnxruntime` (CPU) for
the transformer, numpy for the pooling. The Rust tests (crates/ganglion-runtime/tests) and the
gateway's client test (tests/openai_embeddings.py) compare against this.

The recipe is sentence-transformers' for this model:
  * tokenize with the BERT uncased WordPiece tokenizer, no padding, truncation to 256 tokens in
    total ([CLS] + up to 254 + [SEP]); 256 is sentence-transformers' max_seq_length for
    all-MiniLM-L6-v2. The bundled tokenizer.json says truncate to 128 and pad to 128: both are
    overridden here, as the gateway does;
  * one sequence per run (batch 1), attention_mask all ones, token_type_ids all zeros;
  * mean-pool last_hidden_state over the attention mask (sum / max(count, 1e-9));
  * L2-normalise (x / max(|x|, 1e-12)).
Pooling is done in float64 from onnxruntime's float32 output; the result is stored as float32
values rounded to 7 significant digits.

Regenerate the fixture (from the repository root):
  PY="$(scripts/py-env)"
  "$PY" tests/make_minilm_reference.py \
      --onnx crates/ganglion-runtime/assets/minilm_int8.onnx \
      --tokenizer crates/ganglion-runtime/assets/minilm_tokenizer.json \
      --out crates/ganglion-runtime/tests/fixtures/minilm_reference.json
The output is deterministic for fixed package versions (they are recorded in the file).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys

import numpy as np

MAX_TOKENS = 256
DIM = 384

# A paragraph well over 256 WordPiece tokens (about 330), so that the truncation is exercised.
LONG_TEXT = (
    "Ganglion is a decentralized inference network: robots, phones and small servers offer the "
    "models they can run, and anyone who needs an answer sends a request to whichever peer is "
    "close, cheap and trusted enough. A warehouse robot that must decide within a few "
    "milliseconds whether the object in its gripper is a red cup or a red mug cannot wait for a "
    "data centre on another continent, so the network measures the round trip to each provider, "
    "keeps a warm standby, and moves the session when a link degrades. Payments are settled in "
    "small increments, so that a provider who stops answering loses only the last few cents, and "
    "a client who stops paying loses only the next frame. The same protocol carries camera "
    "frames for face and hand detection, sentence embeddings for search and retrieval, and "
    "whatever other models the operators choose to publish. Every model is identified by the "
    "hash of its weights, which means that two providers serving the same file are "
    "interchangeable, and that a client can check a random sample of answers against a second "
    "provider without trusting either of them. Embeddings are a good first workload: they are "
    "small, deterministic, cheap to verify, and useful to almost every application that deals "
    "with text, from semantic search over support tickets to clustering of robot logs. This "
    "sentence, and the ones after it, exist only to push the paragraph past the two hundred and "
    "fifty six token limit that sentence-transformers applies to this model, so that whatever "
    "follows here is cut off by the tokenizer and never reaches the transformer at all. If the "
    "gateway forgot to truncate, or truncated at one hundred and twenty eight tokens as the "
    "bundled tokenizer file suggests, the embedding of this paragraph would differ from the "
    "reference, and the test would say so. Zebras, volcanoes, and accordions are mentioned here "
    "only after the cut, as a marker that nobody should ever see in the pooled vector."
)

# Varied strings for the fixture: plain English, accents, CJK, punctuation and emoji (the emoji
# become [UNK]), numbers, a one-letter word, and the long paragraph above.
CASES = [
    "a robot picks up a red cup",
    "the robot grabs a red mug",
    "stock markets fell sharply today",
    "Café Noël à Zürich: naïve façades, crème brûlée and Ångström-level señor jalapeño.",
    "机器人拿起了一个红色的杯子。東京タワーは赤い。로봇이 컵을 집는다",
    "Wait... what?! 🤖🔥 It's 3:45 p.m. — (really) #1 @home, $5.00 & 100% \"quoted\" [x]",
    "The H200 has 141 GB of HBM3e memory; 16 CPU cores, 128 GiB RAM.",
    "a",
    LONG_TEXT,
]


def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.enable_truncation(MAX_TOKENS)
    tok.no_padding()
    return tok


def load_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # Deterministic, single-threaded: the reference must not depend on the machine's core count.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def token_ids(tok, text: str) -> list[int]:
    return list(tok.encode(text).ids)


def embed_ids(session, ids: list[int]) -> np.ndarray:
    """Sentence embedding (float32, unit length) of one token-id sequence."""
    x = np.asarray([ids], dtype=np.int64)
    mask = np.ones_like(x)
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": x, "attention_mask": mask, "token_type_ids": np.zeros_like(x)},
    )
    assert hidden.shape == (1, len(ids), DIM), hidden.shape
    h = hidden[0].astype(np.float64)
    m = mask[0].astype(np.float64)[:, None]
    pooled = (h * m).sum(axis=0) / max(m.sum(), 1e-9)
    pooled /= max(np.linalg.norm(pooled), 1e-12)
    return pooled.astype(np.float32)


class Reference:
    """Tokenizer + onnxruntime session, for callers that compare against the reference."""

    def __init__(self, onnx_path: str, tokenizer_path: str):
        self.tok = load_tokenizer(tokenizer_path)
        self.session = load_session(onnx_path)

    def ids(self, text: str) -> list[int]:
        return token_ids(self.tok, text)

    def embed(self, text: str) -> np.ndarray:
        return embed_ids(self.session, self.ids(text))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def g7(x: float) -> str:
    """A float32 value as JSON text with 7 significant digits."""
    s = format(float(x), ".7g")
    return "0" if s == "-0" else s


def render(doc: dict, cases: list[dict]) -> str:
    """JSON with one line per array, so the file stays small and diffs stay readable."""
    head = json.dumps(doc, indent=2, ensure_ascii=False)
    assert head.endswith("\n}")
    parts = []
    for c in cases:
        parts.append(
            "    {\n"
            f"      \"text\": {json.dumps(c['text'], ensure_ascii=False)},\n"
            f"      \"n_tokens\": {len(c['ids'])},\n"
            f"      \"truncated\": {json.dumps(c['truncated'])},\n"
            f"      \"ids\": [{', '.join(str(i) for i in c['ids'])}],\n"
            f"      \"embedding\": [{', '.join(g7(v) for v in c['embedding'])}]\n"
            "    }"
        )
    return head[:-2] + ",\n  \"cases\": [\n" + ",\n".join(parts) + "\n  ]\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", default="crates/ganglion-runtime/assets/minilm_int8.onnx")
    ap.add_argument("--tokenizer", default="crates/ganglion-runtime/assets/minilm_tokenizer.json")
    ap.add_argument("--out", default="crates/ganglion-runtime/tests/fixtures/minilm_reference.json")
    args = ap.parse_args()

    ref = Reference(args.onnx, args.tokenizer)
    cases = []
    for text in CASES:
        full = len(ref.tok.encode(text, add_special_tokens=True).overflowing) > 0
        ids = ref.ids(text)
        assert 2 <= len(ids) <= MAX_TOKENS and ids[0] == 101 and ids[-1] == 102, ids
        emb = ref.embed(text)
        cases.append({"text": text, "ids": ids, "truncated": full, "embedding": emb})
        print(f"{len(ids):4d} tokens{' (truncated)' if full else ''}  |e|={np.linalg.norm(emb):.7f}  "
              f"{text[:60]!r}", file=sys.stderr)

    v = importlib.metadata.version
    doc = {
        "about": "Reference sentence embeddings of all-MiniLM-L6-v2 (int8 ONNX), made by "
                 "tests/make_minilm_reference.py: HF tokenizers (truncation to 256 tokens in total, "
                 "no padding), onnxruntime CPU, batch 1, mean-pool over the attention mask, "
                 "L2-normalise; values rounded to 7 significant digits.",
        "onnx": os.path.basename(args.onnx),
        "onnx_sha256": sha256(args.onnx),
        "tokenizer": os.path.basename(args.tokenizer),
        "tokenizer_sha256": sha256(args.tokenizer),
        "max_tokens": MAX_TOKENS,
        "dim": DIM,
        "onnxruntime": v("onnxruntime"),
        "tokenizers": v("tokenizers"),
        "numpy": v("numpy"),
    }
    text = render(doc, cases)
    json.loads(text)  # well-formed
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: {len(cases)} cases, {len(text.encode())} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
