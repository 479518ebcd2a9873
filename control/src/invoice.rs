//! Invoices in integer cents: pure maths over an organization's plan
//! history and its month's usage (no store access).
//!
//! Plan changes take effect immediately and the month is prorated by day:
//! a change on day *d* (UTC) bills the new plan from day *d* on, and the
//! day's plan is the last one chosen that day. Overage is counted against
//! the limits of the plan in effect on the period's last billed day: the
//! distinct devices seen in the month over its device limit at $5 each,
//! the scans in the month over its scan limit at $0.10 each.

use chrono::{DateTime, Datelike, Months, NaiveDate};
use schemas::Plan;
use schemas::plans::{DEVICE_OVERAGE_CENTS, SCAN_OVERAGE_CENTS};
use serde::{Deserialize, Serialize};

/// One plan held for a number of days of an invoice's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    pub quantity: u64,
    pub unit_cents: u64,
    pub amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub month: String,
    /// The plan billed for overage: the one on the last billed day.
    pub plan: Plan,
    pub lines: Vec<InvoiceLine>,
    pub base_cents: u64,
    pub overage_cents: u64,
    /// The reseller's markup (a child organization of an MSP), included in
    /// `total_cents`.
    pub markup_cents: u64,
    pub total_cents: u64,
    pub devices: u64,
    pub scans: u64,
}

/// An invoice's number: `SN-<YYYYMM>-<organization id>`, e.g.
/// `SN-202611-acme`. Derived, not allocated: every replica and every
/// restart gives an organization's month the same number without
/// coordinating, it is unique because organization ids are, and it tells
/// a reader whose month it is. `month` is `YYYY-MM`.
pub fn number(org: &schemas::TenantId, month: &str) -> String {
    format!("SN-{}-{}", month.replace('-', ""), org.as_str())
}

/// The month (`YYYY-MM`) and organization id an invoice number names, if it
/// is one of ours.
pub fn parse_number(number: &str) -> Option<(String, String)> {
    let rest = number.strip_prefix("SN-")?;
    let (month, org) = rest.split_once('-')?;
    if month.len() != 6 || !month.bytes().all(|b| b.is_ascii_digit()) || org.is_empty() {
        return None;
    }
    Some((format!("{}-{}", &month[..4], &month[4..]), org.to_string()))
}

fn day_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// Rounds `a / b` half up (integers only).
fn div_round(a: u64, b: u64) -> u64 {
    (2 * a + b) / (2 * b)
}

/// The invoice of the month starting `first` for an organization created at
/// `created_at` whose plan history is `history` (`(at ms, plan)`, oldest
/// first; the first entry is the plan it was created with). `None` when the
/// organization did not exist that month.
/// `terms` are the organization's own limits (an operator override),
/// applied over the billed plan's for overage.
pub fn compute_invoice(
    first: NaiveDate,
    created_at: i64,
    history: &[(i64, Plan)],
    devices: u64,
    scans: u64,
    terms: Option<&schemas::LimitsOverride>,
) -> Option<Invoice> {
    let next = first.checked_add_months(Months::new(1))?;
    let days_in_month = (next - first).num_days() as u64;
    let start = first.max(day_of(created_at));
    if start >= next || history.is_empty() {
        return None;
    }
    // Segments of consecutive days on one plan. A day is billed at the
    // highest-priced plan held at any moment of it (the plan at its start
    // and every plan changed to during it): using a plan's features for
    // part of a day and downgrading before midnight still pays that day.
    let mut segments: Vec<(Plan, u64)> = Vec::new();
    let mut day = start;
    while day < next {
        let day_start = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
        // In effect at 00:00:00.000 (a change at midnight sharp replaces
        // the previous plan for the whole day).
        let at_start = history
            .iter()
            .rev()
            .find(|(at, _)| *at <= day_start)
            .map_or(history[0].1, |(_, p)| *p);
        let plan = history
            .iter()
            .filter(|(at, _)| *at > day_start && day_of(*at) == day)
            .map(|(_, p)| *p)
            .chain(std::iter::once(at_start))
            .max_by_key(|p| p.price_cents())
            .unwrap_or(at_start);
        match segments.last_mut() {
            Some((p, n)) if *p == plan => *n += 1,
            _ => segments.push((plan, 1)),
        }
        day = day.succ_opt()?;
    }
    let mut lines: Vec<InvoiceLine> = segments
        .iter()
        .map(|&(plan, days)| InvoiceLine {
            description: format!("{plan} plan, {days} of {days_in_month} days"),
            quantity: days,
            unit_cents: plan.price_cents(),
            amount_cents: div_round(plan.price_cents() * days, days_in_month),
        })
        .collect();
    let base_cents = lines.iter().map(|l| l.amount_cents).sum();
    let plan = segments.last()?.0;
    let limits = plan.limits().with(terms);
    let mut overage_cents = 0;
    for (what, used, limit, unit) in [
        ("devices", devices, limits.max_devices, DEVICE_OVERAGE_CENTS),
        (
            "scans",
            scans,
            limits.max_scans_per_month,
            SCAN_OVERAGE_CENTS,
        ),
    ] {
        let over = used.saturating_sub(limit);
        if over > 0 {
            lines.push(InvoiceLine {
                description: format!("{what} over the {plan} limit of {limit}"),
                quantity: over,
                unit_cents: unit,
                amount_cents: over * unit,
            });
            overage_cents += over * unit;
        }
    }
    Some(Invoice {
        month: first.format("%Y-%m").to_string(),
        plan,
        lines,
        base_cents,
        overage_cents,
        markup_cents: 0,
        total_cents: base_cents + overage_cents,
        devices,
        scans,
    })
}

/// A child organization's invoice as its reseller (MSP) bills it: one more
/// line, `bps` basis points (1500 = 15.00 %) of the total at cost, rounded
/// half up to a cent.
pub fn with_markup(mut invoice: Invoice, bps: u32) -> Invoice {
    if bps == 0 {
        return invoice;
    }
    let amount = div_round(invoice.total_cents * u64::from(bps), 10_000);
    invoice.lines.push(InvoiceLine {
        description: format!("reseller markup {}.{:02} %", bps / 100, bps % 100),
        quantity: 1,
        unit_cents: amount,
        amount_cents: amount,
    });
    invoice.markup_cents = amount;
    invoice.total_cents += amount;
    invoice
}

/// The first day of the UTC month containing `ms`.
pub fn month_start(ms: i64) -> NaiveDate {
    let d = day_of(ms);
    d.with_day(1).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn ms(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn month(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_full_month_with_overage() {
        // Starter, all of November: $99 + 2 devices × $5 + 5 scans × $0.10.
        let inv = compute_invoice(
            month("2026-11"),
            ms("2026-10-03 09:00"),
            &[(ms("2026-10-03 09:00"), Plan::Starter)],
            7,
            30,
            None,
        )
        .unwrap();
        assert_eq!(inv.base_cents, 9_900);
        assert_eq!(inv.overage_cents, 1_000 + 50);
        assert_eq!(inv.total_cents, 10_950);
        assert_eq!(inv.lines.len(), 3);
    }

    #[test]
    fn the_first_month_is_prorated_from_the_day_of_creation() {
        // Created 16 November: 15 of 30 days of $299.
        let inv = compute_invoice(
            month("2026-11"),
            ms("2026-11-16 23:59"),
            &[(ms("2026-11-16 23:59"), Plan::Professional)],
            3,
            0,
            None,
        )
        .unwrap();
        assert_eq!(inv.base_cents, 14_950);
        assert_eq!(inv.total_cents, 14_950);
        assert_eq!(
            compute_invoice(
                month("2026-10"),
                ms("2026-11-16 23:59"),
                &[(0, Plan::Starter)],
                0,
                0,
                None
            ),
            None
        );
    }

    #[test]
    fn an_upgrade_mid_month_prorates_both_plans_and_uses_the_new_limits() {
        // Starter 1–10 November (10 days: 9900·10/30 = 3300), Business from
        // the 11th (20 days: 79900·20/30 = 53266.67 → 53267). 6 devices are
        // over Starter's 5 but within Business's 500: no overage.
        let history = [
            (ms("2026-10-01 00:00"), Plan::Starter),
            (ms("2026-11-11 08:30"), Plan::Business),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 6, 30, None).unwrap();
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [3_300, 53_267]
        );
        assert_eq!(
            (inv.base_cents, inv.overage_cents, inv.total_cents),
            (56_567, 0, 56_567)
        );
        assert_eq!(inv.plan, Plan::Business);
    }

    #[test]
    fn a_downgrade_in_february_bills_overage_on_the_lower_plan() {
        // MSP 1–14 February 2027 (14/28 of $2,999 = 149950), Enterprise from
        // the 15th (14/28 of $1,999 = 99950); 5,100 scans over Enterprise's
        // 5,000 = 100 × 10 cents.
        let history = [
            (ms("2026-01-01 00:00"), Plan::Msp),
            (ms("2027-02-15 00:00"), Plan::Enterprise),
        ];
        let inv =
            compute_invoice(month("2027-02"), history[0].0, &history, 900, 5_100, None).unwrap();
        assert_eq!(inv.base_cents, 149_950 + 99_950);
        assert_eq!(inv.overage_cents, 1_000);
        assert_eq!(inv.total_cents, 250_900);
    }

    #[test]
    fn an_operator_override_sets_the_limits_overage_is_counted_against() {
        let history = [(ms("2026-01-01 00:00"), Plan::Enterprise)];
        let terms = schemas::LimitsOverride {
            max_devices: Some(2_500),
            ..Default::default()
        };
        let inv = compute_invoice(
            month("2026-11"),
            history[0].0,
            &history,
            2_600,
            0,
            Some(&terms),
        )
        .unwrap();
        // 100 devices over the contract's 2,500 (not 1,600 over the plan's 1,000).
        assert_eq!(inv.overage_cents, 100 * 500);
    }

    #[test]
    fn a_day_with_several_plans_bills_the_highest() {
        let history = [
            (ms("2026-01-01 00:00"), Plan::Starter),
            (ms("2026-11-30 08:00"), Plan::Enterprise),
            (ms("2026-11-30 09:00"), Plan::Professional),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 0, 0, None).unwrap();
        // 29 days of 9900/30 = 9570, 1 day of 199900/30 = 6663.33 → 6663.
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [9_570, 6_663]
        );
        // Created on professional, downgraded to starter the same day: that
        // day is professional, the rest starter.
        let history = [
            (ms("2026-11-10 09:00"), Plan::Professional),
            (ms("2026-11-10 17:00"), Plan::Starter),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 0, 0, None).unwrap();
        // 1 day of 29900/30 = 996.67 → 997; 20 days of 9900/30 = 6600.
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [997, 6_600]
        );
        assert_eq!(inv.plan, Plan::Starter);
    }

    #[test]
    fn invoice_numbers_round_trip() {
        let org = schemas::TenantId::new("acme-eu_2").unwrap();
        let n = number(&org, "2026-11");
        assert_eq!(n, "SN-202611-acme-eu_2");
        assert_eq!(
            parse_number(&n),
            Some(("2026-11".to_string(), "acme-eu_2".to_string()))
        );
        for bad in [
            "",
            "SN-",
            "SN-2026-acme",
            "SN-20261a-acme",
            "XX-202611-acme",
            "SN-202611-",
        ] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_reseller_markup_is_one_line_rounded_half_up() {
        let first = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let created = first
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let at_cost =
            compute_invoice(first, created, &[(created, Plan::Starter)], 7, 30, None).unwrap();
        assert_eq!(at_cost.total_cents, 10_950);
        // 12.5 % of 10,950 = 1,368.75 → 1,369.
        let billed = with_markup(at_cost.clone(), 1_250);
        assert_eq!(billed.markup_cents, 1_369);
        assert_eq!(billed.total_cents, 12_319);
        assert_eq!(billed.base_cents, at_cost.base_cents);
        let line = billed.lines.last().unwrap();
        assert_eq!(line.description, "reseller markup 12.50 %");
        assert_eq!(line.amount_cents, 1_369);
        assert_eq!(with_markup(at_cost.clone(), 0), at_cost);
    }
}
