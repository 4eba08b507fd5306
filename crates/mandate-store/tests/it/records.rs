//! Signing keys and admin credentials.

use mandate_store::{AdminCredential, Op, StoreError, StoredSigningKey};

use super::{commit1, fresh};

fn signing_key(kid: &str, created_at: i64) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.to_owned(),
        alg: "EdDSA".to_owned(),
        public_jwk: format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{kid}"}}"#),
        sealed_private: vec![0, 1, 2, 255, 254, kid.len() as u8],
        created_at,
        retired_at: None,
        publish_until: None,
    }
}

#[tokio::test]
async fn signing_keys_are_stored_listed_and_retired() {
    let store = fresh().await;
    commit1(&*store, Op::InsertSigningKey(signing_key("k2", 200))).await;
    commit1(&*store, Op::InsertSigningKey(signing_key("k1", 100))).await;
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![signing_key("k1", 100), signing_key("k2", 200)]
    );

    commit1(
        &*store,
        Op::RetireSigningKey {
            kid: "k1".to_owned(),
            at: 300,
            publish_until: 400,
        },
    )
    .await;
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0].retired_at, Some(300));
    assert_eq!(keys[0].publish_until, Some(400));
    assert_eq!(keys[1].retired_at, None);

    let dup = store
        .commit(vec![Op::InsertSigningKey(signing_key("k1", 500))])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let missing = store
        .commit(vec![Op::RetireSigningKey {
            kid: "nope".to_owned(),
            at: 1,
            publish_until: 2,
        }])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn admin_credentials_are_stored_and_unique() {
    let store = fresh().await;
    let cred = AdminCredential {
        id: "root".to_owned(),
        role: "admin".to_owned(),
        secret_hash: "ab".repeat(32),
        created_at: 100,
        disabled_at: None,
    };
    let auditor = AdminCredential {
        id: "auditor".to_owned(),
        role: "auditor".to_owned(),
        secret_hash: "cd".repeat(32),
        created_at: 200,
        disabled_at: Some(300),
    };
    commit1(&*store, Op::InsertAdminCredential(cred.clone())).await;
    commit1(&*store, Op::InsertAdminCredential(auditor.clone())).await;
    assert_eq!(
        store.admin_credentials().await.unwrap(),
        vec![cred.clone(), auditor]
    );
    let dup = store.commit(vec![Op::InsertAdminCredential(cred)]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
}
