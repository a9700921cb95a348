//! Every wire message type: whatever decodes re-encodes to exactly the
//! input bytes (canonical CBOR), and the frame splitter never panics and
//! returns frames that re-frame to the bytes it consumed.

use bftlog_spec::wire::{
    self, Block, ClientRequest, ClientResponse, ConsensusMessage, ErrorCode, FrameDecoder, LeafRef,
    QuorumCert, ReplicaSignature, Timeout, TimeoutCert, TimeoutSignature, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn canonical<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = wire::decode::<T>(data) {
        let again = wire::encode(&value);
        assert_eq!(
            again,
            data,
            "{} decoded from non-canonical bytes",
            std::any::type_name::<T>()
        );
        let round_trip: T = wire::decode(&again).expect("re-encoding decodes");
        assert_eq!(round_trip, value);
    }
}

/// Runs one `wire_decode` input; panics if a property
/// in this file's header fails.
pub fn wire_decode(data: &[u8]) {
    canonical::<ClientRequest>(data);
    canonical::<ClientResponse>(data);
    canonical::<ConsensusMessage>(data);
    canonical::<Block>(data);
    canonical::<Vote>(data);
    canonical::<Timeout>(data);
    canonical::<QuorumCert>(data);
    canonical::<TimeoutCert>(data);
    canonical::<ReplicaSignature>(data);
    canonical::<TimeoutSignature>(data);
    canonical::<LeafRef>(data);
    canonical::<ErrorCode>(data);

    // Framing: split the input at a point it chooses, with a small limit.
    if let Some((&cut, stream)) = data.split_first() {
        let at = (cut as usize).min(stream.len());
        let mut decoder = FrameDecoder::new(256);
        let mut consumed = Vec::new();
        for part in [&stream[..at], &stream[at..]] {
            decoder.push(part);
            while let Ok(Some(message)) = decoder.next_message() {
                assert!(message.len() <= 256);
                consumed.extend_from_slice(&wire::frame(&message));
            }
        }
        assert_eq!(consumed.len() + decoder.buffered(), stream.len());
        assert_eq!(consumed, stream[..consumed.len()]);
    }
}
