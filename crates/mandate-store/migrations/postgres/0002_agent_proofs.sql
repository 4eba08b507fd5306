-- Workload identities bound to an agent (JSON array of `WorkloadBinding`) and whether its tokens
-- must be DPoP-bound.
ALTER TABLE agents ADD COLUMN workloads TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN require_dpop BIGINT NOT NULL DEFAULT 0;
