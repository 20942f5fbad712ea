//! `roost ctl`: the admin API from the command line (list clients, kick one, show or delete a
//! retained message, broker statistics), for a broker whose `[http]` listener is on.

use std::io::Write;

use base64::Engine;
use serde_json::Value;

/// Talk to a running broker through its HTTP admin API (`[http]` in its configuration).
#[derive(Clone, Debug, clap::Args)]
pub struct CtlArgs {
    /// Base URL of the broker's HTTP listener.
    #[arg(long, env = "ROOST_HTTP_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token (`http.token`).
    #[arg(long, env = "ROOST_HTTP_TOKEN", conflicts_with = "user")]
    pub token: Option<String>,
    /// An admin user (`http.admin_users`), with --password.
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// The admin user's password.
    #[arg(long, env = "ROOST_HTTP_PASSWORD")]
    pub password: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `roost ctl` subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List clients (sessions), one per line: client id, connected, backlog, address.
    Clients {
        /// Only client ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Deepest backlog first instead of by client id.
        #[arg(long)]
        by_queue: bool,
        /// How many at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one client's session (JSON).
    Client {
        /// The client id.
        client_id: String,
    },
    /// Disconnect a client (MQTT 5.0 clients get DISCONNECT 0x98).
    Kick {
        /// The client id.
        client_id: String,
        /// Also end its session: subscriptions and queued messages go.
        #[arg(long)]
        end_session: bool,
    },
    /// Retained messages.
    Retained {
        /// What to do with them.
        #[command(subcommand)]
        command: RetainedCommand,
    },
    /// Broker statistics (JSON).
    Stats,
    /// Bridges, one per line: name, state, queued, forwarded each way, last error.
    Bridges,
}

/// `roost ctl retained ...`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum RetainedCommand {
    /// List topics with a retained message matching a Topic Filter.
    List {
        /// The Topic Filter.
        #[arg(default_value = "#")]
        filter: String,
    },
    /// Show the retained message of a topic (JSON).
    Get {
        /// The topic.
        topic: String,
    },
    /// Delete the retained message of a topic.
    Delete {
        /// The topic.
        topic: String,
    },
}

/// Why `roost ctl` failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The broker could not be reached or answered with an error.
    #[error("{url}: {message}")]
    Http {
        /// The URL asked.
        url: String,
        /// What went wrong (the broker's error message when it sent one).
        message: String,
    },
}

/// Runs `roost ctl`, writing its output to `out`.
pub fn ctl_command(args: &CtlArgs, out: &mut impl Write) -> Result<(), CtlError> {
    let client = Client::new(args);
    let result = match &args.command {
        CtlCommand::Clients {
            prefix,
            by_queue,
            limit,
        } => {
            let mut query = format!("per_page={}", limit.clamp(&1, &1000));
            if let Some(p) = prefix {
                query.push_str(&format!("&prefix={}", encode(p)));
            }
            if *by_queue {
                query.push_str("&sort=queued");
            }
            let list = client.call("GET", &format!("/api/v1/clients?{query}"))?;
            print_clients(&list, out)
        }
        CtlCommand::Client { client_id } => {
            let v = client.call("GET", &format!("/api/v1/clients/{}", encode(client_id)))?;
            print_json(&v, out)
        }
        CtlCommand::Kick {
            client_id,
            end_session,
        } => {
            let v = client.call(
                "DELETE",
                &format!(
                    "/api/v1/clients/{}?end_session={end_session}",
                    encode(client_id)
                ),
            )?;
            print_json(&v, out)
        }
        CtlCommand::Retained { command } => match command {
            RetainedCommand::List { filter } => {
                let mut text = String::new();
                // Every page.
                for page in 1.. {
                    let v = client.call(
                        "GET",
                        &format!(
                            "/api/v1/retained?per_page=1000&page={page}&filter={}",
                            encode(filter)
                        ),
                    )?;
                    let items = v["retained"].as_array().cloned().unwrap_or_default();
                    for m in &items {
                        text.push_str(m["topic"].as_str().unwrap_or(""));
                        text.push('\n');
                    }
                    if items.len() < 1000 {
                        break;
                    }
                }
                out.write_all(text.as_bytes())
            }
            RetainedCommand::Get { topic } => {
                let v = client.call("GET", &format!("/api/v1/retained/{}", encode_path(topic)))?;
                print_json(&v, out)
            }
            RetainedCommand::Delete { topic } => {
                client.call(
                    "DELETE",
                    &format!("/api/v1/retained/{}", encode_path(topic)),
                )?;
                writeln!(out, "deleted the retained message of {topic}")
            }
        },
        CtlCommand::Stats => {
            let v = client.call("GET", "/api/v1/stats")?;
            print_json(&v, out)
        }
        CtlCommand::Bridges => {
            let v = client.call("GET", "/api/v1/bridges")?;
            print_bridges(&v, out)
        }
    };
    result.map_err(|e| CtlError::Http {
        url: args.url.clone(),
        message: format!("cannot write the output: {e}"),
    })
}

/// The HTTP side.
struct Client {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(args: &CtlArgs) -> Client {
        let authorization = match (&args.token, &args.user, &args.password) {
            (Some(token), _, _) => Some(format!("Bearer {token}")),
            (None, Some(user), Some(password)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Client {
            base: args.url.trim_end_matches('/').to_string(),
            authorization,
            agent,
        }
    }

    /// Sends a request and returns the JSON answer (`null` for an empty one).
    fn call(&self, method: &str, path: &str) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base);
        let fail = |message: String| CtlError::Http {
            url: url.clone(),
            message,
        };
        let mut request = match method {
            "DELETE" => self.agent.delete(&url),
            _ => self.agent.get(&url),
        };
        if let Some(a) = &self.authorization {
            request = request.header("Authorization", a);
        }
        let mut response = request
            .call()
            .map_err(|e| fail(format!("cannot reach the broker: {e}")))?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(format!("unreadable answer: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_string());
            return Err(fail(format!("{status}: {message}")));
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }
}

fn print_json(v: &Value, out: &mut impl Write) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    writeln!(out, "{text}")
}

fn print_bridges(list: &Value, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<10} {:>8} {:>10} {:>10} {:>7}  remote / last error",
        "bridge", "state", "queued", "out", "in", "refused"
    )?;
    for b in list["bridges"].as_array().into_iter().flatten() {
        let text = |key: &str| b[key].as_str().unwrap_or("-").to_string();
        let number = |key: &str| b[key].as_u64().unwrap_or(0);
        let remote = text("remote_addr");
        let detail = match (b["state"].as_str(), b["last_error"].as_str()) {
            (Some("connected"), _) | (_, None) => remote,
            (_, Some(error)) => format!("{remote} / {error}"),
        };
        writeln!(
            out,
            "{:<20} {:<10} {:>8} {:>10} {:>10} {:>7}  {detail}",
            text("name"),
            text("state"),
            number("queued"),
            number("forwarded_out"),
            number("forwarded_in"),
            number("refused"),
        )?;
    }
    Ok(())
}

fn print_clients(list: &Value, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<32} {:<9} {:>10} {:>8}  address",
        "client id", "connected", "backlog", "inflight"
    )?;
    for c in list["clients"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<32} {:<9} {:>10} {:>8}  {}",
            c["client_id"].as_str().unwrap_or(""),
            if c["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            c["backlog_messages"].as_u64().unwrap_or(0),
            c["inflight"].as_u64().unwrap_or(0),
            c["connection"]["peer"].as_str().unwrap_or("-"),
        )?;
    }
    let total = list["total"].as_u64().unwrap_or(0);
    let shown = list["clients"].as_array().map_or(0, Vec::len);
    if (shown as u64) < total {
        writeln!(out, "({shown} of {total} shown; use --limit or --prefix)")?;
    }
    Ok(())
}

/// Percent-encodes a query value or a path segment.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes a topic as a path: its `/` separators stay.
fn encode_path(topic: &str) -> String {
    topic.split('/').map(encode).collect::<Vec<_>>().join("/")
}
