-- Revocations become a feed that verifiers and Shared Signals streams follow: each has a gapless
-- sequence number (its event id) and the tokens it ended (JSON array of {"jti","exp"}), so a
-- verifier that reconnects with the last id it saw is sent exactly what it missed.
ALTER TABLE revocations ADD COLUMN seq INTEGER;
ALTER TABLE revocations ADD COLUMN ended TEXT NOT NULL DEFAULT '[]';
UPDATE revocations SET seq = rowid;
CREATE UNIQUE INDEX revocations_seq ON revocations (seq);
