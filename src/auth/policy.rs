//! Roles: principal patterns and permissions. Deny by default: a principal
//! that matches no role may do nothing.

use std::collections::BTreeSet;

use crate::config::RoleSettings;

use super::Principal;

/// What a caller may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Tokenize,
    /// The full value.
    Detokenize,
    /// The masked value only.
    DetokenizeMasked,
    Metadata,
    Redact,
    /// Everything, delete included.
    Admin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        Some(match s {
            "tokenize" => Permission::Tokenize,
            "detokenize" => Permission::Detokenize,
            "detokenize:masked" => Permission::DetokenizeMasked,
            "metadata" => Permission::Metadata,
            "redact" => Permission::Redact,
            "admin" => Permission::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Tokenize => "tokenize",
            Permission::Detokenize => "detokenize",
            Permission::DetokenizeMasked => "detokenize:masked",
            Permission::Metadata => "metadata",
            Permission::Redact => "redact",
            Permission::Admin => "admin",
        }
    }
}

/// One role, compiled.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    patterns: Vec<String>,
    permissions: BTreeSet<Permission>,
    classifications: Option<Vec<String>>,
    pub require_reason: bool,
    pub detokenize_per_minute: u32,
}

impl Role {
    fn grants(&self, p: Permission, classification: Option<&str>) -> bool {
        let perm = self.permissions.contains(&Permission::Admin) || self.permissions.contains(&p);
        let class = match (&self.classifications, classification) {
            (Some(allowed), Some(c)) => allowed.iter().any(|a| a == c),
            _ => true,
        };
        perm && class
    }

    fn matches(&self, principal: &Principal) -> bool {
        self.patterns
            .iter()
            .any(|p| pattern_matches(p.as_bytes(), principal.as_str().as_bytes()))
    }
}

/// The running policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: Vec<Role>,
}

impl Policy {
    /// How many roles it holds (for the reload log line).
    pub fn role_count(&self) -> usize {
        self.roles.len()
    }

    /// Compiles `[[roles]]`, refusing unknown permissions and malformed
    /// patterns with a message naming the role.
    pub fn from_settings(roles: &[RoleSettings]) -> Result<Policy, String> {
        let mut out = Vec::new();
        let mut names = BTreeSet::new();
        for r in roles {
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                return Err(format!(
                    "roles: role names must be unique and non-empty ({:?})",
                    r.name
                ));
            }
            let mut permissions = BTreeSet::new();
            for p in &r.permissions {
                permissions.insert(Permission::parse(p).ok_or_else(|| {
                    format!(
                        "roles.{}: unknown permission {p:?} (tokenize, detokenize, detokenize:masked, metadata, redact, admin)",
                        r.name
                    )
                })?);
            }
            for pat in &r.principals {
                let ok = ["apikey:", "cert:", "iam:"]
                    .iter()
                    .any(|k| pat.starts_with(k));
                if !ok || pat.contains("***") {
                    return Err(format!(
                        "roles.{}: principal pattern {pat:?} must start with apikey:, cert: or iam:",
                        r.name
                    ));
                }
            }
            out.push(Role {
                name: r.name.clone(),
                patterns: r.principals.clone(),
                permissions,
                classifications: r.classifications.clone(),
                require_reason: r.require_reason,
                detokenize_per_minute: r.detokenize_per_minute,
            });
        }
        Ok(Policy { roles: out })
    }

    /// The first role of `principal` that grants `p` for `classification`
    /// (any classification when `None`).
    pub fn grant(
        &self,
        principal: &Principal,
        p: Permission,
        classification: Option<&str>,
    ) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.matches(principal) && r.grants(p, classification))
    }

    /// The strictest (smallest non-zero) `detokenize_per_minute` among the
    /// principal's roles that allow any detokenize: a looser role cannot
    /// lift a limit another role imposes. 0: no limit.
    pub fn detokenize_limit(&self, principal: &Principal) -> u32 {
        self.roles
            .iter()
            .filter(|r| {
                r.matches(principal)
                    && (r.grants(Permission::Detokenize, None)
                        || r.grants(Permission::DetokenizeMasked, None))
                    && r.detokenize_per_minute > 0
            })
            .map(|r| r.detokenize_per_minute)
            .min()
            .unwrap_or(0)
    }

    /// Whether the principal matches any role at all (for audit: the role
    /// name of a denied caller).
    pub fn role_of(&self, principal: &Principal) -> Option<&Role> {
        self.roles.iter().find(|r| r.matches(principal))
    }
}

/// `*` matches a run of characters other than `/` and `:`; `**` also
/// crosses `/`. Recursive backtracking, bounded: patterns come from the
/// operator's config (never from callers) and at most 16 stars deep are
/// followed; a deeper pattern matches nothing.
fn pattern_matches(pat: &[u8], s: &[u8]) -> bool {
    fn rec(pat: &[u8], s: &[u8], depth: usize) -> bool {
        if depth > 16 {
            return false;
        }
        let mut p = 0;
        let mut i = 0;
        while p < pat.len() {
            if pat[p] == b'*' {
                let double = pat.get(p + 1) == Some(&b'*');
                let rest = &pat[p + if double { 2 } else { 1 }..];
                let mut j = i;
                loop {
                    if rec(rest, &s[j..], depth + 1) {
                        return true;
                    }
                    if j == s.len() {
                        return false;
                    }
                    let c = s[j];
                    if c == b':' || (c == b'/' && !double) {
                        return false;
                    }
                    j += 1;
                }
            }
            if i >= s.len() || pat[p] != s[i] {
                return false;
            }
            p += 1;
            i += 1;
        }
        i == s.len()
    }
    rec(pat, s, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stop_at_slash_and_colon() {
        let m = |p: &str, s: &str| pattern_matches(p.as_bytes(), s.as_bytes());
        assert!(m(
            "iam:arn:aws:iam::1:role/support-*",
            "iam:arn:aws:iam::1:role/support-eu"
        ));
        assert!(!m(
            "iam:arn:aws:iam::1:role/support-*",
            "iam:arn:aws:iam::1:role/support-eu/x"
        ));
        assert!(m(
            "iam:arn:aws:iam::1:role/**",
            "iam:arn:aws:iam::1:role/a/b"
        ));
        assert!(!m(
            "iam:arn:aws:iam::*:role/x",
            "iam:arn:aws:iam::1:2:role/x"
        ));
        assert!(m("apikey:checkout", "apikey:checkout"));
        assert!(!m("apikey:checkout", "apikey:checkout2"));
    }
}
