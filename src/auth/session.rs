//! Session tokens: what an IAM login hands back, used as a bearer.
//!
//! `tvs1.<payload>.<mac>`: the payload (base64url JSON) names the principal
//! and the expiry; the MAC is HMAC-SHA256 over `tvs1.<payload>` under the
//! service-held session key, so every replica sharing the store accepts
//! every replica's sessions, and nobody without the key can mint one.
//! Nothing is stored: a session ends when it expires.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::crypto::DataKey;

use super::Principal;

/// The prefix that tells a session token from an API key.
pub const PREFIX: &str = "tvs1.";
/// Longest session token we parse (bounds the work on a forged one).
const MAX_LEN: usize = 2048;

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The principal, `iam:ARN`.
    p: String,
    /// Expiry, Unix seconds.
    exp: i64,
    /// Random, so two sessions of one principal differ.
    n: String,
    /// The assumed role's session name, for the audit log (under the MAC
    /// like the rest, so nobody can claim another's name); tokens minted
    /// before it existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
}

/// Mints and checks session tokens.
pub struct Sessions {
    key: hmac::Key,
}

impl Sessions {
    pub fn new(secret: &DataKey) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose()),
        }
    }

    /// A token for `principal` valid until `expires_at`.
    pub fn issue(&self, principal: &Principal, expires_at: i64) -> String {
        let payload = Payload {
            p: principal.as_str().to_owned(),
            exp: expires_at,
            n: uuid::Uuid::new_v4().simple().to_string(),
            s: principal.session().map(str::to_owned),
        };
        let body = format!(
            "{PREFIX}{}",
            B64.encode(serde_json::to_vec(&payload).expect("a payload serializes"))
        );
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", B64.encode(tag.as_ref()))
    }

    /// The principal of a valid, unexpired token; `None` for anything else
    /// (the MAC is checked in constant time before the payload is read).
    pub fn check(&self, token: &str, now: i64) -> Option<Principal> {
        if token.len() > MAX_LEN || !token.starts_with(PREFIX) {
            return None;
        }
        let (body, tag) = token.rsplit_once('.')?;
        let tag = B64.decode(tag).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let encoded = body.strip_prefix(PREFIX)?;
        let payload: Payload = serde_json::from_slice(&B64.decode(encoded).ok()?).ok()?;
        (payload.exp > now).then(|| Principal::with_session(payload.p, payload.s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_check_until_they_expire_and_forgeries_fail() {
        let s = Sessions::new(&DataKey::from_bytes([7; 32]));
        let p = Principal::new("iam:arn:aws:iam::1:role/support".into());
        let t = s.issue(&p, 100);
        assert_eq!(s.check(&t, 99), Some(p.clone()));
        assert_eq!(s.check(&t, 100), None, "expired");
        let other = Sessions::new(&DataKey::from_bytes([8; 32]));
        assert_eq!(other.check(&t, 0), None, "another key");
        // A payload swapped in under the old MAC.
        let forged = s.issue(&Principal::new("iam:arn:aws:iam::1:role/admin".into()), 100);
        let (body, _) = forged.rsplit_once('.').unwrap();
        let (_, tag) = t.rsplit_once('.').unwrap();
        assert_eq!(s.check(&format!("{body}.{tag}"), 0), None);
        assert_eq!(s.check("tvs1.garbage", 0), None);
    }

    /// The session name rides in the token, under its MAC: it comes back
    /// as issued, and a token whose payload names another does not check.
    #[test]
    fn the_session_name_comes_back_and_cannot_be_swapped() {
        let s = Sessions::new(&DataKey::from_bytes([7; 32]));
        let id = "iam:arn:aws:iam::1:role/support".to_owned();
        let alice = Principal::with_session(id.clone(), Some("alice".into()));
        let back = s.check(&s.issue(&alice, 100), 0).unwrap();
        assert_eq!(back.session(), Some("alice"));
        assert_eq!(back.as_str(), id);
        assert_eq!(
            s.check(&s.issue(&Principal::new(id.clone()), 100), 0)
                .unwrap()
                .session(),
            None
        );

        let t = s.issue(&alice, 100);
        let (body, tag) = t.rsplit_once('.').unwrap();
        let encoded = body.strip_prefix(PREFIX).unwrap();
        let json = String::from_utf8(B64.decode(encoded).unwrap()).unwrap();
        assert!(json.contains("\"s\":\"alice\""), "{json}");
        let bob = B64.encode(json.replace("alice", "bob").as_bytes());
        assert_eq!(s.check(&format!("{PREFIX}{bob}.{tag}"), 0), None);
    }
}
