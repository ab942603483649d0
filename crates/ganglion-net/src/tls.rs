//! TLS for the data plane: each side presents a self-signed certificate that carries its node
//! key and that key's signature over the certificate's own key (the libp2p TLS scheme,
//! implemented by `libp2p-tls`). Verifying the certificate proves the peer holds the node key,
//! so the connection is authenticated as the peer's `did:key`, with no certificate authority.

use ganglion_types::{NodeId, NodeKey};
use libp2p_identity::{Keypair, PeerId};

/// ALPN protocol of Ganglion's data plane.
pub const ALPN: &[u8] = b"ganglion/1";

/// Why TLS could not be set up or a peer's identity not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot make a certificate for the node key: {0}")]
    Certificate(String),
    #[error("cannot configure QUIC crypto: {0}")]
    Quic(String),
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate does not prove a node key: {0}")]
    BadCertificate(String),
    #[error("peer key is not an Ed25519 key")]
    NotEd25519,
}

/// The libp2p keypair for a node key (same Ed25519 key).
pub fn keypair(key: &NodeKey) -> Result<Keypair, TlsError> {
    Keypair::ed25519_from_bytes(key.seed()).map_err(|e| TlsError::Certificate(e.to_string()))
}

/// The libp2p peer id of a node.
pub fn peer_id(id: &NodeId) -> Result<PeerId, TlsError> {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(id.as_bytes())
        .map_err(|_| TlsError::NotEd25519)?;
    Ok(libp2p_identity::PublicKey::from(key).to_peer_id())
}

/// The node behind a libp2p peer id (Ed25519 ids inline their key).
pub fn node_id(peer: &PeerId) -> Result<NodeId, TlsError> {
    // An Ed25519 peer id is an identity multihash: code 0x00, digest length, then the
    // protobuf-encoded public key.
    let bytes = peer.to_bytes();
    let digest = match bytes.as_slice() {
        [0x00, len, digest @ ..] if usize::from(*len) == digest.len() => digest,
        _ => return Err(TlsError::NotEd25519),
    };
    let key = libp2p_identity::PublicKey::try_decode_protobuf(digest)
        .map_err(|_| TlsError::NotEd25519)?
        .try_into_ed25519()
        .map_err(|_| TlsError::NotEd25519)?;
    Ok(NodeId::from_bytes(key.to_bytes()))
}

/// rustls configuration for accepting connections as `key` (clients must prove a node key too).
pub fn server_crypto(key: &NodeKey) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = libp2p_tls::make_server_config(&keypair(key)?)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// rustls configuration for connecting as `key` to the node `expected` (the handshake fails if
/// the server cannot prove that identity).
pub fn client_crypto(key: &NodeKey, expected: &NodeId) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = libp2p_tls::make_client_config(&keypair(key)?, Some(peer_id(expected)?))
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The node on the other side of an established connection, from its verified certificate.
pub fn remote_id(connection: &quinn::Connection) -> Result<NodeId, TlsError> {
    let identity = connection.peer_identity().ok_or(TlsError::NoCertificate)?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoCertificate)?;
    let cert = certs.first().ok_or(TlsError::NoCertificate)?;
    let parsed = libp2p_tls::certificate::parse(cert)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    node_id(&parsed.peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_node_id_convert_both_ways() {
        let id = NodeKey::from_seed([5; 32]).id();
        let peer = peer_id(&id).unwrap();
        assert_eq!(node_id(&peer).unwrap(), id);
        let from_keypair = keypair(&NodeKey::from_seed([5; 32]))
            .unwrap()
            .public()
            .to_peer_id();
        assert_eq!(from_keypair, peer);
    }
}
