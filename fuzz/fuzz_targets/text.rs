//! Text as callers send it to the gateway's embeddings, and tokenizer files as a provider or an
//! operator might load them: the bundled WordPiece tokenizer encodes any text (valid UTF-8 or
//! not, once made lossy) within its bounds, and `from_json` refuses any malformed file with an
//! error. Nothing may panic; every encoding is `[CLS] … [SEP]` within the token limit, with
//! ids inside the vocabulary.
#![no_main]

use std::sync::OnceLock;

use ganglion_text::WordPiece;
use libfuzzer_sys::fuzz_target;

/// The bundled MiniLM tokenizer and its token limit (as `ganglion_runtime::zoo` has them).
const MINILM_TOKENIZER_JSON: &[u8] =
    include_bytes!("../../crates/ganglion-runtime/assets/minilm_tokenizer.json");
const MINILM_TOKENS_MAX: usize = 256;

static TOKENIZER: OnceLock<WordPiece> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 8 == 0 {
        let _ = WordPiece::from_json(rest);
        return;
    }
    let tokenizer = TOKENIZER.get_or_init(|| {
        WordPiece::from_json(MINILM_TOKENIZER_JSON).expect("the bundled tokenizer loads")
    });
    let text = String::from_utf8_lossy(rest);
    let max = usize::from(mode).clamp(2, MINILM_TOKENS_MAX);
    if let Ok(encoding) = tokenizer.encode(&text, max) {
        assert!(encoding.ids.len() >= 2 && encoding.ids.len() <= max);
        assert_eq!(encoding.ids.first(), Some(&101));
        assert_eq!(encoding.ids.last(), Some(&102));
        assert!(encoding.untruncated >= encoding.ids.len());
        let vocab = tokenizer.vocab_len() as i64;
        assert!(encoding.ids.iter().all(|id| (0..vocab).contains(id)));
    }
});
