//! Signing keys and their storage at rest.
//!
//! A private key is kept in memory as an `aws-lc-rs` key pair (parsed once) and at rest only as a
//! [`SealedKey`]: ChaCha20-Poly1305 under the [`MasterKey`], with the key id as associated data
//! so a sealed key cannot be swapped for another's.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::{KeyError, random_bytes};

/// A signing algorithm Mandate issues tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (RFC 8037). The default.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl Alg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
        }
    }

    /// Parses the JOSE name.
    pub fn parse(s: &str) -> Result<Alg, KeyError> {
        match s {
            "EdDSA" => Ok(Alg::EdDSA),
            "ES256" => Ok(Alg::ES256),
            other => Err(KeyError::UnsupportedAlg(other.chars().take(20).collect())),
        }
    }
}

/// The key that seals private keys at rest. Zeroed when dropped; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey, KeyError> {
        Ok(MasterKey(Zeroizing::new(random_bytes::<32>()?)))
    }

    /// Parses 32 bytes written as standard base64, base64url or hex (surrounding whitespace ok).
    pub fn parse(text: &str) -> Result<MasterKey, KeyError> {
        let t = text.trim();
        // 64 hex digits are also valid base64 (of 48 bytes): try hex first.
        let decoded = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            STANDARD
                .decode(t)
                .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
                .ok()
        };
        let mut bytes = decoded.ok_or(KeyError::BadMasterKey)?;
        let out: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        out.map(|k| MasterKey(Zeroizing::new(k)))
            .map_err(|_| KeyError::BadMasterKey)
    }

    /// The standard base64 form, for writing the key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&*self.0).into())
    }

    /// Seals `plaintext` with `aad` bound to it: 12-byte random nonce, then ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce = random_bytes::<12>()?;
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Crypto("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] produced. `label` names the item in the error.
    pub fn open(
        &self,
        sealed: &[u8],
        aad: &[u8],
        label: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < 12 + 16 {
            return Err(KeyError::Unseal(label.to_owned()));
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Unseal(label.to_owned()))
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// A private signing key, parsed once and held in memory.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
    public_jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A private key sealed for storage, with its public half in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Alg,
    /// The public JWK.
    pub public_jwk: Value,
    /// Nonce, ciphertext and tag of the PKCS#8 private key.
    pub sealed_private: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7638 thumbprint of a public JWK (OKP or EC), base64url.
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        _ => return None,
    };
    Some(b64(&Sha256::digest(canonical.as_bytes())))
}

impl SigningKey {
    /// Generates a new key. Its `kid` is derived from its RFC 7638 thumbprint.
    pub fn generate(alg: Alg) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
            Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        }
        .map_err(|_| KeyError::Crypto("key generation failed"))?;
        SigningKey::from_pkcs8(alg, pkcs8.as_ref(), None)
    }

    /// Builds a key from its PKCS#8 DER. With `kid` `None`, the kid is derived from the thumbprint.
    pub fn from_pkcs8(alg: Alg, pkcs8: &[u8], kid: Option<String>) -> Result<SigningKey, KeyError> {
        let (pair, mut public_jwk) = match alg {
            Alg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
                    .map_err(|_| KeyError::Crypto("not an Ed25519 PKCS#8 key"))?;
                let x = b64(pair.public_key().as_ref());
                (
                    Pair::Ed(pair),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            Alg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|_| KeyError::Crypto("not a P-256 PKCS#8 key"))?;
                let point = pair.public_key().as_ref();
                // Uncompressed point: 0x04 || x (32) || y (32).
                if point.len() != 65 {
                    return Err(KeyError::Crypto("unexpected P-256 public key encoding"));
                }
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
                (Pair::Ec(pair), jwk)
            }
        };
        let kid = match kid {
            Some(k) => k,
            None => jwk_thumbprint(&public_jwk)
                .map(|t| t.chars().take(16).collect())
                .ok_or(KeyError::Crypto("cannot compute thumbprint"))?,
        };
        if let Some(obj) = public_jwk.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
            obj.insert("alg".into(), json!(alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        Ok(SigningKey {
            kid,
            alg,
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            public_jwk,
        })
    }

    /// The same key under another key id (e.g. a readable `support-v2-k1`).
    pub fn with_kid(mut self, kid: &str) -> SigningKey {
        kid.clone_into(&mut self.kid);
        if let Some(obj) = self.public_jwk.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
        }
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// The private key as a private JWK (`d` included), for handing an agent its key in dev
    /// setups. Ed25519 only.
    pub fn private_jwk(&self) -> Option<Zeroizing<String>> {
        let Pair::Ed(_) = self.pair else { return None };
        // PKCS#8 v1/v2 for Ed25519 carries the 32-byte seed after the fixed 16-byte prefix.
        let seed = self.pkcs8.get(16..48)?;
        let mut jwk = self.public_jwk.clone();
        jwk.as_object_mut()?.insert("d".into(), json!(b64(seed)));
        Some(Zeroizing::new(jwk.to_string()))
    }

    /// Reads an Ed25519 private JWK (`kty` `OKP`, `crv` `Ed25519`, `d`, `kid`), as `--dev` writes
    /// for its demo agents.
    pub fn from_private_jwk(jwk: &Value) -> Result<SigningKey, KeyError> {
        let s = |k: &str| jwk.get(k).and_then(Value::as_str);
        if s("kty") != Some("OKP") || s("crv") != Some("Ed25519") {
            return Err(KeyError::Crypto("only Ed25519 private JWKs are supported"));
        }
        let seed = s("d")
            .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
            .filter(|d| d.len() == 32)
            .ok_or(KeyError::Crypto("`d` must be a 32-byte base64url seed"))?;
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410 §7).
        let mut pkcs8 =
            Zeroizing::new(hex::decode("302e020100300506032b657004220420").unwrap_or_default());
        pkcs8.extend_from_slice(&seed);
        let key = SigningKey::from_pkcs8(Alg::EdDSA, &pkcs8, s("kid").map(str::to_owned))?;
        if s("x").is_some_and(|x| Some(x) != key.public_jwk.get("x").and_then(Value::as_str)) {
            return Err(KeyError::Crypto("`x` does not match `d`"));
        }
        Ok(key)
    }

    /// Signs `message`, returning the JWS signature bytes.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto("signing failed")),
        }
    }

    /// Seals the private key under `master` for storage.
    pub fn seal(&self, master: &MasterKey) -> Result<SealedKey, KeyError> {
        Ok(SealedKey {
            kid: self.kid.clone(),
            alg: self.alg,
            public_jwk: self.public_jwk.clone(),
            sealed_private: master.seal(&self.pkcs8, self.kid.as_bytes())?,
        })
    }

    /// Opens a sealed key.
    pub fn unseal(sealed: &SealedKey, master: &MasterKey) -> Result<SigningKey, KeyError> {
        let pkcs8 = master.open(&sealed.sealed_private, sealed.kid.as_bytes(), &sealed.kid)?;
        SigningKey::from_pkcs8(sealed.alg, &pkcs8, Some(sealed.kid.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_round_trip_and_refuse_the_wrong_master() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let key = SigningKey::generate(alg).unwrap();
            let m = MasterKey::generate().unwrap();
            let sealed = key.seal(&m).unwrap();
            let back = SigningKey::unseal(&sealed, &m).unwrap();
            assert_eq!(back.public_jwk(), key.public_jwk());
            assert_eq!(back.kid(), key.kid());
            let other = MasterKey::generate().unwrap();
            assert!(SigningKey::unseal(&sealed, &other).is_err());
            let mut swapped = sealed.clone();
            swapped.kid = "someone-else".into();
            assert!(
                SigningKey::unseal(&swapped, &m).is_err(),
                "kid is bound as AAD"
            );
        }
    }

    #[test]
    fn private_jwk_round_trip() {
        let k = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("a-k1");
        let jwk: Value = serde_json::from_str(&k.private_jwk().unwrap()).unwrap();
        let back = SigningKey::from_private_jwk(&jwk).unwrap();
        assert_eq!(back.public_jwk(), k.public_jwk());
        assert_eq!(back.kid(), "a-k1");
    }

    #[test]
    fn master_key_parses_base64_and_hex_and_refuses_short_keys() {
        let m = MasterKey::generate().unwrap();
        let text = m.to_base64();
        assert!(MasterKey::parse(&text).is_ok());
        assert!(MasterKey::parse(&hex::encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("not a key").is_err());
        assert_eq!(format!("{m:?}"), "MasterKey(…)");
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 8037 §A.3: the thumbprint of the Ed25519 example key.
        let jwk =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
