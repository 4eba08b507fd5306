//! Mandate's own signing keys: the current key signs; retired keys stay in the JWKS until every
//! token they signed has expired.

use std::sync::{Arc, RwLock};

use mandate_store::{Op, Store, StoreError, StoredSigningKey};
use mandate_token::verify::VerifyingKey;
use mandate_token::{Alg, KeySet, MasterKey, SealedKey, SigningKey};
use serde_json::{Value, json};

/// Why the key ring could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be created or opened.
    #[error(transparent)]
    Key(#[from] mandate_token::KeyError),
    /// A stored key is damaged.
    #[error("stored signing key `{0}` is damaged")]
    Damaged(String),
}

/// A snapshot of the keys.
pub struct Keys {
    /// The key that signs new tokens.
    pub current: Arc<SigningKey>,
    /// Public keys that verify Mandate tokens: the current one and retired ones still published.
    pub verify: KeySet,
    /// The JWKS document served at `/.well-known/jwks.json`.
    pub jwks: Value,
    /// kid, alg, created, retired and published-until of every published key.
    pub listing: Vec<Value>,
}

/// The key ring, swapped whole on rotation.
pub struct KeyRing {
    inner: RwLock<Arc<Keys>>,
}

fn to_stored(sealed: &SealedKey, now: i64) -> StoredSigningKey {
    StoredSigningKey {
        kid: sealed.kid.clone(),
        alg: sealed.alg.as_str().to_owned(),
        public_jwk: sealed.public_jwk.to_string(),
        sealed_private: sealed.sealed_private.clone(),
        created_at: now,
        retired_at: None,
        publish_until: None,
    }
}

fn build(
    stored: &[StoredSigningKey],
    master: &MasterKey,
    now: i64,
) -> Result<Option<Keys>, KeyRingError> {
    let mut current = None;
    let mut public = Vec::new();
    let mut listing = Vec::new();
    for s in stored {
        let published = s.retired_at.is_none() || s.publish_until.is_some_and(|u| u > now);
        if !published {
            continue;
        }
        let jwk: Value = serde_json::from_str(&s.public_jwk)
            .map_err(|_| KeyRingError::Damaged(s.kid.clone()))?;
        if s.retired_at.is_none() {
            let sealed = SealedKey {
                kid: s.kid.clone(),
                alg: Alg::parse(&s.alg)?,
                public_jwk: jwk.clone(),
                sealed_private: s.sealed_private.clone(),
            };
            current = Some(Arc::new(SigningKey::unseal(&sealed, master)?));
        }
        listing.push(json!({
            "kid": s.kid, "alg": s.alg, "created_at": s.created_at,
            "retired_at": s.retired_at, "publish_until": s.publish_until,
            "current": s.retired_at.is_none(),
        }));
        public.push(jwk);
    }
    let Some(current) = current else {
        return Ok(None);
    };
    let verify = KeySet::new(
        public
            .iter()
            .filter_map(|j| VerifyingKey::from_jwk(j).ok())
            .collect(),
    );
    Ok(Some(Keys {
        current,
        verify,
        jwks: json!({ "keys": public }),
        listing,
    }))
}

impl KeyRing {
    /// Loads the keys, creating the first one if there is none.
    pub async fn load_or_create(
        store: &dyn Store,
        master: &MasterKey,
        alg: Alg,
        now: i64,
    ) -> Result<KeyRing, KeyRingError> {
        let stored = store.signing_keys().await?;
        if let Some(keys) = build(&stored, master, now)? {
            return Ok(KeyRing {
                inner: RwLock::new(Arc::new(keys)),
            });
        }
        let key = SigningKey::generate(alg)?;
        let sealed = key.seal(master)?;
        store
            .commit(vec![Op::InsertSigningKey(to_stored(&sealed, now))])
            .await?;
        let stored = store.signing_keys().await?;
        let keys = build(&stored, master, now)?
            .ok_or_else(|| KeyRingError::Damaged(key.kid().to_owned()))?;
        Ok(KeyRing {
            inner: RwLock::new(Arc::new(keys)),
        })
    }

    /// The current snapshot.
    pub fn keys(&self) -> Arc<Keys> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes a new current key; the old one stops signing and stays published for `keep_for`
    /// seconds (the longest lifetime of a token it signed). Returns (new kid, old kid).
    pub async fn rotate(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        alg: Alg,
        now: i64,
        keep_for: i64,
        audit: mandate_core::audit::NewEvent,
    ) -> Result<(String, String), KeyRingError> {
        let old = self.keys().current.kid().to_owned();
        let key = SigningKey::generate(alg)?;
        let sealed = key.seal(master)?;
        store
            .commit(vec![
                Op::RetireSigningKey {
                    kid: old.clone(),
                    at: now,
                    publish_until: now + keep_for,
                },
                Op::InsertSigningKey(to_stored(&sealed, now)),
                Op::Audit(audit),
            ])
            .await?;
        self.reload(store, master, now).await?;
        Ok((key.kid().to_owned(), old))
    }

    /// Re-reads the keys from the store (after a rotation here or on another node).
    pub async fn reload(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        now: i64,
    ) -> Result<(), KeyRingError> {
        let stored = store.signing_keys().await?;
        if let Some(keys) = build(&stored, master, now)? {
            match self.inner.write() {
                Ok(mut g) => *g = Arc::new(keys),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
            }
        }
        Ok(())
    }
}
