//! probegate-backoffice: one command against a broker and a database gives the retailer's
//! side of probegate: ingest, storage, dashboard, consent desk. See docs/backoffice.md.

mod charts;
mod config;
mod consent;
mod db;
mod ingest;
mod queries;
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
    #[arg(long, default_value = "sqlite:backoffice.db")]
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
    let ingest = ingest::start(&broker, &cli.group, db.clone());
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
