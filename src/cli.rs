//! The command line: `serve`, `indexes ensure`, `tenant create`, `token`, `dashboard-link`,
//! `admin-link`, `demo load`.
//! Each command exits non-zero with a one-line reason on failure.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::{self, PlatformCredential, Principal, TenantKey};
use crate::config::Settings;
use crate::domain::{ErrorCode, ExternalUserId, Preset, RoleCatalog, TenantId};
use crate::error::Error;
use crate::startup::Application;
use crate::store::Store;

/// Roster: multi-tenant chat membership service.
#[derive(Debug, Parser)]
#[command(name = "roster", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve,
    /// Index maintenance.
    Indexes {
        /// What to do with indexes.
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Tenant administration.
    Tenant {
        /// What to do with tenants.
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Mint a signed token for local use.
    Token(TokenArgs),
    /// Print a one-time sign-in link to a tenant's admin dashboard.
    DashboardLink(DashboardLinkArgs),
    /// Print a one-time sign-in link to the operators' console (on `http.admin_bind`).
    AdminLink,
    /// Demo data.
    Demo {
        /// What to do with demo data.
        #[command(subcommand)]
        action: DemoAction,
    },
}

/// `roster indexes …`
#[derive(Debug, Subcommand)]
pub enum IndexAction {
    /// Apply indexes/*.json (idempotent; stops on a conflicting index).
    Ensure,
}

/// `roster tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Create a tenant and print its key id and secret.
    Create {
        /// Tenant slug (2–63 of a-z, 0-9, inner hyphens).
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Succeed without changes if the tenant exists (prints its current key id only).
        #[arg(long)]
        if_missing: bool,
        /// Role catalog preset: chat (seed 004), community (seed 000) or classroom (seed 001).
        #[arg(long, default_value = "chat", value_parser = parse_preset)]
        preset: Preset,
    },
}

/// `roster token …`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "server"])))]
pub struct TokenArgs {
    /// Tenant slug.
    #[arg(long)]
    pub tenant: String,
    /// A user token for this external user id.
    #[arg(long)]
    pub user: Option<String>,
    /// A server token.
    #[arg(long)]
    pub server: bool,
    /// Lifetime, e.g. `15m`, `1h`, `1day` (at most auth.max_token_ttl_secs).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// `roster dashboard-link …`
#[derive(Debug, Args)]
pub struct DashboardLinkArgs {
    /// Tenant slug.
    #[arg(long)]
    pub tenant: String,
    /// A read-only session (looks, changes nothing).
    #[arg(long)]
    pub read: bool,
    /// The external user id of the person the link is for.
    #[arg(long)]
    pub user: Option<String>,
}

/// `roster demo …`
#[derive(Debug, Subcommand)]
pub enum DemoAction {
    /// Fill a tenant with a realistic population (created if missing).
    Load(crate::demo::LoadArgs),
}

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::open(settings).await?;
    store
        .ensure_indexes()
        .await
        .context("applying indexes/*.json")?;
    Ok(store)
}

/// The CLI acts as the operator: whoever runs it reads the configuration that holds the
/// platform tokens and the database address.
fn operator(_: &Settings) -> anyhow::Result<PlatformCredential> {
    Ok(PlatformCredential::system("cli"))
}

/// The newest signing key of tenant `id` that is not revoked, with the tenant's state.
/// Errors: no such tenant, or no key in use.
async fn current_key(
    store: &Store,
    settings: &Settings,
    id: TenantId,
) -> anyhow::Result<TenantKey> {
    let tenant = store
        .find_tenant(&operator(settings)?, &id)
        .await?
        .with_context(|| format!("no tenant `{id}`"))?;
    let key = tenant
        .current_key()
        .with_context(|| format!("tenant `{id}` has no active key"))?;
    Ok(TenantKey {
        tenant: id,
        kid: key.kid.clone(),
        secret: key.secret.clone(),
        revoked: false,
        tenant_active: tenant.is_active(),
    })
}

/// Runs a parsed command.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            settings.refuse_compiled_in_secrets(std::env::var("ROSTER_ENV").ok().as_deref())?;
            let app = Application::build(&settings).await?;
            app.run_until_stopped().await.context("HTTP server")?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Indexes {
            action: IndexAction::Ensure,
        } => {
            let store = Store::open(&settings).await?;
            let n = store.ensure_indexes().await?;
            println!("{n} indexes ensured");
            Ok(())
        }
        Command::Tenant {
            action:
                TenantAction::Create {
                    id,
                    name,
                    if_missing,
                    preset,
                },
        } => {
            let id = TenantId::parse(&id).map_err(|e| anyhow::anyhow!("tenant id: {e}"))?;
            let store = connect(&settings).await?;
            let cred = operator(&settings)?;
            match store
                .create_tenant(
                    &cred,
                    &id,
                    name.as_deref().unwrap_or(id.as_str()),
                    &RoleCatalog::preset(preset),
                )
                .await
            {
                Ok(t) => {
                    let key = t.keys.first().context("new tenant without a key")?;
                    println!("tenant: {}\nkid: {}\nsecret: {}", t.id, key.kid, key.secret);
                    Ok(())
                }
                Err(Error::Client(p)) if p.code == ErrorCode::TenantExists && if_missing => {
                    let t = store
                        .find_tenant(&cred, &id)
                        .await?
                        .context("tenant vanished")?;
                    let kid = t
                        .current_key()
                        .map(|k| k.kid.as_str())
                        .unwrap_or("(no active key)");
                    println!("tenant: {} (exists)\nkid: {kid}", t.id);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Token(args) => {
            let id = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let principal = match (&args.user, args.server) {
                (Some(u), false) => Principal::User(
                    ExternalUserId::parse(u).map_err(|e| anyhow::anyhow!("--user: {e}"))?,
                ),
                (None, true) => Principal::Server,
                _ => bail!("give exactly one of --user or --server"),
            };
            let store = Store::open(&settings).await?;
            let key = current_key(&store, &settings, id).await?;
            println!(
                "{}",
                auth::mint(&key, &principal, args.ttl.as_secs(), &settings.auth)?
            );
            Ok(())
        }
        Command::DashboardLink(args) => {
            let id = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let store = connect(&settings).await?;
            let key = current_key(&store, &settings, id.clone()).await?;
            let cred = operator(&settings)?;
            let roster = crate::service::Roster::new(
                store.clone(),
                crate::service::Limits::from(&settings),
                settings.media.clone(),
            )
            .with_settings(&settings);
            let body = crate::service::dashboard::DashboardLinkBody {
                scope: Some(if args.read {
                    crate::service::dashboard::DashboardScope::Read
                } else {
                    crate::service::dashboard::DashboardScope::Admin
                }),
                user_id: args.user,
                ..Default::default()
            };
            let link = roster
                .create_dashboard_link(
                    &cred.tenant_scope(id),
                    &key.kid,
                    body,
                    &format!("http://{}", settings.http.bind),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", link.url);
            Ok(())
        }
        Command::AdminLink => {
            let store = connect(&settings).await?;
            let roster = crate::service::Roster::new(
                store,
                crate::service::Limits::from(&settings),
                settings.media.clone(),
            )
            .with_settings(&settings);
            let url = roster
                .create_platform_link(
                    &operator(&settings)?,
                    &format!("http://{}", settings.http.admin_bind),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{url}");
            Ok(())
        }
        Command::Demo {
            action: DemoAction::Load(args),
        } => {
            let store = connect(&settings).await?;
            crate::demo::load(&store, &operator(&settings)?, &args).await
        }
    }
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse()
        .map_err(|e: crate::domain::ids::InvalidId| e.0.to_owned())
}
