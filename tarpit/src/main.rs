//! The `tarpit` binary: parses the command line and dispatches to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tarpit::cli::{Cli, Command, effective_config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Diagnostics go to stderr (journald under systemd); the forensic record goes to the
    // JSON log and SQLite, never here.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    tarpit::file_modes::restrict();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Completions { shell }) => {
            tarpit::cli::write_completions(*shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return match tarpit::cli::write_man_page(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let (subcommand_flags, check_only) = match &cli.command {
        None
        | Some(
            Command::Ports(_)
            | Command::Stats(_)
            | Command::Actors(_)
            | Command::Report(_)
            | Command::Export(_)
            | Command::Migrate(_)
            | Command::Classify(_)
            | Command::Ship(_)
            | Command::Completions { .. }
            | Command::Man,
        ) => (None, false),
        Some(Command::Run(overrides)) => (Some(overrides), false),
        Some(Command::CheckConfig(overrides)) => (Some(overrides), true),
    };
    let overrides: Vec<_> = std::iter::once(&cli.run).chain(subcommand_flags).collect();
    let config = match effective_config(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Ports(args) | Command::Stats(args)) = &cli.command {
        let stats = matches!(cli.command, Some(Command::Stats(_)));
        return match query(args, &config, stats) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let analysis = match &cli.command {
        Some(Command::Actors(args)) => Some(actors(args, &config)),
        Some(Command::Report(args)) => Some(report(args, &config)),
        Some(Command::Export(args)) => Some(export(args, &config)),
        Some(Command::Migrate(args)) => Some(migrate(args, &config)),
        Some(Command::Classify(args)) => Some(classify(args, &config)),
        Some(Command::Ship(args)) => Some(ship(args, &config)),
        _ => None,
    };
    if let Some(outcome) = analysis {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if check_only {
        println!("# effective configuration: valid");
        print!("{}", config.to_toml());
        println!();
        for line in tarpit::geoip::describe(&config.geoip.city_db, &config.geoip.asn_db) {
            println!("# {line}");
        }
        println!("# {}", describe_ports(&config.server));
        let key = tarpit::abuseipdb::ApiKey::from_env();
        match (&key, config.abuseipdb.dry_run) {
            (Some(_), false) => {
                println!("# abuseipdb: reporting on (ABUSEIPDB_API_KEY set, value not shown)")
            }
            (Some(_), true) => println!(
                "# abuseipdb: dry run (ABUSEIPDB_API_KEY set, value not shown; nothing is sent)"
            ),
            (None, _) => println!(
                "# abuseipdb: reporting off (ABUSEIPDB_API_KEY not set in the environment or .env)"
            ),
        }
        match tarpit::canary::minter_from_env("check-config") {
            Ok(Some(_)) => println!(
                "# canary: tokens on ({} set, value not shown)",
                tarpit::canary::KEY_VARIABLE
            ),
            Ok(None) => println!(
                "# canary: tokens off ({} not set in the environment or .env)",
                tarpit::canary::KEY_VARIABLE
            ),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
        let ship = &config.ship.clickhouse;
        if ship.enabled() {
            let var = tarpit::ship::clickhouse::PASSWORD_VAR;
            let password = match tarpit::secret::Secret::from_env(var) {
                Some(_) => format!("{var} set, value not shown"),
                None => format!("{var} not set: no password sent"),
            };
            println!(
                "# ship.clickhouse: shipping to {} as {} into {}.{} ({password})",
                ship.url, ship.user, ship.database, ship.table
            );
        } else {
            println!("# ship.clickhouse: off (no url)");
        }
        match tarpit::share::push::describe(&config) {
            Ok(lines) => lines.iter().for_each(|line| println!("# {line}")),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
        if key.is_some() && config.abuseipdb.whitelist_is_empty() {
            println!(
                "# WARNING: abuseipdb reporting is enabled with an empty whitelist: search engines \
                 and research scanners would be reported (see tarpit.example.toml)"
            );
        }
        return ExitCode::SUCCESS;
    }
    match tarpit::server::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The database a read-only command reads: `--db`, else the configured one; it must exist.
fn existing_db<'a>(
    db: Option<&'a std::path::PathBuf>,
    config: &'a tarpit::config::Config,
) -> anyhow::Result<&'a std::path::PathBuf> {
    let db = db.unwrap_or(&config.storage.database);
    if !db.is_file() {
        anyhow::bail!(
            "no database at {} (has the tarpit run here? --db names another)",
            db.display()
        );
    }
    Ok(db)
}

/// `tarpit actors`: the actors canary tokens joined, as text or JSON.
fn actors(args: &tarpit::cli::ActorsArgs, config: &tarpit::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    if args.fleet {
        let ch = &config.ship.clickhouse;
        if !ch.enabled() {
            anyhow::bail!(
                "--fleet reads the fleet's ClickHouse: set [ship.clickhouse] url in the configuration"
            );
        }
        let password = tarpit::secret::Secret::from_env(tarpit::ship::clickhouse::PASSWORD_VAR);
        let client = tarpit::ship::clickhouse::ClickHouse::new(ch, password)?;
        let table = format!("{}.{}", ch.database, ch.sightings_table);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the runtime")?;
        let actors = runtime
            .block_on(tarpit::analysis::actors::fleet::from_store(&client, &table))
            .with_context(|| format!("reading {table}"))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&actors)?);
        } else {
            print!("{}", tarpit::analysis::actors::fleet::to_text(&actors));
        }
        return Ok(());
    }
    let db = existing_db(args.db.as_ref(), config)?;
    if let Some(actor) = args.candidates {
        let conn = tarpit::db::open_read_only(db)?;
        let found =
            tarpit::analysis::actors::candidates::candidates(&conn, actor, (args.limit, 0.01))
                .with_context(|| format!("actor {actor} in {}", db.display()))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            print!(
                "{}",
                tarpit::analysis::actors::candidates::to_text(actor, &found)
            );
        }
        return Ok(());
    }
    let query = tarpit::analysis::actors::Query {
        min_addresses: args.min_addresses,
        limit: args.limit,
        actor: args.actor,
    };
    let actors = tarpit::analysis::actors::build(db, query)
        .with_context(|| format!("reading {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&actors)?);
    } else {
        print!("{}", tarpit::analysis::actors::to_text(&actors));
    }
    Ok(())
}

/// `tarpit migrate`: brings a database to this build's schema and says what it did.
fn migrate(args: &tarpit::cli::MigrateArgs, config: &tarpit::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let db = existing_db(args.db.as_ref(), config)?;
    let before = tarpit::db::legacy::backup_path(db).exists();
    tarpit::db::open(db).with_context(|| format!("migrating {}", db.display()))?;
    println!(
        "{}: schema version {}",
        db.display(),
        tarpit::db::SCHEMA_VERSION
    );
    let backup = tarpit::db::legacy::backup_path(db);
    if !before && backup.exists() {
        println!("original kept as {}", backup.display());
    }
    Ok(())
}

/// `tarpit ship --once`: ships the database's queued requests to ClickHouse and says how fast.
fn ship(args: &tarpit::cli::ShipArgs, config: &tarpit::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let db = existing_db(args.db.as_ref(), config)?;
    tarpit::db::open(db).with_context(|| format!("migrating {}", db.display()))?;
    let Some(setup) = tarpit::ship::ShipperSetup::from_config(config, db)? else {
        anyhow::bail!(
            "shipping is not configured: set [ship.clickhouse] url in the configuration \
             (or --clickhouse-url)"
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let report = runtime.block_on(tarpit::ship::ship_once(setup))?;
    println!(
        "{}: shipped {} requests in {} inserts, {:.2} s ({:.0} rows/s)",
        db.display(),
        report.rows,
        report.batches,
        report.elapsed_s,
        report.rows as f64 / report.elapsed_s.max(1e-9)
    );
    Ok(())
}

/// `tarpit classify`: re-tags the stored requests and says how many got which.
fn classify(
    args: &tarpit::cli::ClassifyArgs,
    config: &tarpit::config::Config,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let db = existing_db(args.db.as_ref(), config)?;
    let rules = args.rules.as_ref().or(config.classify.rules.as_ref());
    let classifier = tarpit::classify::Classifier::load(rules.map(|p| p.as_path()))?;
    let summary = tarpit::analysis::retag::retag(db, &classifier)
        .with_context(|| format!("re-tagging {}", db.display()))?;
    println!(
        "{}: {} requests re-tagged with {} rules: {} tagged, {} tags",
        db.display(),
        summary.rows,
        classifier.rule_count(),
        summary.tagged,
        summary.tags
    );
    // The CRS pass after the own rules (which replaced every stored tag): every row again.
    use tarpit::classify::crs::{Crs, stage};
    use tarpit::ebpf::EbpfMode;
    let mode = args.crs.unwrap_or(config.classify.crs);
    let crs = match mode {
        EbpfMode::Off => None,
        _ => match Crs::load(&tarpit::classify::crs::CrsSettings {
            engine: args.crs_engine.unwrap_or(config.classify.crs_engine),
            ..config.classify.crs_settings()
        }) {
            Ok(crs) => Some(crs),
            Err(error) if mode == EbpfMode::Auto => {
                println!("OWASP CRS pass skipped: {error}");
                None
            }
            Err(error) => return Err(anyhow::anyhow!(error)).context("--crs on"),
        },
    };
    if let Some(mut crs) = crs {
        let mut conn = rusqlite::Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        tarpit::db::configure_writer(&conn)?;
        let outcome = stage::evaluate_all(&mut conn, &mut crs)
            .with_context(|| format!("evaluating the CRS on {}", db.display()))?;
        println!(
            "{}: {} requests evaluated with the OWASP CRS ({}, {} rules, paranoia level {}): {} with rules fired",
            db.display(),
            outcome.rows,
            crs.catalog().version().unwrap_or("unknown version"),
            crs.catalog().len(),
            config.classify.crs_paranoia,
            outcome.tagged
        );
    }
    Ok(())
}

/// `--since` as an RFC 3339 cutoff.
fn cutoff(since: Option<&str>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    since
        .map(|s| tarpit::analysis::ports_report::parse_since(s, std::time::SystemTime::now()))
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--since")
}

/// `tarpit report`: the HTML report.
fn report(args: &tarpit::cli::ReportArgs, config: &tarpit::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let db = existing_db(args.source.db.as_ref(), config)?;
    let since = cutoff(args.source.since.as_deref())?;
    if tarpit::db::is_database_file(db, &args.out) {
        anyhow::bail!("--out {} is the database being read", args.out.display());
    }
    let html = tarpit::analysis::report::render(db, since)
        .with_context(|| format!("reading {}", db.display()))?;
    std::fs::write(&args.out, html).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

/// `tarpit export`: the dataset file.
fn export(args: &tarpit::cli::ExportArgs, config: &tarpit::config::Config) -> anyhow::Result<()> {
    let db = existing_db(args.source.db.as_ref(), config)?;
    let anonymizer = match &args.key_file {
        Some(key_file) if args.anonymize => Some(
            tarpit::analysis::export::Anonymizer::from_key_file(key_file)?,
        ),
        _ => None,
    };
    let options = tarpit::analysis::export::ExportOptions {
        db: db.clone(),
        out: args.out.clone(),
        format: args.format,
        since: cutoff(args.source.since.as_deref())?,
        anonymizer,
        canary: tarpit::canary::minter_from_env("export")?,
        progress: true,
        csv_raw: args.csv_raw,
        include_scanners: args.include_scanners,
    };
    let summary = tarpit::analysis::export::export(options)?;
    if matches!(
        args.format,
        tarpit::analysis::export::Format::Stix | tarpit::analysis::export::Format::Misp
    ) {
        eprintln!(
            "exported {} clients{} to {} (verified research scanners left out: {})",
            summary.rows,
            if args.anonymize { ", anonymised" } else { "" },
            args.out.display(),
            tarpit::share::clients::requests_text(summary.scanner_requests_left_out)
        );
        return Ok(());
    }
    eprintln!(
        "exported {} rows ({} columns{}) to {}",
        summary.rows,
        summary.columns,
        if args.anonymize { ", anonymised" } else { "" },
        args.out.display()
    );
    Ok(())
}

/// `tarpit ports` and `tarpit stats`: read the database, print text tables or JSON.
fn query(
    args: &tarpit::cli::QueryArgs,
    config: &tarpit::config::Config,
    stats: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let db = existing_db(args.source.db.as_ref(), config)?;
    let since = cutoff(args.source.since.as_deref())?;
    let reading = || format!("reading {}", db.display());
    let (json, text) = if stats {
        let mut report = tarpit::analysis::stats::build(db, since).with_context(reading)?;
        if !config.ship.clickhouse.enabled() {
            report.shipping = None; // no store configured: no backlog to speak of
        }
        let sharing = config.share.configured();
        report
            .sharing
            .retain(|p| sharing.contains(&p.output.as_str()));
        (serde_json::to_string_pretty(&report)?, report.to_text())
    } else {
        let report = tarpit::analysis::ports_report::build(db, since).with_context(reading)?;
        (serde_json::to_string_pretty(&report)?, report.to_text())
    };
    if args.json {
        println!("{json}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// What `check-config` says about the ports answered on (`[server] port` and `ports`).
fn describe_ports(server: &tarpit::config::ServerConfig) -> String {
    use tarpit::ebpf::EbpfMode;
    let Some(ports) = &server.ports else {
        return format!("ports: {} only", server.port);
    };
    let addresses = tarpit::steer::describe_prefixes(&server.prefixes);
    let excluded = server
        .exclude_ports
        .as_ref()
        .map_or(String::new(), |e| format!(" except {e}"));
    let mode = match server.sk_lookup {
        EbpfMode::On => "sk_lookup, required",
        EbpfMode::Auto => "sk_lookup, else port alone",
        EbpfMode::Off => return format!("ports: {} only (sk_lookup = \"off\")", server.port),
    };
    format!(
        "ports: {ports}{excluded} on {addresses} ({mode}); ports other services listen on are \
         left to them"
    )
}
