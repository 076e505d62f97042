//! `[server] ports` at start: whether to steer with sk_lookup, and what to do when the kernel
//! cannot (`[server] sk_lookup`: `on` refuses to start, `auto` goes on with `port` alone).

use anyhow::Context;

use crate::config::Config;
use crate::ebpf::EbpfMode;
use crate::steer::{ListenerWatch, SteerSettings, Steering};

/// What `[server]` asks to steer, or `None` (no `ports`, or `sk_lookup = "off"`).
pub fn requested(config: &Config) -> Option<SteerSettings> {
    let server = &config.server;
    let ports = server.ports.clone()?;
    if server.sk_lookup == EbpfMode::Off {
        tracing::info!("[server] ports is set but sk_lookup = \"off\": only `port` is answered");
        return None;
    }
    let mut exclude = server
        .exclude_ports
        .clone()
        .unwrap_or_else(crate::steer::ports::PortSet::empty);
    // The metrics endpoint starts listening after the program is attached: excluded from the
    // start rather than from the first scan that sees it.
    if let Some(metrics) = config.metrics.address() {
        exclude.insert(metrics.port());
    }
    Some(SteerSettings {
        ports,
        exclude,
        prefixes: server.prefixes.clone(),
    })
}

/// Attaches the program for `settings`, steering to `listeners`.
pub fn start(
    config: &Config,
    settings: &SteerSettings,
    listeners: &[std::net::TcpListener],
) -> anyhow::Result<Option<(Steering, ListenerWatch)>> {
    match Steering::start(settings, listeners) {
        Ok((steering, watch)) => {
            let prefixes = crate::steer::describe_prefixes(&settings.prefixes);
            tracing::info!(
                ports = %settings.ports,
                excluded = %settings.exclude,
                steered = watch.steered().len(),
                "sk_lookup on: new connections to these ports on {prefixes} go to the tarpit \
                 without NAT; ports other services listen on are left to them"
            );
            Ok(Some((steering, watch)))
        }
        Err(reason) if config.server.sk_lookup == EbpfMode::Auto => {
            tracing::warn!(
                "[server] ports: sk_lookup cannot start ({reason}); sk_lookup = \"auto\": \
                 answering on port {} only",
                config.server.port
            );
            Ok(None)
        }
        Err(reason) => Err(anyhow::anyhow!(reason)).context(
            "[server] ports: the sk_lookup program cannot start \
             (set [server] sk_lookup = \"auto\" to fall back to `port` alone)",
        ),
    }
}
