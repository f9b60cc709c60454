//! Starting a node and stopping it in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use relay_cluster::ownership::takeover;
use relay_cluster::tls::{ClientAuth, ClusterTls, ReloadableServerConfig, TlsMaterial};
use relay_cluster::{Cluster, ClusterConfig, Failure};
use relay_proto::admin::admin_server::AdminServer;
use relay_types::Command;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::adapters::{ClusterProposer, DeliveryStoreAdapter, SmtpBackend, SmtpProber};
use crate::admin::{AdminService, TokenCheck};
use crate::config::{NodeConfig, SmtpTls};
use crate::http::HttpState;
use crate::recent::RecentResults;
use crate::supervise::Fatal;

/// How long sessions and deliveries get to finish at shutdown before they
/// are dropped (nothing acked depends on it: acked mail is committed).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable that turns on the store's power-loss failpoint
/// (`relay_store::StoreOptions`): set to `1` by the fault suite, never in
/// production.
pub const POWER_LOSS_FAILPOINT: &str = "QR_FAILPOINT_POWER_LOSS";

/// Environment variable that turns on the store's failed-fsync failpoint
/// (`relay_store::StoreOptions::fail_sync_after`): the WAL sync after this
/// many successful ones fails. Fault-injection runs only.
pub const FSYNC_FAILPOINT: &str = "QR_FAILPOINT_FAIL_FSYNC_AFTER";

/// TEST ONLY: set to `1`, log appends are acknowledged without an fsync
/// (`relay_store::StoreOptions::skip_append_sync`), which breaks the
/// durability promise on purpose. Compiled into release builds so the
/// nemesis (`scripts/nemesis.sh --break-append-fsync`) can show that its
/// checker reports the acknowledged mail this loses. Never set it on a
/// real node; the node logs an error at start when it is on.
pub const TEST_SKIP_APPEND_FSYNC: &str = "QR_TEST_SKIP_APPEND_FSYNC";

/// Runs the node until `shutdown` is cancelled, then stops in order:
/// SMTP → delivery → admin/HTTP → Raft → store. Returns `Ok` after a
/// requested stop, and an error ([`Fatal`] for a failure while running)
/// when the node stopped by itself: a fatal Raft or storage error, a
/// failed fsync, or a critical task that ended (see `supervise`).
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let db_path = config.data_dir.join("db");
    // Fault-injection runs only (tests/failover.rs): make kill -9 a power cut.
    let store_options = relay_store::StoreOptions {
        unsynced_writes_die_with_process: std::env::var_os(POWER_LOSS_FAILPOINT)
            .is_some_and(|v| v == "1"),
        fail_sync_after: std::env::var(FSYNC_FAILPOINT)
            .ok()
            .and_then(|v| v.parse().ok()),
        skip_append_sync: std::env::var_os(TEST_SKIP_APPEND_FSYNC).is_some_and(|v| v == "1"),
        slow_disk_bytes_per_sec: None,
    };
    // The voter guard sits beside the store, in data_dir, so a wiped or
    // replaced store is noticed (relay_store::open_guarded).
    let guard_path = config.data_dir.join("voter-guard");
    let (log_store, state_machine) =
        relay_store::open_guarded(&db_path, store_options, &guard_path)
            .with_context(|| format!("cannot open the store at {}", db_path.display()))?;

    let prometheus =
        crate::metrics::install(config.node_id).context("cannot set up Prometheus metrics")?;

    // Bind every listener before joining the cluster, so a port clash fails
    // fast with the key to fix.
    let smtp_listener = bind(config.smtp_listen, "listen.smtp").await?;
    let mut extra_listeners = Vec::new();
    if let Some(addr) = config.submission_listen {
        extra_listeners.push((
            bind(addr, "listen.submission").await?,
            relay_smtp::ListenerRole::Submission,
        ));
    }
    if let Some(addr) = config.smtps_listen {
        extra_listeners.push((
            bind(addr, "listen.smtps").await?,
            relay_smtp::ListenerRole::Smtps,
        ));
    }
    let admin_listener = bind(config.admin_listen, "listen.admin").await?;
    let http_listener = bind(config.http_listen, "listen.http").await?;

    // mTLS on the Raft and admin ports (validated at load; read again here).
    let peer_tls = match &config.tls {
        Some(settings) => Some(PeerTls::load(settings).context("tls")?),
        None => None,
    };

    let raft_shutdown = CancellationToken::new();
    let cluster_config = ClusterConfig {
        node_id: config.node_id,
        listen: config.raft_listen,
        members: config.members.clone(),
        bootstrap: config.bootstrap,
        heartbeat: config.heartbeat,
        election_timeout: config.election_timeout,
        snapshot_every: config.snapshot_every,
        keep_logs: config.keep_logs,
        purge_interval: config.purge_interval,
        delivery_lease: takeover::delivery_lease(config.takeover_after),
        start_lease: start_lease(config.heartbeat, config.takeover_after),
        submit_timeout: config.submit_timeout,
        config_digest: config.shared_settings_digest(),
        source_address: config.source_address,
        secret: relay_cluster::secret::ClusterSecret::new(&config.cluster_secret),
        tls: peer_tls.as_ref().map(|t| t.cluster.clone()),
    };
    let (cluster, initialised) = Cluster::start(
        cluster_config,
        log_store,
        state_machine.clone(),
        raft_shutdown.clone(),
    )
    .await
    .context("cannot start the consensus layer")?;
    cluster.set_prober(Arc::new(SmtpProber::new(config.hostname.clone())));
    info!(node = config.node_id, smtp = %config.smtp_listen,
          submission = ?config.submission_listen, smtps = ?config.smtps_listen,
          raft = %config.raft_listen,
          admin = %config.admin_listen, http = %config.http_listen, "relayd started");

    let tasks = TaskTracker::new();
    let smtp_stop = CancellationToken::new();
    let delivery_stop = CancellationToken::new();
    let service_stop = CancellationToken::new();
    // Set by a critical task that ends early (see `supervise`).
    let failure = Failure::default();

    // One-shot; a panic would leave the new cluster without its routes.
    if initialised {
        crate::supervise::must_not_panic(
            &tasks,
            "seeding the initial routes",
            seed_routes(
                cluster.clone(),
                config.initial_routes.clone(),
                service_stop.clone(),
            ),
            failure.clone(),
        );
    }

    // Admin gRPC. Critical: a node nobody can operate must not look healthy.
    {
        let service = AdminServer::with_interceptor(
            AdminService::new(cluster.clone()),
            TokenCheck::new(&config.admin_token),
        );
        let stop = service_stop.clone();
        let fail = failure.clone();
        let tls = peer_tls.as_ref().map(|t| t.admin.clone());
        crate::supervise::critical(
            &tasks,
            "the admin gRPC server",
            async move {
                let server = tonic::transport::Server::builder().add_service(service);
                let result = match tls {
                    Some(tls) => {
                        let incoming = relay_cluster::tls::tls_incoming(
                            admin_listener,
                            tls,
                            stop.clone(),
                            "admin",
                        );
                        server
                            .serve_with_incoming_shutdown(incoming, stop.cancelled())
                            .await
                    }
                    None => {
                        let incoming =
                            tokio_stream::wrappers::TcpListenerStream::new(admin_listener);
                        server
                            .serve_with_incoming_shutdown(incoming, stop.cancelled())
                            .await
                    }
                };
                if let Err(e) = result {
                    fail.fail(format!("the admin gRPC server failed: {e}"));
                }
            },
            service_stop.clone(),
            failure.clone(),
        );
    }

    // Takeover of unreachable nodes' mail (acts only on the leader).
    // Critical: a leader without it would leave a dead node's mail stuck;
    // stopping hands leadership to a node whose takeover runs.
    crate::supervise::critical(
        &tasks,
        "the takeover task",
        takeover::run(cluster.clone(), config.takeover_after, service_stop.clone()),
        service_stop.clone(),
        failure.clone(),
    );

    // History retention (acts only on the leader). Critical for the same
    // reason as takeover: a leader without it lets history grow for ever.
    crate::supervise::critical(
        &tasks,
        "the history pruner",
        relay_cluster::purge::run_history_pruner(
            cluster.clone(),
            config.history_retention,
            config.purge_interval,
            service_stop.clone(),
        ),
        service_stop.clone(),
        failure.clone(),
    );

    // HTTP: health, readiness, metrics, status page. Critical: without it
    // orchestrators and Prometheus see nothing, or a stale "ready".
    let recent = Arc::new(RecentResults::default());
    crate::supervise::critical(
        &tasks,
        "the HTTP server",
        crate::http::serve(
            http_listener,
            HttpState {
                cluster: cluster.clone(),
                prometheus: prometheus.clone(),
                recent: recent.clone(),
                accept_as_learner: config.smtp.accept_as_learner,
            },
            service_stop.clone(),
        ),
        service_stop.clone(),
        failure.clone(),
    );
    // The tasks that keep the metrics current: restartable (stateless
    // loops; a restart only re-reads what they publish).
    {
        let cluster = cluster.clone();
        let stop = service_stop.clone();
        crate::supervise::restartable(
            &tasks,
            "the Raft metrics watcher",
            move || crate::metrics::watch_raft(cluster.clone(), stop.clone()),
            service_stop.clone(),
        );
    }
    {
        let stop = service_stop.clone();
        crate::supervise::restartable(
            &tasks,
            "metrics upkeep",
            move || crate::metrics::upkeep(prometheus.clone(), stop.clone()),
            service_stop.clone(),
        );
    }

    // SMTP.
    let server_tls = load_server_tls(&config)?.map(relay_smtp::ServerTls::new);
    let recipients = match &config.smtp.recipient_lists_dir {
        Some(dir) => Some(
            relay_smtp::recipients::RecipientLists::load(dir)
                .context("smtp.recipient_lists_dir")?,
        ),
        None => None,
    };
    if server_tls.is_some() || peer_tls.is_some() || recipients.is_some() {
        // SIGHUP reloads every certificate and the recipient lists; the old
        // ones stay in use when a file does not load. Fail at start if
        // SIGHUP cannot be watched.
        let reloader = tls_reloader(
            Arc::new(config.clone()),
            server_tls.clone(),
            peer_tls,
            recipients.clone(),
            service_stop.clone(),
        )?;
        tasks.spawn(reloader);
    }
    let smtp_config = Arc::new(smtp_config(&config, server_tls, recipients)?);
    let open_sessions = smtp_config.open_sessions.clone();
    let mut backend = SmtpBackend::new(
        cluster.clone(),
        config.delivery.queue_lifetime,
        config.smtp.accept_as_learner,
    )
    .with_queue_minfree(config.smtp.queue_minfree, config.smtp.max_message_size);
    if let Some((positive, negative)) = config.smtp.recipient_verification {
        backend = backend.with_verifier(Arc::new(crate::verify::RecipientVerifier::new(
            config.hostname.clone(),
            positive,
            negative,
        )));
    }
    let backend = Arc::new(backend);
    // Critical (like delivery below), but outside `tasks`: they stop
    // first, in order, each with its own token.
    let smtp_task = {
        let stop = smtp_stop.clone();
        let fail = failure.clone();
        tokio::spawn(async move {
            // Submission listeners: the same session code, limits and
            // backend, another role. Any listener ending ends them all.
            let mut servers = tokio::task::JoinSet::new();
            for (listener, role) in extra_listeners {
                let config = Arc::new(relay_smtp::SmtpConfig {
                    role,
                    ..(*smtp_config).clone()
                });
                servers.spawn(relay_smtp::serve(
                    listener,
                    config,
                    backend.clone(),
                    stop.clone(),
                ));
            }
            servers.spawn(relay_smtp::serve(
                smtp_listener,
                smtp_config,
                backend,
                stop.clone(),
            ));
            let first = servers.join_next().await.expect("one server at least");
            let stopping = stop.is_cancelled();
            stop.cancel();
            while servers.join_next().await.is_some() {}
            match first {
                Ok(Ok(())) if stopping => {}
                Ok(Ok(())) => fail.fail("the SMTP server stopped"),
                Ok(Err(e)) => fail.fail(format!("the SMTP server failed: {e}")),
                Err(e) => fail.fail(format!("the SMTP server panicked: {e}")),
            }
        })
    };

    // Delivery.
    let delivery_task = {
        let delivery = relay_delivery::DeliveryLoop::new(
            delivery_config(&config),
            Arc::new(DeliveryStoreAdapter::new(state_machine.clone())),
            Arc::new(ClusterProposer::new(cluster.clone(), recent.clone())),
        );
        // What a drain waits for (see relay_cluster::maintenance).
        cluster.set_activity(Arc::new(crate::adapters::Activity {
            sessions: open_sessions,
            deliveries: delivery.busy(),
        }));
        let wake = state_machine.subscribe_applied();
        let stop = delivery_stop.clone();
        let fail = failure.clone();
        tokio::spawn(async move {
            let delivering = tokio::spawn(async move { delivery.run(wake, stop).await });
            // Single messages are guarded inside the loop; the loop itself
            // ending early leaves this node's mail undelivered.
            if let Err(e) = delivering.await {
                fail.fail(format!("the delivery loop failed: {e}"));
            }
        })
    };

    // The node stops by itself on: a fatal Raft error (storage), a failed
    // fsync (nothing may be acknowledged any more, whoever asked for the
    // sync), or a critical task of the node or of the cluster ending.
    let mut raft_view = cluster.watch_view();
    let mut poisoned = state_machine.subscribe_poisoned();
    let fatal: Option<String> = tokio::select! {
        _ = shutdown.cancelled() => None,
        reason = failure.wait() => Some(reason),
        reason = cluster.failure().wait() => Some(reason),
        _ = poisoned.wait_for(|p| *p) => {
            Some("a WAL fsync failed: this process may not acknowledge anything any more".into())
        }
        reason = async {
            loop {
                if let Some(e) = raft_view.current().stopped {
                    return format!("raft stopped with a fatal error: {e}");
                }
                if raft_view.changed().await.is_err() {
                    return "raft stopped".to_string();
                }
            }
        } => Some(reason),
    };
    if let Some(reason) = &fatal {
        error!(%reason, "stopping the node after a fatal error; exiting non-zero");
    }

    info!("stopping: SMTP first");
    smtp_stop.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, smtp_task)
        .await
        .is_err()
    {
        warn!("SMTP sessions did not finish in time");
    }
    info!("stopping: delivery");
    delivery_stop.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, delivery_task)
        .await
        .is_err()
    {
        warn!("deliveries did not finish in time");
    }
    service_stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait()).await;
    info!("stopping: raft");
    raft_shutdown.cancel();
    cluster.shutdown().await;
    drop(cluster);
    drop(state_machine);
    info!("stopped");
    match fatal {
        None => Ok(()),
        Some(reason) => Err(Fatal(reason).into()),
    }
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

/// Seeds the configured routes once, when this node created the cluster.
/// Later changes go through `relayctl route`, never through config.
async fn seed_routes(
    cluster: Arc<Cluster>,
    routes: Vec<(String, relay_types::Route)>,
    stop: CancellationToken,
) {
    for (domain, route) in routes {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let command = Command::SetRoute {
                domain: domain.clone(),
                route: route.clone(),
            };
            match cluster.propose(command).await {
                Ok(_) => {
                    info!(%domain, "initial route set");
                    break;
                }
                Err(e) => {
                    warn!(%domain, error = %e, "cannot set the initial route yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// The STARTTLS configuration from the configured files (or the
/// development certificate); `None` when TLS is off.
fn load_server_tls(config: &NodeConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match &config.smtp.tls {
        SmtpTls::Off => None,
        SmtpTls::SelfSigned => Some(
            relay_smtp::load_or_create_tls(&config.data_dir.join("tls"), &config.hostname)
                .context("smtp.tls: cannot set up the development certificate")?,
        ),
        SmtpTls::Files { cert, key } => Some(
            relay_smtp::load_tls(cert, key).context("smtp.tls_cert/smtp.tls_key: cannot load")?,
        ),
    })
}

/// mTLS on the Raft and admin ports: the replaceable server and client
/// state, built from `[tls]`'s files.
struct PeerTls {
    settings: crate::config::PeerTlsSettings,
    cluster: Arc<ClusterTls>,
    admin: Arc<ReloadableServerConfig>,
}

impl PeerTls {
    fn load(settings: &crate::config::PeerTlsSettings) -> anyhow::Result<PeerTls> {
        let material = Arc::new(TlsMaterial::load(&settings.files)?);
        Ok(PeerTls {
            settings: settings.clone(),
            cluster: ClusterTls::new(material.clone())?,
            admin: ReloadableServerConfig::new(
                material.server_config(admin_client_auth(settings))?,
            ),
        })
    }

    /// Reads the files again and uses them for every later handshake, on
    /// both ports and for outgoing node-to-node connections. Nothing
    /// changes if any file fails to load.
    fn reload(&self) -> anyhow::Result<()> {
        let material = Arc::new(TlsMaterial::load(&self.settings.files)?);
        let admin = material.server_config(admin_client_auth(&self.settings))?;
        self.cluster.reload(material)?;
        self.admin.replace(admin);
        Ok(())
    }
}

fn admin_client_auth(settings: &crate::config::PeerTlsSettings) -> ClientAuth {
    if settings.admin_client_cert {
        ClientAuth::Required
    } else {
        ClientAuth::None
    }
}

/// Reloads certificates on every SIGHUP (renewal without a restart, like
/// `postfix reload`): the STARTTLS certificate, the node's mTLS
/// material and the recipient lists. A file that does not load is logged with its name and the old
/// certificate stays in use.
fn tls_reloader(
    config: Arc<NodeConfig>,
    smtp: Option<Arc<relay_smtp::ServerTls>>,
    peer: Option<PeerTls>,
    recipients: Option<Arc<relay_smtp::recipients::RecipientLists>>,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            if let Some(tls) = &smtp {
                match load_server_tls(&config) {
                    Ok(Some(new)) => {
                        tls.replace(new);
                        metrics::counter!(crate::metrics::TLS_RELOADS, "link" => "smtp", "result" => "ok")
                            .increment(1);
                        info!("SIGHUP: reloaded the STARTTLS certificate");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        metrics::counter!(crate::metrics::TLS_RELOADS, "link" => "smtp", "result" => "error")
                            .increment(1);
                        warn!(error = %format!("{e:#}"), "SIGHUP: the certificate did not load; keeping the old one");
                    }
                }
            }
            if let Some(lists) = &recipients {
                match lists.reload() {
                    Ok((domains, entries)) => {
                        info!(domains, entries, "SIGHUP: reloaded the recipient lists");
                    }
                    Err(e) => {
                        warn!(error = %e, "SIGHUP: the recipient lists did not load; keeping the old ones");
                    }
                }
            }
            if let Some(peer) = &peer {
                match peer.reload() {
                    Ok(()) => {
                        metrics::counter!(crate::metrics::TLS_RELOADS, "link" => "cluster", "result" => "ok")
                            .increment(1);
                        info!("SIGHUP: reloaded the cluster TLS certificates");
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::TLS_RELOADS, "link" => "cluster", "result" => "error")
                            .increment(1);
                        warn!(error = %format!("{e:#}"), "SIGHUP: the cluster TLS certificates did not load; keeping the old ones");
                    }
                }
            }
        }
    })
}

fn smtp_auth(config: &NodeConfig) -> anyhow::Result<Option<Arc<relay_smtp::auth::SmtpAuth>>> {
    let Some(auth) = &config.smtp.auth else {
        return Ok(None);
    };
    let credentials =
        relay_smtp::auth::Credentials::new(auth.users.clone()).context("smtp.auth.users")?;
    Ok(Some(Arc::new(relay_smtp::auth::SmtpAuth {
        credentials,
        failures: relay_smtp::auth::AuthFailures::new(auth.max_failures, auth.failure_window),
    })))
}

fn smtp_config(
    config: &NodeConfig,
    tls: Option<Arc<relay_smtp::ServerTls>>,
    recipients: Option<Arc<relay_smtp::recipients::RecipientLists>>,
) -> anyhow::Result<relay_smtp::SmtpConfig> {
    Ok(relay_smtp::SmtpConfig {
        hostname: config.hostname.clone(),
        max_message_size: config.smtp.max_message_size,
        max_recipients: config.smtp.max_recipients,
        max_connections: config.smtp.max_connections,
        max_connections_per_ip: config.smtp.max_connections_per_ip,
        command_timeout: config.smtp.command_timeout,
        data_timeout: config.smtp.data_timeout,
        authorized_networks: config.smtp.authorized_networks.clone(),
        tls,
        auth: smtp_auth(config)?,
        proxy_protocol_from: config.smtp.proxy_protocol_from.clone(),
        proxy_protocol_timeout: config.smtp.proxy_protocol_timeout,
        recipients,
        ..Default::default()
    })
}

fn delivery_config(config: &NodeConfig) -> relay_delivery::DeliveryConfig {
    relay_delivery::DeliveryConfig {
        node_id: config.node_id,
        hostname: config.hostname.clone(),
        retry: relay_queue::RetryPolicy {
            min_backoff_ms: config.delivery.min_backoff.as_millis() as u64,
            max_backoff_ms: config.delivery.max_backoff.as_millis() as u64,
            queue_lifetime_ms: config.delivery.queue_lifetime.as_millis() as u64,
        },
        poll_interval: config.delivery.poll_interval,
        max_concurrent_deliveries: config.delivery.max_concurrent,
        per_target_concurrency: config.delivery.per_target_concurrency,
        default_route: config.delivery.default_route.clone(),
        connect_timeout: config.delivery.connect_timeout,
        command_timeout: config.delivery.command_timeout,
        data_timeout: config.delivery.data_timeout,
        connection_cache: config.delivery.connection_cache,
        extra_root_certificates_pem: config.delivery.extra_root_certificates_pem.clone(),
        dns: config.delivery.dns.clone(),
        ..Default::default()
    }
}

/// The start lease: ten heartbeats of fresh contact (one second with the
/// shipped 100 ms heartbeat), never more than a quarter of `takeover_after`.
/// Short, so an owner that is cut off stops starting deliveries long before
/// the leader can give its mail away; long enough that a loaded node's
/// heartbeats, late by a few intervals, do not pause its deliveries.
pub fn start_lease(heartbeat: Duration, takeover_after: Duration) -> Duration {
    (heartbeat * 10).min(takeover_after / 4)
}
