-- Audit checkpoints: the server's signed statements of the audit chain's head ("at `time` the
-- event of `seq` had `hash`"), so that a cut tail or a recomputed chain is detected. `jws` is
-- the compact JWS (`typ` `audit-checkpoint+jwt`, claims `iss`, `iat`, `seq`, `hash`) signed with
-- the signing key current at the time; verification trusts its claims, not the other columns.
CREATE TABLE audit_checkpoints (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    jws  TEXT NOT NULL
);
