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
//! de-duplicated through a map, and the devices they name are looked up
//! and written a few hundred per statement (a 40,000-device inventory was
//! quadratic and re-prepared each statement, holding the store for
//! 30–60 s; a statement per device would still be tens of thousands of
//! round trips to PostgreSQL).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{Param, Tx, params};
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
    pub async fn admit_scan(
        &self,
        org: &Organization,
        scan_id: &str,
        content_hash: &str,
        seen: &[DeviceObservation],
        at_ms: i64,
    ) -> Result<ScanAdmission> {
        let month = month_of(at_ms);
        let mut tx = self.db.begin().await?;
        // The limit checks read before they write: one inventory of an
        // organization at a time (on PostgreSQL, across processes).
        tx.lock_org(&org.id).await?;
        // Recorded first, and undone with the rest if the request is
        // refused: on PostgreSQL a concurrent delivery of the same scan
        // waits here for this one, then reads it as a replay instead of
        // failing on the primary key.
        let new_scan = tx
            .execute(
                "INSERT INTO scans (org_id, scan_id, month, received_at, content_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (org_id, scan_id) DO NOTHING",
                params![org.id, scan_id, month, at_ms, content_hash],
            )
            .await?
            > 0;
        if !new_scan {
            let stored: Option<String> = tx
                .query_opt(
                    "SELECT content_hash FROM scans WHERE org_id = ?1 AND scan_id = ?2",
                    params![org.id, scan_id],
                )
                .await?
                .map(|r| r.get::<Option<String>>(0))
                .transpose()?
                .flatten();
            if stored.as_deref() != Some(content_hash) {
                return Err(Error::Conflict {
                    what: "scan (a different report already used this scan_id; send it with a new scan_id)",
                    id: scan_id.to_string(),
                });
            }
        }
        // This month's scans, this one included.
        let count = read_count(
            tx.query_opt(
                "SELECT COUNT(*) FROM scans WHERE org_id = ?1 AND month = ?2",
                params![org.id, month],
            )
            .await?,
        )?;
        let before = count.saturating_sub(u64::from(new_scan));
        let limit = org.limits.max_scans_per_month;
        if new_scan && before >= limit && !org.allow_overage {
            return Err(Error::PlanLimit(format!(
                "scan limit reached: the {} plan allows {limit} scans per month and {} has run {before} in {month}; \
                 upgrade the plan or enable overage billing",
                org.plan, org.id
            )));
        }
        let devices = upsert(&mut tx, org, seen, at_ms).await?;
        tx.commit().await?;
        Ok(ScanAdmission {
            new_scan,
            scans_this_month: count,
            devices,
        })
    }

    /// Upserts devices from an inventory, enforcing the devices limit.
    pub async fn upsert_devices(
        &self,
        org: &Organization,
        seen: &[DeviceObservation],
        at_ms: i64,
    ) -> Result<Vec<Device>> {
        let mut tx = self.db.begin().await?;
        tx.lock_org(&org.id).await?;
        let devices = upsert(&mut tx, org, seen, at_ms).await?;
        tx.commit().await?;
        Ok(devices)
    }

    /// Devices that count against `org`'s limit in the billing month of
    /// `at_ms`: seen that month and not retired. (Billing counts the same:
    /// distinct devices seen in the month.)
    pub async fn device_count(&self, org: &Organization, at_ms: i64) -> Result<u64> {
        read_count(
            self.db
                .query_opt(
                    "SELECT COUNT(*) FROM devices WHERE org_id = ?1 AND retired_at IS NULL \
                     AND last_seen >= ?2",
                    params![org.id, month_start_ms(at_ms)],
                )
                .await?,
        )
    }

    /// Retires a device: it stops counting against the limit until it is
    /// seen again (a later scan or inventory brings it back).
    pub async fn retire_device(&self, org: &TenantId, device_id: &str, at_ms: i64) -> Result<()> {
        let n = self
            .db
            .execute(
                "UPDATE devices SET retired_at = COALESCE(retired_at, ?3) \
                 WHERE org_id = ?1 AND device_id = ?2",
                params![org, device_id, at_ms],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "device",
                id: device_id.to_string(),
            });
        }
        Ok(())
    }

    /// Scans recorded for `org` in the month of `at_ms`.
    pub async fn scans_in_month(&self, org: &Organization, at_ms: i64) -> Result<u64> {
        read_count(
            self.db
                .query_opt(
                    "SELECT COUNT(*) FROM scans WHERE org_id = ?1 AND month = ?2",
                    params![org.id, month_of(at_ms)],
                )
                .await?,
        )
    }
}

/// The `COUNT(*)` a statement selects.
fn read_count(row: Option<crate::db::Row>) -> Result<u64> {
    Ok(match row {
        Some(r) => r.get::<u64>(0)?,
        None => 0,
    })
}

/// Devices per multi-row statement: a chunk of lookups or of writes (9
/// values a device) stays far below both backends' limits on parameters
/// (SQLite 32,766, PostgreSQL 65,535).
const CHUNK: usize = 500;

/// `n` numbered placeholders from `?first`: `?2, ?3, ?4`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored device.
#[derive(Clone)]
struct StoredDevice {
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

const DEVICE_COLUMNS: &str =
    "device_id, ip, mac, hostname, os, vendor, first_seen, last_seen, retired_at";

impl StoredDevice {
    /// A row of [`DEVICE_COLUMNS`].
    fn read(r: &crate::db::Row) -> Result<Self> {
        Ok(StoredDevice {
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
    }
}

/// `org`'s devices whose `column` (`mac` or `ip`) is one of `values`.
async fn devices_where(
    tx: &mut Tx<'_>,
    org: &str,
    column: &str,
    values: &[&str],
) -> Result<Vec<StoredDevice>> {
    let mut found = Vec::new();
    for chunk in values.chunks(CHUNK) {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = ?1 AND {column} IN ({})",
            placeholders(2, chunk.len())
        );
        let mut params = Vec::with_capacity(1 + chunk.len());
        params.push(Param::Text(Some(org)));
        params.extend(chunk.iter().map(|v| Param::Text(Some(*v))));
        for r in tx.query(&sql, &params).await? {
            found.push(StoredDevice::read(&r)?);
        }
    }
    Ok(found)
}

/// The stored device each observation is: the one with its MAC when it has
/// one; else (or when no device has that MAC) the most recently seen one
/// at its IP, unless that device is known by another MAC (the IP moved).
async fn find(
    tx: &mut Tx<'_>,
    org: &str,
    plan: &[DeviceObservation],
) -> Result<Vec<Option<StoredDevice>>> {
    let macs: Vec<&str> = plan.iter().filter_map(|ob| ob.mac.as_deref()).collect();
    let mut by_mac: HashMap<String, StoredDevice> = HashMap::new();
    for d in devices_where(tx, org, "mac", &macs).await? {
        if let Some(mac) = d.mac.clone() {
            by_mac.entry(mac).or_insert(d);
        }
    }
    let mut ips: Vec<&str> = plan
        .iter()
        .filter(|ob| ob.mac.as_ref().is_none_or(|m| !by_mac.contains_key(m)))
        .filter_map(|ob| ob.ip.as_deref())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    let mut by_ip: HashMap<String, Vec<StoredDevice>> = HashMap::new();
    for d in devices_where(tx, org, "ip", &ips).await? {
        if let Some(ip) = d.ip.clone() {
            by_ip.entry(ip).or_default().push(d);
        }
    }
    for at_ip in by_ip.values_mut() {
        at_ip.sort_by_key(|d| std::cmp::Reverse(d.last_seen));
    }
    Ok(plan
        .iter()
        .map(|ob| {
            if let Some(d) = ob.mac.as_ref().and_then(|m| by_mac.get(m)) {
                return Some(d.clone());
            }
            by_ip
                .get(ob.ip.as_ref()?)?
                .iter()
                .find(|d| d.mac.is_none() || ob.mac.is_none() || d.mac == ob.mac)
                .cloned()
        })
        .collect())
}

/// Writes `devices`, `CHUNK` per statement: inserted when `known` is
/// false; else each (at most once) replaces its stored row and is no
/// longer retired.
async fn write(tx: &mut Tx<'_>, org: &str, devices: &[&Device], known: bool) -> Result<()> {
    const UPDATE: &str = " ON CONFLICT (org_id, device_id) DO UPDATE SET ip = excluded.ip, \
         mac = excluded.mac, hostname = excluded.hostname, os = excluded.os, \
         vendor = excluded.vendor, first_seen = excluded.first_seen, \
         last_seen = excluded.last_seen, retired_at = NULL";
    for chunk in devices.chunks(CHUNK) {
        let rows = (0..chunk.len())
            .map(|i| format!("(?1, {})", placeholders(2 + i * 8, 8)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO devices (org_id, device_id, ip, mac, hostname, os, vendor, first_seen, \
             last_seen) VALUES {rows}{}",
            if known { UPDATE } else { "" }
        );
        let mut params = Vec::with_capacity(1 + chunk.len() * 8);
        params.push(Param::Text(Some(org)));
        for d in chunk {
            params.extend_from_slice(params![
                d.device_id,
                d.ip,
                d.mac,
                d.hostname,
                d.os,
                d.vendor,
                d.first_seen,
                d.last_seen
            ]);
        }
        tx.execute(&sql, &params).await?;
    }
    Ok(())
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
async fn upsert(
    tx: &mut Tx<'_>,
    org: &Organization,
    seen: &[DeviceObservation],
    at_ms: i64,
) -> Result<Vec<Device>> {
    let org_id = org.id.as_str();
    let mut observed: Vec<DeviceObservation> = Vec::new();
    let mut index: HashMap<Identity, usize> = HashMap::new();
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
        index.insert(identity, observed.len());
        slot_of.push(observed.len());
        observed.push(ob);
    }
    let existing = find(tx, org_id, &observed).await?;
    let plan: Vec<(DeviceObservation, Option<StoredDevice>)> =
        observed.into_iter().zip(existing).collect();
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
        let current = read_count(
            tx.query_opt(
                "SELECT COUNT(*) FROM devices WHERE org_id = ?1 AND retired_at IS NULL \
                 AND last_seen >= ?2",
                params![org_id, month_start],
            )
            .await?,
        )?;
        let limit = org.limits.max_devices;
        if current.saturating_add(adding) > limit && !org.device_overage_allowed() {
            return Err(Error::PlanLimit(format!(
                "device limit reached: the {} plan allows {limit} devices a month, {} has {current} active this month and this request adds {adding}; \
                 retire devices no longer in use, upgrade the plan or enable overage billing",
                org.plan, org.id
            )));
        }
    }
    let mut unique = Vec::with_capacity(plan.len());
    for (ob, existing) in plan {
        unique.push(match existing {
            Some(row) => Device {
                device_id: row.device_id,
                ip: ob.ip.or(row.ip),
                mac: ob.mac.or(row.mac),
                hostname: ob.hostname.or(row.hostname),
                os: ob.os.or(row.os),
                vendor: ob.vendor.or(row.vendor),
                first_seen: row.first_seen.min(at_ms),
                last_seen: row.last_seen.max(at_ms),
                is_new: false,
            },
            None => Device {
                device_id: crate::ids::random_id("dev-"),
                ip: ob.ip,
                mac: ob.mac,
                hostname: ob.hostname,
                os: ob.os,
                vendor: ob.vendor,
                first_seen: at_ms,
                last_seen: at_ms,
                is_new: true,
            },
        });
    }
    // Two observations can be one stored device (one found by its MAC, the
    // other by its IP): it is written once, with the later observation's
    // values, as if each had been written in turn (PostgreSQL refuses to
    // upsert a row twice in one statement).
    let mut known: Vec<&Device> = Vec::new();
    let mut known_at: HashMap<&str, usize> = HashMap::new();
    for d in unique.iter().filter(|d| !d.is_new) {
        match known_at.entry(d.device_id.as_str()) {
            Entry::Occupied(at) => known[*at.get()] = d,
            Entry::Vacant(at) => {
                at.insert(known.len());
                known.push(d);
            }
        }
    }
    let fresh: Vec<&Device> = unique.iter().filter(|d| d.is_new).collect();
    write(tx, org_id, &known, true).await?;
    write(tx, org_id, &fresh, false).await?;
    Ok(slot_of.into_iter().map(|i| unique[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orgs::NewOrganization;
    use schemas::{Plan, TenantId};

    async fn org(store: &MetaStore, plan: Plan, overage: bool) -> Organization {
        store
            .create_organization(&NewOrganization {
                id: TenantId::new("acme").unwrap(),
                name: "Acme".into(),
                owner_email: "a@acme.test".into(),
                plan,
                parent_id: None,
                allow_overage: overage,
            })
            .await
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

    #[tokio::test]
    async fn upsert_by_mac_then_ip_keeps_first_seen() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Business, false).await;
        let first = store
            .upsert_devices(&o, &[ob("10.0.0.5", None)], 1_000)
            .await
            .unwrap();
        assert!(first[0].is_new);
        // Same IP, now with a MAC: same device, MAC learned.
        let second = store
            .upsert_devices(&o, &[ob("10.0.0.5", Some("AA-BB-CC-00-11-22"))], 2_000)
            .await
            .unwrap();
        assert_eq!(second[0].device_id, first[0].device_id);
        assert_eq!(second[0].mac.as_deref(), Some("aa:bb:cc:00:11:22"));
        assert_eq!((second[0].first_seen, second[0].last_seen), (1_000, 2_000));
        // Same MAC on a new IP: same device, IP updated.
        let third = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("aa:bb:cc:00:11:22"))], 3_000)
            .await
            .unwrap();
        assert_eq!(third[0].device_id, first[0].device_id);
        assert_eq!(third[0].ip.as_deref(), Some("10.0.0.9"));
        // The old IP now answering with another MAC is another device.
        let other = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("de:ad:be:ef:00:01"))], 4_000)
            .await
            .unwrap();
        assert!(other[0].is_new);
        assert_eq!(store.device_count(&o, 4_000).await.unwrap(), 2);
        // An older report does not move last_seen back.
        let old = store
            .upsert_devices(&o, &[ob("10.0.0.9", Some("aa:bb:cc:00:11:22"))], 500)
            .await
            .unwrap();
        assert_eq!((old[0].first_seen, old[0].last_seen), (500, 3_000));
    }

    #[tokio::test]
    async fn device_limit_names_limit_count_and_plan_and_changes_nothing() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Starter, false).await;
        let four: Vec<_> = (1..=4).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        store.upsert_devices(&o, &four, 1).await.unwrap();
        let three: Vec<_> = (4..=6).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let err = store
            .upsert_devices(&o, &three, 2)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "device limit reached: the starter plan allows 5 devices a month, acme has 4 active this month and this request adds 2; \
             retire devices no longer in use, upgrade the plan or enable overage billing"
        );
        assert_eq!(store.device_count(&o, 2).await.unwrap(), 4);
        // Known devices are always accepted.
        store.upsert_devices(&o, &four, 3).await.unwrap();
    }

    /// The limit is per billing month: devices seen in an earlier month do
    /// not block this month's, and a retired device frees its place until
    /// it is seen again.
    #[tokio::test]
    async fn devices_count_per_month_and_retired_ones_do_not_count() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Starter, false).await;
        let oct = 1_791_000_000_000; // 2026-10-03
        let nov = 1_795_687_200_000; // 2026-11-26
        let five: Vec<_> = (1..=5).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let devices = store.upsert_devices(&o, &five, oct).await.unwrap();
        let sixth = [ob("10.0.0.6", None)];
        assert!(store.upsert_devices(&o, &sixth, oct + 1).await.is_err());
        // A new month: October's devices do not count.
        assert_eq!(store.device_count(&o, nov).await.unwrap(), 0);
        store.upsert_devices(&o, &sixth, nov).await.unwrap();
        store.upsert_devices(&o, &five[..4], nov).await.unwrap();
        assert_eq!(store.device_count(&o, nov).await.unwrap(), 5);
        assert!(store.upsert_devices(&o, &five[4..], nov).await.is_err());
        // Retiring one makes room; seeing it again brings it back.
        store
            .retire_device(&o.id, &devices[0].device_id, nov)
            .await
            .unwrap();
        assert_eq!(store.device_count(&o, nov).await.unwrap(), 4);
        store.upsert_devices(&o, &five[4..], nov).await.unwrap();
        assert!(store.upsert_devices(&o, &five[..1], nov).await.is_err());
        assert!(matches!(
            store.retire_device(&o.id, "dev-nope", nov).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn scans_count_once_per_id_and_respect_the_monthly_limit() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Starter, false).await;
        let nov = 1_795_687_200_000; // 2026-11-26
        for i in 0..25 {
            assert!(
                store
                    .admit_scan(&o, &format!("s{i}"), "h", &[], nov)
                    .await
                    .unwrap()
                    .new_scan
            );
        }
        let replay = store.admit_scan(&o, "s3", "h", &[], nov).await.unwrap();
        assert!(!replay.new_scan);
        assert_eq!(replay.scans_this_month, 25);
        let err = store
            .admit_scan(&o, "s25", "h", &[], nov)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("scan limit reached: the starter plan allows 25 scans per month and acme has run 25 in 2026-11"), "{err}");
        // A new month starts from zero.
        assert!(
            store
                .admit_scan(&o, "s25", "h", &[], nov + 10 * 86_400_000)
                .await
                .unwrap()
                .new_scan
        );
    }

    #[tokio::test]
    async fn overage_accepts_beyond_the_limits() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Starter, true).await;
        let many: Vec<_> = (1..=8).map(|i| ob(&format!("10.0.0.{i}"), None)).collect();
        let mut twice = many.clone();
        twice.push(many[0].clone());
        let a = store.admit_scan(&o, "x", "h", &twice, 1).await.unwrap();
        assert_eq!(a.devices.len(), 9, "one device per observation");
        assert_eq!(a.devices[8].device_id, a.devices[0].device_id);
        assert_eq!(store.device_count(&o, 1).await.unwrap(), 8);
    }

    /// A used scan id with another report is refused, never overwritten;
    /// the same report again is a replay counted once.
    #[tokio::test]
    async fn a_scan_id_belongs_to_one_report() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Starter, false).await;
        let first = store
            .admit_scan(&o, "weekly", "h1", &[ob("10.0.0.1", None)], 1)
            .await
            .unwrap();
        assert!(first.new_scan);
        let replay = store
            .admit_scan(&o, "weekly", "h1", &[ob("10.0.0.1", None)], 2)
            .await
            .unwrap();
        assert!(!replay.new_scan);
        assert_eq!(replay.scans_this_month, 1);
        let other = store
            .admit_scan(&o, "weekly", "h2", &[ob("10.0.0.2", None)], 3)
            .await;
        assert!(matches!(other, Err(Error::Conflict { .. })), "{other:?}");
        // Nothing of the refused report was recorded.
        assert_eq!(store.device_count(&o, 3).await.unwrap(), 1);
    }

    /// Many devices in one request: one device per identity, in order.
    #[tokio::test]
    async fn a_large_inventory_is_one_device_per_identity() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Enterprise, true).await;
        let seen: Vec<DeviceObservation> = (0..20_000u32)
            .map(|i| {
                ob(
                    &format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                    None,
                )
            })
            .chain(std::iter::once(ob("10.0.0.0", None)))
            .collect();
        let devices = store.upsert_devices(&o, &seen, 1).await.unwrap();
        assert_eq!(devices.len(), 20_001);
        assert_eq!(devices[0].device_id, devices[20_000].device_id);
        assert_eq!(store.device_count(&o, 1).await.unwrap(), 20_000);
        // Sent again: the same devices, each seen later.
        let again = store.upsert_devices(&o, &seen, 2).await.unwrap();
        assert!(
            again
                .iter()
                .zip(&devices)
                .all(|(a, d)| a.device_id == d.device_id)
        );
        assert!(again.iter().all(|d| !d.is_new && d.last_seen == 2));
        assert_eq!(store.device_count(&o, 2).await.unwrap(), 20_000);
    }

    /// Two observations of one request can be one stored device (one found
    /// by its MAC, the other by its IP): it is written once, with the later
    /// observation's values, as when each was written in turn.
    #[tokio::test]
    async fn one_stored_device_observed_twice_in_a_request_is_written_once() {
        let store = crate::testing::store().await;
        let o = org(&store, Plan::Business, false).await;
        let first = store
            .upsert_devices(&o, &[ob("10.0.0.5", None)], 1)
            .await
            .unwrap();
        let by_ip = DeviceObservation {
            hostname: Some("printer".into()),
            ..ob("10.0.0.5", None)
        };
        let both = store
            .upsert_devices(&o, &[ob("10.0.0.5", Some("aa:bb:cc:00:11:22")), by_ip], 2)
            .await
            .unwrap();
        assert_eq!(both.len(), 2);
        assert!(
            both.iter()
                .all(|d| d.device_id == first[0].device_id && !d.is_new)
        );
        assert_eq!(both[0].mac.as_deref(), Some("aa:bb:cc:00:11:22"));
        let stored = store
            .db
            .query_opt(
                "SELECT hostname, last_seen FROM devices WHERE org_id = ?1 AND device_id = ?2",
                params![o.id, first[0].device_id],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.get::<Option<String>>(0).unwrap().as_deref(),
            Some("printer")
        );
        assert_eq!(stored.get::<i64>(1).unwrap(), 2);
        assert_eq!(store.device_count(&o, 2).await.unwrap(), 1);
    }
}
