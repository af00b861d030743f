//! probegate-backoffice: one command against a broker and a database gives the retailer's
//! side of probegate: ingest, storage, dashboard, consent desk. See docs/backoffice.md.

mod charts;
mod config;
mod consent;
mod db;
mod export;
mod homeassistant;
mod ingest;
mod localtime;
mod queries;
mod ratelimit;
mod rollup;
mod store;
mod web;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The broker the gateways publish to: mqtt://[user:password@]host[:port].
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// sqlite:PATH (one file, the default) or postgres://user@host:port/database.
    #[arg(long, default_value = "sqlite:backoffice.db", global = true)]
    db: String,
    /// Where the dashboard listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The service's config: staff, sites and their consent keys, groups.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The shared-subscription group: instances in one group split the messages.
    #[arg(long, default_value = "probegate-backoffice")]
    group: String,
    /// How often to recompute rollups and apply retention.
    #[arg(long, default_value_t = 60)]
    rollup_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Print an Argon2id hash of the password read from stdin, for the config's users.
    HashPassword,
    /// Write the stored enveloped messages of --db to stdout, for Kafka (docs/backoffice.md).
    Export {
        /// One JSON line per message: {"topic", "key", "partition_key", "value"}.
        #[arg(long)]
        jsonl: bool,
        /// Only messages whose time_ms (pipeline time) is at or after this.
        #[arg(long, default_value_t = 0)]
        since_ms: i64,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Export { jsonl, since_ms }) => {
            if !jsonl {
                eprintln!("error: export writes one format, JSON lines: pass --jsonl");
                return std::process::ExitCode::from(2);
            }
            let db_url = cli.db.clone();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")
                .and_then(|rt| {
                    rt.block_on(async {
                        let db = db::Db::open(&db_url).await?;
                        let stdout = std::io::stdout();
                        let mut out = std::io::BufWriter::new(stdout.lock());
                        let n = export::jsonl(&db, since_ms, &mut out).await?;
                        tracing::info!("exported {n} messages");
                        anyhow::Ok(())
                    })
                })
        }
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")
            .and_then(|rt| rt.block_on(serve(cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn hash_password() -> Result<()> {
    use argon2::PasswordHasher;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random number generator works");
    let salt =
        argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}

async fn serve(cli: Cli) -> Result<()> {
    let config_path = cli
        .config
        .context("--config is required: it names the staff who may sign in")?;
    let config = config::Config::load(&config_path)?;
    let broker = ingest::Broker::parse(&cli.broker)?;
    let db = db::Db::open(&cli.db).await?;
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let discovery = config
        .home_assistant
        .discovery
        .then(|| homeassistant::Discovery::new(&config.home_assistant.prefix));
    let ingest = ingest::start(&broker, &cli.group, db.clone(), discovery);
    tokio::spawn(maintain(
        db.clone(),
        config.retention.raw_days,
        config.retention.hourly_days,
        Duration::from_secs(cli.rollup_secs.max(1)),
    ));
    let addr = listener.local_addr()?;
    // stdout: the one line a script or the demo reads.
    println!("dashboard: http://{addr}/");
    tracing::info!(
        "storing to {} ({}), ingesting from {}:{}",
        redact(&cli.db),
        db.engine(),
        broker.host,
        broker.port
    );
    let app = web::router(db, config, ingest.stats.clone(), ingest.client.clone());
    // The peer's address, for the opt-out page's rate limit.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// A database URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Rollups and retention, periodically. Retention counts back from the newest data rather
/// than the wall clock, so a replayed recording is not deleted as old the moment it lands.
async fn maintain(db: db::Db, raw_days: u32, hourly_days: u32, every: Duration) {
    let retention = config::Retention {
        raw_days,
        hourly_days,
    };
    loop {
        tokio::time::sleep(every).await;
        let result = async {
            let newest = db
                .query(
                    "SELECT MAX(interval_start_ms) FROM counts UNION ALL SELECT MAX(interval_start_ms) FROM visits \
                     UNION ALL SELECT MAX(window_start_ms) FROM occupancy",
                    &[],
                )
                .await?
                .iter()
                .filter_map(|r| r[0].opt_int())
                .max();
            if let Some(newest) = newest {
                rollup::roll_up(&db, newest - 2 * queries::DAY).await?;
                rollup::retain(&db, &retention, newest, store::now_ms()).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!("rollups: {e:#}");
        }
    }
}
