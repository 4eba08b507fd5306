//! The demo's posture chapter: what is wrong today in the demo world, how far each agent could
//! reach, and what the compliance controls find in this deployment's own evidence.

use anyhow::Result;
use serde_json::Value;

use crate::client::Client;

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

/// Runs the chapter against the running server.
pub async fn chapter(admin: &Client) -> Result<()> {
    println!("\n8. Posture and compliance: what is wrong today, and the evidence");
    let report = admin.get("/v1/posture").await?;
    let s = &report["summary"];
    println!(
        "   mandate posture: {} agents, {} findings ({} critical, {} high, {} medium, {} low)",
        s["agents"], s["findings"], s["critical"], s["high"], s["medium"], s["low"]
    );
    for f in report["findings"].as_array().into_iter().flatten().take(3) {
        println!(
            "   [{}] {} {}: {}",
            text(f, "severity"),
            text(f, "agent"),
            text(f, "id"),
            text(f, "problem")
        );
        println!("          fix: {}", text(f, "fix"));
    }
    for b in report["blast_radius"].as_array().into_iter().flatten() {
        println!(
            "   blast radius of {}: {}",
            text(b, "agent"),
            text(b, "formula")
        );
    }
    let compliance = admin.get("/v1/compliance?format=json").await?;
    let c = &compliance["summary"];
    println!(
        "   mandate compliance: {} controls — {} met, {} partial, {} gap",
        c["controls"], c["met"], c["partial"], c["gap"]
    );
    let statuses: Vec<String> = compliance["controls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} {}", text(r, "id"), text(r, "status")))
        .collect();
    println!("   {}", statuses.join(" · "));
    Ok(())
}
