//! Index specs are data: each `indexes/*.json` file is one `createIndexes` command (one per
//! collection). At boot they are compared with what exists and then applied; applying is
//! idempotent. An existing index that conflicts — same name with another definition, or same
//! key under another name — stops boot with an error naming it; nothing is dropped silently.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bson::{Bson, Document, doc};
use mongodb::Database;

/// The index spec files, compiled in so the binary works from any directory.
pub const SPEC_FILES: &[(&str, &str)] = &[
    (
        "group_members.json",
        include_str!("../../indexes/group_members.json"),
    ),
    ("users.json", include_str!("../../indexes/users.json")),
    ("tenants.json", include_str!("../../indexes/tenants.json")),
    (
        "audit_events.json",
        include_str!("../../indexes/audit_events.json"),
    ),
    (
        "conversations.json",
        include_str!("../../indexes/conversations.json"),
    ),
    (
        "message_reports.json",
        include_str!("../../indexes/message_reports.json"),
    ),
    (
        "media_files.json",
        include_str!("../../indexes/media_files.json"),
    ),
    (
        "event_outbox.json",
        include_str!("../../indexes/event_outbox.json"),
    ),
    ("events.json", include_str!("../../indexes/events.json")),
    ("webhooks.json", include_str!("../../indexes/webhooks.json")),
    (
        "invitations.json",
        include_str!("../../indexes/invitations.json"),
    ),
    (
        "join_requests.json",
        include_str!("../../indexes/join_requests.json"),
    ),
    (
        "invite_links.json",
        include_str!("../../indexes/invite_links.json"),
    ),
    (
        "idempotency_keys.json",
        include_str!("../../indexes/idempotency_keys.json"),
    ),
    (
        "erased_users.json",
        include_str!("../../indexes/erased_users.json"),
    ),
    (
        "platform_audit.json",
        include_str!("../../indexes/platform_audit.json"),
    ),
    (
        "webhook_deliveries.json",
        include_str!("../../indexes/webhook_deliveries.json"),
    ),
    (
        "media.chunks.json",
        include_str!("../../indexes/media.chunks.json"),
    ),
    (
        "media.files.json",
        include_str!("../../indexes/media.files.json"),
    ),
    (
        "dashboard_links.json",
        include_str!("../../indexes/dashboard_links.json"),
    ),
    (
        "dashboard_sessions.json",
        include_str!("../../indexes/dashboard_sessions.json"),
    ),
];

/// Collections read only by `_id` (no index file), created at boot so that transactions
/// never have to create them.
pub const PLAIN_COLLECTIONS: &[&str] = &["event_counters", "sweep_leases", "migrations"];

/// One parsed `createIndexes` command.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// The collection.
    pub collection: String,
    /// The index documents (`key`, `name`, options).
    pub indexes: Vec<Document>,
}

impl IndexSpec {
    /// Parses one `createIndexes` JSON document, keeping key order.
    /// Errors: malformed JSON or a missing `createIndexes`/`indexes`/`key`/`name`.
    pub fn parse(file: &Path, json: &str) -> anyhow::Result<IndexSpec> {
        let cmd: Document = serde_json::from_str(json)
            .with_context(|| format!("{}: not a JSON document", file.display()))?;
        let collection = cmd
            .get_str("createIndexes")
            .with_context(|| format!("{}: createIndexes", file.display()))?;
        let mut indexes = Vec::new();
        for (i, ix) in cmd
            .get_array("indexes")
            .with_context(|| format!("{}: indexes", file.display()))?
            .iter()
            .enumerate()
        {
            let ix = ix
                .as_document()
                .with_context(|| format!("{}: indexes[{i}] is not a document", file.display()))?;
            ix.get_document("key")
                .with_context(|| format!("{}: indexes[{i}].key", file.display()))?;
            ix.get_str("name")
                .with_context(|| format!("{}: indexes[{i}].name", file.display()))?;
            indexes.push(ix.clone());
        }
        Ok(IndexSpec {
            file: file.to_owned(),
            collection: collection.to_owned(),
            indexes,
        })
    }

    /// The compiled-in specs.
    pub fn builtin() -> anyhow::Result<Vec<IndexSpec>> {
        SPEC_FILES
            .iter()
            .map(|(name, json)| IndexSpec::parse(&Path::new("indexes").join(name), json))
            .collect()
    }
}

/// Index options that change behaviour and so must agree (others, such as `v` or `ns`, are ignored).
const SIGNIFICANT_OPTIONS: &[&str] = &[
    "unique",
    "sparse",
    "partialFilterExpression",
    "expireAfterSeconds",
    "collation",
    "hidden",
];

fn normalize_key(key: &Document) -> Vec<(String, Bson)> {
    key.iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::Int32(n) => Bson::Double(f64::from(*n)),
                Bson::Int64(n) => Bson::Double(*n as f64),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn options(ix: &Document) -> Vec<(String, Bson)> {
    SIGNIFICANT_OPTIONS
        .iter()
        .filter_map(|o| ix.get(*o).map(|v| (o.to_string(), v.clone())))
        .filter(|(o, v)| !(matches!(o.as_str(), "unique" | "hidden") && *v == Bson::Boolean(false)))
        .collect()
}

/// Checks `wanted` against `existing` indexes of a collection.
/// Errors: a same-name index with another key or options, or a same-key index under another name.
pub fn check_conflicts(
    collection: &str,
    existing: &[Document],
    wanted: &[Document],
) -> anyhow::Result<()> {
    for w in wanted {
        let name = w.get_str("name")?;
        let key = normalize_key(w.get_document("key")?);
        for e in existing {
            let e_name = e.get_str("name").unwrap_or_default();
            let e_key = e.get_document("key").map(normalize_key).unwrap_or_default();
            if e_name == name && (e_key != key || options(e) != options(w)) {
                bail!(
                    "index `{name}` on `{collection}` exists with a different definition ({e}); wanted ({w}). \
                     Drop or rename the existing index, then start again"
                );
            }
            if e_name != name && e_key == key {
                bail!(
                    "index `{e_name}` on `{collection}` has the key of `{name}` under another name; \
                     drop `{e_name}` (or rename it to `{name}`), then start again"
                );
            }
        }
    }
    Ok(())
}

async fn existing_indexes(db: &Database, collection: &str) -> anyhow::Result<Vec<Document>> {
    match db.run_command(doc! { "listIndexes": collection }).await {
        Ok(reply) => {
            let batch = reply.get_document("cursor")?.get_array("firstBatch")?;
            Ok(batch
                .iter()
                .filter_map(|b| b.as_document().cloned())
                .collect())
        }
        // NamespaceNotFound: the collection does not exist yet.
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("listing indexes of `{collection}`")),
    }
}

/// Applies every spec: checks for conflicts, then runs `createIndexes` (idempotent).
/// Returns the number of index definitions ensured.
pub async fn ensure(db: &Database, specs: &[IndexSpec]) -> anyhow::Result<usize> {
    let mut ensured = 0;
    for spec in specs {
        let existing = existing_indexes(db, &spec.collection).await?;
        check_conflicts(&spec.collection, &existing, &spec.indexes)
            .with_context(|| format!("{}", spec.file.display()))?;
        let indexes: Vec<Bson> = spec.indexes.iter().cloned().map(Bson::Document).collect();
        db.run_command(doc! { "createIndexes": &spec.collection, "indexes": indexes })
            .await
            .with_context(|| {
                format!(
                    "{}: createIndexes on `{}`",
                    spec.file.display(),
                    spec.collection
                )
            })?;
        ensured += spec.indexes.len();
        tracing::info!(collection = %spec.collection, indexes = spec.indexes.len(), "indexes ensured");
    }
    let present = db.list_collection_names().await?;
    for name in PLAIN_COLLECTIONS {
        if !present.iter().any(|p| p == name) {
            match db.create_collection(*name).await {
                Ok(()) => tracing::info!(collection = name, "collection created"),
                // Another instance created it in the meantime (NamespaceExists).
                Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 48) =>
                    {}
                Err(e) => return Err(e).with_context(|| format!("creating `{name}`")),
            }
        }
    }
    Ok(ensured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_specs_parse_and_keep_seed_004_key_order() {
        let specs = IndexSpec::builtin().unwrap();
        let members = specs
            .iter()
            .find(|s| s.collection == "group_members")
            .unwrap();
        let first = members.indexes[0].get_document("key").unwrap();
        let order: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(order, ["tenant_id", "conversation_id", "user_id"]);
        assert_eq!(members.indexes[0].get_bool("unique"), Ok(true));
    }

    #[test]
    fn a_same_name_index_with_another_key_is_a_conflict_naming_it() {
        let wanted = vec![doc! { "key": { "a": 1, "b": 1 }, "name": "ab" }];
        let existing = vec![doc! { "v": 2, "key": { "a": 1 }, "name": "ab" }];
        let err = check_conflicts("c", &existing, &wanted)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ab`"), "{err}");
    }

    #[test]
    fn a_same_key_index_under_another_name_or_uniqueness_is_a_conflict() {
        let wanted = vec![doc! { "key": { "a": 1 }, "name": "a_1", "unique": true }];
        let renamed = vec![doc! { "key": { "a": 1_i32 }, "name": "mine" }];
        assert!(
            check_conflicts("c", &renamed, &wanted)
                .unwrap_err()
                .to_string()
                .contains("`mine`")
        );
        let not_unique = vec![doc! { "key": { "a": 1_i32 }, "name": "a_1" }];
        assert!(check_conflicts("c", &not_unique, &wanted).is_err());
    }

    #[test]
    fn an_identical_existing_index_is_fine_whatever_its_number_type() {
        let wanted = vec![doc! { "key": { "a": 1_i64 }, "name": "a_1", "unique": true }];
        let existing = vec![doc! { "v": 2, "key": { "a": 1_i32 }, "name": "a_1", "unique": true }];
        check_conflicts("c", &existing, &wanted).unwrap();
    }
}
