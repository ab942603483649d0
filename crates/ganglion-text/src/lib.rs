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
//! here either), copied as range tables in `chars`. NFD comes from
//! `unicode-normalization` and lowercasing and whitespace from `std`, so a character whose
//! decomposition or lowercase came with a Unicode version newer than `tokenizers` was built with
//! may differ; none of the characters in the tests does.

use std::collections::HashMap;

use ganglion_types::{tensor::TensorError, DType, Tensor};
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

mod chars;
use chars::{is_chinese, is_control, is_mark_nonspacing, is_punctuation, is_whitespace};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_whitespace_and_around_punctuation() {
        let mut words = Vec::new();
        for_each_word("  hi, you...ok  ", |w| words.push(w.to_owned()));
        assert_eq!(words, ["hi", ",", "you", ".", ".", ".", "ok"]);
    }
}
