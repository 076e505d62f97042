//! The tarpit server: binds the listeners, starts one io_uring worker per core and the event
//! pipeline, waits for SIGINT/SIGTERM, then shuts down in order (stop accepting, end open
//! responses, flush every event).

mod connection;
mod drip;
pub mod limits;
pub mod listener;
pub mod settings;
pub mod socketless;
mod steering;
mod throttle;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::classify::LiveRules;
use crate::config::{Config, TarpitMode};
use crate::db;
use crate::ebpf::{Attribution, EbpfMode, Unavailable};
use crate::geoip::GeoIp;
use crate::pipeline::{Enrichment, EventSender, Pipeline, PipelineStats, event_channel};
use crate::sink::SinkThread;
use crate::sink::jsonl::JsonLinesSink;
use crate::sink::sqlite::SqliteSink;
use limits::{ClientPrefixes, ConnectionLimits};
use settings::Settings;
use std::time::Duration;

/// What every worker and connection shares: read-only settings plus lock-free counters.
#[derive(Debug)]
struct Shared {
    settings: Settings,
    events: EventSender,
    limits: Arc<ConnectionLimits>,
    /// The eBPF map of original destinations, when the hook is live.
    ebpf: Option<Arc<crate::ebpf::EbpfMap>>,
    /// Rate limit for "proxy headers from an untrusted peer" warnings.
    untrusted_proxy_warning: crate::log_throttle::SharedLogThrottle,
    /// Rate limit for "accept failed" warnings, shared by all workers: one a minute in all.
    accept_warning: crate::log_throttle::SharedLogThrottle,
    /// The hook's held-flow map and the raw sockets, when `[tarpit] hold = "socketless"`.
    socketless: Option<socketless::SocketlessKit>,
    /// Rate limit for "a response stays on its socket" warnings.
    socketless_warning: crate::log_throttle::SharedLogThrottle,
    /// With sk_lookup steering on: the ports it may steer (`ports` minus `exclude_ports`); a
    /// direct connection reaching the tarpit on one of them came through the program.
    steered_ports: Option<crate::steer::ports::PortSet>,
    /// The queues between an accept and its rows, which the workers wait for (see
    /// [`throttle`]), and the counters they count throttled accepts in.
    recording: (crate::queue::RecordingBacklog, Arc<PipelineStats>),
    next_conn_id: AtomicU64,
    cancel: CancellationToken,
}

/// Runs the tarpit until SIGINT or SIGTERM.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let storage = &config.storage;
    let mut database = db::open(&storage.database)
        .with_context(|| format!("opening database {}", storage.database.display()))?;
    let recovered = db::mark_interrupted(&mut database).context("marking interrupted rows")?;
    if recovered.connections + recovered.requests > 0 {
        tracing::info!(
            connections = recovered.connections,
            requests = recovered.requests,
            "marked rows left open by the previous run as interrupted"
        );
    }
    let first_conn_id = db::next_conn_id(&database)?;
    let reporter = reporter_setup(config, &database)?;
    let sensor_id = config.sensor.effective_id();
    db::sensor::record(&database, &sensor_id, &config.sensor.labels)
        .context("recording the sensor")?;
    let json_log = JsonLinesSink::open(&storage.json_log, &sensor_id)
        .with_context(|| format!("opening JSON log {}", storage.json_log.display()))?;
    let reopen_json_log = json_log.reopen_flag();

    // Attach the hook before accepting, so no connection is missed.
    let steer_request = steering::requested(config);
    let attribution = start_port_attribution(config, steer_request.is_some())?;

    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let addr = SocketAddr::new(config.server.host, config.server.port);
    let peer_timeout = Duration::from_secs_f64(config.tarpit.peer_timeout);
    // Steered connections of both families need a dual-stack (IPv6) listener.
    let listeners = listener::bind_all(addr, workers, peer_timeout, steer_request.is_some())
        .with_context(|| format!("binding {addr}"))?;
    let bound = listeners[0].local_addr()?;
    let bound = SocketAddr::new(bound.ip().to_canonical(), bound.port());
    let steered = match &steer_request {
        Some(request) => steering::start(config, request, &listeners)?
            .map(|(steering, watch)| (steering, watch, request.candidate_ports())),
        None => None,
    };
    let socketless = socketless_kit(config, attribution.as_ref(), workers)?;
    // Everything privileged is done: the hook is attached, the ports are bound and the raw
    // sockets open (socketless hold keeps CAP_NET_ADMIN, for TCP repair on every hand-over).
    drop_capabilities(attribution.as_ref(), socketless.is_some())?;
    confine(
        config.server.seccomp,
        crate::seccomp::Needs {
            ebpf_maps: attribution.is_some() || steered.is_some(),
            tcp_repair: socketless.is_some(),
            interface_list: config.classify.crs != EbpfMode::Off
                && config.classify.crs_engine == crate::classify::crs::CrsEngine::Libmodsecurity,
        },
    )?;
    // The SQLite sink's and the CRS stage's commits leave the WAL's copying to this thread
    // (started after the capability drop and the filter, as every thread is).
    let checkpointer = db::checkpoint::Checkpointer::start(&storage.database)?;
    checkpointer
        .attach(&mut database)
        .context("handing the SQLite sink's checkpoints to the checkpointer")?;
    let max_connections = limits::effective_max_connections(config.server.max_connections);

    let stats = Arc::new(PipelineStats::default());
    let (events, rx) = event_channel(
        storage.event_queue,
        storage.event_queue_bytes,
        stats.clone(),
    );
    let mut settings = Settings::from_config(config);
    settings.persona = crate::adaptive::load_persona(config)?;
    let learner = match config.tarpit.mode {
        TarpitMode::Drip => None,
        TarpitMode::Adaptive => {
            let (adaptive, model, priors) = crate::adaptive::start(config, &database)?;
            let snapshot = adaptive.snapshot.clone();
            settings.adaptive = Some(adaptive);
            Some(crate::pipeline::learner::Learner::new(
                model, priors, snapshot,
            ))
        }
    };
    let canary = canary_setup(config, &sensor_id, &database)?;
    settings.canary = canary.as_ref().map(|stage| stage.minter().clone());
    let queue = crate::sink::writer_queue(storage);
    let sinks = vec![
        SinkThread::spawn(json_log, queue, stats.clone())?,
        SinkThread::spawn(SqliteSink::new(database, &sensor_id), queue, stats.clone())?,
    ];
    let geoip = &config.geoip;
    let enrichment = Enrichment {
        geoip: Some(GeoIp::open(
            &geoip.city_db,
            &geoip.asn_db,
            Duration::from_secs_f64(geoip.reload_interval),
            geoip.cache_entries,
        )),
        reporter,
        metrics: config.metrics.address().map(|addr| (addr, bound.port())),
        rules: Some(
            LiveRules::load(config.classify.rules.clone())
                .context("loading the classification rules")?,
        ),
        learner,
        shipper: crate::ship::ShipperSetup::from_config(config, &storage.database)?,
        fleet: crate::ship::fleet::FleetSetup::from_config(config, &storage.database)?,
        canary_fleet: crate::ship::canary::CanaryFleetSetup::from_config(
            config,
            &storage.database,
            canary.is_some(),
        )?,
        canary,
        scanners: crate::pipeline::scanner::ScannerStage::from_config(&config.scanners)
            .context("loading the scanner catalogue")?,
        sharing: crate::share::push::setups_from_config(config, &storage.database, &sensor_id)
            .context("sharing")?,
    };
    let mut queues = vec![events.budget()];
    queues.extend(sinks.iter().map(SinkThread::budget));
    let recording = (crate::queue::RecordingBacklog::new(queues), stats.clone());
    let pipeline = Pipeline::start(rx, enrichment, sinks, stats.clone())?;
    let crs_stage = start_crs_stage(config, &storage.database, &checkpointer)?;

    let (steering, steer_watch, steered_ports) = match steered {
        Some((steering, watch, ports)) => (Some(steering), Some(watch), Some(ports)),
        None => (None, None, None),
    };
    let shared = Arc::new(Shared {
        settings,
        events,
        limits: Arc::new(ConnectionLimits::new(
            max_connections,
            config.server.max_connections_per_ip,
            ClientPrefixes {
                v4: config.server.per_ip_ipv4_prefix,
                v6: config.server.per_ip_ipv6_prefix,
            },
        )),
        recording,
        next_conn_id: AtomicU64::new(first_conn_id),
        ebpf: attribution.as_ref().map(|a| a.map()),
        untrusted_proxy_warning: crate::log_throttle::SharedLogThrottle::new(
            std::time::Duration::from_secs(60),
        ),
        accept_warning: crate::log_throttle::SharedLogThrottle::new(
            std::time::Duration::from_secs(60),
        ),
        socketless,
        socketless_warning: crate::log_throttle::SharedLogThrottle::new(
            std::time::Duration::from_secs(60),
        ),
        steered_ports,
        cancel: CancellationToken::new(),
    });
    if let Some(watch) = steer_watch {
        watch
            .spawn(shared.cancel.clone())
            .context("starting the sk_lookup listener watch")?;
    }
    if shared.socketless.is_some() {
        memory_trimmer(shared.cancel.clone())?;
    }
    let mut handles = Vec::with_capacity(workers);
    for (index, listener) in listeners.into_iter().enumerate() {
        handles.push(worker::spawn(
            index,
            listener,
            shared.clone(),
            config.server.worker_nice,
        )?);
    }
    tracing::info!(
        sensor = %sensor_id,
        workers,
        max_connections,
        max_connections_per_ip = config.server.max_connections_per_ip,
        database = %storage.database.display(),
        json_log = %storage.json_log.display(),
        "listening on {bound}"
    );

    signals.wait(&reopen_json_log);
    tracing::info!("shutting down: no new connections, ending open responses");
    shared.cancel.cancel();
    for handle in handles {
        if handle.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    drop(shared); // the last EventSender: the pipeline drains and stops
    drop(attribution); // detaches the hook
    drop(steering); // detaches sk_lookup: other ports refuse again
    pipeline.finish();
    if let Some(stage) = crs_stage {
        stage.stop();
    }
    checkpointer.stop();
    let count = |counter: &AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        dropped = count(&stats.dropped_events),
        sink_dropped = count(&stats.sink_dropped),
        throttled_accepts = count(&stats.throttled_accepts),
        "stopped; every queued event written"
    );
    Ok(())
}

/// Canary tokens, when `TARPIT_CANARY_KEY` is set: the pipeline's stage with the tokens issued
/// before (recomputed from `canary_tokens`). A key that is set but unusable stops the start.
fn canary_setup(
    config: &Config,
    sensor_id: &str,
    database: &rusqlite::Connection,
) -> anyhow::Result<Option<crate::pipeline::canary::CanaryStage>> {
    let Some(minter) = crate::canary::minter_from_env(sensor_id)? else {
        tracing::info!(
            "canary tokens off: {} is not set (environment or .env)",
            crate::canary::KEY_VARIABLE
        );
        return Ok(None);
    };
    let stage = crate::pipeline::canary::CanaryStage::restore(
        minter,
        database,
        crate::pipeline::canary::MAX_TOKENS,
    )
    .context("reading the issued canary tokens")?;
    let served = match (config.tarpit.mode, config.tarpit.drip_body) {
        (TarpitMode::Adaptive, _) | (_, crate::config::DripBody::Persona) => {
            "in the persona's bait"
        }
        (TarpitMode::Drip, crate::config::DripBody::Dots) => {
            "nowhere (the drip drips dots: set drip_body = \"persona\" or mode = \"adaptive\")"
        }
    };
    tracing::info!(
        recognised = stage.tokens(),
        "canary tokens on: issued {served}, searched for in every request"
    );
    Ok(Some(stage))
}

/// The CRS stage, as `[classify] crs` says: `auto` goes on without it (saying why once) where
/// the rules (or, with `crs_engine = "libmodsecurity"`, the library) are missing, `on` refuses to start. Shipping waits for the stage
/// only while it runs (`classify_state.active`).
fn start_crs_stage(
    config: &Config,
    database: &std::path::Path,
    checkpointer: &db::checkpoint::Checkpointer,
) -> anyhow::Result<Option<crate::classify::crs::stage::CrsStage>> {
    use crate::classify::crs::{Crs, stage};
    use crate::ebpf::EbpfMode;
    let mode = config.classify.crs;
    let loaded = match mode {
        EbpfMode::Off => None,
        EbpfMode::On | EbpfMode::Auto => match Crs::load(&config.classify.crs_settings()) {
            Ok(crs) => Some(crs),
            // The operator's own file is a configuration error whatever the mode.
            Err(error @ crate::classify::crs::CrsError::Exclusions { .. }) => {
                return Err(anyhow::anyhow!(error)).context("[classify] crs_exclusions");
            }
            Err(error) if mode == EbpfMode::Auto => {
                tracing::warn!("OWASP CRS classification off: {error}");
                None
            }
            Err(error) => {
                return Err(anyhow::anyhow!(error))
                    .context("[classify] crs = \"on\": the OWASP CRS could not be loaded");
            }
        },
    };
    let Some(crs) = loaded else {
        let conn = rusqlite::Connection::open(database)?;
        crate::classify::crs::stage::set_active(&conn, false)?;
        return Ok(None);
    };
    tracing::info!(
        rules = crs.catalog().len(),
        version = crs.catalog().version().unwrap_or("unknown"),
        paranoia = config.classify.crs_paranoia,
        engine = %config.classify.crs_engine,
        "OWASP CRS classification on"
    );
    Ok(Some(stage::CrsStage::start(
        database,
        crs,
        config.classify.crs_backlog_max,
        checkpointer,
    )?))
}

/// AbuseIPDB reporting, when a key is set: the filters and the history that must survive a
/// restart (addresses reported within the interval, API calls made today).
fn reporter_setup(
    config: &Config,
    database: &rusqlite::Connection,
) -> anyhow::Result<Option<crate::abuseipdb::ReporterSetup>> {
    use crate::abuseipdb::{ApiKey, KEY_VAR, ReporterSetup, policy};
    let Some(key) = ApiKey::from_env() else {
        tracing::info!("AbuseIPDB reporting off: {KEY_VAR} is not set (environment or .env)");
        return Ok(None);
    };
    let a = &config.abuseipdb;
    if a.whitelist_is_empty() && !a.dry_run {
        tracing::warn!(
            "AbuseIPDB reporting is on with an empty whitelist: search engines and research \
             scanners will be reported too (see tarpit.example.toml for a recommended one)"
        );
    }
    let now = std::time::SystemTime::now();
    let interval = Duration::from_secs(a.report_interval_minutes * 60);
    let day_start = std::time::UNIX_EPOCH + Duration::from_secs(policy::utc_day(now) * 86_400);
    let (history, calls_today) = db::abuseipdb_history(database, now - interval, day_start)
        .context("reading report history")?;
    let regexes = a
        .user_agent_regexes()
        .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
    Ok(Some(ReporterSetup {
        config: a.clone(),
        key,
        policy: policy::Policy {
            whitelist_cidrs: a.whitelist_cidrs.clone(),
            whitelist_asns: a.whitelist_asns.clone(),
            whitelist_user_agents: regexes,
            comment_prefix: a.comment_prefix.clone(),
            sensor_addresses: a.sensor_addresses.clone(),
        },
        history,
        calls_today,
        leave_out_scanners: config.scanners.enabled && !config.scanners.share,
    }))
}

/// Starts the eBPF hook as `[ebpf] mode` asks, and says once which port sources are live.
/// Drops every capability (see [`crate::privileges`]) before any other thread starts.
/// How often freed heap memory is handed back to the kernel under socketless hold.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Under socketless hold, a burst of connections lives on sockets (a task, buffers, a boxed
/// connection: a few KB each) for one tick, then in ~100 bytes; glibc keeps the freed
/// kilobytes mapped, so the process would stay at its burst's size. A thread of its own (never
/// a worker: trimming walks every arena) returns whole free pages every [`TRIM_INTERVAL`].
fn memory_trimmer(cancel: CancellationToken) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            // Once at start (what start-up freed), then every interval.
            // SAFETY: malloc_trim only returns free memory; it is thread safe.
            unsafe { libc::malloc_trim(0) };
            let mut waited = Duration::ZERO;
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(250));
                waited += Duration::from_millis(250);
                if waited >= TRIM_INTERVAL {
                    waited = Duration::ZERO;
                    // SAFETY: malloc_trim only returns free memory; it is thread safe.
                    unsafe { libc::malloc_trim(0) };
                }
            }
        })
        .context("starting the memory trimmer")?;
    Ok(())
}

/// The map and raw sockets of socketless hold, when `[tarpit] hold = "socketless"`.
fn socketless_kit(
    config: &Config,
    attribution: Option<&Attribution>,
    workers: usize,
) -> anyhow::Result<Option<socketless::SocketlessKit>> {
    if config.tarpit.hold != crate::config::HoldMode::Socketless {
        return Ok(None);
    }
    let map = attribution.and_then(|a| a.held()).ok_or_else(|| {
        anyhow::anyhow!("[tarpit] hold = \"socketless\" needs the eBPF hook, which is not running")
    })?;
    let raw = socketless::segment::RawSockets::open()
        .context("[tarpit] hold = \"socketless\": opening the raw sockets (needs CAP_NET_RAW)")?;
    tracing::info!(
        max = map.capacity(),
        "socketless hold on: responses that run to their end leave their socket once acknowledged"
    );
    let per_worker = (map.capacity() as usize).div_ceil(workers.max(1));
    Ok(Some(socketless::SocketlessKit {
        map,
        raw,
        per_worker,
    }))
}

fn drop_capabilities(
    attribution: Option<&Attribution>,
    keep_net_admin: bool,
) -> anyhow::Result<()> {
    let map = attribution.map(|a| a.map());
    let probe = map.as_ref().map(|map| move || map.probe_access());
    let probe_ref = probe
        .as_ref()
        .map(|p| p as &dyn Fn() -> Result<(), nix::errno::Errno>);
    let kept = crate::privileges::drop_after_start(probe_ref, keep_net_admin)?;
    if kept.threads > 1 {
        tracing::warn!(
            threads = kept.threads,
            "capabilities dropped while other threads existed; those keep theirs"
        );
    }
    match kept.capabilities.as_slice() {
        [] => tracing::info!("all capabilities dropped"),
        kept => tracing::info!(
            ?kept,
            "capabilities dropped except those still needed (socketless hold: CAP_NET_ADMIN; \
             an old kernel's eBPF map lookups: CAP_BPF)"
        ),
    }
    Ok(())
}

/// Installs the system-call allow-list; still the only thread, so every later one inherits it.
fn confine(mode: crate::seccomp::SeccompMode, needs: crate::seccomp::Needs) -> anyhow::Result<()> {
    use crate::seccomp::SeccompMode;
    crate::seccomp::install(mode, needs).context(
        "[server] seccomp: installing the system-call allow-list (\"off\" runs without it)",
    )?;
    match mode {
        SeccompMode::On => tracing::info!(?needs, "system-call allow-list on (seccomp)"),
        SeccompMode::Log => tracing::warn!(
            ?needs,
            "system-call allow-list in log mode: calls it would refuse are only logged"
        ),
        SeccompMode::Off => {
            tracing::warn!("no system-call allow-list ([server] seccomp = \"off\")")
        }
    }
    Ok(())
}

/// `every_port`: sk_lookup may steer any port to the tarpit, so the hook looks for held flows
/// on every port, not only `[server] port`.
fn start_port_attribution(
    config: &Config,
    every_port: bool,
) -> anyhow::Result<Option<Attribution>> {
    let mode = config.ebpf.mode;
    let socketless = config.tarpit.hold == crate::config::HoldMode::Socketless;
    let held_port = if every_port { 0 } else { config.server.port };
    let held = socketless.then_some((config.tarpit.socketless_max, held_port));
    let (attribution, ebpf_state) = match Attribution::start(mode, config.ebpf.map_entries, held) {
        Ok(attribution) => {
            let priorities = attribution.priorities();
            let state = format!(
                "eBPF hook live (netfilter LOCAL_IN, priorities {priorities:?} for IPv4 and IPv6)"
            );
            (Some(attribution), state)
        }
        Err(reason) if mode == EbpfMode::On => {
            anyhow::bail!("[ebpf] mode = \"on\", but eBPF port attribution cannot start: {reason}")
        }
        Err(reason) if socketless => anyhow::bail!(
            "[tarpit] hold = \"socketless\" needs the eBPF hook, which cannot start: {reason}"
        ),
        Err(Unavailable::Off) => (None, "eBPF off ([ebpf] mode = \"off\")".to_owned()),
        Err(reason) => {
            tracing::warn!("eBPF port attribution unavailable: {reason}");
            (None, format!("eBPF unavailable ({reason})"))
        }
    };
    tracing::info!(
        "port attribution sources: {ebpf_state}; SO_ORIGINAL_DST from conntrack; \
         X-Tarpit-Target-Port from trusted proxies {:?}; the local port",
        config
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    );
    Ok(attribution)
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reopen the JSON log) handlers, installed before the
/// server announces itself so a signal sent right after start-up is never missed.
struct ShutdownSignals {
    runtime: tokio::runtime::Runtime,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the signal runtime")?;
        let _guard = runtime.enter();
        let interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        Ok(Self {
            runtime,
            interrupt,
            terminate,
            hangup,
        })
    }

    /// Returns on SIGINT or SIGTERM; each SIGHUP sets `reopen` for the JSON log sink.
    fn wait(mut self, reopen: &std::sync::atomic::AtomicBool) {
        self.runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = self.interrupt.recv() => return,
                    _ = self.terminate.recv() => return,
                    _ = self.hangup.recv() => {
                        reopen.store(true, std::sync::atomic::Ordering::Release);
                    }
                }
            }
        });
    }
}
