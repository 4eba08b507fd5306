-- Mandate's SQLite schema, version 1. Times are seconds since the epoch unless named otherwise;
-- lists (chains, credentials, audiences, ceilings, policy ids) are JSON arrays of strings.

-- Token-signing keys: the public JWK in clear, the private key sealed under the master key.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER,
    publish_until  INTEGER
);

-- Admin API credentials: only the SHA-256 of the secret.
CREATE TABLE admin_credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

-- Registered agents.
CREATE TABLE agents (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    description TEXT NOT NULL,
    ceiling     TEXT NOT NULL,
    max_stage   TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Agents' public keys for private_key_jwt (rowid order is registration order).
CREATE TABLE agent_keys (
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    kid        TEXT NOT NULL,
    jwk        TEXT NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (agent_id, kid)
);
CREATE INDEX agent_keys_kid ON agent_keys (kid);

-- Tasks: the root every token hangs from.
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY NOT NULL,
    agent       TEXT NOT NULL,
    user        TEXT,
    user_issuer TEXT,
    purpose     TEXT NOT NULL,
    input       TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Issued tokens (their facts, never the token itself).
CREATE TABLE tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    parent_jti  TEXT,
    task        TEXT NOT NULL,
    sub         TEXT NOT NULL,
    sub_profile TEXT NOT NULL,
    sub_iss     TEXT,
    chain       TEXT NOT NULL,
    credentials TEXT NOT NULL,
    scope       TEXT NOT NULL,
    aud         TEXT NOT NULL,
    stage       TEXT NOT NULL,
    iat         INTEGER NOT NULL,
    exp         INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX tokens_parent ON tokens (parent_jti);
CREATE INDEX tokens_task ON tokens (task, iat);
CREATE INDEX tokens_subject ON tokens (sub, sub_profile);
CREATE INDEX tokens_revoked ON tokens (exp) WHERE revoked_at IS NOT NULL;

-- One row per actor of a token's chain: finds the tokens an agent or a credential appears in.
CREATE TABLE token_actors (
    jti        TEXT NOT NULL REFERENCES tokens (jti) ON DELETE CASCADE,
    pos        INTEGER NOT NULL,
    agent      TEXT,
    credential TEXT,
    PRIMARY KEY (jti, pos)
);
CREATE INDEX token_actors_agent ON token_actors (agent);
CREATE INDEX token_actors_credential ON token_actors (credential);

-- Revocation roots.
CREATE TABLE revocations (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    revoked_by TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX revocations_target ON revocations (kind, target);

-- Single-use values (client-assertion jtis, …), kept until they expire.
CREATE TABLE used_once (
    key TEXT PRIMARY KEY NOT NULL,
    exp INTEGER NOT NULL
);
CREATE INDEX used_once_exp ON used_once (exp);

-- The audit log: an append-only hash chain ordered by seq.
CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY NOT NULL,
    time       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    user       TEXT,
    chain      TEXT NOT NULL,
    task       TEXT,
    action     TEXT,
    resource   TEXT,
    decision   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    policy_ids TEXT NOT NULL,
    request_id TEXT,
    credential TEXT,
    jti        TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_events_user ON audit_events (user);
CREATE INDEX audit_events_task ON audit_events (task);
CREATE INDEX audit_events_resource_time ON audit_events (resource, time);
CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_kind ON audit_events (kind);

-- Every agent of an event's chain, for "agent anywhere in the chain" queries.
CREATE TABLE audit_event_agents (
    agent TEXT NOT NULL,
    seq   INTEGER NOT NULL REFERENCES audit_events (seq),
    PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
