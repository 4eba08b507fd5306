-- Tasks carry the agent's own record of the work (SPEC §7): how a task ended, and the steps the
-- agent recorded along the way — what it decided, why, and the tool call it meant to make.
ALTER TABLE tasks ADD COLUMN outcome TEXT;
ALTER TABLE tasks ADD COLUMN completed_at INTEGER;
CREATE INDEX tasks_agent ON tasks (agent, created_at);
CREATE INDEX tasks_user ON tasks (user, created_at);
CREATE INDEX tasks_created ON tasks (created_at);

-- One row per step, numbered from 1 within its task. `time` is RFC 3339 UTC with milliseconds
-- (like audit event times); `tool_call` is JSON ({"action", "resource", "arguments"?}).
CREATE TABLE task_steps (
    task        TEXT NOT NULL REFERENCES tasks (id),
    seq         INTEGER NOT NULL,
    time        TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    decision    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    tool_call   TEXT,
    anomaly     TEXT,
    PRIMARY KEY (task, seq)
) WITHOUT ROWID;
