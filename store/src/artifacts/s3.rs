//! Artifact stores in S3 or an S3-compatible server: locations `s3://BUCKET[/PREFIX]`, used in
//! cluster mode, where steps on different nodes share one store.
//!
//! The location names only the bucket and a key prefix; everything else comes from the standard
//! AWS environment, read by `AmazonS3Builder::from_env`: `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (or a web identity token, or the instance's role), `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for an S3-compatible server and `AWS_ALLOW_HTTP=true` for one on plain
//! HTTP. Requests are path style (`ENDPOINT/BUCKET/KEY`), which every S3-compatible server
//! accepts, unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`. `PrefixStore` puts the prefix in
//! front of every key (and takes it off listed ones), so the CAS layout below it is the same as
//! in a directory store. Opening contacts nothing: a missing bucket or wrong credentials show
//! up, naming the location, on the first read or write.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;

use super::{ArtifactError, Result};

/// The scheme of S3 locations.
pub(super) const SCHEME: &str = "s3://";

/// Opens the S3 store `location` names (`s3://BUCKET[/PREFIX]`).
pub(super) fn open(location: &str) -> Result<Arc<dyn ObjectStore>> {
    let (bucket, prefix) = parse(location)?;
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|source| ArtifactError::Backend {
            location: location.to_string(),
            source,
        })?;
    Ok(match prefix {
        Some(prefix) => Arc::new(PrefixStore::new(s3, prefix)),
        None => Arc::new(s3),
    })
}

/// Splits `s3://BUCKET[/PREFIX]` into the bucket and the key prefix (none when empty).
fn parse(location: &str) -> Result<(&str, Option<ObjectPath>)> {
    let invalid = |detail: String| ArtifactError::Location {
        location: location.to_string(),
        detail,
    };
    let rest = location
        .strip_prefix(SCHEME)
        .ok_or_else(|| invalid(format!("not an {SCHEME} location")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_bucket_name(bucket) {
        return Err(invalid(format!(
            "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, dots and \
             hyphens, starting and ending with a letter or digit); expected s3://BUCKET[/PREFIX]"
        )));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok((bucket, None));
    }
    let prefix = ObjectPath::parse(prefix)
        .map_err(|e| invalid(format!("{prefix:?} is not a key prefix: {e}")))?;
    Ok((bucket, Some(prefix)))
}

/// The S3 rules for new bucket names: what a location may name without surprising the server.
fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_prefix() {
        for (location, bucket, prefix) in [
            ("s3://toucan", "toucan", None),
            ("s3://toucan/", "toucan", None),
            ("s3://toucan/ci", "toucan", Some("ci")),
            ("s3://my.bucket-1/a/b/", "my.bucket-1", Some("a/b")),
        ] {
            let (b, p) = parse(location).unwrap();
            assert_eq!(b, bucket, "{location}");
            assert_eq!(p.map(|p| p.to_string()).as_deref(), prefix, "{location}");
        }
    }

    #[test]
    fn bad_locations_are_refused_naming_them() {
        for bad in [
            "s3://",
            "s3:///prefix",
            "s3://ab",
            "s3://Toucan",
            "s3://bucket_name",
            "s3://-bucket",
            "s3://a..b",
            "s3://toucan/a//b",
            "s3://toucan/../x",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, ArtifactError::Location { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
