//! `mandate secret set|list|rm`: the gateway's encrypted store of upstream credentials.
//!
//! A value is read from standard input, never from the command line (so it stays out of shell
//! history and `ps`), and is never printed: the server does not show it back either.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mandate_core::time::rfc3339_millis;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, s};

/// `mandate secret …`.
#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value, read from standard input (one trailing newline is dropped), e.g.
    /// `mandate secret set crm-api < key.txt`. Replaces the value if the name exists.
    Set {
        /// The name (`a-z`, `0-9`, `.`, `_`, `-`; up to 63 characters).
        name: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List secrets: names, descriptions and times, never values.
    List,
    /// Delete a secret.
    Rm {
        /// The name.
        name: String,
    },
}

/// Drops one trailing `\n` (or `\r\n`).
fn trim_one_newline(mut value: String) -> String {
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    value
}

/// Reads the value from standard input.
fn read_value(name: &str) -> Result<String> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("enter the value of `{name}`, then press Ctrl-D:");
    }
    let mut raw = String::new();
    stdin
        .read_to_string(&mut raw)
        .context("cannot read the value from standard input (it must be UTF-8 text)")?;
    let value = trim_one_newline(raw);
    if value.is_empty() {
        bail!("no value on standard input: pipe it in, e.g. `mandate secret set {name} < file`");
    }
    Ok(value)
}

fn time(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_i64)
        .map(|t| rfc3339_millis(t.saturating_mul(1000)))
        .unwrap_or_else(|| s(v, k))
}

/// Runs a `mandate secret` command.
pub async fn run(
    c: SecretCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    match c {
        SecretCommand::Set { name, description } => {
            let mut body = json!({ "value": read_value(&name)? });
            if let Some(d) = description {
                body["description"] = Value::String(d);
            }
            let result = client.put(&format!("/v1/secrets/{name}"), &body).await;
            drop(body);
            let v = result?;
            if json_out {
                output::json(&v);
            } else {
                println!("secret `{}` set", s(&v, "name"));
            }
        }
        SecretCommand::List => {
            let v = client.get("/v1/secrets").await?;
            if json_out {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["secrets"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                vec![
                                    s(x, "name"),
                                    s(x, "description"),
                                    time(x, "created_at"),
                                    time(x, "updated_at"),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                output::table(&["name", "description", "created", "updated"], &rows);
            }
        }
        SecretCommand::Rm { name } => {
            client.delete(&format!("/v1/secrets/{name}")).await?;
            if json_out {
                output::json(&json!({ "deleted": name }));
            } else {
                println!("secret `{name}` deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::trim_one_newline;

    #[test]
    fn only_one_trailing_newline_is_dropped() {
        assert_eq!(trim_one_newline("abc\n".into()), "abc");
        assert_eq!(trim_one_newline("abc\r\n".into()), "abc");
        assert_eq!(trim_one_newline("abc\n\n".into()), "abc\n");
        assert_eq!(trim_one_newline("abc".into()), "abc");
        assert_eq!(trim_one_newline(" abc ".into()), " abc ");
    }
}
