//! `securenet orgs …` and `securenet keys …`: the control plane from the
//! command line, against the same metadata store `serve` uses (SQLite WAL
//! lets both run at once; revocations apply to the next request).

use anyhow::Context;
use control::{MetaStore, NewOrganization};
use schemas::TenantId;

use crate::cli::{KeysCommand, OrgsCommand};
use crate::config::Config;

pub fn open_store(config: &Config) -> anyhow::Result<MetaStore> {
    let path = config.database_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    MetaStore::open(&path).with_context(|| format!("opening metadata store {}", path.display()))
}

pub fn orgs(config: &Config, command: OrgsCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        OrgsCommand::Create {
            org: id,
            name,
            owner_email,
            plan,
            parent,
            allow_overage,
        } => {
            let org = store.create_organization(&NewOrganization {
                id: TenantId::new(&id)?,
                name,
                owner_email,
                plan,
                parent_id: parent.as_deref().map(TenantId::new).transpose()?,
                allow_overage,
            })?;
            audit(&store, &org.id, "orgs create", format!("plan {}", org.plan));
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
            let org = store.set_terms(&tenant, limits, allow_overage)?;
            audit(
                &store,
                &org.id,
                "orgs update",
                format!(
                    "limits {:?}, allow_overage {}",
                    org.limits, org.allow_overage
                ),
            );
            println!("{}", serde_json::to_string_pretty(&org)?);
        }
        OrgsCommand::Delete { org: id } => {
            crate::maintain::delete_organization(config, &store, &TenantId::new(&id)?)?;
        }
        OrgsCommand::List { json } => {
            let orgs = store.list_organizations()?;
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

pub fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        KeysCommand::Create { org, name, role } => {
            let tenant = TenantId::new(&org)?;
            let key = store.create_key(&tenant, &name, role)?;
            audit(
                &store,
                &tenant,
                "keys create",
                format!("key {} ({role})", key.id),
            );
            eprintln!(
                "created key {} ({role}) for {org}; the secret below is shown only once",
                key.id
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { org, json } => {
            let keys = store.list_keys(&TenantId::new(&org)?)?;
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
            store.revoke_key(&tenant, &id)?;
            audit(&store, &tenant, "keys revoke", format!("key {id}"));
            eprintln!("revoked key {id} of {org}");
        }
    }
    Ok(())
}

/// Records a CLI action in the organization's audit log (the operator at
/// the shell is the actor: `cli:<user>`). A failure to record is reported,
/// not fatal: the action itself is done.
fn audit(store: &MetaStore, org: &TenantId, command: &str, what: String) {
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
    if let Err(e) = store.append_audit(&entry) {
        eprintln!("securenet: the action was done but not recorded in the audit log: {e}");
    }
}
