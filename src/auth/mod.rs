//! Who is calling, and what they may do.
//!
//! - [`api_key`]: bearer API keys, kept only as SHA-256 digests.
//! - [`policy`]: roles with principal patterns and permissions; deny by
//!   default.
//! - [`dev`]: the embedded default's development identities.
//! - [`iam`]: IAM login (a signed `sts:GetCallerIdentity`, checked and
//!   forwarded to STS).
//! - [`session`]: the session tokens an IAM login hands back.
//! - [`rate`]: per-principal detokenize rate limits.

pub mod api_key;
pub mod dev;
pub mod iam;
pub mod policy;
pub mod rate;
pub mod session;

use std::fmt;

/// What the server knows of a connection; it puts an `Arc` of it on every
/// request of the connection.
#[derive(Default)]
pub struct Connection {
    /// The principal the connection's verified client certificate proved.
    pub cert: Option<Principal>,
    /// The API key the connection last proved.
    pub key_memo: api_key::KeyMemo,
}

/// An authenticated caller: `apikey:NAME`, `cert:URI`, `iam:ARN`, and for
/// an IAM role the session it was assumed under.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    id: String,
    /// The name an assumed role's session was given (`alice` in
    /// `arn:aws:sts::A:assumed-role/support/alice`; single sign-on sets it
    /// to the person): of everyone sharing a role, who made the call. Only
    /// the audit log sees it, so an auditor can tell people apart; policy,
    /// rate limits and metrics count the role, as before.
    session: Option<String>,
}

impl Principal {
    pub fn new(id: String) -> Self {
        Self { id, session: None }
    }

    /// `id` as assumed under `session`.
    pub fn with_session(id: String, session: Option<String>) -> Self {
        Self { id, session }
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The principal alone, without its session: what metric labels, rate
/// limits and policy patterns see.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}
