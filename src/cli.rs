//! The `kontakt` command line: serve (default), migrate, token, schema.
use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    app::{Application, shutdown_signal},
    auth::{KeyRing, Scope, TokenRequest},
    config::Config,
    storage::Database,
};

#[derive(Parser)]
#[command(
    name = "kontakt",
    version,
    about = "Customer profile API: unified profiles, touchpoint history, consent on every read"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (the default). Migrates on start unless KONTAKT_MIGRATE_ON_START=false.
    Serve,
    /// Run pending database migrations and exit.
    Migrate,
    /// Print a signed development token (HS256, with the configured secret or the development key).
    Token {
        /// Tenant the token acts in.
        #[arg(long, default_value = "dev")]
        tenant: String,
        /// Comma-separated scopes, e.g. `profiles:read,pii:read`. Default: all scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// The purpose the caller acts for, e.g. `personalization`, `analytics`, `support`.
        #[arg(long, default_value = "personalization")]
        purpose: String,
        /// The `sub` claim.
        #[arg(long, default_value = "developer")]
        subject: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kontakt: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn all_scopes() -> Vec<String> {
    Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect()
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Token { tenant, scopes, purpose, subject, ttl_secs } => {
            config.check()?;
            let keys = KeyRing::load(&config)?;
            let request =
                TokenRequest { tenant, subject, scopes: scopes.unwrap_or_else(all_scopes), purpose, ttl_secs };
            println!("{}", keys.mint(&request)?);
            Ok(())
        }
        Command::Migrate => {
            crate::telemetry::init_logging(config.log_format());
            let db = Database::connect(&config).await?;
            db.migrate().await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Serve => serve(config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init_logging(config.log_format());
    let development = !config.is_production();
    let graphiql = config.graphiql_enabled();
    let app = Application::build(config).await?;
    let addr = app.local_addr()?;
    let mut banner = format!("Kontakt is listening.\n  GraphQL:  http://{addr}/graphql\n");
    if graphiql {
        banner.push_str(&format!("  GraphiQL: http://{addr}/graphiql\n"));
    }
    banner.push_str(&format!("  WebSocket subscriptions: ws://{addr}/graphql/ws\n"));
    if let Some(metrics) = app.metrics_addr() {
        banner.push_str(&format!("  Metrics:  http://{metrics}/metrics\n"));
    }
    if development {
        let request = TokenRequest {
            tenant: "dev".into(),
            subject: "developer".into(),
            scopes: all_scopes(),
            purpose: "personalization".into(),
            ttl_secs: 12 * 3600,
        };
        if let Ok(token) = app.state().keys.mint(&request) {
            banner.push_str("  Development token (tenant `dev`, all scopes, purpose personalization, 12 h):\n");
            banner.push_str(&format!("    Authorization: Bearer {token}\n"));
        }
    }
    // A closed stdout (a supervisor that stopped reading) must not stop the server.
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
    tracing::info!(%addr, "serving");
    app.run(shutdown_signal()).await
}
