//! Text in, model inputs out; model outputs in, sentence embeddings out.
//!
//! [`WordPiece`] is BERT's uncased tokenizer as HF `tokenizers` runs it from a `tokenizer.json`,
//! id for id (the tests hold it to ids made by `tokenizers` itself, `tests/make_minilm_tokens.py`):
//!
//! 1. Special tokens written in the text (`[MASK]`, `[SEP]`, ...: the file's `added_tokens`) are
//!    found first, in the raw text, leftmost and longest first, and stand for themselves.
//! 2. `BertNormalizer`: control and format characters, private use, U+0000 and U+FFFD dropped,
//!    whitespace made a space; CJK ideographs padded with spaces; NFD, then nonspacing marks
//!    dropped (accents stripped); each character lowercased on its own (so no final sigma).
//! 3. `BertPreTokenizer`: split on whitespace; every punctuation character is a word of its own.
//! 4. WordPiece: greedy longest match first, continuations prefixed `##`; a word longer than the
//!    file's `max_input_chars_per_word`, or one that cannot be matched to the end, is `[UNK]`.
//! 5. `[CLS] tokens [SEP]`, truncated at the end of the tokens; no padding.
//!
//! Unicode categories are those of the `unicode_categories` crate that `tokenizers` uses (an
//! older Unicode version: a character assigned since, such as U+0890, is no control character
//! here either), copied as range tables at the end of this file. NFD comes from
//! `unicode-normalization` and lowercasing and whitespace from `std`, so a character whose
//! decomposition or lowercase came with a Unicode version newer than `tokenizers` was built with
//! may differ; none of the characters in the tests does.

use std::collections::HashMap;

use ganglion_types::{tensor::TensorError, DType, Tensor};
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

/// Largest `tokenizer.json` accepted (bytes). BERT's is 0.5 to 0.7 MiB; this bounds parsing.
pub const TOKENIZER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most vocabulary entries accepted. BERT has 30,522; multilingual vocabularies reach 250,000.
pub const VOCAB_LEN_MAX: usize = 1_000_000;

/// Most added (special) tokens accepted: each one is looked for in every text.
pub const ADDED_TOKENS_MAX: usize = 1024;

/// Largest `max_input_chars_per_word` accepted: matching a word is quadratic in its length.
pub const WORD_CHARS_MAX: usize = 1000;

/// Longest text [`WordPiece::encode`] accepts (bytes), before it looks at it: bounds the work
/// (4 ms for 64 KiB of prose, 40 ms at worst, in a release build) and the memory. 64 KiB is
/// some 15,000 tokens of prose, far past a BERT model's 512 positions, yet a long page still
/// gets its true token count.
pub const TEXT_BYTES_MAX: usize = 64 * 1024;

/// Tokens every encoding has: `[CLS]` and `[SEP]`.
pub const SPECIAL_TOKENS_PER_TEXT: usize = 2;

/// The token that opens every encoding.
const CLS_TOKEN: &str = "[CLS]";

/// The token that closes every encoding.
const SEP_TOKEN: &str = "[SEP]";

/// Norms below this are not divided by (as `torch.nn.functional.normalize`).
const NORM_EPSILON: f64 = 1e-12;

/// Why a tokenizer, a text or a model output could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    #[error("tokenizer file of {bytes} bytes exceeds the limit of {TOKENIZER_BYTES_MAX}")]
    FileTooLarge { bytes: usize },
    #[error("tokenizer file is not valid tokenizer JSON: {0}")]
    Json(String),
    #[error("tokenizer not supported: {0}")]
    Unsupported(String),
    #[error("vocabulary has no {0:?} token")]
    MissingToken(String),
    #[error("vocabulary is malformed: {0}")]
    Vocab(String),
    #[error("text of {bytes} bytes exceeds the limit of {TEXT_BYTES_MAX}")]
    TextTooLong { bytes: usize },
    #[error("model output is not a [1, tokens, dim] embedding: {0}")]
    Output(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// The ids of one text: `[CLS]`, its tokens, `[SEP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[CLS]`, the tokens that fit, `[SEP]`.
    pub ids: Vec<i64>,
    /// Tokens the text had before truncation, `[CLS]` and `[SEP]` included (for usage counts).
    pub untruncated: usize,
}

/// A WordPiece tokenizer with a BERT normaliser and pre-tokenizer (see the module docs).
#[derive(Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    /// Special tokens matched in the raw text, with their ids.
    added: Vec<(String, u32)>,
    /// Which bytes an added token can start with, to skip the search elsewhere.
    added_first_bytes: [bool; 256],
    prefix: String,
    word_chars_max: usize,
    /// The longest vocabulary entry (bytes): no longer candidate can match, so none is tried.
    piece_bytes_max: usize,
    unk: u32,
    cls: u32,
    sep: u32,
    normalizer: Normalizer,
}

impl std::fmt::Debug for WordPiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordPiece")
            .field("vocab_len", &self.vocab.len())
            .field("added_tokens", &self.added.len())
            .field("normalizer", &self.normalizer)
            .finish_non_exhaustive()
    }
}

/// The parts of a `tokenizer.json` read; the rest (truncation, padding, decoder) is ignored:
/// truncation is the caller's `max_tokens`, and nothing is padded.
#[derive(Deserialize)]
struct FileJson {
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
    normalizer: Option<NormalizerJson>,
    pre_tokenizer: Option<TypeJson>,
    post_processor: Option<TypeJson>,
    model: ModelJson,
}

#[derive(Deserialize)]
struct TypeJson {
    r#type: String,
}

#[derive(Deserialize)]
struct NormalizerJson {
    r#type: String,
    #[serde(flatten)]
    settings: Normalizer,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u64,
    content: String,
    normalized: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    single_word: bool,
}

#[derive(Deserialize)]
struct ModelJson {
    r#type: String,
    vocab: HashMap<String, u64>,
    unk_token: String,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
    #[serde(default = "default_word_chars")]
    max_input_chars_per_word: usize,
}

fn default_prefix() -> String {
    "##".to_owned()
}

const fn default_word_chars() -> usize {
    100
}

/// `BertNormalizer`'s settings, with `tokenizers`' defaults.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Normalizer {
    #[serde(default = "yes")]
    clean_text: bool,
    #[serde(default = "yes")]
    handle_chinese_chars: bool,
    /// `None` follows `lowercase`.
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    lowercase: bool,
}

const fn yes() -> bool {
    true
}

impl WordPiece {
    /// Parses an HF `tokenizer.json` whose model is WordPiece, normaliser `BertNormalizer` and
    /// pre-tokenizer `BertPreTokenizer`. Refuses files over [`TOKENIZER_BYTES_MAX`], vocabularies
    /// over [`VOCAB_LEN_MAX`] or whose ids are not each of `0..len` once, and vocabularies without
    /// the unknown token, `[CLS]` or `[SEP]`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TextError> {
        if bytes.len() > TOKENIZER_BYTES_MAX {
            return Err(TextError::FileTooLarge { bytes: bytes.len() });
        }
        let file: FileJson =
            serde_json::from_slice(bytes).map_err(|e| TextError::Json(e.to_string()))?;
        let normalizer = match file.normalizer {
            Some(n) if n.r#type == "BertNormalizer" => n.settings,
            other => {
                let found = other.map(|n| n.r#type);
                return Err(TextError::Unsupported(format!(
                    "normalizer {found:?}, expected \"BertNormalizer\""
                )));
            }
        };
        expect_type(
            "pre_tokenizer",
            file.pre_tokenizer.as_ref(),
            &["BertPreTokenizer"],
        )?;
        if file.post_processor.is_some() {
            let processors = ["TemplateProcessing", "BertProcessing"];
            expect_type("post_processor", file.post_processor.as_ref(), &processors)?;
        }
        let model = file.model;
        if model.r#type != "WordPiece" {
            return Err(TextError::Unsupported(format!(
                "model type {:?}, expected \"WordPiece\"",
                model.r#type
            )));
        }
        if !(1..=WORD_CHARS_MAX).contains(&model.max_input_chars_per_word) {
            return Err(TextError::Unsupported(format!(
                "max_input_chars_per_word of {}, expected 1 to {WORD_CHARS_MAX}",
                model.max_input_chars_per_word
            )));
        }
        let vocab = checked_vocab(model.vocab)?;
        let piece_bytes_max = vocab.keys().map(String::len).max().unwrap_or(0);
        let id_of = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| TextError::MissingToken(token.to_owned()))
        };
        let (unk, cls, sep) = (
            id_of(&model.unk_token)?,
            id_of(CLS_TOKEN)?,
            id_of(SEP_TOKEN)?,
        );
        let added = checked_added(file.added_tokens, &vocab)?;
        let mut added_first_bytes = [false; 256];
        for (content, _) in &added {
            if let Some(&b) = content.as_bytes().first() {
                added_first_bytes[usize::from(b)] = true;
            }
        }
        Ok(Self {
            vocab,
            added,
            added_first_bytes,
            prefix: model.continuing_subword_prefix,
            word_chars_max: model.max_input_chars_per_word,
            piece_bytes_max,
            unk,
            cls,
            sep,
            normalizer,
        })
    }

    /// Entries in the vocabulary.
    pub fn vocab_len(&self) -> usize {
        self.vocab.len()
    }

    /// `[CLS] tokens [SEP]`, the tokens cut to fit `max_tokens` in all (taken as at least 2);
    /// no padding. Texts over [`TEXT_BYTES_MAX`] are refused before any work.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Result<Encoding, TextError> {
        if text.len() > TEXT_BYTES_MAX {
            return Err(TextError::TextTooLong { bytes: text.len() });
        }
        let keep = max_tokens.max(SPECIAL_TOKENS_PER_TEXT) - SPECIAL_TOKENS_PER_TEXT;
        let mut sink = Sink {
            ids: Vec::with_capacity(keep.min(text.len()) + SPECIAL_TOKENS_PER_TEXT),
            keep,
            count: 0,
        };
        sink.ids.push(i64::from(self.cls));
        let mut start = 0;
        for (at, len, id) in self.added_matches(text) {
            self.tokenize(&text[start..at], &mut sink);
            sink.push(id);
            start = at + len;
        }
        self.tokenize(&text[start..], &mut sink);
        sink.ids.push(i64::from(self.sep));
        Ok(Encoding {
            ids: sink.ids,
            untruncated: sink.count + SPECIAL_TOKENS_PER_TEXT,
        })
    }

    /// Where added tokens occur in `text`: (byte offset, byte length, id), leftmost first and,
    /// among those starting at one place, longest first (as `tokenizers`' Aho-Corasick).
    fn added_matches(&self, text: &str) -> Vec<(usize, usize, u32)> {
        let mut found = Vec::new();
        let bytes = text.as_bytes();
        let mut at = 0;
        // A token's first byte is never a UTF-8 continuation byte, so matches start (and end) on
        // character boundaries.
        while at < bytes.len() {
            let longest = if self.added_first_bytes[usize::from(bytes[at])] {
                self.added
                    .iter()
                    .filter(|(content, _)| bytes[at..].starts_with(content.as_bytes()))
                    .max_by_key(|(content, _)| content.len())
            } else {
                None
            };
            match longest {
                Some((content, id)) => {
                    found.push((at, content.len(), *id));
                    at += content.len();
                }
                None => at += 1,
            }
        }
        found
    }

    /// Normalises, splits and matches a stretch of text without added tokens.
    fn tokenize(&self, text: &str, sink: &mut Sink) {
        if text.is_empty() {
            return;
        }
        let normalized = self.normalizer.apply(text);
        let mut candidate = String::new();
        for_each_word(&normalized, |word| self.word(word, &mut candidate, sink));
    }

    /// The word's pieces, greedy longest match first, or `[UNK]` for the whole word.
    fn word(&self, word: &str, candidate: &mut String, sink: &mut Sink) {
        if word.chars().count() > self.word_chars_max {
            sink.push(self.unk);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < word.len() {
            // Longest first, but no longer than any entry: the same match, with fewer lookups.
            let mut end = word.len().min(start + self.piece_bytes_max);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            let mut piece = None;
            while start < end {
                let id = if start == 0 {
                    self.vocab.get(&word[..end])
                } else {
                    candidate.clear();
                    candidate.push_str(&self.prefix);
                    candidate.push_str(&word[start..end]);
                    self.vocab.get(candidate.as_str())
                };
                if let Some(&id) = id {
                    piece = Some(id);
                    break;
                }
                end -= word[start..end]
                    .chars()
                    .next_back()
                    .map_or(1, char::len_utf8);
            }
            let Some(id) = piece else {
                sink.push(self.unk);
                return;
            };
            pieces.push(id);
            start = end;
        }
        pieces.into_iter().for_each(|id| sink.push(id));
    }
}

fn expect_type(part: &str, found: Option<&TypeJson>, expected: &[&str]) -> Result<(), TextError> {
    match found {
        Some(t) if expected.contains(&t.r#type.as_str()) => Ok(()),
        Some(t) => Err(TextError::Unsupported(format!(
            "{part} of type {:?}, expected one of {expected:?}",
            t.r#type
        ))),
        None => Err(TextError::Unsupported(format!(
            "no {part}, expected one of {expected:?}"
        ))),
    }
}

/// The vocabulary, if its size is within bounds and its ids are each of `0..len` once.
fn checked_vocab(vocab: HashMap<String, u64>) -> Result<HashMap<String, u32>, TextError> {
    let len = vocab.len();
    if len > VOCAB_LEN_MAX {
        return Err(TextError::Vocab(format!(
            "{len} entries exceed the limit of {VOCAB_LEN_MAX}"
        )));
    }
    let mut seen = vec![false; len];
    let mut out = HashMap::with_capacity(len);
    for (token, id) in vocab {
        let index = usize::try_from(id).ok().filter(|&i| i < len);
        let Some(index) = index else {
            return Err(TextError::Vocab(format!(
                "id {id} of {token:?} is outside 0..{len}"
            )));
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(TextError::Vocab(format!("id {id} is used twice")));
        }
        // `index < len <= VOCAB_LEN_MAX`, so it fits.
        out.insert(token, index as u32);
    }
    Ok(out)
}

/// The added tokens, if each is matched in the raw text as written (the only kind supported)
/// and is in the vocabulary with the same id.
fn checked_added(
    added: Vec<AddedTokenJson>,
    vocab: &HashMap<String, u32>,
) -> Result<Vec<(String, u32)>, TextError> {
    if added.len() > ADDED_TOKENS_MAX {
        return Err(TextError::Unsupported(format!(
            "{} added tokens exceed the limit of {ADDED_TOKENS_MAX}",
            added.len()
        )));
    }
    added
        .into_iter()
        .map(|token| {
            if token.content.is_empty()
                || token.normalized
                || token.lstrip
                || token.rstrip
                || token.single_word
            {
                return Err(TextError::Unsupported(format!(
                    "added token {:?}: only non-empty tokens matched as written are supported",
                    token.content
                )));
            }
            match vocab.get(&token.content) {
                Some(&id) if u64::from(id) == token.id => Ok((token.content, id)),
                _ => Err(TextError::Vocab(format!(
                    "added token {:?} with id {} is not in the vocabulary with that id",
                    token.content, token.id
                ))),
            }
        })
        .collect()
}

/// Ids as they are made: the first `keep` kept, all counted.
struct Sink {
    ids: Vec<i64>,
    keep: usize,
    count: usize,
}

impl Sink {
    fn push(&mut self, id: u32) {
        if self.count < self.keep {
            self.ids.push(i64::from(id));
        }
        self.count += 1;
    }
}

impl Normalizer {
    fn apply(&self, text: &str) -> String {
        let mut cleaned = String::with_capacity(text.len());
        for c in text.chars() {
            if self.clean_text && (c == '\0' || c == '\u{FFFD}' || is_control(c)) {
                continue;
            }
            let c = if self.clean_text && is_whitespace(c) {
                ' '
            } else {
                c
            };
            if self.handle_chinese_chars && is_chinese(c) {
                cleaned.extend([' ', c, ' ']);
            } else {
                cleaned.push(c);
            }
        }
        let stripped = if self.strip_accents.unwrap_or(self.lowercase) {
            cleaned
                .chars()
                .nfd()
                .filter(|&c| !is_mark_nonspacing(c))
                .collect()
        } else {
            cleaned
        };
        if self.lowercase {
            // Character by character, as `tokenizers` does: `str::to_lowercase` would write a
            // final sigma.
            stripped.chars().flat_map(char::to_lowercase).collect()
        } else {
            stripped
        }
    }
}

/// Calls `f` on each word: whitespace-separated runs, with each punctuation character cut out
/// as a word of its own.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    for run in text.split(char::is_whitespace).filter(|r| !r.is_empty()) {
        let mut start = 0;
        for (at, c) in run.char_indices() {
            if is_punctuation(c) {
                if start < at {
                    f(&run[start..at]);
                }
                let end = at + c.len_utf8();
                f(&run[at..end]);
                start = end;
            }
        }
        if start < run.len() {
            f(&run[start..]);
        }
    }
}

/// The three i64 `[1, n]` tensors a BERT model such as MiniLM takes, in that order:
/// `input_ids`, `attention_mask` (all 1) and `token_type_ids` (all 0). Ids past `u32::MAX`
/// (far past any model's positions) are left out, so that the shape stays true.
pub fn bert_inputs(ids: &[i64]) -> Vec<Tensor> {
    let ids = &ids[..ids.len().min(u32::MAX as usize)];
    let n = ids.len();
    vec![
        i64_row(ids.iter().copied(), n),
        i64_row(std::iter::repeat_n(1, n), n),
        i64_row(std::iter::repeat_n(0, n), n),
    ]
}

/// A `[1, n]` i64 tensor; `n` is at most `u32::MAX` (checked by the caller).
fn i64_row(values: impl Iterator<Item = i64>, n: usize) -> Tensor {
    Tensor {
        dtype: DType::I64,
        shape: vec![1, n as u32],
        data: values.flat_map(i64::to_le_bytes).collect(),
    }
}

/// The sentence embedding of a `[1, tokens, dim]` f32 model output: the mean over the tokens
/// (every token counts: nothing is padded), scaled to unit length (left as is when its length is
/// under 1e-12, as sentence-transformers' `Normalize`). Refuses other shapes and types, and
/// non-finite values.
pub fn mean_pool_normalize(output: &Tensor) -> Result<Vec<f32>, TextError> {
    let (tokens, dim) = match output.shape[..] {
        [1, tokens, dim] if tokens > 0 && dim > 0 => (tokens as usize, dim as usize),
        _ => {
            return Err(TextError::Output(format!(
                "shape {:?}, expected [1, tokens, dim] with tokens and dim above 0",
                output.shape
            )))
        }
    };
    let values = output.to_f32()?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(TextError::Output(format!(
            "value {} at {} (token {}) is not finite",
            values[at],
            at,
            at / dim
        )));
    }
    let mut mean = vec![0f64; dim];
    for token in values.chunks_exact(dim).take(tokens) {
        for (m, &v) in mean.iter_mut().zip(token) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= tokens as f64);
    let norm = mean
        .iter()
        .map(|m| m * m)
        .sum::<f64>()
        .sqrt()
        .max(NORM_EPSILON);
    Ok(mean.into_iter().map(|m| (m / norm) as f32).collect())
}

/// `tokenizers`' whitespace: tab, newline and carriage return, and `char::is_whitespace`.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// `tokenizers`' control characters: Cc, Cf and Co, less tab, newline and carriage return.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && in_table(OTHER, c)
}

/// `tokenizers`' "Chinese characters": its CJK ideograph ranges (BERT's, less U+2B820 to
/// U+2B91F, as `tokenizers` has them).
fn is_chinese(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Mn: the marks NFD leaves that stripping accents drops.
fn is_mark_nonspacing(c: char) -> bool {
    in_table(MARK_NONSPACING, c)
}

/// BERT's punctuation: ASCII punctuation (so `$`, `+`, `^` and the like too) and the P*
/// categories.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || in_table(PUNCTUATION, c)
}

/// Whether `c` falls in one of the sorted, disjoint, inclusive ranges of `table`.
fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = u32::from(c);
    let after = table.partition_point(|&(_, last)| last < c);
    table.get(after).is_some_and(|&(first, _)| first <= c)
}

// The tables of `unicode_categories` 0.1.1, as ranges (made by walking every character through
// its `is_other`, `is_mark_nonspacing` and `is_punctuation`).

/// Cc, Cf and Co.
#[rustfmt::skip]
const OTHER: &[(u32, u32)] = &[
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064),
    (0x2066, 0x206F), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD),
];

/// Mn.
#[rustfmt::skip]
const MARK_NONSPACING: &[(u32, u32)] = &[
    (0x300, 0x36F), (0x483, 0x487), (0x591, 0x5BD), (0x5BF, 0x5BF), (0x5C1, 0x5C2), (0x5C4, 0x5C5),
    (0x5C7, 0x5C7), (0x610, 0x61A), (0x64B, 0x65F), (0x670, 0x670), (0x6D6, 0x6DC), (0x6DF, 0x6E4),
    (0x6E7, 0x6E8), (0x6EA, 0x6ED), (0x711, 0x711), (0x730, 0x74A), (0x7A6, 0x7B0), (0x7EB, 0x7F3),
    (0x816, 0x819), (0x81B, 0x823), (0x825, 0x827), (0x829, 0x82D), (0x859, 0x85B), (0x8E3, 0x902),
    (0x93A, 0x93A), (0x93C, 0x93C), (0x941, 0x948), (0x94D, 0x94D), (0x951, 0x957), (0x962, 0x963),
    (0x981, 0x981), (0x9BC, 0x9BC), (0x9C1, 0x9C4), (0x9CD, 0x9CD), (0x9E2, 0x9E3), (0xA01, 0xA02),
    (0xA3C, 0xA3C), (0xA41, 0xA42), (0xA47, 0xA48), (0xA4B, 0xA4D), (0xA51, 0xA51), (0xA70, 0xA71),
    (0xA75, 0xA75), (0xA81, 0xA82), (0xABC, 0xABC), (0xAC1, 0xAC5), (0xAC7, 0xAC8), (0xACD, 0xACD),
    (0xAE2, 0xAE3), (0xB01, 0xB01), (0xB3C, 0xB3C), (0xB3F, 0xB3F), (0xB41, 0xB44), (0xB4D, 0xB4D),
    (0xB56, 0xB56), (0xB62, 0xB63), (0xB82, 0xB82), (0xBC0, 0xBC0), (0xBCD, 0xBCD), (0xC00, 0xC00),
    (0xC3E, 0xC40), (0xC46, 0xC48), (0xC4A, 0xC4D), (0xC55, 0xC56), (0xC62, 0xC63), (0xC81, 0xC81),
    (0xCBC, 0xCBC), (0xCBF, 0xCBF), (0xCC6, 0xCC6), (0xCCC, 0xCCD), (0xCE2, 0xCE3), (0xD01, 0xD01),
    (0xD41, 0xD44), (0xD4D, 0xD4D), (0xD62, 0xD63), (0xDCA, 0xDCA), (0xDD2, 0xDD4), (0xDD6, 0xDD6),
    (0xE31, 0xE31), (0xE34, 0xE3A), (0xE47, 0xE4E), (0xEB1, 0xEB1), (0xEB4, 0xEB9), (0xEBB, 0xEBC),
    (0xEC8, 0xECD), (0xF18, 0xF19), (0xF35, 0xF35), (0xF37, 0xF37), (0xF39, 0xF39), (0xF71, 0xF7E),
    (0xF80, 0xF84), (0xF86, 0xF87), (0xF8D, 0xF97), (0xF99, 0xFBC), (0xFC6, 0xFC6),
    (0x102D, 0x1030), (0x1032, 0x1037), (0x1039, 0x103A), (0x103D, 0x103E), (0x1058, 0x1059),
    (0x105E, 0x1060), (0x1071, 0x1074), (0x1082, 0x1082), (0x1085, 0x1086), (0x108D, 0x108D),
    (0x109D, 0x109D), (0x135D, 0x135F), (0x1712, 0x1714), (0x1732, 0x1734), (0x1752, 0x1753),
    (0x1772, 0x1773), (0x17B4, 0x17B5), (0x17B7, 0x17BD), (0x17C6, 0x17C6), (0x17C9, 0x17D3),
    (0x17DD, 0x17DD), (0x180B, 0x180D), (0x18A9, 0x18A9), (0x1920, 0x1922), (0x1927, 0x1928),
    (0x1932, 0x1932), (0x1939, 0x193B), (0x1A17, 0x1A18), (0x1A1B, 0x1A1B), (0x1A56, 0x1A56),
    (0x1A58, 0x1A5E), (0x1A60, 0x1A60), (0x1A62, 0x1A62), (0x1A65, 0x1A6C), (0x1A73, 0x1A7C),
    (0x1A7F, 0x1A7F), (0x1AB0, 0x1ABD), (0x1B00, 0x1B03), (0x1B34, 0x1B34), (0x1B36, 0x1B3A),
    (0x1B3C, 0x1B3C), (0x1B42, 0x1B42), (0x1B6B, 0x1B73), (0x1B80, 0x1B81), (0x1BA2, 0x1BA5),
    (0x1BA8, 0x1BA9), (0x1BAB, 0x1BAD), (0x1BE6, 0x1BE6), (0x1BE8, 0x1BE9), (0x1BED, 0x1BED),
    (0x1BEF, 0x1BF1), (0x1C2C, 0x1C33), (0x1C36, 0x1C37), (0x1CD0, 0x1CD2), (0x1CD4, 0x1CE0),
    (0x1CE2, 0x1CE8), (0x1CED, 0x1CED), (0x1CF4, 0x1CF4), (0x1CF8, 0x1CF9), (0x1DC0, 0x1DF5),
    (0x1DFC, 0x1DFF), (0x20D0, 0x20DC), (0x20E1, 0x20E1), (0x20E5, 0x20F0), (0x2CEF, 0x2CF1),
    (0x2D7F, 0x2D7F), (0x2DE0, 0x2DFF), (0x302A, 0x302D), (0x3099, 0x309A), (0xA66F, 0xA66F),
    (0xA674, 0xA67D), (0xA69E, 0xA69F), (0xA6F0, 0xA6F1), (0xA802, 0xA802), (0xA806, 0xA806),
    (0xA80B, 0xA80B), (0xA825, 0xA826), (0xA8C4, 0xA8C4), (0xA8E0, 0xA8F1), (0xA926, 0xA92D),
    (0xA947, 0xA951), (0xA980, 0xA982), (0xA9B3, 0xA9B3), (0xA9B6, 0xA9B9), (0xA9BC, 0xA9BC),
    (0xA9E5, 0xA9E5), (0xAA29, 0xAA2E), (0xAA31, 0xAA32), (0xAA35, 0xAA36), (0xAA43, 0xAA43),
    (0xAA4C, 0xAA4C), (0xAA7C, 0xAA7C), (0xAAB0, 0xAAB0), (0xAAB2, 0xAAB4), (0xAAB7, 0xAAB8),
    (0xAABE, 0xAABF), (0xAAC1, 0xAAC1), (0xAAEC, 0xAAED), (0xAAF6, 0xAAF6), (0xABE5, 0xABE5),
    (0xABE8, 0xABE8), (0xABED, 0xABED), (0xFB1E, 0xFB1E), (0xFE00, 0xFE0F), (0xFE20, 0xFE2F),
    (0x101FD, 0x101FD), (0x102E0, 0x102E0), (0x10376, 0x1037A), (0x10A01, 0x10A03),
    (0x10A05, 0x10A06), (0x10A0C, 0x10A0F), (0x10A38, 0x10A3A), (0x10A3F, 0x10A3F),
    (0x10AE5, 0x10AE6), (0x11001, 0x11001), (0x11038, 0x11046), (0x1107F, 0x11081),
    (0x110B3, 0x110B6), (0x110B9, 0x110BA), (0x11100, 0x11102), (0x11127, 0x1112B),
    (0x1112D, 0x11134), (0x11173, 0x11173), (0x11180, 0x11181), (0x111B6, 0x111BE),
    (0x111CA, 0x111CC), (0x1122F, 0x11231), (0x11234, 0x11234), (0x11236, 0x11237),
    (0x112DF, 0x112DF), (0x112E3, 0x112EA), (0x11300, 0x11301), (0x1133C, 0x1133C),
    (0x11340, 0x11340), (0x11366, 0x1136C), (0x11370, 0x11374), (0x114B3, 0x114B8),
    (0x114BA, 0x114BA), (0x114BF, 0x114C0), (0x114C2, 0x114C3), (0x115B2, 0x115B5),
    (0x115BC, 0x115BD), (0x115BF, 0x115C0), (0x115DC, 0x115DD), (0x11633, 0x1163A),
    (0x1163D, 0x1163D), (0x1163F, 0x11640), (0x116AB, 0x116AB), (0x116AD, 0x116AD),
    (0x116B0, 0x116B5), (0x116B7, 0x116B7), (0x1171D, 0x1171F), (0x11722, 0x11725),
    (0x11727, 0x1172B), (0x16AF0, 0x16AF4), (0x16B30, 0x16B36), (0x16F8F, 0x16F92),
    (0x1BC9D, 0x1BC9E), (0x1D167, 0x1D169), (0x1D17B, 0x1D182), (0x1D185, 0x1D18B),
    (0x1D1AA, 0x1D1AD), (0x1D242, 0x1D244), (0x1DA00, 0x1DA36), (0x1DA3B, 0x1DA6C),
    (0x1DA75, 0x1DA75), (0x1DA84, 0x1DA84), (0x1DA9B, 0x1DA9F), (0x1DAA1, 0x1DAAF),
    (0x1E8D0, 0x1E8D6), (0xE0100, 0xE01EF),
];

/// Pc, Pd, Pe, Pf, Pi, Po and Ps.
#[rustfmt::skip]
const PUNCTUATION: &[(u32, u32)] = &[
    (0x21, 0x23), (0x25, 0x2A), (0x2C, 0x2F), (0x3A, 0x3B), (0x3F, 0x40), (0x5B, 0x5D),
    (0x5F, 0x5F), (0x7B, 0x7B), (0x7D, 0x7D), (0xA1, 0xA1), (0xA7, 0xA7), (0xAB, 0xAB),
    (0xB6, 0xB7), (0xBB, 0xBB), (0xBF, 0xBF), (0x37E, 0x37E), (0x387, 0x387), (0x55A, 0x55F),
    (0x589, 0x58A), (0x5BE, 0x5BE), (0x5C0, 0x5C0), (0x5C3, 0x5C3), (0x5C6, 0x5C6), (0x5F3, 0x5F4),
    (0x609, 0x60A), (0x60C, 0x60D), (0x61B, 0x61B), (0x61E, 0x61F), (0x66A, 0x66D), (0x6D4, 0x6D4),
    (0x700, 0x70D), (0x7F7, 0x7F9), (0x830, 0x83E), (0x85E, 0x85E), (0x964, 0x965), (0x970, 0x970),
    (0xAF0, 0xAF0), (0xDF4, 0xDF4), (0xE4F, 0xE4F), (0xE5A, 0xE5B), (0xF04, 0xF12), (0xF14, 0xF14),
    (0xF3A, 0xF3D), (0xF85, 0xF85), (0xFD0, 0xFD4), (0xFD9, 0xFDA), (0x104A, 0x104F),
    (0x10FB, 0x10FB), (0x1360, 0x1368), (0x1400, 0x1400), (0x166D, 0x166E), (0x169B, 0x169C),
    (0x16EB, 0x16ED), (0x1735, 0x1736), (0x17D4, 0x17D6), (0x17D8, 0x17DA), (0x1800, 0x180A),
    (0x1944, 0x1945), (0x1A1E, 0x1A1F), (0x1AA0, 0x1AA6), (0x1AA8, 0x1AAD), (0x1B5A, 0x1B60),
    (0x1BFC, 0x1BFF), (0x1C3B, 0x1C3F), (0x1C7E, 0x1C7F), (0x1CC0, 0x1CC7), (0x1CD3, 0x1CD3),
    (0x2010, 0x2027), (0x2030, 0x2043), (0x2045, 0x2051), (0x2053, 0x205E), (0x207D, 0x207E),
    (0x208D, 0x208E), (0x2308, 0x230B), (0x2329, 0x232A), (0x2768, 0x2775), (0x27C5, 0x27C6),
    (0x27E6, 0x27EF), (0x2983, 0x2998), (0x29D8, 0x29DB), (0x29FC, 0x29FD), (0x2CF9, 0x2CFC),
    (0x2CFE, 0x2CFF), (0x2D70, 0x2D70), (0x2E00, 0x2E2E), (0x2E30, 0x2E42), (0x3001, 0x3003),
    (0x3008, 0x3011), (0x3014, 0x301F), (0x3030, 0x3030), (0x303D, 0x303D), (0x30A0, 0x30A0),
    (0x30FB, 0x30FB), (0xA4FE, 0xA4FF), (0xA60D, 0xA60F), (0xA673, 0xA673), (0xA67E, 0xA67E),
    (0xA6F2, 0xA6F7), (0xA874, 0xA877), (0xA8CE, 0xA8CF), (0xA8F8, 0xA8FA), (0xA8FC, 0xA8FC),
    (0xA92E, 0xA92F), (0xA95F, 0xA95F), (0xA9C1, 0xA9CD), (0xA9DE, 0xA9DF), (0xAA5C, 0xAA5F),
    (0xAADE, 0xAADF), (0xAAF0, 0xAAF1), (0xABEB, 0xABEB), (0xFD3E, 0xFD3F), (0xFE10, 0xFE19),
    (0xFE30, 0xFE52), (0xFE54, 0xFE61), (0xFE63, 0xFE63), (0xFE68, 0xFE68), (0xFE6A, 0xFE6B),
    (0xFF01, 0xFF03), (0xFF05, 0xFF0A), (0xFF0C, 0xFF0F), (0xFF1A, 0xFF1B), (0xFF1F, 0xFF20),
    (0xFF3B, 0xFF3D), (0xFF3F, 0xFF3F), (0xFF5B, 0xFF5B), (0xFF5D, 0xFF5D), (0xFF5F, 0xFF65),
    (0x10100, 0x10102), (0x1039F, 0x1039F), (0x103D0, 0x103D0), (0x1056F, 0x1056F),
    (0x10857, 0x10857), (0x1091F, 0x1091F), (0x1093F, 0x1093F), (0x10A50, 0x10A58),
    (0x10A7F, 0x10A7F), (0x10AF0, 0x10AF6), (0x10B39, 0x10B3F), (0x10B99, 0x10B9C),
    (0x11047, 0x1104D), (0x110BB, 0x110BC), (0x110BE, 0x110C1), (0x11140, 0x11143),
    (0x11174, 0x11175), (0x111C5, 0x111C9), (0x111CD, 0x111CD), (0x111DB, 0x111DB),
    (0x111DD, 0x111DF), (0x11238, 0x1123D), (0x112A9, 0x112A9), (0x114C6, 0x114C6),
    (0x115C1, 0x115D7), (0x11641, 0x11643), (0x1173C, 0x1173E), (0x12470, 0x12474),
    (0x16A6E, 0x16A6F), (0x16AF5, 0x16AF5), (0x16B37, 0x16B3B), (0x16B44, 0x16B44),
    (0x1BC9F, 0x1BC9F), (0x1DA87, 0x1DA8B),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_disjoint() {
        for table in [OTHER, MARK_NONSPACING, PUNCTUATION] {
            assert!(table.iter().all(|(first, last)| first <= last));
            assert!(table.windows(2).all(|w| w[0].1 < w[1].0));
        }
    }

    #[test]
    fn categories_of_a_few_characters() {
        assert!(is_control('\u{AD}') && is_control('\u{E000}') && !is_control('\n'));
        assert!(
            !is_control('\u{890}'),
            "assigned after the tables' Unicode version"
        );
        assert!(is_mark_nonspacing('\u{301}') && !is_mark_nonspacing('e'));
        assert!(is_punctuation('$') && is_punctuation('«') && is_punctuation('、'));
        assert!(!is_punctuation('a') && !is_punctuation('½'));
        assert!(is_chinese('一') && !is_chinese('\u{2B820}') && !is_chinese('の'));
    }

    #[test]
    fn words_split_on_whitespace_and_around_punctuation() {
        let mut words = Vec::new();
        for_each_word("  hi, you...ok  ", |w| words.push(w.to_owned()));
        assert_eq!(words, ["hi", ",", "you", ".", ".", ".", "ok"]);
    }
}
