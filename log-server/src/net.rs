//! QUIC transport: TLS identities bound to Ed25519 keys, and framing.
//!
//! Every endpoint authenticates with an RFC 7250 **raw public key**: its
//! TLS "certificate" is the DER SubjectPublicKeyInfo of an Ed25519 key, and
//! the TLS 1.3 handshake signature proves possession of it. No X.509, no
//! CA: a replica's TLS identity *is* the Ed25519 key listed for it in the
//! cluster configuration.
//!
//! - Replica ↔ replica (ALPN `bftlog-peer/1`): both sides present their
//!   replica key. The dialler accepts only the key of the replica it
//!   dialled; the listener accepts the connection only if the presented key
//!   is another replica's ([`peer_replica`]). Unknown peers are closed.
//! - Client → replica (ALPN `bftlog-client/1`): the client accepts only the
//!   replica keys of its cluster file; it presents a fresh key of its own
//!   (any key: clients are anonymous).
//!
//! Messages are `spec::wire` frames: a 4-byte big-endian length, then
//! canonical CBOR. Each connection bounds its streams and buffers
//! ([`Limits`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, SignatureScheme};
use zeroize::Zeroizing;

/// ALPN of replica-to-replica connections.
pub const ALPN_PEER: &[u8] = b"bftlog-peer/1";
/// ALPN of client connections.
pub const ALPN_CLIENT: &[u8] = b"bftlog-client/1";
/// The TLS server name clients send. Identity comes from the key, not
/// the name.
pub const SERVER_NAME: &str = "bftlog";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's 32
/// bytes follow.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410): the 32-byte
/// seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Connection limits. Every queue and buffer has one; docs/operating.md
/// lists them with their defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent client requests per connection. Default 256.
    pub max_concurrent_requests: u32,
    /// Largest frame accepted, in bytes. Default 16 MiB (the protocol
    /// maximum).
    pub max_frame_bytes: usize,
    /// Connection idle timeout. Default 30 s. A replica sends keep-alives
    /// only on the connections it dialled (to peers): a silent client's
    /// connection idles out.
    pub idle_timeout_ms: u64,
    /// Client connections open or in their handshake, over all clients.
    /// Default 4096; beyond it new ones are refused.
    pub max_client_connections: usize,
    /// Client connections from one IP address. Default 64.
    pub max_connections_per_ip: usize,
    /// Above this many client connections, a new one must first prove its
    /// address with a QUIC Retry (one more round trip), so spoofed
    /// addresses cannot hold slots. Default 1024.
    pub retry_above_connections: usize,
    /// How long a client may take to send a whole request frame, and to
    /// take a whole response. Default 10 s each; then the stream is reset.
    pub request_read_timeout_ms: u64,
    pub response_write_timeout_ms: u64,
    /// Request bytes being read or handled for all clients at once,
    /// reserved as they arrive. Default 256 MiB; beyond it a request is
    /// answered `Overloaded`.
    pub max_inflight_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 256,
            max_frame_bytes: bftlog_spec::wire::MAX_MESSAGE_BYTES,
            idle_timeout_ms: 30_000,
            max_client_connections: 4096,
            max_connections_per_ip: 64,
            retry_above_connections: 1024,
            request_read_timeout_ms: 10_000,
            response_write_timeout_ms: 10_000,
            max_inflight_request_bytes: 256 << 20,
        }
    }
}

/// The largest piece of a frame read at once: a frame's buffer grows as
/// its bytes arrive, so a declared length costs nothing until it is sent.
pub const FRAME_READ_CHUNK_BYTES: usize = 64 << 10;

/// Why a TLS or endpoint configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// The DER SubjectPublicKeyInfo of an Ed25519 key.
pub fn ed25519_spki(key: &VerifyingKey) -> Vec<u8> {
    let mut der = SPKI_ED25519_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    der
}

/// The Ed25519 key in a DER SubjectPublicKeyInfo, if that is what it is.
pub fn parse_ed25519_spki(der: &[u8]) -> Option<[u8; 32]> {
    let key = der.strip_prefix(&SPKI_ED25519_PREFIX[..])?;
    key.try_into().ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(key: &SigningKey) -> Result<CertifiedKey, TlsSetupError> {
    // The PKCS#8 copy of the seed is parsed from a borrowed buffer (the
    // provider's loader would take, and drop without wiping, an owned
    // one) and wiped when it goes.
    let mut pkcs8 = Zeroizing::new(Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32));
    pkcs8.extend_from_slice(&PKCS8_ED25519_PREFIX);
    pkcs8.extend_from_slice(key.as_bytes());
    let signing =
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))?;
    let spki = CertificateDer::from(ed25519_spki(&key.verifying_key()));
    Ok(CertifiedKey::new(vec![spki], signing))
}

fn transport(limits: &Limits, client_requests: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let frame = limits.max_frame_bytes as u64;
    t.max_concurrent_bidi_streams(if client_requests {
        limits.max_concurrent_requests.into()
    } else {
        0u32.into()
    });
    // Replicas use one long-lived stream per direction (plus reconnects).
    t.max_concurrent_uni_streams(4u32.into());
    t.stream_receive_window(quinn::VarInt::from_u64(frame + 1024).expect("fits"));
    t.receive_window(quinn::VarInt::from_u64(4 * frame).expect("fits"));
    t.send_window(4 * frame);
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
            .expect("idle timeout in range"),
    ));
    // Keep-alives only from the side that dials (a replica to its peers,
    // a client if it wishes): a listener that kept every connection alive
    // would let a silent client hold its slot forever.
    t.keep_alive_interval(
        (!client_requests).then(|| Duration::from_millis(limits.idle_timeout_ms / 3)),
    );
    // Probe above quinn's default bound (1452): on loopback and jumbo-frame
    // links fewer, larger packets carry the same bytes (per-packet
    // encryption, acknowledgements and syscalls dominated the network
    // threads' CPU); on a 1500-byte path the probes fail and it stays near
    // 1452.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The largest UDP payload MTU discovery tries. Measured on loopback
/// (`bftlog bench`, n = 4, docs/performance.md): 1,452 gave 38k entries/s
/// at 64 clients, 4,096 gave 42-44k with the same 17 ms for a lone
/// client's 256-entry append; at 8,192 and above, throughput fell back and
/// that lone append took 100-360 ms (quinn's sender stalls with so few
/// packets per congestion window; a larger initial window did not help).
pub const MTU_DISCOVERY_UPPER_BOUND: u16 = 4096;

/// Largest UDP payload accepted from a peer: the UDP maximum, so a peer
/// that probes higher is never refused.
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 65_527;

/// Socket buffer asked for, per direction. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max` (the operator guide says how to raise
/// them). At Linux's default of 208 KiB a burst of large datagrams
/// (a proposal of thousands of entries) overflowed the receive buffer,
/// and each drop cost a retransmission: a tail of hundreds of ms.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Endpoint settings shared by replicas and clients.
fn endpoint_config(config: &mut quinn::EndpointConfig) {
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .expect("in range");
}

/// Binds a UDP socket with large buffers (best effort: a smaller buffer
/// than asked for only costs throughput, so a refusal is logged, not fatal).
fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    for (what, result) in [
        (
            "receive",
            state.set_recv_buffer_size((&socket).into(), UDP_SOCKET_BUFFER_BYTES),
        ),
        (
            "send",
            state.set_send_buffer_size((&socket).into(), UDP_SOCKET_BUFFER_BYTES),
        ),
    ] {
        if let Err(e) = result {
            tracing::warn!(%addr, error = %e, "cannot enlarge the UDP {what} buffer");
        }
    }
    Ok(socket)
}

/// The listening side of a replica: serves both ALPNs; any client key is
/// accepted at the TLS layer, and [`peer_replica`] decides peer access.
pub fn server_config(
    key: &SigningKey,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let provider = provider();
    let certified = Arc::new(certified_key(key)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyEd25519Client {
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified),
        ));
    tls.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsSetupError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits, true)));
    // Connection attempts not yet taken by the accept loop, and the
    // packets they buffer: the loop takes them at once, so these only
    // bound a burst.
    config.max_incoming(limits.max_client_connections.max(64));
    config.incoming_buffer_size_total(16 << 20);
    Ok(config)
}

/// A dialling configuration that presents `own` and accepts only a server
/// holding one of `accepted` keys.
pub fn client_config(
    own: &SigningKey,
    accepted: &[VerifyingKey],
    alpn: &[u8],
    limits: &Limits,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let provider = provider();
    let certified = Arc::new(certified_key(own)?);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerKeys {
            keys: accepted.iter().map(|k| k.to_bytes()).collect(),
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified),
        ));
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsSetupError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = transport(limits, false);
    if alpn == ALPN_PEER {
        transport.initial_rtt(PEER_INITIAL_RTT);
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The round-trip estimate a replica's dial starts with, before it has a
/// sample. quinn's default (333 ms, RFC 9002's) first retransmits a lost
/// handshake packet a second later; a replica that dialled a peer not yet
/// listening (at cluster start, or while the peer restarts) lost that
/// first packet, and the link came up a second late, long enough for a
/// round to time out. From 50 ms the retransmissions come at 150 and 450
/// ms; on a link slower than that a spare copy of the first packet is all
/// it costs.
pub const PEER_INITIAL_RTT: Duration = Duration::from_millis(50);

/// How long a replica waits on one dial of a peer before starting a fresh
/// one. Within an attempt quinn's retransmissions back off (a peer away
/// for 10 s would be reached up to 5 s after it was back); fresh attempts
/// bound that. Long enough for a handshake over a link of several hundred
/// milliseconds of round trip.
pub const PEER_CONNECT_ATTEMPT: Duration = Duration::from_secs(1);

/// The negotiated ALPN of an established connection.
pub fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The Ed25519 key the remote end authenticated with.
pub fn remote_key(connection: &quinn::Connection) -> Option<[u8; 32]> {
    let certs = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    match certs.as_slice() {
        [one] => parse_ed25519_spki(one.as_ref()),
        _ => None,
    }
}

/// The replica id behind a peer connection: its key must be one of
/// `replicas` and not `own`.
pub fn peer_replica(
    connection: &quinn::Connection,
    replicas: &[VerifyingKey],
    own: u16,
) -> Option<u16> {
    let key = remote_key(connection)?;
    let id = replicas.iter().position(|k| k.as_bytes() == &key)?;
    (id != own as usize).then_some(id as u16)
}

/// Binds a QUIC endpoint that listens on `addr` and can also dial.
///
/// The stateless-reset key is derived from the replica's signing key, so it
/// survives restarts: after a crash, the restarted replica answers packets
/// of its peers' old connections with a *valid* stateless reset, and they
/// reconnect at once instead of writing into a dead connection until the
/// idle timeout.
pub fn endpoint(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    key: &SigningKey,
) -> std::io::Result<quinn::Endpoint> {
    let reset_key = Zeroizing::new(derive_key(b"bftlog QUIC stateless reset key v1\0", key));
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key.as_slice());
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config(&mut config);
    // Connection IDs carry a keyed check; a random key per process would
    // make the restarted endpoint drop the old connections' packets as
    // invalid instead of resetting them, so it is derived too, by its own
    // label: no bytes of the reset key appear in it.
    let cid_key = Zeroizing::new(derive_key(b"bftlog QUIC connection ID key v1\0", key));
    let cid_key = u64::from_le_bytes(cid_key[..8].try_into().expect("8 bytes"));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let socket = bind_socket(addr)?;
    quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
}

/// A 32-byte key for `label`, derived from the replica's signing key.
fn derive_key(label: &[u8], key: &SigningKey) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(label);
    hasher.update(key.as_bytes());
    hasher.finalize().into()
}

/// A client-only endpoint on an ephemeral port of the right family.
pub fn client_endpoint(peer: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let mut config = quinn::EndpointConfig::default();
    endpoint_config(&mut config);
    let socket = bind_socket(bind)?;
    quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))
}

// ---------------------------------------------------------------------------
// Framing over QUIC streams
// ---------------------------------------------------------------------------

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("frame of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("the frame's bytes exceed what may be in flight")]
    OverBudget,
    #[error("stream closed")]
    Closed,
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("read: {0}")]
    ReadChunk(#[from] quinn::ReadError),
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<Vec<u8>>, FrameReadError> {
    let Some(len) = read_frame_len(recv, limit).await? else {
        return Ok(None);
    };
    read_frame_body(recv, len).await.map(Some)
}

/// Reads a frame's header: the length of its body, at most `limit`.
/// `Ok(None)` when the stream ends cleanly before it.
pub async fn read_frame_len(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<usize>, FrameReadError> {
    let mut header = [0u8; bftlog_spec::wire::FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameReadError::Truncated),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(FrameReadError::TooLarge(len, limit));
    }
    Ok(Some(len))
}

/// Reads a frame body of `len` bytes. The buffer grows as bytes arrive
/// ([`FRAME_READ_CHUNK_BYTES`] at a time at most), so a peer that
/// declares 16 MiB and sends nothing costs nothing.
pub async fn read_frame_body(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Vec<u8>, FrameReadError> {
    read_frame_body_admitting(recv, len, |_| true).await
}

/// [`read_frame_body`], asking `admit` for each piece's bytes before
/// keeping it (a budget of bytes in flight): `OverBudget` once it says no.
pub async fn read_frame_body_admitting(
    recv: &mut quinn::RecvStream,
    len: usize,
    mut admit: impl FnMut(usize) -> bool,
) -> Result<Vec<u8>, FrameReadError> {
    let mut body = Vec::with_capacity(len.min(FRAME_READ_CHUNK_BYTES));
    while body.len() < len {
        let want = (len - body.len()).min(FRAME_READ_CHUNK_BYTES);
        match recv.read_chunk(want, true).await? {
            Some(chunk) if admit(chunk.bytes.len()) => body.extend_from_slice(&chunk.bytes),
            Some(_) => return Err(FrameReadError::OverBudget),
            None => return Err(FrameReadError::Truncated),
        }
    }
    Ok(body)
}

// ---------------------------------------------------------------------------
// Verifiers
// ---------------------------------------------------------------------------

/// Only TLS 1.3 is configured; a TLS 1.2 signature never counts.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The TLS 1.3 handshake signature, checked against the raw key itself.
fn verify_raw_key_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algorithms,
    )
}

/// Client side: the server must hold one of these Ed25519 keys.
#[derive(Debug)]
struct PinnedServerKeys {
    keys: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerKeys {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = parse_ed25519_spki(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        )?;
        if !intermediates.is_empty() || !self.keys.contains(&key) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Server side: any Ed25519 raw public key, proven by the handshake
/// signature. Whether it may act as a replica is decided afterwards.
#[derive(Debug)]
struct AnyEd25519Client {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyEd25519Client {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() || parse_ed25519_spki(end_entity.as_ref()).is_none() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_raw_key_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    async fn handshake(
        server_key: &SigningKey,
        client_key: &SigningKey,
        accepted: &[VerifyingKey],
    ) -> Result<(Option<[u8; 32]>, Option<Vec<u8>>), String> {
        let server = endpoint(
            "127.0.0.1:0".parse().unwrap(),
            server_config(server_key, &Limits::default()).unwrap(),
            server_key,
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.unwrap();
            match incoming.await {
                Ok(conn) => Ok((remote_key(&conn), alpn(&conn))),
                Err(e) => Err(e.to_string()),
            }
        });
        let client = client_endpoint(addr).unwrap();
        let config = client_config(client_key, accepted, ALPN_PEER, &Limits::default()).unwrap();
        let dialled = client
            .connect_with(config, addr, SERVER_NAME)
            .unwrap()
            .await;
        let server_side = accept.await.unwrap();
        match dialled {
            Ok(conn) => {
                assert_eq!(
                    remote_key(&conn),
                    Some(server_key.verifying_key().to_bytes())
                );
                server_side
            }
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn both_ends_authenticate_with_their_ed25519_keys() {
        let (server, client) = (key(1), key(2));
        let (seen, protocol) = handshake(&server, &client, &[server.verifying_key()])
            .await
            .unwrap();
        assert_eq!(seen, Some(client.verifying_key().to_bytes()));
        assert_eq!(protocol.as_deref(), Some(ALPN_PEER));
    }

    #[tokio::test]
    async fn a_server_with_an_unlisted_key_is_refused() {
        let (server, client) = (key(1), key(2));
        let err = handshake(&server, &client, &[key(3).verifying_key()])
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn spki_round_trips() {
        let k = key(9).verifying_key();
        assert_eq!(parse_ed25519_spki(&ed25519_spki(&k)), Some(k.to_bytes()));
        assert_eq!(parse_ed25519_spki(&ed25519_spki(&k)[1..]), None);
    }
}
