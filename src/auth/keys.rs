//! Token keys: verifying bearer JWTs (HS256 secret, JWKS public keys chosen by `kid`) and minting dev tokens.
use std::{collections::BTreeSet, fs, path::Path};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{Caller, Purpose, Scope, TenantId};
use crate::{
    config::Config,
    error::{ApiError, ApiResult},
};

/// Claims Kontakt reads, in the style of OAuth access tokens (RFC 9068).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub scope: String,
    pub purpose: String,
    pub iss: String,
    /// A string or an array of strings; jsonwebtoken checks it against the configured audience.
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub nbf: Option<u64>,
}

/// What `kontakt token` (and the development banner) asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub tenant: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub purpose: String,
    pub ttl_secs: u64,
}

struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    /// The only algorithms this key accepts: an HS key never verifies RS tokens and the reverse.
    algorithms: Vec<Algorithm>,
}

/// The keys this installation trusts, and the one it signs development tokens with.
pub struct KeyRing {
    keys: Vec<VerifyKey>,
    signing: Option<EncodingKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl KeyRing {
    /// Loads keys from configuration; in development with no key configured, makes one beside the SQLite file.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let issuer = config.issuer().context("KONTAKT_JWT_ISSUER is not set")?.to_owned();
        let audience = config.audience().context("KONTAKT_JWT_AUDIENCE is not set")?.to_owned();
        let mut keys = Vec::new();
        let mut signing = None;

        let secret = match (&config.jwt_secret, &config.jwks_file) {
            (Some(secret), _) => Some(secret.expose().clone()),
            (None, None) if !config.is_production() => Some(load_or_create_dev_key(&config.dev_key_path())?),
            _ => None,
        };
        if let Some(secret) = secret {
            keys.push(VerifyKey {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: vec![Algorithm::HS256],
            });
            signing = Some(EncodingKey::from_secret(secret.as_bytes()));
        }
        if let Some(path) = &config.jwks_file {
            keys.extend(load_jwks(path)?);
        }
        anyhow::ensure!(!keys.is_empty(), "no token keys configured: set KONTAKT_JWKS_FILE or KONTAKT_JWT_SECRET");
        Ok(KeyRing { keys, signing, issuer, audience, leeway: config.jwt_leeway_secs })
    }

    /// Verifies a bearer token and turns its claims into a `Caller`. Every failure is `UNAUTHENTICATED`.
    pub fn verify(&self, token: &str) -> ApiResult<Caller> {
        let unauthenticated = |why: &str| ApiError::Unauthenticated(format!("invalid bearer token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed or unsupported"))?;
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(unauthenticated("keys carried in the token are not trusted"));
        }
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => self.keys.iter().find(|k| k.kid.is_none()),
        }
        .ok_or_else(|| unauthenticated("unknown signing key"))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(unauthenticated("algorithm not allowed for this key"));
        }

        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
                ErrorKind::InvalidAlgorithm => "algorithm not allowed for this key",
                ErrorKind::Json(_) => "claims tenant, purpose or sub missing or of the wrong type",
                _ => "cannot be verified",
            })
        })?;
        let claims = data.claims;
        let tenant = TenantId::parse(&claims.tenant).map_err(|_| unauthenticated("bad `tenant` claim"))?;
        let purpose = Purpose::parse(&claims.purpose).map_err(|e| {
            let why = match e {
                ApiError::Validation { message, .. } => message,
                other => other.to_string(),
            };
            unauthenticated(&format!("bad `purpose` claim: {why}"))
        })?;
        let scopes: BTreeSet<Scope> = claims.scope.split_whitespace().filter_map(|s| s.parse().ok()).collect();
        Ok(Caller::new(tenant, claims.sub, scopes, purpose))
    }

    /// Signs a token with the HS256 key (the configured secret or the development key).
    pub fn mint(&self, req: &TokenRequest) -> anyhow::Result<String> {
        let key = self
            .signing
            .as_ref()
            .context("minting needs KONTAKT_JWT_SECRET (or development mode with no JWKS file)")?;
        TenantId::parse(&req.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        Purpose::parse(&req.purpose).map_err(|e| anyhow::anyhow!("{e}"))?;
        for scope in &req.scopes {
            anyhow::ensure!(scope.parse::<Scope>().is_ok(), "unknown scope `{scope}`");
        }
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: req.subject.clone(),
            tenant: req.tenant.clone(),
            scope: req.scopes.join(" "),
            purpose: req.purpose.clone(),
            iss: self.issuer.clone(),
            aud: serde_json::Value::String(self.audience.clone()),
            exp: now + req.ttl_secs,
            iat: Some(now),
            nbf: Some(now),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)?)
    }
}

/// Reads a generated secret, or makes one (32 random bytes, base64url) readable only by this user.
pub(crate) fn load_or_create_dev_key(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = fs::read_to_string(path) {
        let key = existing.trim().to_owned();
        anyhow::ensure!(
            key.len() >= 32,
            "development key {} is too short; delete it to make a new one",
            path.display()
        );
        return Ok(key);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match write_private(path, &key) {
        Ok(()) => Ok(key),
        // Another process (or server in the same process) made it first: theirs is the key, whole.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_dev_key(path),
        Err(err) => Err(err).with_context(|| format!("writing development key {}", path.display())),
    }
}

/// Creates `path` with `contents`, readable by the owner only, all at once: written to a file of its own, then linked
/// into place, so a reader never sees it half written and of two writers exactly one wins (`AlreadyExists`).
#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    let staged = path.with_file_name(name);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .and_then(|mut file| file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()))
        .and_then(|()| fs::hard_link(&staged, path));
    let _ = fs::remove_file(&staged);
    written
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    fs::write(path, contents)
}

fn load_jwks(path: &Path) -> anyhow::Result<Vec<VerifyKey>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading JWKS file {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text).with_context(|| format!("parsing JWKS file {}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::RS384), AlgorithmParameters::RSA(_)) => Algorithm::RS384,
            (Some(KeyAlgorithm::RS512), AlgorithmParameters::RSA(_)) => Algorithm::RS512,
            (Some(KeyAlgorithm::PS256), AlgorithmParameters::RSA(_)) => Algorithm::PS256,
            (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
            (Some(KeyAlgorithm::ES384), AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES384,
            (Some(KeyAlgorithm::EdDSA), AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P384 => Algorithm::ES384,
            (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            _ => anyhow::bail!(
                "JWKS key {:?} in {}: only RSA, EC and OKP public keys with a matching `alg` are accepted",
                kid,
                path.display()
            ),
        };
        let key = DecodingKey::from_jwk(jwk).with_context(|| format!("JWKS key {kid:?} in {}", path.display()))?;
        keys.push(VerifyKey { kid, key, algorithms: vec![algorithm] });
    }
    anyhow::ensure!(!keys.is_empty(), "JWKS file {} holds no keys", path.display());
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_starting_together_agree_on_one_development_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kontakt.devkey.suppression");
        let keys: Vec<String> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8).map(|_| scope.spawn(|| load_or_create_dev_key(&path))).collect();
            racers.into_iter().map(|r| r.join().expect("thread").expect("a key")).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0] && k.len() >= 32), "{keys:?}");
        assert_eq!(fs::read_to_string(&path).expect("the key file"), keys[0]);
        // No staging file is left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
