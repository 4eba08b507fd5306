-- Posture and access reviews (issue 7, SPEC §8).
--
-- `agent_justifications`: why an agent's ceiling holds a pattern, as recorded by an admin (at
-- registration or with `PATCH /v1/agents/{id}`). A write-class ceiling pattern without one is a
-- posture finding. Kept apart from `agents` so that an agent's own row stays what it was.
CREATE TABLE agent_justifications (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    pattern  TEXT NOT NULL,
    text     TEXT NOT NULL,
    set_by   TEXT NOT NULL,
    set_at   INTEGER NOT NULL,
    PRIMARY KEY (agent_id, pattern)
);

-- `reviews`: access review items, one per agent and round (`campaign`), answered by the agent's
-- owner: `open` → `attested` (keeps the whole ceiling) or `narrowed` (`removed` patterns, JSON
-- array). `ceiling` is the ceiling under review when it was opened (JSON array).
CREATE TABLE reviews (
    id         TEXT PRIMARY KEY NOT NULL,
    campaign   TEXT NOT NULL,
    agent      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    ceiling    TEXT NOT NULL,
    status     TEXT NOT NULL,
    opened_by  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    removed    TEXT NOT NULL DEFAULT '[]',
    note       TEXT
);
CREATE INDEX reviews_status ON reviews (status, due_at);
CREATE INDEX reviews_agent ON reviews (agent, created_at);
