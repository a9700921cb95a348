//! `[tiles]` of a replica file: where the tiles are published.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[tiles]`: publishing the tiles to a directory or object storage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TilesSection {
    /// `file://DIR` (relative to the replica file unless absolute) or
    /// `s3://BUCKET[/PREFIX]`. Default: none (not published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// S3: the endpoint of an S3-compatible service (default: AWS's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3: the region. Default "us-east-1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// S3: allow a plain-HTTP endpoint. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_allow_http: Option<bool>,
}

/// Where `[tiles] publish` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTarget {
    Directory(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        allow_http: bool,
    },
}

impl PublishTarget {
    /// Parses `[tiles]`; `None` when nothing is published.
    pub fn from_section(section: &TilesSection, base: &Path) -> Result<Option<Self>, String> {
        let Some(url) = &section.publish else {
            if section.s3_endpoint.is_some() || section.s3_region.is_some() {
                return Err("tiles.s3_* settings need tiles.publish = \"s3://…\"".into());
            }
            return Ok(None);
        };
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err("tiles.publish = \"file://DIR\" needs a directory".into());
            }
            if section.s3_endpoint.is_some() || section.s3_region.is_some() {
                return Err("tiles.s3_* settings apply to s3:// only".into());
            }
            return Ok(Some(PublishTarget::Directory(base.join(dir))));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("tiles.publish = \"s3://BUCKET[/PREFIX]\" needs a bucket".into());
            }
            return Ok(Some(PublishTarget::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                endpoint: section.s3_endpoint.clone(),
                region: section
                    .s3_region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".into()),
                allow_http: section.s3_allow_http.unwrap_or(false),
            }));
        }
        Err(format!(
            "tiles.publish {url:?} is neither file://DIR nor s3://BUCKET[/PREFIX]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(publish: Option<&str>, endpoint: Option<&str>) -> TilesSection {
        TilesSection {
            publish: publish.map(str::to_owned),
            s3_endpoint: endpoint.map(str::to_owned),
            ..TilesSection::default()
        }
    }

    #[test]
    fn publish_targets_parse_and_bad_ones_are_refused() {
        let base = Path::new("/etc/bftlog");
        let parse = |s: TilesSection| PublishTarget::from_section(&s, base);
        assert_eq!(parse(section(None, None)), Ok(None));
        assert_eq!(
            parse(section(Some("file://tiles"), None)),
            Ok(Some(PublishTarget::Directory(base.join("tiles"))))
        );
        assert_eq!(
            parse(section(Some("file:///srv/log"), None)),
            Ok(Some(PublishTarget::Directory("/srv/log".into())))
        );
        assert_eq!(
            parse(section(
                Some("s3://bucket/a/b/"),
                Some("http://127.0.0.1:9000")
            )),
            Ok(Some(PublishTarget::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "us-east-1".into(),
                allow_http: false,
            }))
        );
        for bad in [
            section(Some("file://"), None),
            section(Some("s3://"), None),
            section(Some("https://example.org/log"), None),
            section(Some("file://tiles"), Some("http://127.0.0.1:9000")),
            section(None, Some("http://127.0.0.1:9000")),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
