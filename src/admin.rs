//! `securenet orgs …` and `securenet keys …`: the control plane from the
//! command line, against the same metadata store `serve` uses (SQLite WAL
//! lets both run at once; PostgreSQL is shared anyway). A revocation applies
//! to the next request on SQLite, within `control.key_cache_ms` (5 s by
//! default) on PostgreSQL.

use anyhow::Context;
use control::{MetaStore, NewOrganization};
use schemas::TenantId;

use crate::cli::{KeysCommand, OrgsCommand};
use crate::config::Config;

/// Opens the metadata store the configuration names (a SQLite file,
/// created with its directory, or a PostgreSQL database).
pub async fn open_store(config: &Config) -> anyhow::Result<MetaStore> {
    let database = config.database();
    let shown = format!("{:?}", schemas::secret::DatabaseUrl::new(database.clone()));
    let is_file = !database.contains("://");
    if is_file && let Some(dir) = std::path::Path::new(&database).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut store = MetaStore::connect(&database)
        .await
        .with_context(|| format!("opening metadata store {shown}"))?;
    if let Some(ms) = config.control.key_cache_ms {
        store.set_key_cache_ttl(std::time::Duration::from_millis(ms));
    }
    Ok(store)
}

pub async fn orgs(config: &Config, command: OrgsCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        OrgsCommand::Create {
            org: id,
            name,
            owner_email,
            plan,
            parent,
            allow_overage,
        } => {
            let org = store
                .create_organization(&NewOrganization {
                    id: TenantId::new(&id)?,
                    name,
                    owner_email,
                    plan,
                    parent_id: parent.as_deref().map(TenantId::new).transpose()?,
                    allow_overage,
                })
                .await?;
            audit(&store, &org.id, "orgs create", format!("plan {}", org.plan)).await;
            println!("{}", serde_json::to_string_pretty(&org)?);
        }
        OrgsCommand::Update {
            org: id,
            max_devices,
            max_scans,
            retention_days,
            clear_limits,
            allow_overage,
        } => {
            let tenant = TenantId::new(&id)?;
            let limits = schemas::LimitsOverride {
                max_devices,
                max_scans_per_month: max_scans,
                log_retention_days: retention_days,
            };
            let limits = if clear_limits {
                Some(None)
            } else if limits.is_empty() {
                None
            } else {
                Some(Some(limits))
            };
            let org = store.set_terms(&tenant, limits, allow_overage).await?;
            audit(
                &store,
                &org.id,
                "orgs update",
                format!(
                    "limits {:?}, allow_overage {}",
                    org.limits, org.allow_overage
                ),
            )
            .await;
            println!("{}", serde_json::to_string_pretty(&org)?);
        }
        OrgsCommand::Delete { org: id } => {
            crate::maintain::delete_organization(config, &store, &TenantId::new(&id)?).await?;
        }
        OrgsCommand::List { json } => {
            let orgs = store.list_organizations().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&orgs)?);
            } else {
                println!("{:<24} {:<14} {:<32} NAME", "ID", "PLAN", "OWNER");
                for o in orgs {
                    println!(
                        "{:<24} {:<14} {:<32} {}",
                        o.id, o.plan, o.owner_email, o.name
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        KeysCommand::Create { org, name, role } => {
            let tenant = TenantId::new(&org)?;
            let key = store.create_key(&tenant, &name, role).await?;
            audit(
                &store,
                &tenant,
                "keys create",
                format!("key {} ({role})", key.id),
            )
            .await;
            eprintln!(
                "created key {} ({role}) for {org}; the secret below is shown only once",
                key.id
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { org, json } => {
            let keys = store.list_keys(&TenantId::new(&org)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<18} {:<8} {:<10} NAME", "ID", "ROLE", "STATE");
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{:<18} {:<8} {:<10} {}", k.id, k.role, state, k.name);
                }
            }
        }
        KeysCommand::Revoke { org, id } => {
            let tenant = TenantId::new(&org)?;
            store.revoke_key(&tenant, &id).await?;
            audit(&store, &tenant, "keys revoke", format!("key {id}")).await;
            eprintln!("revoked key {id} of {org}");
        }
    }
    Ok(())
}

/// Records a CLI action in the organization's audit log (the operator at
/// the shell is the actor: `cli:<user>`). A failure to record is reported,
/// not fatal: the action itself is done.
async fn audit(store: &MetaStore, org: &TenantId, command: &str, what: String) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let entry = control::audit::AuditEntry::system(
        org,
        format!("cli:{user}"),
        "platform",
        "CLI",
        &format!("securenet {command}"),
        what,
        0,
    );
    if let Err(e) = store.append_audit(&entry).await {
        eprintln!("securenet: the action was done but not recorded in the audit log: {e}");
    }
}
