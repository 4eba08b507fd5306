//! Printing for people (aligned tables, audit lines) and for scripts (`--json`).

use serde_json::Value;

/// Prints `v` as pretty JSON.
pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows as an aligned table with a header.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A string field, or `-`.
pub fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// The one-line form of an audit event:
/// `time user:alice via agent:support-v2 task:t kind action resource decision`.
pub fn audit_line(e: &Value) -> String {
    let mut parts = vec![s(e, "time")];
    parts.push(match e.get("user").and_then(Value::as_str) {
        Some(u) => format!("user:{u}"),
        None => "-".into(),
    });
    let chain: Vec<String> = e
        .get("chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|x| format!("agent:{x}"))
                .collect()
        })
        .unwrap_or_default();
    if !chain.is_empty() {
        parts.push(format!("via {}", chain.join(" > ")));
    }
    if let Some(t) = e.get("task").and_then(Value::as_str) {
        parts.push(format!("task:{t}"));
    }
    parts.push(s(e, "kind"));
    for k in ["action", "resource"] {
        if let Some(x) = e.get(k).and_then(Value::as_str) {
            parts.push(x.to_owned());
        }
    }
    parts.push(s(e, "decision"));
    // A held write sent after approval, or a decision: name the human who approved.
    let detail: Value = e
        .get("detail")
        .and_then(Value::as_str)
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    if let Some(a) = detail.get("approver").and_then(Value::as_str) {
        parts.push(format!("approver:{a}"));
    }
    if e.get("decision").and_then(Value::as_str) == Some("deny") {
        parts.push(format!("({})", s(e, "reason")));
    }
    parts.join(" ")
}
