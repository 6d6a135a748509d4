//! Signed pushes: Ed25519 over a pushed component's SHA-256.
//!
//! With a public key configured on the hosts (`CACHELET_POLICY_PUBKEY`), a push must carry a
//! signature made with the matching secret key (`cachelet policy sign`, `push --key`); hosts
//! refuse anything else before compiling it. Keys and signatures are hex text.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::Error;

/// What is signed: the component's hash, in a context of its own (a signature made for
/// anything else never verifies as a policy's).
fn message(hash: &str) -> Vec<u8> {
    format!("cachelet policy push\n{hash}").into_bytes()
}

use crate::digest::hex;

fn unhex<const N: usize>(what: &str, text: &str) -> Result<[u8; N], Error> {
    let text = text.trim();
    let bad = || Error::Setting {
        name: what.into(),
        problem: format!("not {N} bytes of hex ({} characters)", 2 * N),
    };
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A new key pair, as hex: (secret, public).
///
/// ```
/// let (secret, public) = cachelet::policy_keypair().unwrap();
/// let sig = cachelet::sign_policy(&secret, b"\0asm component bytes").unwrap();
/// assert_eq!((secret.len(), public.len(), sig.len()), (64, 64, 128));
/// ```
pub fn policy_keypair() -> Result<(String, String), Error> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| Error::Setting {
        name: "key".into(),
        problem: format!("no randomness from the system: {e}"),
    })?;
    let key = SigningKey::from_bytes(&seed);
    Ok((hex(&seed), hex(key.verifying_key().as_bytes())))
}

/// The signature (hex) of `component` with the secret key `secret` (hex), for
/// [`Cache::push_policy`](crate::cache::Cache::push_policy).
pub fn sign_policy(secret: &str, component: &[u8]) -> Result<String, Error> {
    let key = SigningKey::from_bytes(&unhex::<32>("secret key", secret)?);
    let hash = super::hex_sha256(component);
    Ok(hex(&key.sign(&message(&hash)).to_bytes()))
}

/// A public key hosts verify pushes with.
#[derive(Clone)]
pub(crate) struct PublicKey(VerifyingKey);

impl PublicKey {
    /// From `CACHELET_POLICY_PUBKEY`: the key in hex, or a file holding it.
    pub fn parse(setting: &str) -> Result<PublicKey, Error> {
        let text = if setting.trim().len() == 64 {
            setting.to_string()
        } else {
            std::fs::read_to_string(setting.trim()).map_err(|e| Error::Setting {
                name: "CACHELET_POLICY_PUBKEY".into(),
                problem: format!("neither a key in hex nor a readable file: {e}"),
            })?
        };
        let bytes = unhex::<32>("CACHELET_POLICY_PUBKEY", &text)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| Error::Setting {
                name: "CACHELET_POLICY_PUBKEY".into(),
                problem: format!("not an Ed25519 public key: {e}"),
            })
    }

    /// Whether `signature` (hex) is this key's over the component of `hash`; the reason if not.
    pub fn verify(&self, hash: &str, signature: Option<&str>) -> Result<(), String> {
        let Some(sig) = signature else {
            return Err(
                "unsigned, and this host requires a signature (CACHELET_POLICY_PUBKEY)".into(),
            );
        };
        let sig = unhex::<64>("signature", sig)
            .map_err(|_| "the signature is not 64 bytes of hex".to_string())?;
        self.0
            .verify_strict(&message(hash), &Signature::from_bytes(&sig))
            .map_err(|_| {
                "the signature does not verify with this host's key (CACHELET_POLICY_PUBKEY): \
                 signed with another key, or the component was changed after signing"
                    .to_string()
            })
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_component_and_key() {
        let (secret, public) = policy_keypair().unwrap();
        let key = PublicKey::parse(&public).unwrap();
        let hash = crate::policy::hex_sha256(b"component");
        let sig = sign_policy(&secret, b"component").unwrap();
        assert!(key.verify(&hash, Some(&sig)).is_ok());
        let other = crate::policy::hex_sha256(b"componenT");
        assert!(key.verify(&other, Some(&sig)).is_err(), "another component");
        assert!(key.verify(&hash, None).unwrap_err().contains("unsigned"));
        let (other_secret, _) = policy_keypair().unwrap();
        let wrong = sign_policy(&other_secret, b"component").unwrap();
        assert!(key.verify(&hash, Some(&wrong)).is_err(), "another key");
        assert!(PublicKey::parse("zz").is_err());
    }
}
