-- Approvals (issue 6): requests for a human decision — a stage escalation before issuance (CIBA),
-- a write held at the gateway under a `draft` token, a change to an agent's ceiling or stage.
--
-- `record` is the whole `mandate_core::approval::Approval` as JSON (what is asked, by whom, the
-- binding message, expiry, the decision); `kind`, `agent`, `user`, `status` and the times are
-- copied out of it for queries. `payload` is what to carry out once approved (the pending
-- issuance, the held request, the agent change), JSON. `dispatch` makes that happen at most once:
-- `not_sent` → `sending` (claimed, before anything leaves) → `sent` (with `outcome`, JSON).
-- `last_poll` and `poll_interval` are the CIBA poll state of an escalation.
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    agent         TEXT NOT NULL,
    user          TEXT,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    record        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    dispatch      TEXT NOT NULL DEFAULT 'not_sent',
    outcome       TEXT,
    last_poll     INTEGER,
    poll_interval INTEGER NOT NULL DEFAULT 5
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE INDEX approvals_agent ON approvals (agent, created_at);
