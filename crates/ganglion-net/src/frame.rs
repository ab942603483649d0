//! Frames: a little-endian u32 length, then that many bytes (one wire-encoded message).
//!
//! The length is checked against [`FRAME_BYTES_MAX`] before a single byte of the body is read
//! or allocated. Readers and writers keep their buffer between frames.

use bytes::Bytes;
use ganglion_types::frame::{body_len, HEADER_BYTES};
use ganglion_types::limits::FRAME_BYTES_MAX;
use ganglion_types::wire;
use quinn::SendStream;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from a stream, reusing one buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max: FRAME_BYTES_MAX,
        }
    }

    /// The stream, for reading it raw.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next frame's body; `None` when the stream ended cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let mut header = [0u8; HEADER_BYTES];
        let mut got = 0;
        while got < HEADER_BYTES {
            let n = self.inner.read(&mut header[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            got += n;
        }
        let len = body_len(header, self.max).map_err(|e| FrameError::TooLarge {
            len: e.len,
            max: e.max,
        })?;
        self.buf.resize(len, 0);
        match self.inner.read_exact(&mut self.buf).await {
            Ok(_) => Ok(Some(&self.buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
            Err(e) => Err(e.into()),
        }
    }
}

/// `message` encoded as one whole frame, length header included, to hand to any number of
/// QUIC streams without copying it again ([`FrameWriter::send_frame`]).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Bytes, FrameError> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    wire::encode_into(message, &mut buf);
    let len = buf.len() - HEADER_BYTES;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    buf[..HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(Bytes::from(buf))
}

/// Writes frames to a stream, reusing one buffer.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes `message` and writes it as one frame.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), FrameError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER_BYTES]);
        wire::encode_into(message, &mut self.buf);
        self.write_buf().await
    }

    /// Writes `body` as one frame.
    pub async fn send_raw(&mut self, body: &[u8]) -> Result<(), FrameError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER_BYTES]);
        self.buf.extend_from_slice(body);
        self.write_buf().await
    }

    async fn write_buf(&mut self) -> Result<(), FrameError> {
        let len = self.buf.len() - HEADER_BYTES;
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge {
                len,
                max: FRAME_BYTES_MAX,
            });
        }
        self.buf[..HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
        self.inner.write_all(&self.buf).await?;
        Ok(())
    }

    /// The stream, to finish or reset it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl FrameWriter<SendStream> {
    /// Writes a frame made by [`encode_frame`]: QUIC takes its bytes as they are, without the
    /// copy into this writer's buffer and the copy out of it that [`FrameWriter::send`] makes.
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), FrameError> {
        self.inner
            .write_chunk(frame)
            .await
            .map_err(|e| FrameError::Io(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_encoded_frame_reads_back_and_an_oversized_one_is_refused() {
        let message = (7u32, "seven".to_owned());
        let frame = encode_frame(&message).unwrap();
        // The same bytes FrameWriter::send puts on a stream.
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a);
        writer.send(&message).await.unwrap();
        drop(writer);
        let mut sent = Vec::new();
        let mut b = b;
        b.read_to_end(&mut sent).await.unwrap();
        assert_eq!(frame.as_ref(), sent.as_slice());
        let mut reader = FrameReader::new(frame.as_ref());
        let body = reader.next().await.unwrap().unwrap();
        assert_eq!(wire::decode::<(u32, String)>(body, 64).unwrap(), message);

        let huge = vec![0u8; FRAME_BYTES_MAX + 1];
        assert!(matches!(
            encode_frame(&huge),
            Err(FrameError::TooLarge {
                max: FRAME_BYTES_MAX,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn reader_and_writer_round_trip_and_detect_truncation() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a);
        writer.send(&(1u32, "two".to_owned())).await.unwrap();
        writer.send_raw(&[1, 2, 3]).await.unwrap();
        writer
            .get_mut()
            .write_all(&10u32.to_le_bytes())
            .await
            .unwrap();
        writer.get_mut().write_all(&[0; 3]).await.unwrap();
        drop(writer);
        let mut reader = FrameReader::new(b);
        let first = reader.next().await.unwrap().unwrap().to_vec();
        assert_eq!(
            wire::decode::<(u32, String)>(&first, 64).unwrap(),
            (1, "two".to_owned())
        );
        assert_eq!(reader.next().await.unwrap().unwrap(), &[1, 2, 3]);
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));
    }
}
