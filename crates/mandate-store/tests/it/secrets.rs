//! Gateway secrets: put (insert or replace), delete, list and read back.

use mandate_store::{Op, OpOutput, StoreError, StoredSecret};

use super::{all_events, commit1, event, fresh};

fn secret(name: &str, sealed: &[u8], at: i64, by: &str) -> StoredSecret {
    StoredSecret {
        name: name.to_owned(),
        sealed: sealed.to_vec(),
        description: Some(format!("{name} key")),
        created_at: at,
        updated_at: at,
        created_by: by.to_owned(),
    }
}

#[tokio::test]
async fn put_inserts_then_replaces_keeping_creation() {
    let store = fresh().await;
    assert_eq!(store.secrets().await.unwrap(), vec![]);
    assert_eq!(store.secret("crm-api").await.unwrap(), None);

    let out = commit1(
        &*store,
        Op::PutSecret(secret("crm-api", b"one", 100, "admin:a")),
    )
    .await;
    assert_eq!(out, OpOutput::SecretPut { replaced: false });
    let mut second = secret("crm-api", b"two", 200, "admin:b");
    second.description = None;
    let out = commit1(&*store, Op::PutSecret(second)).await;
    assert_eq!(out, OpOutput::SecretPut { replaced: true });

    let got = store.secret("crm-api").await.unwrap().unwrap();
    assert_eq!(got.sealed, b"two");
    assert_eq!(got.description, None);
    assert_eq!(got.created_at, 100, "creation time is kept");
    assert_eq!(got.created_by, "admin:a", "the creator is kept");
    assert_eq!(got.updated_at, 200);
    assert!(
        !format!("{got:?}").contains("two"),
        "debug hides the sealed bytes"
    );

    commit1(
        &*store,
        Op::PutSecret(secret("billing.v2", b"x", 300, "admin:a")),
    )
    .await;
    let names: Vec<String> = store
        .secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["billing.v2", "crm-api"], "listed by name");
}

#[tokio::test]
async fn delete_removes_and_refuses_an_absent_name() {
    let store = fresh().await;
    commit1(
        &*store,
        Op::PutSecret(secret("crm-api", b"one", 100, "admin:a")),
    )
    .await;
    commit1(
        &*store,
        Op::DeleteSecret {
            name: "crm-api".into(),
        },
    )
    .await;
    assert_eq!(store.secret("crm-api").await.unwrap(), None);
    let err = store
        .commit(vec![Op::DeleteSecret {
            name: "crm-api".into(),
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(ref w) if w == "secret `crm-api`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_unit_writes_neither_the_secret_nor_its_event() {
    let store = fresh().await;
    let before = all_events(&*store).await.len();
    let err = store
        .commit(vec![
            Op::PutSecret(secret("crm-api", b"one", 100, "admin:a")),
            Op::Audit(event("secret.set")),
            Op::DeleteSecret {
                name: "absent".into(),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    assert_eq!(store.secret("crm-api").await.unwrap(), None);
    assert_eq!(all_events(&*store).await.len(), before);
}

#[tokio::test]
async fn secrets_survive_reopen() {
    let mut store = fresh().await;
    commit1(
        &*store,
        Op::PutSecret(secret("crm-api", b"sealed", 100, "admin:a")),
    )
    .await;
    store.reopen().await;
    assert_eq!(
        store.secret("crm-api").await.unwrap(),
        Some(secret("crm-api", b"sealed", 100, "admin:a"))
    );
    store.close().await;
}
