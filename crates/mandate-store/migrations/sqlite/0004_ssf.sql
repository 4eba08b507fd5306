-- Shared Signals (OpenID SSF 1.0) streams and their outboxes.
--
-- A stream is one receiver's subscription to the revocation feed. `cursor` is the last feed
-- sequence number the transmitter has considered for the stream: the SETs it produced and the
-- new cursor are written in one unit, so a restart resumes after exactly what was queued.
-- `authorization_header` (what push delivery sends to the receiver) is sealed under the master
-- key. `removed_subjects` is a JSON array of subject identifiers the receiver removed.
CREATE TABLE ssf_streams (
    id                   TEXT PRIMARY KEY NOT NULL,
    aud                  TEXT NOT NULL,            -- JSON array of strings
    method               TEXT NOT NULL,            -- urn:ietf:rfc:8935 (push) or urn:ietf:rfc:8936 (poll)
    endpoint_url         TEXT,                     -- push only
    authorization_header BLOB,                     -- push only, sealed
    events_requested     TEXT,                     -- JSON array, NULL when the receiver asked for none
    description          TEXT,
    status               TEXT NOT NULL,            -- enabled | paused | disabled
    reason               TEXT,
    removed_subjects     TEXT NOT NULL DEFAULT '[]',
    cursor               INTEGER NOT NULL,
    last_error           TEXT,
    last_error_at        INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

-- SETs waiting for a receiver: acknowledged by a poll or accepted by a push, then deleted.
-- `claims` is the SET's JSON claims set; it is signed when it leaves, with the current key.
CREATE TABLE ssf_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id  TEXT NOT NULL REFERENCES ssf_streams (id) ON DELETE CASCADE,
    jti        TEXT NOT NULL,
    claims     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX ssf_outbox_stream ON ssf_outbox (stream_id, seq);
CREATE UNIQUE INDEX ssf_outbox_jti ON ssf_outbox (stream_id, jti);
