//! Principals and scopes (`[[auth.tokens]]`): who a bearer token is and what it may do. A leaf:
//! the config builds [`Principals`] from its entries, the API layer asks them about each request.
//!
//! A token is stored only as `sha256:<hex>` of its secret ([`hash`]; `sluice auth hash` prints
//! one). Checking a token hashes it once and compares the digest with every configured one in
//! constant time, without stopping at a match, so neither the time nor the order says which
//! digest (or which prefix of one) matched.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// At most this many tokens (each check compares against all of them).
pub const MAX_TOKENS: usize = 1024;
/// A principal's name: 1 to this many bytes of `[A-Za-z0-9._@-]`.
pub const MAX_NAME_BYTES: usize = 64;

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Query an endpoint (`query:<endpoint>`), or every endpoint and model (`query:*`).
    Query(Pattern),
    /// Post labels for an endpoint (`labels:<endpoint>` or `labels:*`).
    Labels(Pattern),
    /// Admin reads, the dashboard, metrics.
    Read,
    /// Traffic edits, rollouts, reloads, monitor refreshes (and everything `read` allows).
    Manage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Endpoint(String),
}

impl Pattern {
    fn matches(&self, endpoint: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Endpoint(e) => e == endpoint,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        let pattern = |p: &str| -> Result<Pattern, String> {
            match p {
                "*" => Ok(Pattern::Any),
                "" => Err(format!("scope '{s}' names no endpoint; write e.g. \"query:fraud\" or \"query:*\"")),
                e => Ok(Pattern::Endpoint(e.to_string())),
            }
        };
        match s.split_once(':') {
            Some(("query", p)) => Ok(Scope::Query(pattern(p)?)),
            Some(("labels", p)) => Ok(Scope::Labels(pattern(p)?)),
            None if s == "read" => Ok(Scope::Read),
            None if s == "manage" => Ok(Scope::Manage),
            _ => Err(format!(
                "unknown scope '{s}'; use \"query:<endpoint>\", \"query:*\", \"labels:<endpoint>\", \"labels:*\", \"read\" or \"manage\""
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |p: &Pattern| match p {
            Pattern::Any => "*".to_string(),
            Pattern::Endpoint(e) => e.clone(),
        };
        match self {
            Scope::Query(x) => write!(f, "query:{}", p(x)),
            Scope::Labels(x) => write!(f, "labels:{}", p(x)),
            Scope::Read => f.write_str("read"),
            Scope::Manage => f.write_str("manage"),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (health checks, the dashboard's static page).
    Open,
    /// Any valid token (server and model metadata).
    Authenticated,
    /// `query:<endpoint>` or `query:*`.
    Query(String),
    /// A model called directly, not through an endpoint: `query:*`.
    QueryAny,
    /// `labels:<endpoint>` or `labels:*`.
    Labels(String),
    /// `read` or `manage`.
    Read,
    /// `manage`.
    Manage,
}

impl Need {
    /// Whether the need is the admin API's (`read`, `manage`), which the admin token also meets.
    pub fn is_admin(&self) -> bool {
        matches!(self, Need::Read | Need::Manage)
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Open => f.write_str("nothing"),
            Need::Authenticated => f.write_str("a valid token"),
            Need::Query(e) => write!(f, "scope query:{e} (or query:*)"),
            Need::QueryAny => f.write_str("scope query:* (a model called directly)"),
            Need::Labels(e) => write!(f, "scope labels:{e} (or labels:*)"),
            Need::Read => f.write_str("scope read (or manage)"),
            Need::Manage => f.write_str("scope manage"),
        }
    }
}

/// A named holder of scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether the principal's scopes meet `need`.
    pub fn may(&self, need: &Need) -> bool {
        self.scopes.iter().any(|s| match (need, s) {
            (Need::Open | Need::Authenticated, _) => true,
            (Need::Query(e), Scope::Query(p)) => p.matches(e),
            (Need::QueryAny, Scope::Query(p)) => *p == Pattern::Any,
            (Need::Labels(e), Scope::Labels(p)) => p.matches(e),
            (Need::Read, Scope::Read | Scope::Manage) => true,
            (Need::Manage, Scope::Manage) => true,
            _ => false,
        })
    }
}

/// The configured tokens: digests, their principals, and each principal's request counters
/// (registered on first use, once the metrics recorder is installed, then kept: counting costs
/// no lookup on the request path).
#[derive(Debug, Clone, Default)]
pub struct Principals {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    digest: [u8; 32],
    pub principal: Arc<Principal>,
    counters: std::sync::OnceLock<(metrics::Counter, metrics::Counter)>,
}

impl Entry {
    /// Counts a request of this principal: `allowed` or denied.
    pub fn count(&self, allowed: bool) {
        let (yes, no) = self.counters.get_or_init(|| {
            let name = &self.principal.name;
            (crate::metrics::principal_counter(name, "allowed"), crate::metrics::principal_counter(name, "denied"))
        });
        if allowed { yes.increment(1) } else { no.increment(1) }
    }
}

impl PartialEq for Principals {
    fn eq(&self, other: &Principals) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| a.digest == b.digest && a.principal == b.principal)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this needs Authorization: Bearer <token>")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("principal '{principal}' may not do this: it needs {need}")]
    Denied { principal: String, need: String },
}

impl Principals {
    /// `entries`: (name, `sha256:<hex>` digest, scopes), already checked by the config.
    pub fn new(entries: Vec<(String, [u8; 32], Vec<Scope>)>) -> Principals {
        Principals {
            entries: entries
                .into_iter()
                .map(|(name, digest, scopes)| Entry {
                    digest,
                    principal: Arc::new(Principal { name, scopes }),
                    counters: std::sync::OnceLock::new(),
                })
                .collect(),
        }
    }

    /// Whether any token is configured (then the data plane needs one).
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The principal of `token`: every digest is compared, in constant time, whatever matches.
    pub fn find(&self, token: &str) -> Option<&Entry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.digest, &digest) {
                found = Some(e);
            }
        }
        found
    }
}

/// `sha256:<64 lowercase hex>` of `secret`: what `[[auth.tokens]] hash` holds.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The digest of a `sha256:<hex>` hash, or why it is not one.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex = text.strip_prefix("sha256:").ok_or_else(|| {
        "must be \"sha256:<64 hex digits>\" (what `sluice auth hash` prints), not the secret".to_string()
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be \"sha256:\" and 64 hex digits (what `sluice auth hash` prints)".into());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Whether `name` is a valid principal name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: 32 bytes from the OS, hex (64 characters).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principals() -> Principals {
        let s = |v: &[&str]| v.iter().map(|x| x.parse().unwrap()).collect::<Vec<Scope>>();
        Principals::new(vec![
            ("app".into(), parse_hash(&hash("app-secret")).unwrap(), s(&["query:fraud"])),
            ("labeller".into(), parse_hash(&hash("lab-secret")).unwrap(), s(&["labels:fraud"])),
            ("ops".into(), parse_hash(&hash("ops-secret")).unwrap(), s(&["manage", "query:*"])),
            ("viewer".into(), parse_hash(&hash("view-secret")).unwrap(), s(&["read"])),
        ])
    }

    #[test]
    fn scopes_meet_needs() {
        let p = principals();
        let who = |t: &str| (*p.find(t).unwrap().principal).clone();
        let (app, lab, ops, viewer) = (who("app-secret"), who("lab-secret"), who("ops-secret"), who("view-secret"));
        assert!(p.find("app-secret ").is_none() && p.find("").is_none() && p.find("sha256:").is_none());
        let q = Need::Query("fraud".into());
        assert!(app.may(&q) && !app.may(&Need::Query("other".into())) && !app.may(&Need::QueryAny));
        assert!(!app.may(&Need::Labels("fraud".into())) && !app.may(&Need::Read));
        assert!(lab.may(&Need::Labels("fraud".into())) && !lab.may(&q) && !lab.may(&Need::Labels("x".into())));
        assert!(ops.may(&q) && ops.may(&Need::QueryAny) && ops.may(&Need::Read) && ops.may(&Need::Manage));
        assert!(!ops.may(&Need::Labels("fraud".into())), "manage does not include labels");
        assert!(viewer.may(&Need::Read) && !viewer.may(&Need::Manage) && !viewer.may(&q));
        for x in [&app, &lab, &ops, &viewer] {
            assert!(x.may(&Need::Authenticated) && x.may(&Need::Open));
        }
    }

    #[test]
    fn hashes_and_scopes_parse_strictly() {
        let h = hash("abc");
        assert_eq!(h, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(parse_hash(&h).is_ok());
        for bad in ["abc", "sha256:", "sha256:xyz", &h[..h.len() - 1], &format!("{h}0"), "SHA256:ba78"] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
        for good in ["query:*", "query:fraud", "labels:*", "labels:a.b", "read", "manage"] {
            assert_eq!(good.parse::<Scope>().unwrap().to_string(), good);
        }
        for bad in ["query", "query:", "admin", "read:x", "", "labels:"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!(valid_name("svc-a@team.x") && !valid_name("") && !valid_name("a b") && !valid_name(&"a".repeat(65)));
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
    }
}
