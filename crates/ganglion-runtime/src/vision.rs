//! Images in, model inputs out; model outputs in, faces and hand landmarks out.
//!
//! BlazeFace decoding follows MediaPipe's `face_detection_short_range` graph: 896 SSD anchors
//! (strides 8, 16, 16, 16 on a 128x128 input, two anchors per cell per layer, fixed anchor size),
//! box offsets scaled by 128, sigmoid scores, then non-maximum suppression.

use std::io::Cursor;
use std::sync::OnceLock;

use ganglion_types::{tensor::TensorError, Tensor};

/// Largest image side accepted (pixels). Camera frames are far smaller; this bounds memory.
pub const IMAGE_SIDE_MAX: u32 = 8192;

/// Largest decoded image, in bytes, before it is resized.
pub const IMAGE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// BlazeFace short-range input side.
pub const BLAZEFACE_SIDE: u32 = 128;

/// Hand landmark input side.
pub const HAND_SIDE: u32 = 224;

/// Faces overlapping more than this (intersection over union) are the same face.
const NMS_IOU_MAX: f32 = 0.3;

/// Why an image or an output could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} is empty or larger than {IMAGE_SIDE_MAX} pixels a side")]
    Size { width: u32, height: u32 },
    #[error("model output has the wrong shape: {0}")]
    Output(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("model {0} does not take images")]
    NotAnImageModel(&'static str),
}

/// An 8-bit RGB image.
#[derive(Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB triples.
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgb({}x{})", self.width, self.height)
    }
}

/// Decodes a PNG or JPEG image, refusing sizes beyond the limits before allocating for them.
pub fn decode_image(bytes: &[u8]) -> Result<Rgb, VisionError> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::Decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(IMAGE_SIDE_MAX);
    limits.max_image_height = Some(IMAGE_SIDE_MAX);
    limits.max_alloc = Some(IMAGE_BYTES_MAX);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| VisionError::Decode(e.to_string()))?
        .to_rgb8();
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(VisionError::Size { width, height });
    }
    Ok(Rgb {
        width,
        height,
        pixels: image.into_raw(),
    })
}

/// Bilinear resize (pixel centres aligned, as OpenCV's `INTER_LINEAR`).
pub fn resize(src: &Rgb, width: u32, height: u32) -> Rgb {
    let (sw, sh) = (src.width as usize, src.height as usize);
    let (dw, dh) = (width as usize, height as usize);
    let mut pixels = vec![0u8; dw * dh * 3];
    let sx = sw as f32 / dw as f32;
    let sy = sh as f32 / dh as f32;
    let axis = |d: usize, scale: f32, len: usize| {
        let f = ((d as f32 + 0.5) * scale - 0.5).clamp(0.0, (len - 1) as f32);
        let i = f.floor() as usize;
        (i, (i + 1).min(len - 1), f - i as f32)
    };
    for y in 0..dh {
        let (y0, y1, fy) = axis(y, sy, sh);
        for x in 0..dw {
            let (x0, x1, fx) = axis(x, sx, sw);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| f32::from(src.pixels[(yy * sw + xx) * 3 + c]);
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                pixels[(y * dw + x) * 3 + c] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    Rgb {
        width,
        height,
        pixels,
    }
}

/// How pixel values map to model input values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// [0, 255] to [-1, 1] (BlazeFace).
    MinusOneToOne,
    /// [0, 255] to [0, 1] (hand landmarks).
    ZeroToOne,
}

/// A [1, 3, H, W] f32 tensor (planar RGB) from an image.
pub fn to_chw(image: &Rgb, scale: Scale) -> Result<Tensor, VisionError> {
    let plane = image.width as usize * image.height as usize;
    let mut values = vec![0f32; plane * 3];
    for (i, px) in image.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let v = f32::from(px[c]);
            values[c * plane + i] = match scale {
                Scale::MinusOneToOne => v / 127.5 - 1.0,
                Scale::ZeroToOne => v / 255.0,
            };
        }
    }
    Ok(Tensor::from_f32(
        &[1, 3, image.height, image.width],
        &values,
    )?)
}

/// The BlazeFace input for an image of any size.
pub fn blazeface_input(image: &Rgb) -> Result<Tensor, VisionError> {
    to_chw(
        &resize(image, BLAZEFACE_SIDE, BLAZEFACE_SIDE),
        Scale::MinusOneToOne,
    )
}

/// The hand landmark input for an image of any size.
pub fn hand_input(image: &Rgb) -> Result<Tensor, VisionError> {
    to_chw(&resize(image, HAND_SIDE, HAND_SIDE), Scale::ZeroToOne)
}

/// A detected face; coordinates are fractions of the image's width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    pub score: f32,
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    /// Eyes, nose tip, mouth, ear tragions.
    pub keypoints: [(f32, f32); 6],
}

#[derive(Clone, Copy)]
struct Anchor {
    x: f32,
    y: f32,
}

fn anchors() -> &'static [Anchor] {
    static ANCHORS: OnceLock<Vec<Anchor>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        // (feature map side, anchors per cell): stride 8 -> 16x16 with 2; the three stride-16
        // layers share an 8x8 map with 2 each.
        let mut out = Vec::with_capacity(896);
        for (side, per_cell) in [(16usize, 2usize), (8, 6)] {
            for y in 0..side {
                for x in 0..side {
                    let anchor = Anchor {
                        x: (x as f32 + 0.5) / side as f32,
                        y: (y as f32 + 0.5) / side as f32,
                    };
                    out.extend(std::iter::repeat_n(anchor, per_cell));
                }
            }
        }
        out
    })
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

fn output_f32(outputs: &[Tensor], index: usize, len: usize) -> Result<Vec<f32>, VisionError> {
    let tensor = outputs
        .get(index)
        .ok_or_else(|| VisionError::Output(format!("missing output {index}")))?;
    let values = tensor.to_f32()?;
    if values.len() != len {
        return Err(VisionError::Output(format!(
            "output {index} has {} values, expected {len}",
            values.len()
        )));
    }
    Ok(values)
}

/// The highest face score (0 to 1) in BlazeFace's outputs.
pub fn max_face_score(outputs: &[Tensor]) -> Result<f32, VisionError> {
    let logits = output_f32(outputs, 1, 896)?;
    Ok(logits.into_iter().map(sigmoid).fold(0.0, f32::max))
}

/// Faces scoring at least `min_score`, best first, after non-maximum suppression.
pub fn decode_faces(outputs: &[Tensor], min_score: f32) -> Result<Vec<Face>, VisionError> {
    let boxes = output_f32(outputs, 0, 896 * 16)?;
    let logits = output_f32(outputs, 1, 896)?;
    let side = BLAZEFACE_SIDE as f32;
    let mut faces: Vec<Face> = anchors()
        .iter()
        .zip(boxes.chunks_exact(16))
        .zip(logits)
        .filter_map(|((anchor, raw), logit)| {
            let score = sigmoid(logit);
            (score >= min_score).then(|| {
                let (cx, cy) = (raw[0] / side + anchor.x, raw[1] / side + anchor.y);
                let (w, h) = (raw[2] / side, raw[3] / side);
                let mut keypoints = [(0.0, 0.0); 6];
                for (k, point) in keypoints.iter_mut().enumerate() {
                    *point = (
                        raw[4 + 2 * k] / side + anchor.x,
                        raw[5 + 2 * k] / side + anchor.y,
                    );
                }
                Face {
                    score,
                    x_min: cx - w / 2.0,
                    y_min: cy - h / 2.0,
                    x_max: cx + w / 2.0,
                    y_max: cy + h / 2.0,
                    keypoints,
                }
            })
        })
        .collect();
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for face in faces {
        if kept.iter().all(|k| iou(k, &face) <= NMS_IOU_MAX) {
            kept.push(face);
        }
    }
    Ok(kept)
}

fn iou(a: &Face, b: &Face) -> f32 {
    let w = (a.x_max.min(b.x_max) - a.x_min.max(b.x_min)).max(0.0);
    let h = (a.y_max.min(b.y_max) - a.y_min.max(b.y_min)).max(0.0);
    let inter = w * h;
    let area = |f: &Face| (f.x_max - f.x_min) * (f.y_max - f.y_min);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// 21 hand landmarks; x and y are fractions of the input image, z is relative depth.
#[derive(Debug, Clone, PartialEq)]
pub struct Hand {
    /// Probability that a hand is in the image.
    pub presence: f32,
    /// Probability that it is a right hand.
    pub right_handed: f32,
    pub points: [[f32; 3]; 21],
}

/// Decodes the hand landmark model's outputs (landmarks, presence, handedness, world landmarks).
pub fn decode_hand(outputs: &[Tensor]) -> Result<Hand, VisionError> {
    let raw = output_f32(outputs, 0, 63)?;
    // Both scores come out of the model already squashed to [0, 1].
    let presence = output_f32(outputs, 1, 1)?[0];
    let right_handed = output_f32(outputs, 2, 1)?[0];
    let side = HAND_SIDE as f32;
    let mut points = [[0f32; 3]; 21];
    for (point, xyz) in points.iter_mut().zip(raw.chunks_exact(3)) {
        *point = [xyz[0] / side, xyz[1] / side, xyz[2] / side];
    }
    Ok(Hand {
        presence,
        right_handed,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_896_anchors_in_mediapipe_order() {
        let a = anchors();
        assert_eq!(a.len(), 896);
        assert_eq!((a[0].x, a[0].y), (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!((a[512].x, a[512].y), (0.5 / 8.0, 0.5 / 8.0));
        assert_eq!((a[895].x, a[895].y), (7.5 / 8.0, 7.5 / 8.0));
    }

    #[test]
    fn resize_keeps_a_flat_colour_and_scales_to_the_range() {
        let img = Rgb {
            width: 3,
            height: 2,
            pixels: [10, 200, 255].repeat(6),
        };
        let small = resize(&img, 7, 5);
        assert_eq!(small.pixels, [10, 200, 255].repeat(35));
        let t = to_chw(&small, Scale::MinusOneToOne).unwrap();
        assert_eq!(t.shape, vec![1, 3, 5, 7]);
        let v = t.to_f32().unwrap();
        assert!((v[0] - (10.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!((v[35 * 2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert!(matches!(
            decode_image(b"not a png"),
            Err(VisionError::Decode(_))
        ));
    }
}
