#!/usr/bin/env python3
"""The gateway's OpenAI-compatible embeddings API, through the official `openai` client, unchanged.

  PY="$(scripts/py-env)"
  "$PY" tests/openai_embeddings.py --base-url http://127.0.0.1:PORT/v1 --token-file FILE \
      --model all-minilm-l6-v2 \
      --onnx crates/ganglion-runtime/assets/minilm_int8.onnx \
      --tokenizer crates/ganglion-runtime/assets/minilm_tokenizer.json

Each check prints one line with its figures. The first failure prints its reason and the script
exits 1; otherwise the last line is 'N passed, 0 failed'.

Every vector the gateway returns is compared with a reference computed here, independently of
Ganglion, with HF `tokenizers` + `onnxruntime` (CPU) + numpy (tests/make_minilm_reference.py).
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
import time

import numpy as np
import openai
from openai import OpenAI

sys.dont_write_bytecode = True  # no __pycache__ left in tests/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_minilm_reference import DIM, LONG_TEXT, MAX_TOKENS, Reference  # noqa: E402

# Tolerance against the onnxruntime reference. The int8 model is weight-only quantized: each
# weight is Cast(int8) * scale, then an f32 MatMul (no DynamicQuantizeLinear/MatMulInteger), so
# tract and onnxruntime differ only in the order of f32 accumulation, not in any int8 rounding.
# Measured with onnxruntime alone across graph-optimization levels and thread counts: max abs
# difference 1.2e-7, cosine 1.000000000; batch-1 against a zero-padded batch: 8.5e-9. The bounds
# below are four orders of magnitude looser than that, and still tight enough to catch a wrong
# truncation, a missing normalisation, pooling over [CLS] only, or a tokenizer mismatch (each of
# those moves the cosine well below 0.999).
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-3

SINGLE = "a robot picks up a red cup"
SIMILAR = "the robot grabs a red mug"
UNRELATED = "stock markets fell sharply today"
BATCH = [
    SINGLE,
    "Café Noël à Zürich: naïve façades, crème brûlée and Ångström-level señor jalapeño.",
    "Wait... what?! 🤖🔥 It's 3:45 p.m. — (really) #1 @home, $5.00 & 100% \"quoted\" [x]",
    "机器人拿起了一个红色的杯子。東京タワーは赤い。",
    LONG_TEXT,  # about 400 tokens: must be truncated to 256
    "ok",
    SIMILAR,
    UNRELATED,
]


class Fail(Exception):
    pass


def need(cond: bool, reason: str) -> None:
    if not cond:
        raise Fail(reason)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        with open(args.token_file, encoding="utf-8") as f:
            self.token = f.read().strip()
        need(bool(self.token), f"token file {args.token_file} is empty")
        self.model = args.model
        # max_retries=0 throughout: a retried 5xx or 429 must not hide a failure.
        self.client = OpenAI(base_url=args.base_url, api_key=self.token, max_retries=0,
                             timeout=args.timeout)
        self.ref = Reference(args.onnx, args.tokenizer)
        self.vectors: dict[str, np.ndarray] = {}
        self.passed = 0

    # --- helpers -----------------------------------------------------------------------------

    def compare(self, texts: list[str], vectors: list[np.ndarray]) -> str:
        worst_abs, worst_cos, worst_at = 0.0, 1.0, None
        for text, v in zip(texts, vectors):
            r = self.ref.embed(text)
            d = float(np.max(np.abs(v - r)))
            c = cos(v, r)
            if c < worst_cos:
                worst_at = text
            worst_abs, worst_cos = max(worst_abs, d), min(worst_cos, c)
            need(c >= MIN_COSINE and d <= MAX_ABS_DIFF,
                 f"vector for {text[:50]!r} differs from the onnxruntime reference: cosine {c:.6f} "
                 f"(need >= {MIN_COSINE}), max abs diff {d:.2e} (need <= {MAX_ABS_DIFF:g}); "
                 f"reference has {len(self.ref.ids(text))} tokens")
        return (f"vs reference: max abs diff {worst_abs:.2e} (<= {MAX_ABS_DIFF:g}), "
                f"min cosine {worst_cos:.7f} (>= {MIN_COSINE})")

    def check_raw_shape(self, raw: dict, n: int, kind: str) -> None:
        """The JSON body, key for key, as OpenAI's API sends it."""
        need(isinstance(raw, dict), f"body is not a JSON object: {str(raw)[:200]}")
        need(set(raw) == {"object", "data", "model", "usage"},
             f"top-level keys {sorted(raw)}, OpenAI sends exactly ['data', 'model', 'object', 'usage']")
        need(raw["object"] == "list", f"object is {raw['object']!r}, not 'list'")
        need(raw["model"] == self.model, f"model is {raw['model']!r}, not {self.model!r}")
        u = raw["usage"]
        need(isinstance(u, dict) and set(u) == {"prompt_tokens", "total_tokens"},
             f"usage is {u!r}, OpenAI sends exactly {{prompt_tokens, total_tokens}}")
        for k in ("prompt_tokens", "total_tokens"):
            need(type(u[k]) is int and u[k] > 0, f"usage.{k} is {u[k]!r}, not an int > 0")
        need(isinstance(raw["data"], list) and len(raw["data"]) == n,
             f"data has {len(raw['data']) if isinstance(raw['data'], list) else raw['data']!r} items, not {n}")
        for i, d in enumerate(raw["data"]):
            need(isinstance(d, dict) and set(d) == {"object", "index", "embedding"},
                 f"data[{i}] keys {sorted(d) if isinstance(d, dict) else d!r}, OpenAI sends exactly "
                 "['embedding', 'index', 'object']")
            need(d["object"] == "embedding", f"data[{i}].object is {d['object']!r}, not 'embedding'")
            need(type(d["index"]) is int and d["index"] == i, f"data[{i}].index is {d['index']!r}, not {i}")
            e = d["embedding"]
            if kind == "base64":
                need(isinstance(e, str), f"data[{i}].embedding is {type(e).__name__}, not a base64 string")
                try:
                    b = base64.b64decode(e, validate=True)
                except Exception as err:  # noqa: BLE001
                    raise Fail(f"data[{i}].embedding is not valid base64: {err}")
                need(len(b) == 4 * DIM, f"data[{i}].embedding decodes to {len(b)} bytes, not {4 * DIM} "
                     f"({DIM} little-endian float32)")
            else:
                need(isinstance(e, list) and len(e) == DIM, f"data[{i}].embedding is not a list of {DIM}")
                need(all(type(x) in (float, int) for x in e), f"data[{i}].embedding has non-numbers")

    def create(self, kind: str, **kw):
        """embeddings.create through the client; returns (parsed response, raw JSON)."""
        raw = self.client.embeddings.with_raw_response.create(model=self.model, **kw)
        body = raw.http_response.json()
        ctype = raw.http_response.headers.get("content-type", "")
        need(ctype.startswith("application/json"), f"content-type is {ctype!r}, not application/json")
        n = len(kw["input"]) if isinstance(kw["input"], list) else 1
        self.check_raw_shape(body, n, kind)
        return raw.parse(), body

    def vectors_of(self, resp, explicit_base64: bool = False) -> list[np.ndarray]:
        out = []
        for i, d in enumerate(resp.data):
            need(d.index == i and d.object == "embedding", f"parsed data[{i}] is {d.index}, {d.object}")
            if explicit_base64:
                need(isinstance(d.embedding, str), "explicit base64 should reach the caller as a string")
                v = np.frombuffer(base64.b64decode(d.embedding), dtype="<f4").astype(np.float64)
            else:
                need(isinstance(d.embedding, list) and len(d.embedding) == DIM,
                     f"parsed data[{i}].embedding is not {DIM} floats")
                v = np.asarray(d.embedding, dtype=np.float64)
            n = float(np.linalg.norm(v)) if np.all(np.isfinite(v)) else float("nan")
            if not abs(n - 1.0) < 1e-3 and isinstance(d.embedding, list):
                swapped = np.asarray(d.embedding, dtype="<f4").byteswap()
                if np.all(np.isfinite(swapped)) and abs(float(np.linalg.norm(swapped)) - 1.0) < 1e-3:
                    raise Fail(f"data[{i}] decodes to garbage but byte-swapped it is a unit vector: "
                               "the base64 must hold little-endian float32")
            need(bool(np.all(np.isfinite(v))), f"data[{i}] has non-finite values")
            out.append(v)
        return out

    def expect_error(self, call, cls, status_ok, what: str, message_has: str = "") -> str:
        try:
            call()
        except cls as e:
            need(status_ok(e.status_code), f"{what}: got HTTP {e.status_code} ({type(e).__name__}): {e.message}")
            body = e.body
            need(isinstance(body, dict) and {"message", "type", "param", "code"} <= set(body),
                 f"{what}: error body is {str(body)[:200]!r}, not OpenAI's "
                 '{"error": {"message", "type", "param", "code"}}')
            need(isinstance(body["message"], str) and body["message"], f"{what}: empty error message")
            need(message_has.lower() in body["message"].lower(),
                 f"{what}: message {body['message']!r} does not say {message_has!r}")
            return f"{type(e).__name__} {e.status_code}, type={body['type']!r} code={body['code']!r}: {body['message']!r}"
        except openai.APIStatusError as e:
            raise Fail(f"{what}: got {type(e).__name__} (HTTP {e.status_code}: {e.message}), "
                       f"expected {cls.__name__}")
        except openai.APIConnectionError as e:
            raise Fail(f"{what}: connection failed: {e!r}")
        raise Fail(f"{what}: the call succeeded, expected {cls.__name__}")

    # --- checks ------------------------------------------------------------------------------

    def check_models(self) -> str:
        raw = self.client.models.with_raw_response.list()
        body = raw.http_response.json()
        need(isinstance(body, dict) and body.get("object") == "list" and isinstance(body.get("data"), list),
             f"GET /models body is {str(body)[:200]}, not {{object: 'list', data: [...]}}")
        for m in body["data"]:
            need(isinstance(m, dict) and m.get("object") == "model" and isinstance(m.get("id"), str)
                 and type(m.get("created")) is int and isinstance(m.get("owned_by"), str),
                 f"model entry {m!r} lacks OpenAI's {{id, object: 'model', created: int, owned_by}}")
        ids = [m.id for m in raw.parse()]
        need(self.model in ids, f"models.list() has {ids}, not {self.model!r}")
        return f"{len(ids)} model(s): {ids}"

    def check_single_default(self) -> str:
        # No encoding_format: the client asks for base64 and decodes it (float32, native order).
        resp, body = self.create("base64", input=SINGLE)
        (v,) = self.vectors_of(resp)
        self.vectors[SINGLE] = v
        n_ref = len(self.ref.ids(SINGLE))
        return (f"1 x {len(v)} floats via default base64, |v|={np.linalg.norm(v):.6f}, "
                f"usage {body['usage']['prompt_tokens']}/{body['usage']['total_tokens']} "
                f"(reference {n_ref} tokens incl. [CLS]/[SEP]); {self.compare([SINGLE], [v])}")

    def check_single_float(self) -> str:
        resp, body = self.create("float", input=SINGLE, encoding_format="float")
        (v,) = self.vectors_of(resp)
        d = float(np.max(np.abs(v - self.vectors[SINGLE])))
        need(d <= 1e-6, f"float and base64 answers differ by {d:.2e}")
        return f"1 x {len(v)} floats, float vs base64 max diff {d:.1e}; {self.compare([SINGLE], [v])}"

    def check_single_base64_explicit(self) -> str:
        # Explicit base64: the client hands back the string; decode as little-endian float32.
        resp, _ = self.create("base64", input=SINGLE, encoding_format="base64")
        (v,) = self.vectors_of(resp, explicit_base64=True)
        d = float(np.max(np.abs(v - self.vectors[SINGLE])))
        need(d <= 1e-6, f"explicit and default base64 answers differ by {d:.2e}")
        return f"{4 * DIM} bytes decoded as <f4; {self.compare([SINGLE], [v])}"

    def check_batch(self, kind: str) -> str:
        kw = {"encoding_format": "float"} if kind == "float" else {}
        t0 = time.monotonic()
        resp, body = self.create(kind, input=BATCH, **kw)
        ms = (time.monotonic() - t0) * 1000
        vs = self.vectors_of(resp)
        for t, v in zip(BATCH, vs):
            self.vectors[t] = v
        n_ref = sum(len(self.ref.ids(t)) for t in BATCH)
        n_long = len(self.ref.ids(LONG_TEXT))
        need(n_long == MAX_TOKENS, f"reference did not truncate the long text ({n_long} tokens)")
        return (f"{len(vs)} inputs ({'float' if kw else 'default base64'}) in {ms:.0f} ms, "
                f"usage {body['usage']['prompt_tokens']}/{body['usage']['total_tokens']} "
                f"(reference {n_ref} tokens; long text truncated to {n_long}); {self.compare(BATCH, vs)}")

    def check_sanity(self) -> str:
        a, b, c = (self.vectors[t] for t in (SINGLE, SIMILAR, UNRELATED))
        sim, unrel = cos(a, b), cos(a, c)
        need(sim > unrel, f"cos(cup, mug) = {sim:.4f} is not above cos(cup, stocks) = {unrel:.4f}")
        return f"cos({SINGLE!r}, {SIMILAR!r}) = {sim:.4f} > cos(.., {UNRELATED!r}) = {unrel:.4f}"

    def check_wrong_token(self) -> str:
        bad = OpenAI(base_url=self.args.base_url, api_key=self.token + "-wrong", max_retries=0,
                     timeout=self.args.timeout)
        return self.expect_error(lambda: bad.embeddings.create(model=self.model, input=SINGLE),
                                 openai.AuthenticationError, lambda s: s == 401, "wrong token")

    def check_unknown_model(self) -> str:
        return self.expect_error(
            lambda: self.client.embeddings.create(model="no-such-model-xyz", input=SINGLE),
            openai.NotFoundError, lambda s: s == 404, "unknown model")

    def check_chat(self) -> str:
        line = self.expect_error(
            lambda: self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "hello"}]),
            openai.APIStatusError, lambda s: 400 <= s < 500,
            "chat.completions (expected a 4xx: a 5xx makes clients retry)",
            message_has="no language model")
        return line

    def check_dimensions(self) -> str:
        return self.expect_error(
            lambda: self.client.embeddings.create(model=self.model, input=SINGLE, dimensions=1536),
            openai.BadRequestError, lambda s: s == 400, "dimensions=1536")

    def run(self) -> int:
        checks = [
            ("models.list", self.check_models),
            ("embeddings single (default base64)", self.check_single_default),
            ("embeddings single (float)", self.check_single_float),
            ("embeddings single (explicit base64)", self.check_single_base64_explicit),
            ("embeddings batch (default base64)", lambda: self.check_batch("base64")),
            ("embeddings batch (float)", lambda: self.check_batch("float")),
            ("similarity sanity", self.check_sanity),
            ("wrong token -> 401", self.check_wrong_token),
            ("unknown model -> 404", self.check_unknown_model),
            ("chat.completions -> 4xx", self.check_chat),
            ("dimensions=1536 -> 400", self.check_dimensions),
        ]
        print(f"gateway {self.args.base_url}, model {self.model!r}; tolerance: cosine >= {MIN_COSINE}, "
              f"max abs diff <= {MAX_ABS_DIFF:g} against onnxruntime {self.ref_versions()}")
        for name, fn in checks:
            try:
                line = fn()
            except Fail as e:
                reason = str(e)
            except openai.APIStatusError as e:
                reason = f"HTTP {e.status_code} {type(e).__name__}: {e.message}"
            except openai.APIConnectionError as e:
                reason = f"connection to {self.args.base_url} failed: {e!r}"
            except Exception as e:  # noqa: BLE001
                reason = f"{type(e).__name__}: {e}"
            else:
                self.passed += 1
                print(f"ok    {name}: {line}", flush=True)
                continue
            print(f"FAIL  {name}: {reason}", flush=True)
            print(f"{self.passed} passed, 1 failed")
            return 1
        print(f"{self.passed} passed, 0 failed")
        return 0

    @staticmethod
    def ref_versions() -> str:
        import importlib.metadata as md
        return f"{md.version('onnxruntime')}, tokenizers {md.version('tokenizers')}, openai {md.version('openai')}"


def main() -> int:
    ap = argparse.ArgumentParser(description="OpenAI-client test of the gateway's embeddings API")
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:PORT/v1")
    ap.add_argument("--token-file", required=True, help="file holding the bearer token")
    ap.add_argument("--model", default="all-minilm-l6-v2")
    ap.add_argument("--onnx", default="crates/ganglion-runtime/assets/minilm_int8.onnx")
    ap.add_argument("--tokenizer", default="crates/ganglion-runtime/assets/minilm_tokenizer.json")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = ap.parse_args()
    try:
        suite = Suite(args)
    except (Fail, OSError) as e:
        print(f"FAIL  setup: {e}")
        print("0 passed, 1 failed")
        return 1
    return suite.run()


if __name__ == "__main__":
    sys.exit(main())
