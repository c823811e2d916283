//! The cluster's token: every call to a node carries it as `authorization: Bearer
//! <token>`, and a node compares it in constant time, refusing and logging a call
//! without it or with another.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";

/// The shortest token accepted: guessing one must be out of reach.
pub const MIN_TOKEN_BYTES: usize = 16;

/// A cluster's shared secret.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token from its text (surrounding whitespace, such as a file's last newline, is
    /// dropped); refused when shorter than [`MIN_TOKEN_BYTES`].
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the cluster token has {} bytes; it needs at least {MIN_TOKEN_BYTES}",
                text.len()
            ));
        }
        if text.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("the cluster token must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(text.as_bytes().to_vec()))
    }

    /// Whether `given` is this token, taking the same time whatever `given` is (for a
    /// given length).
    pub(crate) fn matches(&self, given: &[u8]) -> bool {
        let mut difference = self.0.len() ^ given.len();
        for (i, mine) in self.0.iter().enumerate() {
            difference |= usize::from(mine ^ given.get(i).copied().unwrap_or(0));
        }
        difference == 0
    }

    /// Adds the token to an outgoing request.
    pub(crate) fn attach<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        let value = MetadataValue::try_from(format!("Bearer {}", String::from_utf8_lossy(&self.0)))
            .map_err(|_| Status::internal("the token cannot be sent as metadata"))?;
        request.metadata_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    /// Checks an incoming request's token; what a node's interceptor runs.
    pub(crate) fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        let peer = request
            .remote_addr()
            .map_or_else(|| "an unknown peer".to_owned(), |addr| addr.to_string());
        match given {
            Some(given) if self.matches(given) => Ok(()),
            Some(_) => {
                tracing::warn!(%peer, "refused a call with the wrong cluster token");
                Err(Status::unauthenticated("wrong cluster token"))
            }
            None => {
                tracing::warn!(%peer, "refused a call without a cluster token");
                Err(Status::unauthenticated("no cluster token"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let token = Token::new("0123456789abcdef\n").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
        assert!(Token::new("short").is_err());
        assert!(Token::new("0123456789 abcdef").is_err());
    }
}
