//! Bounds shared by every node. Each one exists so that nothing a peer sends can make a node
//! allocate, wait or loop without limit.

/// Largest data-plane frame, checked before any allocation. A 224x224 RGB f32 image is ~600 KiB
/// and the echo benchmark sends 1 MiB; 8 MiB leaves room for batches without letting a peer
/// make a node reserve more than that per stream.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Largest signed envelope (control-plane message). Offers and heartbeats are a few hundred
/// bytes; 64 KiB is generous and still cheap to hold for every peer.
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024;

/// Furthest in the future an envelope may expire. Longer-lived messages must be re-signed, so a
/// stolen message stops being useful within this time.
pub const ENVELOPE_TTL_MS_MAX: u64 = 10 * 60 * 1000;

/// Authors the replay guard remembers. Past this the least recently seen is forgotten (an old
/// message of that author could then be accepted again until it expires).
pub const REPLAY_AUTHORS_MAX: usize = 65_536;

/// Tensors in one request or answer (BlazeFace answers 2, hand landmarks 4).
pub const TENSORS_MAX: usize = 16;

/// Dimensions of one tensor.
pub const TENSOR_RANK_MAX: usize = 8;

/// Bytes of human-readable text in an error sent over the wire.
pub const ERROR_TEXT_BYTES_MAX: usize = 512;

/// Bytes of a model alias ("blazeface").
pub const ALIAS_BYTES_MAX: usize = 64;
