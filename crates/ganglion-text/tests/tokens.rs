//! The WordPiece tokenizer against ids made by HF `tokenizers` (`tests/make_minilm_tokens.py`),
//! and the tensors around the text model.

use ganglion_text::{
    bert_inputs, mean_pool_normalize, TextError, WordPiece, TEXT_BYTES_MAX, TOKENIZER_BYTES_MAX,
};
use ganglion_types::{DType, Tensor};
use serde::Deserialize;
use serde_json::{json, Value};

const TOKENIZER_JSON: &[u8] = include_bytes!("../../ganglion-runtime/assets/minilm_tokenizer.json");
const FIXTURE_JSON: &str = include_str!("fixtures/minilm_tokens.json");

const CLS: i64 = 101;
const SEP: i64 = 102;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    max_tokens: usize,
    ids: Vec<i64>,
    untruncated: usize,
}

fn minilm() -> WordPiece {
    WordPiece::from_json(TOKENIZER_JSON).expect("bundled tokenizer parses")
}

fn long_text() -> String {
    "Each request names its model by hash, and the provider checks every input. ".repeat(40)
}

#[test]
fn every_fixture_string_gets_the_ids_hf_tokenizers_gives() {
    let tokenizer = minilm();
    let fixture: Fixture = serde_json::from_str(FIXTURE_JSON).unwrap();
    assert!(fixture.cases.len() >= 40, "{} cases", fixture.cases.len());
    let mut mismatches = Vec::new();
    for case in &fixture.cases {
        let encoding = tokenizer.encode(&case.text, case.max_tokens).unwrap();
        if encoding.ids != case.ids || encoding.untruncated != case.untruncated {
            mismatches.push(format!(
                "{:?} (max {}):\n  ours {:?} of {}\n  hf   {:?} of {}",
                case.text,
                case.max_tokens,
                encoding.ids,
                encoding.untruncated,
                case.ids,
                case.untruncated
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        fixture.cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn truncation_keeps_cls_and_sep_and_counts_every_token() {
    let tokenizer = minilm();
    let text = long_text();
    let full = tokenizer.encode(&text, usize::MAX).unwrap();
    assert!(full.ids.len() > 256);
    assert_eq!(full.untruncated, full.ids.len());
    for max in [256, 16, 3, 2] {
        let cut = tokenizer.encode(&text, max).unwrap();
        assert_eq!(cut.ids.len(), max);
        assert_eq!(cut.untruncated, full.ids.len());
        assert_eq!(cut.ids[0], CLS);
        assert_eq!(cut.ids[max - 1], SEP);
        assert_eq!(cut.ids[..max - 1], full.ids[..max - 1]);
    }
    // Limits under 2 still give [CLS] [SEP].
    for max in [0, 1] {
        assert_eq!(tokenizer.encode(&text, max).unwrap().ids, vec![CLS, SEP]);
    }
    let empty = tokenizer.encode("", 256).unwrap();
    assert_eq!((empty.ids, empty.untruncated), (vec![CLS, SEP], 2));
}

#[test]
fn texts_over_the_limit_are_refused_before_any_work() {
    let tokenizer = minilm();
    let at_limit = "word ".repeat(TEXT_BYTES_MAX / 5);
    assert!(at_limit.len() <= TEXT_BYTES_MAX);
    let encoding = tokenizer.encode(&at_limit, 256).unwrap();
    assert_eq!(encoding.ids.len(), 256);
    assert_eq!(encoding.untruncated, TEXT_BYTES_MAX / 5 + 2);
    let over = "a".repeat(TEXT_BYTES_MAX + 1);
    assert!(matches!(
        tokenizer.encode(&over, 256),
        Err(TextError::TextTooLong { bytes }) if bytes == TEXT_BYTES_MAX + 1
    ));
}

#[test]
fn bert_inputs_are_three_i64_rows() {
    let ids = [CLS, 7592, 2088, SEP];
    let inputs = bert_inputs(&ids);
    assert_eq!(inputs.len(), 3);
    for t in &inputs {
        assert_eq!(t.dtype, DType::I64);
        assert_eq!(t.shape, vec![1, 4]);
        t.check().unwrap();
    }
    let values = |t: &Tensor| -> Vec<i64> {
        t.data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert_eq!(values(&inputs[0]), ids);
    assert_eq!(values(&inputs[1]), vec![1; 4]);
    assert_eq!(values(&inputs[2]), vec![0; 4]);
    let none = bert_inputs(&[]);
    assert!(none
        .iter()
        .all(|t| t.shape == vec![1, 0] && t.data.is_empty()));
}

#[test]
fn mean_pool_gives_the_unit_mean_vector() {
    // Two tokens of three dimensions: the mean is (2, 0, 2) over (3, 0, 4) and (1, 0, 0).
    let output = Tensor::from_f32(&[1, 2, 3], &[3.0, 0.0, 4.0, 1.0, 0.0, 0.0]).unwrap();
    let v = mean_pool_normalize(&output).unwrap();
    let half_root_two = std::f32::consts::FRAC_1_SQRT_2;
    assert_eq!(v.len(), 3);
    assert!((v[0] - half_root_two).abs() < 1e-6 && v[1] == 0.0, "{v:?}");
    assert!((v[2] - half_root_two).abs() < 1e-6, "{v:?}");
    let big = Tensor::from_f32(&[1, 5, 384], &vec![0.25; 5 * 384]).unwrap();
    let v = mean_pool_normalize(&big).unwrap();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    // A zero mean stays zero rather than dividing by zero.
    let zero = Tensor::from_f32(&[1, 1, 4], &[0.0; 4]).unwrap();
    assert_eq!(mean_pool_normalize(&zero).unwrap(), vec![0.0; 4]);
}

#[test]
fn mean_pool_refuses_what_is_not_an_embedding() {
    for shape in [
        vec![2, 3],
        vec![2, 1, 3],
        vec![1, 0, 3],
        vec![1, 3, 0],
        vec![1, 1, 1, 3],
    ] {
        let n = shape.iter().product::<u32>() as usize;
        let t = Tensor::from_f32(&shape, &vec![1.0; n]).unwrap();
        assert!(
            matches!(mean_pool_normalize(&t), Err(TextError::Output(_))),
            "{shape:?}"
        );
    }
    let ints = Tensor {
        dtype: DType::I64,
        shape: vec![1, 1, 2],
        data: vec![0; 16],
    };
    assert!(matches!(
        mean_pool_normalize(&ints),
        Err(TextError::Tensor(_))
    ));
    let short = Tensor {
        dtype: DType::F32,
        shape: vec![1, 2, 2],
        data: vec![0; 8],
    };
    assert!(matches!(
        mean_pool_normalize(&short),
        Err(TextError::Tensor(_))
    ));
    for bad in [f32::NAN, f32::INFINITY] {
        let t = Tensor::from_f32(&[1, 2, 2], &[1.0, 2.0, bad, 0.0]).unwrap();
        assert!(matches!(mean_pool_normalize(&t), Err(TextError::Output(_))));
    }
}

#[test]
fn the_bundled_tokenizer_parses_and_debug_does_not_dump_it() {
    let tokenizer = minilm();
    assert_eq!(tokenizer.vocab_len(), 30522);
    let debug = format!("{tokenizer:?}");
    assert!(debug.len() < 300 && debug.contains("30522"), "{debug}");
}

/// The bundled tokenizer, changed by `edit`, parsed again.
fn edited(edit: impl FnOnce(&mut Value)) -> Result<WordPiece, TextError> {
    let mut value: Value = serde_json::from_slice(TOKENIZER_JSON).expect("bundled JSON parses");
    edit(&mut value);
    WordPiece::from_json(&serde_json::to_vec(&value).expect("JSON values serialise"))
}

fn rename_token(value: &mut Value, from: &str, to: &str) {
    let vocab = value["model"]["vocab"]
        .as_object_mut()
        .expect("vocab is an object");
    let id = vocab.remove(from).expect("token to rename is in the vocab");
    vocab.insert(to.to_owned(), id);
}

#[test]
fn malformed_tokenizers_are_refused_with_a_reason() {
    let oversized = vec![b' '; TOKENIZER_BYTES_MAX + 1];
    assert!(matches!(
        WordPiece::from_json(&oversized),
        Err(TextError::FileTooLarge { .. })
    ));
    for garbage in [&b"not json"[..], b"{}", b"[]", &TOKENIZER_JSON[..4096]] {
        assert!(matches!(
            WordPiece::from_json(garbage),
            Err(TextError::Json(_))
        ));
    }
    for (token, renamed) in [("[CLS]", "[CLX]"), ("[SEP]", "[SEX]"), ("[UNK]", "[UNX]")] {
        let missing = edited(|v| rename_token(v, token, renamed));
        assert!(
            matches!(&missing, Err(TextError::MissingToken(t)) if t == token),
            "{missing:?}"
        );
    }
    let twice = edited(|v| v["model"]["vocab"]["hello"] = json!(0));
    assert!(matches!(twice, Err(TextError::Vocab(_))), "{twice:?}");
    let outside = edited(|v| v["model"]["vocab"]["hello"] = json!(40000));
    assert!(matches!(outside, Err(TextError::Vocab(_))), "{outside:?}");
    let negative = edited(|v| v["model"]["vocab"]["hello"] = json!(-1));
    assert!(matches!(negative, Err(TextError::Json(_))), "{negative:?}");
    let added_elsewhere = edited(|v| v["added_tokens"][0]["id"] = json!(5));
    assert!(matches!(added_elsewhere, Err(TextError::Vocab(_))));
}

#[test]
fn other_kinds_of_tokenizer_are_refused_as_unsupported() {
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 6] = [
        ("bpe", |v| v["model"]["type"] = json!("BPE")),
        ("no normalizer", |v| v["normalizer"] = Value::Null),
        ("lowercase only", |v| {
            v["normalizer"] = json!({"type": "Lowercase"})
        }),
        ("whitespace split", |v| {
            v["pre_tokenizer"] = json!({"type": "Whitespace"})
        }),
        ("huge words", |v| {
            v["model"]["max_input_chars_per_word"] = json!(1_000_000)
        }),
        ("normalized added token", |v| {
            v["added_tokens"][0]["normalized"] = json!(true)
        }),
    ];
    for (name, edit) in edits {
        let result = edited(edit);
        assert!(
            matches!(result, Err(TextError::Unsupported(_))),
            "{name}: {result:?}"
        );
    }
}
