//! The models and images that ship inside Ganglion (credit and licences in
//! `crates/ganglion-runtime/assets/README.md`), so the devnet and the tests need no download.

use ganglion_types::Tensor;

use crate::vision::{self, Rgb, VisionError};

/// BlazeFace short-range (Google MediaPipe, Apache-2.0).
pub const BLAZEFACE_ONNX: &[u8] = include_bytes!("../assets/blazeface.onnx");
/// Hand landmarks, lite (Google MediaPipe, Apache-2.0).
pub const HAND_LANDMARK_ONNX: &[u8] = include_bytes!("../assets/hand_landmark_lite.onnx");
/// scikit-image's astronaut (public domain): one clear face.
pub const ASTRONAUT_PNG: &[u8] = include_bytes!("../assets/astronaut.png");
/// scikit-image's camera man (public domain).
pub const CAMERA_PNG: &[u8] = include_bytes!("../assets/camera.png");

/// A bundled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundled {
    BlazeFace,
    HandLandmark,
}

impl Bundled {
    pub const ALL: [Self; 2] = [Self::BlazeFace, Self::HandLandmark];

    pub const fn alias(self) -> &'static str {
        match self {
            Self::BlazeFace => "blazeface",
            Self::HandLandmark => "hand-landmark",
        }
    }

    pub const fn bytes(self) -> &'static [u8] {
        match self {
            Self::BlazeFace => BLAZEFACE_ONNX,
            Self::HandLandmark => HAND_LANDMARK_ONNX,
        }
    }

    pub fn by_alias(alias: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.alias() == alias)
    }

    /// The model's input for a camera frame.
    pub fn input(self, frame: &Rgb) -> Result<Tensor, VisionError> {
        match self {
            Self::BlazeFace => vision::blazeface_input(frame),
            Self::HandLandmark => vision::hand_input(frame),
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
