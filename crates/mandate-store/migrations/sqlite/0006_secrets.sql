-- Gateway secrets: the upstreams' real credentials, which the gateway injects into forwarded
-- requests so that agents never hold them.
--
-- `sealed` is the value sealed under the master key (AES-256-GCM, nonce first) with the
-- associated data `secret:<name>`, so a sealed value copied under another name does not open.
-- The plaintext is never stored.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    sealed      BLOB NOT NULL,
    description TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
