//! View sync: a node that connects to a peer asks it once for the offers its view holds, so
//! that a robot joining the network can place a session at once instead of waiting for every
//! provider to republish (gossip has no history). Every offer received this way goes through
//! the same checks as a gossiped one: signature, expiry, sequence number, bounds.
//!
//! Wire format (protocol [`PROTOCOL`]): the request is one version byte; the response is a
//! little-endian `u32` count followed by that many `u32`-length-prefixed signed envelopes.
//! At most [`OFFERS_MAX`] envelopes of at most [`ENVELOPE_BYTES_MAX`] bytes each, and
//! [`RESPONSE_BYTES_MAX`] in all; anything past that is a protocol error.

use std::io;

use ganglion_types::limits::ENVELOPE_BYTES_MAX;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The sync protocol's name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ganglion/sync/1");

/// Version byte of the request.
const VERSION: u8 = 1;

/// Most offers one sync response carries.
pub const OFFERS_MAX: usize = 4_096;

/// Most bytes one sync response carries.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The sync codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

async fn read_u32<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    io.read_exact(&mut bytes).await?;
    Ok(u32::from_le_bytes(bytes))
}

/// Reads a sync response, checking every bound before allocating.
pub async fn read_offers<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<Vec<u8>>> {
    let count = read_u32(io).await? as usize;
    if count > OFFERS_MAX {
        return Err(invalid(format!("{count} offers, more than {OFFERS_MAX}")));
    }
    let mut total = 0usize;
    let mut offers = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_u32(io).await? as usize;
        total = total.saturating_add(len);
        if len > ENVELOPE_BYTES_MAX || total > RESPONSE_BYTES_MAX {
            return Err(invalid(format!(
                "offer of {len} bytes ({total} in all) over the limits"
            )));
        }
        let mut bytes = vec![0u8; len];
        io.read_exact(&mut bytes).await?;
        offers.push(bytes);
    }
    Ok(offers)
}

/// [`read_offers`] over bytes already received (fuzzing and tests).
pub fn decode_offers(bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    libp2p::futures::executor::block_on(read_offers(&mut libp2p::futures::io::Cursor::new(bytes)))
}

/// Writes a sync response (the caller keeps within the bounds; extra offers are left out).
pub async fn write_offers<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    offers: &[Vec<u8>],
) -> io::Result<()> {
    let mut total = 0usize;
    let fitting: Vec<&Vec<u8>> = offers
        .iter()
        .filter(|o| o.len() <= ENVELOPE_BYTES_MAX)
        .take_while(|o| {
            total += o.len();
            total <= RESPONSE_BYTES_MAX
        })
        .take(OFFERS_MAX)
        .collect();
    let count = u32::try_from(fitting.len()).map_err(|e| invalid(e.to_string()))?;
    io.write_all(&count.to_le_bytes()).await?;
    for offer in fitting {
        let len = u32::try_from(offer.len()).map_err(|e| invalid(e.to_string()))?;
        io.write_all(&len.to_le_bytes()).await?;
        io.write_all(offer).await?;
    }
    io.close().await
}

#[async_trait::async_trait]
impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Vec<Vec<u8>>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut version = [0u8; 1];
        io.read_exact(&mut version).await?;
        if version[0] != VERSION {
            return Err(invalid(format!("sync version {}", version[0])));
        }
        Ok(())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_offers(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[VERSION]).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        offers: Vec<Vec<u8>>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_offers(io, &offers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    #[test]
    fn offers_round_trip_and_oversized_responses_are_refused_before_allocating() {
        let offers = vec![vec![1u8; 300], vec![2u8; 40]];
        let mut wire = Cursor::new(Vec::new());
        block_on(write_offers(&mut wire, &offers)).unwrap_or_else(|e| panic!("{e}"));
        let mut back = Cursor::new(wire.into_inner());
        assert_eq!(block_on(read_offers(&mut back)).ok(), Some(offers));

        let mut many = Cursor::new((OFFERS_MAX as u32 + 1).to_le_bytes().to_vec());
        let err = block_on(read_offers(&mut many))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("more than")));

        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend((ENVELOPE_BYTES_MAX as u32 + 1).to_le_bytes());
        let err = block_on(read_offers(&mut Cursor::new(huge))).err();
        assert!(err.is_some_and(|e| e.to_string().contains("over the limits")));

        // Truncated: an error, not a hang or a short list.
        let mut cut = 2u32.to_le_bytes().to_vec();
        cut.extend(5u32.to_le_bytes());
        cut.extend([1, 2, 3]);
        assert!(block_on(read_offers(&mut Cursor::new(cut))).is_err());
    }
}
