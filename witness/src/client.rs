//! A tlog-witness client: what a log uses to obtain cosignatures from any
//! C2SP witness (this one or another implementation).
//!
//! [`WitnessClient::add_checkpoint`] posts one request over a kept-alive
//! HTTP/1.1 connection and returns the witness's cosignatures only after
//! verifying them with the witness key the caller trusts. Plain `http://`
//! only; put a TLS proxy in front for witnesses reached over the internet.

use crate::request::format_add_checkpoint;
use bftlog_spec::merkle::Hash;
use bftlog_spec::note::{KeyRing, KeyType, Note, NoteSignature, VerifierKey};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Largest witness response read (a few signature lines, or an error).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WitnessUrlError {
    #[error("witness URL {0:?} must start with http:// (https is not built in)")]
    Scheme(String),
    #[error("witness URL {0:?} has no host:port")]
    Authority(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WitnessClientError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge,
    #[error("409 answer without a valid text/x.tlog.size body")]
    BadConflictBody,
    #[error("200 answer carries no valid cosignature from the trusted witness key: {0}")]
    BadCosignature(String),
}

/// What a witness answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// The verified cosignature(s) from the trusted witness key.
    Cosigned(Vec<NoteSignature>),
    /// 409: the witness's latest cosigned size.
    Conflict(u64),
    /// Any other status, with the body as text.
    Refused { status: u16, body: String },
}

pub struct WitnessClient {
    authority: String,
    path: String,
    key: VerifierKey,
    timeout_ms: u64,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl WitnessClient {
    /// `url` is the submission prefix (`http://host:port[/prefix]`), `key`
    /// the witness's cosignature/v1 verifier key.
    pub fn new(url: &str, key: VerifierKey, timeout_ms: u64) -> Result<Self, WitnessUrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| WitnessUrlError::Scheme(url.to_owned()))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            return Err(WitnessUrlError::Authority(url.to_owned()));
        }
        Ok(WitnessClient {
            authority: authority.to_owned(),
            path: format!("{prefix}/add-checkpoint"),
            key,
            timeout_ms,
            connection: Mutex::new(None),
        })
    }

    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// Submits `note` (a signed checkpoint) with a consistency proof from
    /// `old_size`.
    pub async fn add_checkpoint(
        &self,
        old_size: u64,
        proof: &[Hash],
        note: &Note,
    ) -> Result<AddOutcome, WitnessClientError> {
        let body = format_add_checkpoint(old_size, proof, &note.format());
        let timeout = Duration::from_millis(self.timeout_ms);
        let (status, content_type, bytes) =
            tokio::time::timeout(timeout, self.post(Bytes::from(body)))
                .await
                .map_err(|_| WitnessClientError::Timeout(self.timeout_ms))??;
        match status {
            200 => self
                .verify_cosignatures(note, &bytes)
                .map(AddOutcome::Cosigned),
            409 => {
                let size = (content_type.as_deref() == Some(crate::witness::SIZE_CONTENT_TYPE))
                    .then(|| std::str::from_utf8(&bytes).ok())
                    .flatten()
                    .and_then(|t| t.strip_suffix('\n'))
                    .and_then(|t| bftlog_spec::encoding::parse_decimal(t).ok())
                    .ok_or(WitnessClientError::BadConflictBody)?;
                Ok(AddOutcome::Conflict(size))
            }
            status => Ok(AddOutcome::Refused {
                status,
                body: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            }),
        }
    }

    /// C2SP: append the response to the checkpoint and verify the note
    /// with the witness key; keep only that key's signatures.
    fn verify_cosignatures(
        &self,
        note: &Note,
        body: &[u8],
    ) -> Result<Vec<NoteSignature>, WitnessClientError> {
        let bad = |why: String| WitnessClientError::BadCosignature(why);
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
        let combined = format!("{}\n{text}", note.text());
        let parsed = Note::parse(combined.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let ring = KeyRing::from_keys([self.key.clone()]).expect("one key");
        parsed.verify(&ring).map_err(|e| bad(e.to_string()))?;
        // Only the first line by the key was verified (later ones are
        // ignored unverified, as Go's note.Open does): keep that one, or a
        // witness could have its garbage repeats carried into checkpoints.
        let mine: Vec<NoteSignature> = parsed
            .signatures()
            .iter()
            .find(|s| s.name == self.key.name() && s.key_id == self.key.key_id())
            .cloned()
            .into_iter()
            .collect();
        if self.key.key_type() != KeyType::CosignatureV1 || mine.is_empty() {
            return Err(bad("no cosignature/v1 signature".into()));
        }
        Ok(mine)
    }

    async fn post(&self, body: Bytes) -> Result<(u16, Option<String>, Bytes), WitnessClientError> {
        let mut connection = self.connection.lock().await;
        // One retry on a fresh connection: a kept-alive connection may have
        // been closed by the server while idle.
        for attempt in 0..2 {
            let sender = match connection.as_mut() {
                Some(s) if !s.is_closed() => s,
                _ => {
                    let stream = TcpStream::connect(&self.authority)
                        .await
                        .map_err(|e| WitnessClientError::Connect(self.authority.clone(), e))?;
                    let _ = stream.set_nodelay(true);
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    connection.insert(sender)
                }
            };
            let request = hyper::Request::post(&self.path)
                .header(hyper::header::HOST, &self.authority)
                .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(body.clone()))
                .expect("valid request");
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    *connection = None;
                    if attempt == 0 && e.is_canceled() {
                        continue;
                    }
                    return Err(e.into());
                }
            };
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|_| WitnessClientError::ResponseTooLarge)?
                .to_bytes();
            return Ok((status, content_type, bytes));
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::note::SignerKey;

    /// A witness answering with its cosignature followed by repeats of
    /// garbage: only the verified first line is kept, so a faulty witness
    /// cannot fill the log's checkpoints with unchecked lines.
    #[test]
    fn only_the_verified_cosignature_line_is_kept() {
        let witness = SignerKey::new(
            "witness.example/w1",
            KeyType::CosignatureV1,
            ed25519_dalek::SigningKey::from_bytes(&[42; 32]),
        )
        .unwrap();
        let client = WitnessClient::new("http://127.0.0.1:1", witness.verifier(), 1000).unwrap();
        let note = Note::new("example.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
            .unwrap();
        let good = witness.cosign_text(note.text(), 1_700_000_000).unwrap();
        let garbage = NoteSignature {
            signature: vec![7; 72],
            ..good.clone()
        };
        let body = format!("{}{}{}", good.line(), garbage.line(), garbage.line());
        let kept = client.verify_cosignatures(&note, body.as_bytes()).unwrap();
        assert_eq!(kept, vec![good]);
    }
}
