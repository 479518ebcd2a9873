//! Reading request bodies: size limit before and after decompression, gzip,
//! and content-type checks. Reading ([`read`]) is async; inflating
//! ([`Wire::decode`]) is CPU work for a blocking thread — a gzip bomb
//! inflating on an async worker stalled health checks.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{Error, Result};

/// A body as it arrived: within the limit, maybe gzip.
pub struct Wire {
    bytes: Bytes,
    gzip: bool,
    limit: usize,
}

impl Wire {
    /// The body as sent, inflated; refuses more than the limit after
    /// decompression (a small gzip body may inflate enormously). Blocking.
    pub fn decode(self) -> Result<Bytes> {
        if !self.gzip {
            return Ok(self.bytes);
        }
        let limit = self.limit;
        let mut out = Vec::with_capacity((self.bytes.len() * 4).min(limit));
        let mut decoder = MultiGzDecoder::new(&self.bytes[..]).take(limit as u64 + 1);
        decoder
            .read_to_end(&mut out)
            .map_err(|e| Error::BadRequest(format!("body is not valid gzip: {e}")))?;
        if out.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: out.len() as u64,
                limit,
            });
        }
        Ok(Bytes::from(out))
    }
}

/// Reads the whole body as sent, refusing more than `limit` bytes.
pub async fn read_wire(headers: &HeaderMap, body: Body, limit: usize) -> Result<Wire> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("") | Some("identity") => false,
        Some("gzip") | Some("x-gzip") => true,
        Some(other) => return Err(Error::UnsupportedEncoding(other.to_string())),
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Error::PayloadTooLarge { size: len, limit });
    }
    let wire = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Error::PayloadTooLarge {
                size: limit as u64 + 1,
                limit,
            });
        }
        Err(e) => {
            return Err(Error::BadRequest(format!(
                "failed to read the request body: {e}"
            )));
        }
    };
    Ok(Wire {
        bytes: wire,
        gzip,
        limit,
    })
}

/// The request's media type, lowercased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
