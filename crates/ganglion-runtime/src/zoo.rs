//! The models and images that ship inside Ganglion (credit and licences in
//! `crates/ganglion-runtime/assets/README.md`), so the devnet and the tests need no download.

use ganglion_types::Tensor;

use crate::vision::{self, Rgb, VisionError};

/// BlazeFace short-range (Google MediaPipe, Apache-2.0).
pub const BLAZEFACE_ONNX: &[u8] = include_bytes!("../assets/blazeface.onnx");
/// Hand landmarks, lite (Google MediaPipe, Apache-2.0).
pub const HAND_LANDMARK_ONNX: &[u8] = include_bytes!("../assets/hand_landmark_lite.onnx");
/// all-MiniLM-L6-v2 sentence embeddings, int8 weights (sentence-transformers, Apache-2.0), with
/// its embedding table gathered before dequantisation (`assets/fix_int8_gather.py`).
pub const MINILM_ONNX: &[u8] = include_bytes!("../assets/minilm_int8.onnx");
/// MiniLM's tokenizer (BERT uncased WordPiece, HF tokenizers format; MIT package).
pub const MINILM_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/minilm_tokenizer.json");
/// Tokens MiniLM reads at most ([CLS] and [SEP] included): sentence-transformers' setting
/// for this model; longer texts are truncated, as sentence-transformers does.
pub const MINILM_TOKENS_MAX: usize = 256;
/// scikit-image's astronaut (public domain): one clear face.
pub const ASTRONAUT_PNG: &[u8] = include_bytes!("../assets/astronaut.png");
/// scikit-image's camera man (public domain).
pub const CAMERA_PNG: &[u8] = include_bytes!("../assets/camera.png");

/// A bundled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundled {
    BlazeFace,
    HandLandmark,
    /// Text in, one 384-dimensional embedding per text out (mean-pooled, normalised).
    MiniLm,
}

impl Bundled {
    pub const ALL: [Self; 3] = [Self::BlazeFace, Self::HandLandmark, Self::MiniLm];

    pub const fn alias(self) -> &'static str {
        match self {
            Self::BlazeFace => "blazeface",
            Self::HandLandmark => "hand-landmark",
            Self::MiniLm => "all-minilm-l6-v2",
        }
    }

    pub const fn bytes(self) -> &'static [u8] {
        match self {
            Self::BlazeFace => BLAZEFACE_ONNX,
            Self::HandLandmark => HAND_LANDMARK_ONNX,
            Self::MiniLm => MINILM_ONNX,
        }
    }

    pub fn by_alias(alias: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.alias() == alias)
    }

    /// Whether the model takes camera frames ([`Bundled::input`]).
    pub const fn takes_images(self) -> bool {
        matches!(self, Self::BlazeFace | Self::HandLandmark)
    }

    /// The model's input for a camera frame.
    pub fn input(self, frame: &Rgb) -> Result<Tensor, VisionError> {
        match self {
            Self::BlazeFace => vision::blazeface_input(frame),
            Self::HandLandmark => vision::hand_input(frame),
            Self::MiniLm => Err(VisionError::NotAnImageModel(self.alias())),
        }
    }
}

/// The bundled camera frames, decoded.
pub fn frames() -> Result<Vec<Rgb>, VisionError> {
    [ASTRONAUT_PNG, CAMERA_PNG]
        .into_iter()
        .map(vision::decode_image)
        .collect()
}
