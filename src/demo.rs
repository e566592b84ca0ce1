//! `roster demo load`: fills a tenant with a realistic population through the store layer.
//!
//! Conversation sizes follow a heavy tail: most groups have 2–10 members, a tenth have
//! 100–1,000 (log-uniform), and one has `--largest` members (20,000 by default), so there must be
//! at least that many users. Roles: the first member owns the group, a few admins and
//! moderators, mostly members, some guests; a few members have left. Counts are exact.
//! Deterministic for a given `--seed`.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, bail};
use bson::DateTime;
use bson::oid::ObjectId;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use crate::auth::PlatformCredential;
use crate::domain::{
    ConversationType, ErrorCode, ExternalUserId, MemberStatus, Preset, RoleCatalog, RoleName,
    TenantId,
};
use crate::error::Error;
use crate::store::Store;
use crate::store::docs::{ConversationDoc, ConversationSettingsDoc, MemberDoc, UserDoc};
use crate::store::members::new_member_doc;

/// Options of `roster demo load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Tenant to fill (created if missing).
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// Number of users (at least --largest).
    #[arg(long, default_value_t = 25_000)]
    pub users: usize,
    /// Number of conversations.
    #[arg(long, default_value_t = 2_000)]
    pub conversations: usize,
    /// Members of the largest conversation.
    #[arg(long, default_value_t = 20_000)]
    pub largest: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const FIRST: &[&str] = &[
    "Ada", "Bo", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jun", "Kemal", "Lena",
    "Mei", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vik", "Wen", "Yara",
    "Zoe",
];
const LAST: &[&str] = &[
    "Adeyemi", "Berg", "Costa", "Dubois", "Eriksen", "Fujita", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kim", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Silva", "Tanaka",
    "Weber",
];
const TOPICS: &[&str] = &[
    "Design",
    "Backend",
    "Hiking",
    "Book club",
    "Parents",
    "Football",
    "Release",
    "Support",
    "Photography",
    "Cooking",
    "Launch",
    "Alumni",
];

/// Progress on stderr: a bar on a terminal, a structured log line every tenth otherwise
/// (CI logs, pipes).
struct Progress {
    bar: ProgressBar,
    total: u64,
    logged_tenths: u64,
    terminal: bool,
}

impl Progress {
    fn new(total: u64) -> anyhow::Result<Self> {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>13} [{bar:40}] {pos}/{len} documents ({per_sec}, eta {eta})",
            )
            .context("progress template")?
            .progress_chars("=> "),
        );
        Ok(Self {
            bar,
            total,
            logged_tenths: 0,
            terminal: std::io::stderr().is_terminal(),
        })
    }

    fn phase(&self, name: &'static str) {
        self.bar.set_message(name);
    }

    fn inc(&mut self, n: usize) {
        self.bar.inc(n as u64);
        let tenths = self.bar.position() * 10 / self.total.max(1);
        if !self.terminal && tenths > self.logged_tenths {
            self.logged_tenths = tenths;
            tracing::info!(done = self.bar.position(), total = self.total, phase = %self.bar.message(), "demo load progress");
        }
    }
}

/// The external id of demo user `i` (1-based): `user-00001`.
pub fn demo_user(i: usize) -> String {
    format!("user-{i:05}")
}

fn sizes(args: &LoadArgs, rng: &mut StdRng) -> Vec<usize> {
    let mut out = Vec::with_capacity(args.conversations);
    if args.conversations == 0 {
        return out;
    }
    out.push(args.largest);
    for _ in 1..args.conversations {
        let size = if rng.random_bool(0.10) {
            // log-uniform 100..=1000
            (100f64 * 10f64.powf(rng.random::<f64>())).round() as usize
        } else {
            // 2..=10, smaller more likely
            2 + (rng.random::<f64>().powi(2) * 9.0) as usize
        };
        out.push(size.min(args.users));
    }
    out
}

fn role_for(position: usize, rng: &mut StdRng) -> RoleName {
    let name = if position == 0 {
        "owner"
    } else {
        match rng.random_range(0..100) {
            0..=2 => "admin",
            3..=6 => "moderator",
            7..=11 => "guest",
            _ => "member",
        }
    };
    RoleName::parse(name).unwrap_or_else(|_| unreachable!("chat preset role names are valid"))
}

/// Loads the demo population into `args.tenant`, showing progress on stderr and printing a
/// summary. Errors: the tenant already holds demo users, fewer users than `--largest`.
pub async fn load(store: &Store, cred: &PlatformCredential, args: &LoadArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    if args.users < args.largest {
        bail!(
            "--users ({}) must be at least --largest ({})",
            args.users,
            args.largest
        );
    }
    let catalog = RoleCatalog::preset(Preset::Chat);
    match store.create_tenant(cred, &tenant, "Demo", &catalog).await {
        Ok(_)
        | Err(Error::Client(crate::error::Problem {
            code: ErrorCode::TenantExists,
            ..
        })) => {}
        Err(e) => return Err(e.into()),
    }
    let scope = cred.tenant_scope(tenant.clone());
    let first = ExternalUserId::parse(&demo_user(1)).context("demo user id")?;
    if store.find_user(&scope, &first).await?.is_some() {
        bail!("tenant `{tenant}` already holds demo users; load into another --tenant");
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let now = DateTime::now();
    let sizes = sizes(args, &mut rng);
    let total_members: usize = sizes.iter().sum();
    let mut bar = Progress::new((args.users + total_members) as u64)?;

    bar.phase("users");
    let mut users = Vec::with_capacity(args.users);
    for i in 1..=args.users {
        let name = format!(
            "{} {}",
            FIRST[rng.random_range(0..FIRST.len())],
            LAST[rng.random_range(0..LAST.len())]
        );
        users.push(UserDoc {
            id: ObjectId::new(),
            tenant_id: tenant.as_str().to_owned(),
            external_id: demo_user(i),
            display_name: name,
            avatar_url: rng
                .random_bool(0.6)
                .then(|| format!("https://avatars.example.com/{}.png", demo_user(i))),
            created_at: now,
            updated_at: now,
        });
    }
    for chunk in users.chunks(1_000) {
        store.import_users(&scope, chunk).await?;
        bar.inc(chunk.len());
    }

    bar.phase("memberships");
    let (mut present_total, mut largest_id) = (0usize, None);
    let mut batch: Vec<MemberDoc> = Vec::with_capacity(2_000);
    // Conversations go in unordered batches too, each before the first of its members.
    let mut convs: Vec<ConversationDoc> = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let conv_id = ObjectId::new();
        largest_id.get_or_insert(conv_id);
        let picked = sample(&mut rng, users.len(), *size);
        let mut present = 0i64;
        let mut members = Vec::with_capacity(*size);
        for (pos, ui) in picked.iter().enumerate() {
            let user = &users[ui];
            let mut m = new_member_doc(
                &scope,
                conv_id,
                user,
                &catalog,
                &role_for(pos, &mut rng),
                None,
                now,
            );
            if pos > 0 && rng.random_bool(0.03) {
                m.status = MemberStatus::Left;
                m.departure.left_at = Some(now);
            } else {
                present += 1;
            }
            members.push(m);
        }
        present_total += present as usize;
        let name = format!("{} #{}", TOPICS[n % TOPICS.len()], n + 1);
        let conv = ConversationDoc {
            event_seq: 0,
            id: conv_id,
            tenant_id: tenant.as_str().to_owned(),
            kind: ConversationType::Group,
            name_key: Some(crate::domain::search::sort_key(&name, conv_id)),
            name,
            description: None,
            avatar_url: None,
            created_by: members.first().map(|m| m.user_id),
            member_count: present,
            last_message_at: None,
            participants: (present <= store.embed_threshold())
                .then(|| crate::store::participants::summary_of(&members)),
            activity_fanout_pending: None,
            deleting_at: None,
            settings: ConversationSettingsDoc {
                join_policy: "invite".into(),
                max_members: 100_000,
            },
            created_at: now,
            updated_at: now,
        };
        convs.push(conv);
        for m in members {
            batch.push(m);
            if batch.len() == 2_000 {
                // Conversations first, so an interrupted load leaves no member without one.
                store.import_conversations(&scope, &convs).await?;
                convs.clear();
                store.import_members(&scope, &batch).await?;
                bar.inc(batch.len());
                batch.clear();
            }
        }
    }
    store.import_conversations(&scope, &convs).await?;
    store.import_members(&scope, &batch).await?;
    bar.inc(batch.len());
    bar.bar.finish_with_message("done");

    let secs = started.elapsed().as_secs_f64();
    println!(
        "tenant {tenant}: {} users, {} conversations, {} memberships ({} present), largest conversation {} with {} members; {:.1}s ({:.0} documents/s)",
        args.users,
        sizes.len(),
        total_members,
        present_total,
        largest_id.map(|i| i.to_hex()).unwrap_or_default(),
        sizes.first().copied().unwrap_or(0),
        secs,
        (args.users + total_members) as f64 / secs.max(0.001),
    );
    Ok(())
}
