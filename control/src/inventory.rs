//! Devices and scans per tenant, with the plan's limits.
//!
//! Devices are upserted by MAC when one is known, else by IP: a device seen
//! first by IP and later with its MAC stays one device; an IP that now
//! answers with a different MAC is a new device. `first_seen` never moves,
//! `last_seen` only forward. Scans count once per `scan_id` per month, so a
//! replayed report is neither refused nor counted twice; a scan id also
//! remembers the hash of the report it stored, so a *different* report
//! under a used id is refused ([`Error::Conflict`]) instead of overwriting
//! an acknowledged one. Limits are checked in the same transaction as the
//! writes: a refused request changes nothing.
//!
//! An upsert is linear in the devices it carries: observations are
//! de-duplicated through a map, and every statement is prepared once per
//! connection (a 40,000-device inventory was quadratic and re-prepared
//! each statement, holding the store for 30–60 s).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::orgs::Organization;
use crate::store::MetaStore;
use schemas::TenantId;

/// A device as a scan or an inventory reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceObservation {
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub vendor: Option<String>,
}

/// A device as tracked, after an upsert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub device_id: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub vendor: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    /// First seen in this request.
    pub is_new: bool,
}

/// What admitting a scan did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanAdmission {
    /// False when this scan id was already recorded (a replay).
    pub new_scan: bool,
    /// Scans this month, this one included.
    pub scans_this_month: u64,
    pub devices: Vec<Device>,
}

/// 00:00 UTC on the first day of `ms`'s month, in ms.
fn month_start_ms(ms: i64) -> i64 {
    use chrono::Datelike;
    let day = DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive();
    day.with_day(1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp_millis())
}

fn month_of(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m")
        .to_string()
}

/// `AA-BB-CC-00-11-22`, `aa:bb:cc:00:11:22`, `aabb.cc00.1122` (Cisco) and
/// `aabbcc001122` are one MAC: stored as `aa:bb:cc:00:11:22` so the upsert
/// matches whatever notation the next scanner uses.
fn normalize_mac(mac: &str) -> Result<String> {
    let hex: String = mac
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{mac:?} is not a MAC address (expected six hex octets such as aa:bb:cc:00:11:22)"
        )));
    }
    let hex = hex.to_ascii_lowercase();
    Ok((0..6)
        .map(|i| &hex[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join(":"))
}

/// Canonical text of an IPv4 or IPv6 address (`::ffff:10.0.0.1` stays IPv6).
fn normalize_ip(ip: &str) -> Result<String> {
    ip.trim()
        .parse::<std::net::IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| Error::Invalid(format!("{ip:?} is not an IP address")))
}

impl MetaStore {
    /// Records a scan and upserts the devices it saw, enforcing the scans
    /// per month and devices limits of `org`'s plan (unless it allows
    /// overage).
    /// `content_hash` identifies the report: the same id with the same
    /// report is a replay (admitted, counted once); with another report it
    /// is a conflict.
    pub fn admit_scan(
        &self,
        org: &Organization,
        scan_id: &str,
        content_hash: &str,
        seen: &[DeviceObservation],
        at_ms: i64,
    ) -> Result<ScanAdmission> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let month = month_of(at_ms);
        let stored: Option<Option<String>> = tx
            .query_row(
                "SELECT content_hash FROM scans WHERE org_id = ?1 AND scan_id = ?2",
                params![org.id.as_str(), scan_id],
                |r| r.get(0),
            )
            .optional()?;
        let known = match stored {
            None => false,
            Some(Some(h)) if h == content_hash => true,
            Some(_) => {
                return Err(Error::Conflict {
                    what: "scan (a different report already used this scan_id; send it with a new scan_id)",
                    id: scan_id.to_string(),
                });
            }
        };
        let count: u64 = tx.query_row(
            "SELECT COUNT(*) FROM scans WHERE org_id = ?1 AND month = ?2",
            params![org.id.as_str(), month],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let limit = org.limits.max_scans_per_month;
        if !known && count >= limit && !org.allow_overage {
            return Err(Error::PlanLimit(format!(
                "scan limit reached: the {} plan allows {limit} scans per month and {} has run {count} in {month}; \
                 upgrade the plan or enable overage billing",
                org.plan, org.id
            )));
        }
        if !known {
            tx.execute(
                "INSERT INTO scans (org_id, scan_id, month, received_at, content_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org.id.as_str(), scan_id, month, at_ms, content_hash],
            )?;
        }
        let devices = upsert(&tx, org, seen, at_ms)?;
        tx.commit()?;
        Ok(ScanAdmission {
            new_scan: !known,
            scans_this_month: count + u64::from(!known),
            devices,
        })
    }

    /// Upserts devices from an inventory, enforcing the devices limit.
    pub fn upsert_devices(
        &self,
        org: &Organization,
        seen: &[DeviceObservation],
        at_ms: i64,
    ) -> Result<Vec<Device>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let devices = upsert(&tx, org, seen, at_ms)?;
        tx.commit()?;
        Ok(devices)
    }

    /// Devices that count against `org`'s limit in the billing month of
    /// `at_ms`: seen that month and not retired. (Billing counts the same:
    /// distinct devices seen in the month.)
    pub fn device_count(&self, org: &Organization, at_ms: i64) -> Result<u64> {
        Ok(self.read().query_row(
            "SELECT COUNT(*) FROM devices WHERE org_id = ?1 AND retired_at IS NULL \
             AND last_seen >= ?2",
            params![org.id.as_str(), month_start_ms(at_ms)],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Retires a device: it stops counting against the limit until it is
    /// seen again (a later scan or inventory brings it back).
    pub fn retire_device(&self, org: &TenantId, device_id: &str, at_ms: i64) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE devices SET retired_at = COALESCE(retired_at, ?3) \
             WHERE org_id = ?1 AND device_id = ?2",
            params![org.as_str(), device_id, at_ms],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "device",
                id: device_id.to_string(),
            });
        }
        Ok(())
    }

    /// Scans recorded for `org` in the month of `at_ms`.
    pub fn scans_in_month(&self, org: &Organization, at_ms: i64) -> Result<u64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM scans WHERE org_id = ?1 AND month = ?2",
            params![org.id.as_str(), month_of(at_ms)],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

/// A stored device.
struct Row {
    device_id: String,
    ip: Option<String>,
    mac: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    vendor: Option<String>,
    first_seen: i64,
    last_seen: i64,
    retired_at: Option<i64>,
}

fn find(tx: &Transaction<'_>, org: &str, ob: &DeviceObservation) -> Result<Option<Row>> {
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok(Row {
            device_id: r.get(0)?,
            ip: r.get(1)?,
            mac: r.get(2)?,
            hostname: r.get(3)?,
            os: r.get(4)?,
            vendor: r.get(5)?,
            first_seen: r.get(6)?,
            last_seen: r.get(7)?,
            retired_at: r.get(8)?,
        })
    };
    if let Some(mac) = &ob.mac {
        let by_mac = tx
            .prepare_cached(
                "SELECT device_id, ip, mac, hostname, os, vendor, first_seen, last_seen, retired_at \
                 FROM devices WHERE org_id = ?1 AND mac = ?2",
            )?
            .query_row(params![org, mac], row)
            .optional()?;
        if by_mac.is_some() {
            return Ok(by_mac);
        }
    }
    let Some(ip) = &ob.ip else { return Ok(None) };
    // By IP, unless that device is known by another MAC (the IP moved).
    let by_ip = tx
        .prepare_cached(
            "SELECT device_id, ip, mac, hostname, os, vendor, first_seen, last_seen, retired_at \
             FROM devices WHERE org_id = ?1 AND ip = ?2 \
             AND (mac IS NULL OR ?3 IS NULL OR mac = ?3) ORDER BY last_seen DESC LIMIT 1",
        )?
        .query_row(params![org, ip, ob.mac], row)
        .optional()?;
    Ok(by_ip)
}

/// What makes two observations of one request the same device: the MAC
/// when known, else the IP among MAC-less observations.
#[derive(Hash, PartialEq, Eq)]
enum Identity {
    Mac(String),
    Ip(String),
}

/// Upserts `seen`; returns one device per observation, in order (the same
/// device reported twice in one request is one device, returned twice).
fn upsert(
    tx: &Transaction<'_>,
    org: &Organization,
    seen: &[DeviceObservation],
    at_ms: i64,
) -> Result<Vec<Device>> {
    let org_id = org.id.as_str();
    let mut plan: Vec<(DeviceObservation, Option<Row>)> = Vec::new();
    let mut index: std::collections::HashMap<Identity, usize> = std::collections::HashMap::new();
    let mut slot_of = Vec::with_capacity(seen.len());
    for ob in seen {
        let present = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let ob = DeviceObservation {
            mac: present(&ob.mac).as_deref().map(normalize_mac).transpose()?,
            ip: present(&ob.ip).as_deref().map(normalize_ip).transpose()?,
            ..ob.clone()
        };
        let identity = match (&ob.mac, &ob.ip) {
            (Some(mac), _) => Identity::Mac(mac.clone()),
            (None, Some(ip)) => Identity::Ip(ip.clone()),
            (None, None) => {
                return Err(Error::Invalid(
                    "a device needs an ip or a mac address".into(),
                ));
            }
        };
        if let Some(&i) = index.get(&identity) {
            slot_of.push(i);
            continue;
        }
        let existing = find(tx, org_id, &ob)?;
        index.insert(identity, plan.len());
        slot_of.push(plan.len());
        plan.push((ob, existing));
    }
    // What counts against the limit this month: devices seen this month and
    // not retired. This request adds the ones that are new, retired, or not
    // yet seen this month.
    let month_start = month_start_ms(at_ms);
    let adding = plan
        .iter()
        .filter(|(_, e)| {
            e.as_ref()
                .is_none_or(|d| d.retired_at.is_some() || d.last_seen < month_start)
        })
        .count() as u64;
    if adding > 0 {
        let current: u64 = tx.query_row(
            "SELECT COUNT(*) FROM devices WHERE org_id = ?1 AND retired_at IS NULL \
             AND last_seen >= ?2",
            params![org_id, month_start],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let limit = org.limits.max_devices;
        if current.saturating_add(adding) > limit && !org.allow_overage {
            return Err(Error::PlanLimit(format!(
                "device limit reached: the {} plan allows {limit} devices a month, {} has {current} active this month and this request adds {adding}; \
                 retire devices no longer in use, upgrade the plan or enable overage billing",
                org.plan, org.id
            )));
        }
    }
    let mut update = tx.prepare_cached(
        "UPDATE devices SET ip = ?3, mac = ?4, hostname = ?5, os = ?6, vendor = ?7, \
         first_seen = ?8, last_seen = ?9, retired_at = NULL WHERE org_id = ?1 AND device_id = ?2",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO devices (org_id, device_id, ip, mac, hostname, os, vendor, first_seen, last_seen) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut unique = Vec::with_capacity(plan.len());
    for (ob, existing) in plan {
        let device = match existing {
            Some(row) => {
                let d = Device {
                    device_id: row.device_id,
                    ip: ob.ip.or(row.ip),
                    mac: ob.mac.or(row.mac),
                    hostname: ob.hostname.or(row.hostname),
                    os: ob.os.or(row.os),
                    vendor: ob.vendor.or(row.vendor),
                    first_seen: row.first_seen.min(at_ms),
                    last_seen: row.last_seen.max(at_ms),
                    is_new: false,
                };
                update.execute(params![
                    org_id,
                    d.device_id,
                    d.ip,
                    d.mac,
                    d.hostname,
                    d.os,
                    d.vendor,
                    d.first_seen,
                    d.last_seen
                ])?;
                d
            }
            None => {
                let d = Device {
                    device_id: crate::ids::random_id("dev-"),
                    ip: ob.ip,
                    mac: ob.mac,
                    hostname: ob.hostname,
                    os: ob.os,
                    vendor: ob.vendor,
                    first_seen: at_ms,
                    last_seen: at_ms,
                    is_new: true,
                };
                insert.execute(params![
                    org_id,
                    d.device_id,
                    d.ip,
                    d.mac,
                    d.hostname,
                    d.os,
                    d.vendor,
                    d.first_seen,
                    d.last_seen
                ])?;
                d
            }
        };
        unique.push(device);
    }
    Ok(slot_of.into_iter().map(|i| unique[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orgs::NewOrganization;
    use schemas::{Plan, TenantId};

    fn org(store: &MetaStore, plan: Plan, overage: bool) -> Organization {
        store
            .create_organization(&NewOrganization {
                id: TenantId::new("acme").unwrap(),
                name: "Acme".into(),
                owner_email: "a@acme.test".into(),
                plan,
                parent_id: None,
                allow_overage: overage,
            })
            .unwrap()
    }

    #[test]
    fn addresses_are_validated_and_canonical() {
        for mac in [
            "AA-BB-CC-00-11-22",
            "aa:bb:cc:00:11:22",
            "aabb.cc00.1122",
            "AABBCC001122",
        ] {
            assert_eq!(normalize_mac(mac).unwrap(), "aa:bb:cc:00:11:22", "{mac}");
        }
        for bad in ["aa:bb:cc", "zz:bb:cc:00:11:22", "aa:bb:cc:00:11:22:33"] {
            assert!(normalize_mac(bad).unwrap_err().to_string().contains(bad));
        }
        assert_eq!(normalize_ip(" 10.0.0.1 ").unwrap(), "10.0.0.1");
        assert_eq!(normalize_ip("2001:DB8::1").unwrap(), "2001:db8::1");
        assert!(normalize_ip("300.1.1.1").is_err());
    }

    fn ob(ip: &str, mac: Option<&str>) -> DeviceObservation {
        DeviceObservation {
            ip: Some(ip.into()),
            mac: mac.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn upsert_by_mac_then_ip_keeps_first_seen() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Business, false);
        let first = store
            .upsert_devices(&o, &[ob("10.0.0.5", None)], 1_000)
            .unwrap();
        assert!(first[0].is_new);
        // Same IP, now with a MAC: same device, MAC learned.
        let second = store
            .upsert_devices(&o, &[ob("10.0.0.5", Some("AA-BB-CC-00-11-22"))], 2_000)
            .unwrap();
        assert_eq!(second[0].device_id, first[0].device_id);
        assert_eq!(second[0].mac.as_deref(), Some("aa:bb:cc:00:11:22"));
        assert_eq!((second[0].first_seen, second[0].last_seen), (1_000, 2_000));
        // Same MAC on a new IP: same device, IP updated.
        let third = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("aa:bb:cc:00:11:22"))], 3_000)
            .unwrap();
        assert_eq!(third[0].device_id, first[0].device_id);
        assert_eq!(third[0].ip.as_deref(), Some("10.0.0.9"));
        // The old IP now answering with another MAC is another device.
        let other = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("de:ad:be:ef:00:01"))], 4_000)
            .unwrap();
        assert!(other[0].is_new);
        assert_eq!(store.device_count(&o, 4_000).unwrap(), 2);
        // An older report does not move last_seen back.
        let old = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("aa:bb:cc:00:11:22"))], 500)
            .unwrap();
        assert_eq!((old[0].first_seen, old[0].last_seen), (500, 3_000));
    }

    #[test]
    fn device_limit_names_limit_count_and_plan_and_changes_nothing() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Starter, false);
        let four: Vec<_> = (1..=4).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        store.upsert_devices(&o, &four, 1).unwrap();
        let three: Vec<_> = (4..=6).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let err = store.upsert_devices(&o, &three, 2).unwrap_err().to_string();
        assert_eq!(
            err,
            "device limit reached: the starter plan allows 5 devices a month, acme has 4 active this month and this request adds 2; \
             retire devices no longer in use, upgrade the plan or enable overage billing"
        );
        assert_eq!(store.device_count(&o, 2).unwrap(), 4);
        // Known devices are always accepted.
        store.upsert_devices(&o, &four, 3).unwrap();
    }

    /// The limit is per billing month: devices seen in an earlier month do
    /// not block this month's, and a retired device frees its place until
    /// it is seen again.
    #[test]
    fn devices_count_per_month_and_retired_ones_do_not_count() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Starter, false);
        let oct = 1_791_000_000_000; // 2026-10-03
        let nov = 1_795_687_200_000; // 2026-11-26
        let five: Vec<_> = (1..=5).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let devices = store.upsert_devices(&o, &five, oct).unwrap();
        let sixth = [ob("10.0.0.6", None)];
        assert!(store.upsert_devices(&o, &sixth, oct + 1).is_err());
        // A new month: October's devices do not count.
        assert_eq!(store.device_count(&o, nov).unwrap(), 0);
        store.upsert_devices(&o, &sixth, nov).unwrap();
        store.upsert_devices(&o, &five[..4], nov).unwrap();
        assert_eq!(store.device_count(&o, nov).unwrap(), 5);
        assert!(store.upsert_devices(&o, &five[4..], nov).is_err());
        // Retiring one makes room; seeing it again brings it back.
        store
            .retire_device(&o.id, &devices[0].device_id, nov)
            .unwrap();
        assert_eq!(store.device_count(&o, nov).unwrap(), 4);
        store.upsert_devices(&o, &five[4..], nov).unwrap();
        assert!(store.upsert_devices(&o, &five[..1], nov).is_err());
        assert!(matches!(
            store.retire_device(&o.id, "dev-nope", nov),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn scans_count_once_per_id_and_respect_the_monthly_limit() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Starter, false);
        let nov = 1_795_687_200_000; // 2026-11-26
        for i in 0..25 {
            assert!(
                store
                    .admit_scan(&o, &format!("s{i}"), "h", &[], nov)
                    .unwrap()
                    .new_scan
            );
        }
        let replay = store.admit_scan(&o, "s3", "h", &[], nov).unwrap();
        assert!(!replay.new_scan);
        assert_eq!(replay.scans_this_month, 25);
        let err = store
            .admit_scan(&o, "s25", "h", &[], nov)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("scan limit reached: the starter plan allows 25 scans per month and acme has run 25 in 2026-11"), "{err}");
        // A new month starts from zero.
        assert!(
            store
                .admit_scan(&o, "s25", "h", &[], nov + 10 * 86_400_000)
                .unwrap()
                .new_scan
        );
    }

    #[test]
    fn overage_accepts_beyond_the_limits() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Starter, true);
        let many: Vec<_> = (1..=8).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let mut twice = many.clone();
        twice.push(many[0].clone());
        let a = store.admit_scan(&o, "x", "h", &twice, 1).unwrap();
        assert_eq!(a.devices.len(), 9, "one device per observation");
        assert_eq!(a.devices[8].device_id, a.devices[0].device_id);
        assert_eq!(store.device_count(&o, 1).unwrap(), 8);
    }

    /// A used scan id with another report is refused, never overwritten;
    /// the same report again is a replay counted once.
    #[test]
    fn a_scan_id_belongs_to_one_report() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Starter, false);
        let first = store
            .admit_scan(&o, "weekly", "h1", &[ob("10.0.0.1", None)], 1)
            .unwrap();
        assert!(first.new_scan);
        let replay = store
            .admit_scan(&o, "weekly", "h1", &[ob("10.0.0.1", None)], 2)
            .unwrap();
        assert!(!replay.new_scan);
        assert_eq!(replay.scans_this_month, 1);
        let other = store.admit_scan(&o, "weekly", "h2", &[ob("10.0.0.2", None)], 3);
        assert!(matches!(other, Err(Error::Conflict { .. })), "{other:?}");
        // Nothing of the refused report was recorded.
        assert_eq!(store.device_count(&o, 3).unwrap(), 1);
    }

    /// Many devices in one request: one device per identity, in order.
    #[test]
    fn a_large_inventory_is_one_device_per_identity() {
        let store = MetaStore::open_in_memory().unwrap();
        let o = org(&store, Plan::Enterprise, true);
        let seen: Vec<DeviceObservation> = (0..20_000u32)
            .map(|i| {
                ob(
                    &format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                    None,
                )
            })
            .chain(std::iter::once(ob("10.0.0.0", None)))
            .collect();
        let devices = store.upsert_devices(&o, &seen, 1).unwrap();
        assert_eq!(devices.len(), 20_001);
        assert_eq!(devices[0].device_id, devices[20_000].device_id);
        assert_eq!(store.device_count(&o, 1).unwrap(), 20_000);
    }
}
