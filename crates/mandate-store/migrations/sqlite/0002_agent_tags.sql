-- Agents carry tags (JSON array of strings) that policies can read as `principal.tags`.
ALTER TABLE agents ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
