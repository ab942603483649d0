"""Makes crates/ganglion-runtime/tests/fixtures/minilm_tokens.json: the ids HF `tokenizers` gives
for varied strings under the bundled MiniLM tokenizer, which `ganglion_runtime::text` must match.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers
    /tmp/tokvenv/bin/python tests/make_minilm_tokens.py

Each case holds the text, the total token limit it was encoded under (truncation on, no padding),
the ids, and the length it would have had without truncation.
"""

import json
import pathlib

import tokenizers
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "crates/ganglion-runtime/assets/minilm_tokenizer.json"
FIXTURE = ROOT / "crates/ganglion-runtime/tests/fixtures/minilm_tokens.json"

# The limit for cases that do not test truncation: MiniLM's 512 positions.
DEFAULT_MAX = 512

LONG = (
    "Ganglion runs small models on other people's machines, and pays them for it. "
    "Each request names its model by hash, the provider checks every input, runs it, "
    "signs the answer, and the ledger settles the bill at the end of the session. "
) * 12

CASES = [
    ("Hello, world!", DEFAULT_MAX),
    ("The quick brown fox jumps over the lazy dog.", DEFAULT_MAX),
    ("HeLLo WoRLD McDonald's iPhone", DEFAULT_MAX),
    ("unaffable playing reprocessing tokenization", DEFAULT_MAX),
    ("don't can't it's y'all", DEFAULT_MAX),
    ("Café Noël", DEFAULT_MAX),
    ("naïve résumé coöperate façade", DEFAULT_MAX),
    ("Straße und Fußgänger, ẞ groß", DEFAULT_MAX),
    ("ΟΔΟΣ Σίσυφος", DEFAULT_MAX),
    ("İstanbul DİYARBAKIR ıi", DEFAULT_MAX),
    ("e\u0301 n\u0303 a\u030a hello\u0301world", DEFAULT_MAX),
    ("北京欢迎你", DEFAULT_MAX),
    ("日本語のテキスト、カタカナとひらがな。", DEFAULT_MAX),
    ("한국어 텍스트", DEFAULT_MAX),
    ("مرحبا بالعالم", DEFAULT_MAX),
    ("नमस्ते दुनिया", DEFAULT_MAX),
    ("สวัสดีครับ", DEFAULT_MAX),
    ("Привет, мир! Ёлка", DEFAULT_MAX),
    # CJK edges: U+2B820..U+2B91F is outside HF's "Chinese" ranges; U+F900 is inside.
    ("a\U0002B820b a\U0002B920b a\uF900b a\u4E00b", DEFAULT_MAX),
    ("I love 🍕 and 🥲!", DEFAULT_MAX),
    ("❤️ 👨‍👩‍👧 👍🏽", DEFAULT_MAX),
    ("Wait... what?!?! (yes) [no] {maybe} --- ***", DEFAULT_MAX),
    ("$100 + 5% ~ ^caret | pipe `tick` <tag> = #1 @home", DEFAULT_MAX),
    ("«guillemets» „quotes“ ‘single’ — em – en … ¿qué? ¡sí! 『括弧』", DEFAULT_MAX),
    ("email@example.com https://example.org/path?q=1&r=2_x", DEFAULT_MAX),
    ("Numbers: 3.14159, 1,000,000 and 42nd 2024-05-01.", DEFAULT_MAX),
    ("Ⅻ roman, ½ fraction, x² super, ﬁne ligature, Ａｂｃ１２３", DEFAULT_MAX),
    ("tabs\tand\nnewlines\r\nhere\x0bvt\x0cff", DEFAULT_MAX),
    ("\u2028line\u2029para\u00a0nbsp\u3000ideographic\u2003em\u0085nel", DEFAULT_MAX),
    ("control\x01chars\x07and\x1b[0m escape\x7fdel", DEFAULT_MAX),
    ("zero\u200bwidth\u200djoiner\ufeffbom co\u00adoperate", DEFAULT_MAX),
    ("null\x00and\ufffdreplacement", DEFAULT_MAX),
    ("\ue000private\uf8ff use \U000F0000plane", DEFAULT_MAX),
    # Assigned after the Unicode version of HF's category tables: U+0890 (Cf) and U+0898 (Mn).
    ("a\u0890b a\u0898b", DEFAULT_MAX),
    ("[CLS] hello [SEP] [MASK] world [UNK] [PAD]", DEFAULT_MAX),
    ("[cls] lowercase [Mask] specials", DEFAULT_MAX),
    ("[MASK][MASK]x[MASK y[SEP]z", DEFAULT_MAX),
    ("qwe\U0001D518rty", DEFAULT_MAX),
    ("", DEFAULT_MAX),
    ("   \t\n  ", DEFAULT_MAX),
    ("a" * 150, DEFAULT_MAX),
    ("x" + "y" * 99, DEFAULT_MAX),
    ("x" + "y" * 100, DEFAULT_MAX),
    (LONG, DEFAULT_MAX),
    (LONG, 256),
    (LONG, 16),
    ("two words", 2),
    ("three more words", 3),
]


def main() -> None:
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_padding()
    cases = []
    for text, max_tokens in CASES:
        tok.no_truncation()
        untruncated = len(tok.encode(text).ids)
        tok.enable_truncation(max_tokens)
        ids = tok.encode(text).ids
        cases.append({
            "text": text,
            "max_tokens": max_tokens,
            "ids": ids,
            "untruncated": untruncated,
        })
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "generator": "tests/make_minilm_tokens.py",
        "tokenizers_version": tokenizers.__version__,
        "cases": cases,
    }
    FIXTURE.write_text(json.dumps(out, ensure_ascii=True, indent=1) + "\n")
    print(f"{len(cases)} cases written to {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
