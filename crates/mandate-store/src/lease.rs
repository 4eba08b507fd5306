//! What several processes sharing one database tell each other: committed changes
//! ([`Change`]) and store-wide locks ([`Lease`]).

/// A committed change that every process on the same database must take into account: the
/// in-memory state it keeps (revocation index, agent directory, keys, credentials, pending
/// approvals) would otherwise go stale. Announced by [`crate::Store::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A revocation was committed with this feed sequence number.
    Revocation(i64),
    /// An agent was registered or changed: its fields, status or keys.
    Agents,
    /// A signing key was added or retired.
    SigningKeys,
    /// An admin credential was added.
    AdminCredentials,
    /// The approval with this id was created, decided, claimed or carried out.
    Approval(String),
    /// A gateway secret was stored or deleted.
    Secrets,
    /// Changes may have been missed (the listening connection was lost and is back): reload
    /// everything.
    Resync,
}

impl Change {
    /// The notification text of the change (`revocation:7`, `agents`, `approval:<id>`, …).
    pub fn to_text(&self) -> String {
        match self {
            Change::Revocation(seq) => format!("revocation:{seq}"),
            Change::Agents => "agents".to_owned(),
            Change::SigningKeys => "signing_keys".to_owned(),
            Change::AdminCredentials => "admin_credentials".to_owned(),
            Change::Approval(id) => format!("approval:{id}"),
            Change::Secrets => "secrets".to_owned(),
            Change::Resync => "resync".to_owned(),
        }
    }

    /// Reads a notification text; `None` for one this build does not know (a newer node's).
    pub fn parse(text: &str) -> Option<Change> {
        if let Some(seq) = text.strip_prefix("revocation:") {
            return seq.parse().ok().map(Change::Revocation);
        }
        if let Some(id) = text.strip_prefix("approval:") {
            return (!id.is_empty()).then(|| Change::Approval(id.to_owned()));
        }
        match text {
            "agents" => Some(Change::Agents),
            "signing_keys" => Some(Change::SigningKeys),
            "admin_credentials" => Some(Change::AdminCredentials),
            "secrets" => Some(Change::Secrets),
            "resync" => Some(Change::Resync),
            _ => None,
        }
    }
}

/// A store-wide lock, held until dropped. See [`crate::Store::lock`].
pub struct Lease {
    /// What keeps the lock (for PostgreSQL, the session that took it); nothing for SQLite.
    _held: Option<Box<dyn Send + Sync>>,
}

impl Lease {
    /// A lease that holds nothing: the store has no other process to exclude.
    pub fn local() -> Lease {
        Lease { _held: None }
    }

    /// A lease kept by `held`: dropping it releases the lock.
    pub fn holding(held: Box<dyn Send + Sync>) -> Lease {
        Lease { _held: Some(held) }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("shared", &self._held.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn change_texts_round_trip() {
        for c in [
            Change::Revocation(42),
            Change::Agents,
            Change::SigningKeys,
            Change::AdminCredentials,
            Change::Approval("apr_1".into()),
            Change::Secrets,
            Change::Resync,
        ] {
            assert_eq!(Change::parse(&c.to_text()), Some(c));
        }
        assert_eq!(Change::parse("revocation:x"), None);
        assert_eq!(Change::parse("approval:"), None);
        assert_eq!(Change::parse("something-new"), None);
    }
}
