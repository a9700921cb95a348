//! Reading a tiles log over HTTP(S): bounded bodies, timeouts and retries.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// How long one request may take, headers and body.
pub const REQUEST_TIMEOUT_MS: u64 = 60_000;
/// How often a failed request is tried before the error is reported.
pub const FETCH_ATTEMPTS: u32 = 3;
/// The wait before the second attempt; it doubles for each further one.
pub const FIRST_RETRY_WAIT_MS: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {error}")]
    Http { url: String, error: reqwest::Error },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the body is larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("{0:?} is not an http:// or https:// URL without a query")]
    BaseUrl(String),
    #[error("a fetch task ended: {0}")]
    Task(String),
}

/// A tiles log at a base URL: `<base>checkpoint`, `<base>tile/...`.
#[derive(Clone, Debug)]
pub struct TilesSource {
    base: reqwest::Url,
    client: reqwest::Client,
}

impl TilesSource {
    pub fn new(base: &str) -> Result<Self, FetchError> {
        let with_slash = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        let base = reqwest::Url::parse(&with_slash)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
            .ok_or_else(|| FetchError::BaseUrl(base.to_owned()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .user_agent(concat!("bftlog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| FetchError::Http {
                url: base.to_string(),
                error,
            })?;
        Ok(TilesSource { base, client })
    }

    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// GETs `path` below the base URL: `None` for 404, an error for other
    /// non-2xx answers or a body over `max_bytes`. Connection errors, 5xx
    /// and 429 answers are retried.
    pub async fn get(&self, path: &str, max_bytes: usize) -> Result<Option<Bytes>, FetchError> {
        let url = self
            .base
            .join(path)
            .map_err(|_| FetchError::BaseUrl(format!("{}{path}", self.base)))?;
        let mut attempt = 1;
        loop {
            match self.get_once(&url, max_bytes).await {
                Err(e) if attempt < FETCH_ATTEMPTS && retryable(&e) => {
                    let wait = FIRST_RETRY_WAIT_MS << (attempt - 1);
                    tracing::debug!("{e}; trying again in {wait} ms");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn get_once(
        &self,
        url: &reqwest::Url,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, FetchError> {
        let http = |error| FetchError::Http {
            url: url.to_string(),
            error,
        };
        let mut response = self.client.get(url.clone()).send().await.map_err(http)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            max: max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|l| l > max_bytes as u64)
        {
            return Err(too_large());
        }
        // Reserved up front: a body grown by doubling could hold twice
        // its bytes.
        let mut body = BytesMut::with_capacity(
            response
                .content_length()
                .map_or(0, |l| l as usize)
                .min(max_bytes),
        );
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body.freeze()))
    }
}

fn retryable(error: &FetchError) -> bool {
    match error {
        FetchError::Http { .. } => true,
        FetchError::Status { status, .. } => *status >= 500 || *status == 429,
        FetchError::TooLarge { .. } | FetchError::BaseUrl(_) | FetchError::Task(_) => false,
    }
}
