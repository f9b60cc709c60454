//! `relayctl route list|set|remove`: per-domain routes, through the log.

use clap::Subcommand;
use relay_proto::admin::{ListRoutesRequest, RemoveRouteRequest, RouteInfo, SetRouteRequest};
use serde_json::json;

use crate::client::{Admin, CliError};
use crate::output::{self, outln};

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Every route.
    List,
    /// Set a domain's route (all of it: a setting left out is unset); its
    /// queued backlog is retried at once, so it goes to the new targets.
    Set {
        /// The domain (case and a trailing dot do not matter).
        domain: String,
        /// Targets tried in order: host:port[,host:port...].
        #[arg(value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// TLS towards the targets.
        #[arg(long, default_value = "opportunistic", value_parser = ["none", "opportunistic", "required"])]
        tls: String,
        /// Most deliveries at once to the targets, cluster-wide: each of
        /// the V voters takes max(1, N / V), starting low and growing by
        /// one per accepted delivery (slow start). Without it, each node
        /// delivers up to its `per_target_concurrency`.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// Most messages started to the targets, cluster-wide: N/s, N/m or
        /// N/h (each of the V voters takes 1/V of it).
        #[arg(long, value_name = "N/s")]
        rate: Option<String>,
        /// Who; kept in the trace of each re-routed message.
        #[arg(long, env = "RELAYCTL_OPERATOR")]
        by: Option<String>,
    },
    /// Remove a domain's route (mail for it is then no longer accepted, and
    /// queued mail waits for a route).
    Remove {
        /// The domain.
        domain: String,
    },
}

pub async fn run(admin: &mut Admin, command: RouteCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        RouteCommand::List => {
            let reply = admin
                .client
                .list_routes(ListRoutesRequest {})
                .await
                .map_err(|s| CliError::from_status(&admin.addr, s))?
                .into_inner();
            if as_json {
                output::json(&json!({
                    "routes": reply.routes.iter().map(|r| json!({
                        "domain": r.domain,
                        "targets": r.targets,
                        "tls": r.tls,
                        "concurrency": (r.concurrency > 0).then_some(r.concurrency),
                        "rate": (!r.rate.is_empty()).then_some(&r.rate),
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let unset = |s: String| if s.is_empty() { "-".to_string() } else { s };
            let rows: Vec<[String; 5]> = reply
                .routes
                .iter()
                .map(|r| {
                    [
                        r.domain.clone(),
                        r.targets.join(","),
                        r.tls.clone(),
                        unset(if r.concurrency > 0 {
                            r.concurrency.to_string()
                        } else {
                            String::new()
                        }),
                        unset(r.rate.clone()),
                    ]
                })
                .collect();
            output::table(&["DOMAIN", "TARGETS", "TLS", "CONCURRENCY", "RATE"], &rows);
            Ok(())
        }
        RouteCommand::Set {
            domain,
            targets,
            tls,
            concurrency,
            rate,
            by,
        } => {
            let targets: Vec<String> = targets
                .into_iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            let reply = admin
                .client
                .set_route(SetRouteRequest {
                    route: Some(RouteInfo {
                        domain,
                        targets: targets.clone(),
                        tls: tls.clone(),
                        concurrency: concurrency.unwrap_or(0),
                        rate: rate.clone().unwrap_or_default(),
                    }),
                    by: crate::queue::operator(by),
                })
                .await
                .map_err(|s| CliError::from_status(&admin.addr, s))?
                .into_inner();
            if as_json {
                output::json(&json!({
                    "domain": reply.domain,
                    "targets": targets,
                    "tls": tls,
                    "concurrency": concurrency,
                    "rate": rate,
                    "flushed": reply.flushed,
                }));
            } else {
                let mut shaping = String::new();
                if let Some(n) = concurrency {
                    shaping.push_str(&format!(", concurrency {n}"));
                }
                if let Some(rate) = &rate {
                    shaping.push_str(&format!(", rate {rate}"));
                }
                outln!(
                    "route for {} set to {} (tls {tls}{shaping}); {} queued message(s) retried now",
                    reply.domain,
                    targets.join(","),
                    reply.flushed
                );
            }
            Ok(())
        }
        RouteCommand::Remove { domain } => {
            let reply = admin
                .client
                .remove_route(RemoveRouteRequest { domain })
                .await
                .map_err(|s| CliError::from_status(&admin.addr, s))?
                .into_inner();
            if as_json {
                output::json(&json!({"domain": reply.domain, "removed": true}));
            } else {
                outln!("route for {} removed", reply.domain);
            }
            Ok(())
        }
    }
}
