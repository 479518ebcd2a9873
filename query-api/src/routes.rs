//! The route table: every query-API route with who may call it. The router
//! is built from this table and the access check runs from it, so the
//! permission matrix in docs/api.md (generated from it, see the test below)
//! is the one the server enforces.
//!
//! | access | who |
//! | --- | --- |
//! | `Public` | anyone (probes, scrapers, sign-in, signed webhooks) |
//! | `Role(r)` | a key or JWT of the organization with role ≥ `r` |
//! | `Platform` | the platform-admin token, or an MSP organization's admin (for its children) |

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use control::Role;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::Schema;

use crate::state::AppState;
use crate::{
    alerts, analysis, audit, billing, dashboard, data, detections, insights, intel, notify, orgs,
    reports, sql, sql_alerts, stripe_out, usage,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Role(Role),
    Platform,
}

impl Access {
    /// Whether a caller of `role` in an organization passes.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Role(min) => role >= min,
            Access::Platform => false,
        }
    }
}

/// One route: what the router serves and what the docs, the OpenAPI
/// document and the tests read.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub handler: MethodRouter<AppState>,
    /// The success status (200; 201 for creations; 204 without a body).
    pub success: u16,
    /// The JSON request body's schema, when the route takes one.
    pub body: Option<fn() -> RefOr<Schema>>,
    /// Query parameters, declared by the type the handler reads them into.
    pub query: fn() -> Vec<Parameter>,
    /// Media types of the success answer (JSON unless stated).
    pub produces: &'static [&'static str],
}

fn ep(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Endpoint {
    let success = if method == Method::DELETE { 204 } else { 200 };
    Endpoint {
        method,
        path,
        access,
        summary,
        handler,
        success,
        body: None,
        query: Vec::new,
        produces: &["application/json"],
    }
}

impl Endpoint {
    fn created(mut self) -> Self {
        self.success = 201;
        self
    }

    fn accepted(mut self) -> Self {
        self.success = 202;
        self
    }

    fn no_content(mut self) -> Self {
        self.success = 204;
        self
    }

    fn body<T: utoipa::PartialSchema>(mut self) -> Self {
        self.body = Some(T::schema);
        self
    }

    /// The query parameters, from the struct the handler reads them into.
    fn params<T: utoipa::IntoParams>(mut self) -> Self {
        self.query = || T::into_params(|| Some(ParameterIn::Query));
        self
    }

    /// Query parameters declared by a function (the listings, whose
    /// filters come from their table definitions).
    fn query(mut self, params: fn() -> Vec<Parameter>) -> Self {
        self.query = params;
        self
    }

    fn produces(mut self, media: &'static [&'static str]) -> Self {
        self.produces = media;
        self
    }
}

const VIEWER: Access = Access::Role(Role::Viewer);
const MEMBER: Access = Access::Role(Role::Member);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every tenant route of the query API (the operational routes — health,
/// `/metrics` — are in [`crate::ops_router`], public on every role).
#[rustfmt::skip]
pub fn table() -> Vec<Endpoint> {
    use Method as M;
    vec![
        ep(M::POST, "/api/auth/token", Access::Public, "exchange an email and password, or an API key, for a JWT", post(orgs::token)).body::<orgs::TokenRequest>(),
        ep(M::GET, "/api/orgs", Access::Platform, "list organizations (platform admin: all; MSP admin: its children)", get(orgs::list_orgs)),
        ep(M::POST, "/api/orgs", Access::Platform, "create an organization (platform admin; MSP admin: a child)", post(orgs::create_org)).created().body::<orgs::NewOrg>(),
        ep(M::PATCH, "/api/orgs/{id}", Access::Platform, "an organization's own limits and overage (platform admin only)", patch(orgs::set_terms)).body::<orgs::Terms>(),
        ep(M::PUT, "/api/orgs/{id}/markup", Access::Platform, "a child organization's reseller markup on its invoices (its MSP's admin, or the platform admin)", put(orgs::set_markup)).body::<orgs::Markup>(),
        ep(M::GET, "/api/orgs/current", VIEWER, "the caller's organization, plan and limits", get(orgs::current)),
        ep(M::GET, "/api/orgs/current/branding", VIEWER, "white-label branding: the organization's own and the one its notifications carry", get(orgs::branding)),
        ep(M::PUT, "/api/orgs/current/branding", ADMIN, "set white-label branding (enterprise and MSP plans)", put(orgs::set_branding)).body::<control::branding::Branding>(),
        ep(M::DELETE, "/api/orgs/current/branding", ADMIN, "remove the organization's own branding", delete(orgs::clear_branding)),
        ep(M::GET, "/api/orgs/current/api-keys", ADMIN, "list API keys (never their secrets)", get(orgs::list_keys)),
        ep(M::POST, "/api/orgs/current/api-keys", ADMIN, "issue an API key, shown once", post(orgs::create_key)).created().body::<orgs::NewKey>(),
        ep(M::DELETE, "/api/orgs/current/api-keys/{id}", ADMIN, "revoke an API key", delete(orgs::revoke_key)),
        ep(M::GET, "/api/orgs/current/users", ADMIN, "list users and their roles", get(orgs::list_users)),
        ep(M::POST, "/api/orgs/current/users", ADMIN, "add a user (email, password, role)", post(orgs::create_user)).created().body::<orgs::NewUser>(),
        ep(M::DELETE, "/api/orgs/current/users/{id}", ADMIN, "remove a user; their tokens stop working", delete(orgs::delete_user)),
        ep(M::GET, "/api/audit-log", ADMIN, "the audit log of mutating calls", get(audit::list)).params::<audit::AuditParams>(),
        ep(M::GET, "/api/billing/plans", VIEWER, "the plan catalogue", get(billing::plans)),
        ep(M::GET, "/api/billing/current-plan", VIEWER, "the current subscription", get(billing::current_plan)),
        ep(M::GET, "/api/billing/usage", VIEWER, "usage per day and month", get(usage::billing_usage)).params::<usage::UsageParams>(),
        ep(M::GET, "/api/billing/limits/check", VIEWER, "usage against the plan's limits", get(billing::limits_check)).params::<billing::LimitParams>(),
        ep(M::POST, "/api/billing/upgrade", ADMIN, "change plan (effective now, prorated by day)", post(billing::change_plan)).body::<billing::PlanChange>(),
        ep(M::GET, "/api/billing/invoices", VIEWER, "invoices per month: base price and overage, in cents", get(billing::invoices)).params::<billing::InvoiceParams>(),
        ep(M::GET, "/api/billing/invoices/consolidated", ADMIN, "an MSP's month: its own invoice and one line per child at cost, markup and billed (reseller)", get(billing::consolidated)).params::<billing::InvoiceParams>(),
        ep(M::GET, "/api/billing/invoices/{number}", VIEWER, "one invoice by number (SN-YYYYMM-<org>), as JSON or PDF", get(billing::invoice_document)).params::<billing::DocumentParams>().produces(&["application/json", "application/pdf"]),
        ep(M::GET, "/api/billing/stripe", ADMIN, "what SecureNet sent Stripe: plan changes and invoices, each request recorded", get(stripe_out::calls)),
        ep(M::GET, "/api/reports/compliance", ADMIN, "the month's compliance report as HTML, PDF or JSON (business plan and up)", get(reports::compliance)).params::<reports::ReportParams>().produces(&["text/html", "application/pdf", "application/json"]),
        ep(M::POST, "/api/billing/webhook/stripe", Access::Public, "Stripe events (Stripe-Signature verified)", post(billing::stripe_webhook)),
        ep(M::GET, "/api/metrics/system", ADMIN, "CPU, memory, disk and connections of this process and host", get(dashboard::system)),
        ep(M::GET, "/api/metrics/organization", VIEWER, "devices, scans, anomalies and security score", get(dashboard::organization)),
        ep(M::GET, "/api/metrics/security", VIEWER, "vulnerabilities by severity and the threat level", get(dashboard::security)),
        ep(M::GET, "/api/metrics/dashboard", VIEWER, "everything a dashboard needs in one call", get(dashboard::dashboard)),
        ep(M::GET, "/api/logs", VIEWER, "logs, newest first (cursor pages, filters)", get(data::logs)).query(data::logs_params),
        ep(M::DELETE, "/api/devices/{id}", ADMIN, "retire a device: it stops counting against the limit until seen again", delete(data::retire_device)),
        ep(M::GET, "/api/devices", VIEWER, "device observations, newest first", get(data::devices)).query(data::devices_params),
        ep(M::GET, "/api/scans", VIEWER, "scans, newest first", get(data::scans)).query(data::scans_params),
        ep(M::GET, "/api/findings", VIEWER, "findings, newest first (severity, ip, port, cve...)", get(data::findings)).query(data::findings_params),
        ep(M::GET, "/api/metrics/usage/export", VIEWER, "usage export as CSV, JSON or Parquet", get(usage::export)).params::<usage::UsageParams>().produces(&["text/csv", "application/json", "application/vnd.apache.parquet"]),
        ep(M::GET, "/api/insights/models", VIEWER, "models and training sessions", get(insights::list)),
        ep(M::POST, "/api/insights/models/upload-training-data", MEMBER, "upload CSV or JSON training data", post(insights::upload).layer(axum::extract::DefaultBodyLimit::max(insights::MAX_UPLOAD_BYTES,))).created().params::<insights::UploadParams>(),
        ep(M::POST, "/api/insights/models/train", MEMBER, "queue a training job (202 with the session to poll)", post(insights::train)).accepted().body::<insights::TrainRequest>(),
        ep(M::GET, "/api/insights/models/training-sessions/{id}", VIEWER, "a training session (poll a queued training)", get(insights::training_session)),
        ep(M::POST, "/api/insights/models/{id}/predict", VIEWER, "predictions with confidence scores", post(insights::predict)).body::<insights::PredictRequest>(),
        ep(M::POST, "/api/insights/summary", VIEWER, "log summary for a time range (log templates, new templates, anomalies)", post(analysis::summary)).body::<analysis::RangeRequest>().produces(&["application/json", "text/plain"]),
        ep(M::POST, "/api/insights/threat-analysis", VIEWER, "risk per entity with its reasons", post(analysis::threat_analysis)).body::<analysis::RangeRequest>(),
        ep(M::GET, "/api/insights/recommendations", VIEWER, "security recommendations with evidence", get(analysis::recommendations)),
        ep(M::GET, "/api/anomalies", VIEWER, "anomalies (cursor pages, filters)", get(alerts::anomalies)).params::<alerts::AnomalyParams>(),
        ep(M::GET, "/api/detections", VIEWER, "what Sigma rules matched in the stream (cursor pages, filters)", get(detections::list)).params::<detections::DetectionParams>(),
        ep(M::GET, "/api/detections/rules", VIEWER, "Sigma rules: the organization's own, its MSP's pack, the operator's", get(detections::list_rules)),
        ep(M::POST, "/api/detections/rules", MEMBER, "upload a Sigma rule (YAML); an MSP's scope children pushes it to its children", post(detections::create_rule)).created().body::<detections::NewRule>(),
        ep(M::GET, "/api/detections/rules/{id}", VIEWER, "one rule with its YAML", get(detections::get_rule)),
        ep(M::PATCH, "/api/detections/rules/{id}", MEMBER, "enable or disable one of the organization's own rules", patch(detections::set_rule)).body::<detections::RuleChange>(),
        ep(M::DELETE, "/api/detections/rules/{id}", MEMBER, "delete one of the organization's own rules", delete(detections::delete_rule)),
        ep(M::POST, "/api/detections/rules/{id}/test", VIEWER, "backtest: the rule over stored logs of a time range, as the stream runs it", post(detections::test_rule)).body::<detections::BacktestRequest>(),
        ep(M::GET, "/api/detections/intel", VIEWER, "threat-intel lists (name, level, indicators)", get(intel::lists)),
        ep(M::PUT, "/api/detections/intel/{name}", MEMBER, "upload a threat-intel list (CSV, JSON or a STIX bundle), replacing one of that name", put(intel::put_list).layer(axum::extract::DefaultBodyLimit::max(intel::MAX_UPLOAD_BYTES))).params::<intel::IntelParams>(),
        ep(M::GET, "/api/detections/intel/{name}", VIEWER, "one threat-intel list with its indicators", get(intel::get_list)),
        ep(M::DELETE, "/api/detections/intel/{name}", MEMBER, "delete a threat-intel list", delete(intel::delete_list)),
        ep(M::GET, "/api/detections/alerts", VIEWER, "scheduled SQL alerts, with their last run", get(sql_alerts::list)),
        ep(M::POST, "/api/detections/alerts", MEMBER, "save a query with a schedule, a condition on its value and a severity", post(sql_alerts::create)).created().body::<sql_alerts::NewAlert>(),
        ep(M::GET, "/api/detections/alerts/{id}", VIEWER, "one SQL alert and its last run", get(sql_alerts::get_alert)),
        ep(M::PATCH, "/api/detections/alerts/{id}", MEMBER, "enable or disable a SQL alert", patch(sql_alerts::set)).body::<sql_alerts::AlertChange>(),
        ep(M::DELETE, "/api/detections/alerts/{id}", MEMBER, "delete a SQL alert", delete(sql_alerts::delete)),
        ep(M::GET, "/api/notifications", VIEWER, "notifications (severity, read/unread)", get(alerts::notifications)).params::<alerts::NotificationParams>(),
        ep(M::POST, "/api/notifications/{id}/read", MEMBER, "mark a notification read", post(alerts::mark_read)).no_content(),
        ep(M::GET, "/api/notifications/channels", ADMIN, "notification channels (webhook, email)", get(notify::list_channels)),
        ep(M::POST, "/api/notifications/channels", ADMIN, "add a channel; a webhook's signing secret is shown once", post(notify::create_channel)).created().body::<notify::NewChannel>(),
        ep(M::DELETE, "/api/notifications/channels/{id}", ADMIN, "remove a channel", delete(notify::delete_channel)),
        ep(M::POST, "/api/notifications/channels/{id}/test", ADMIN, "send a test notification now", post(notify::test_channel)),
        ep(M::GET, "/api/notifications/deliveries", ADMIN, "the delivery log (attempts, status, errors)", get(notify::deliveries)).params::<notify::DeliveryParams>(),
        ep(M::POST, "/api/sql", VIEWER, "DataFusion SQL over the organization's tables", post(sql::handler)).body::<sql::SqlRequest>().params::<sql::FormatParam>().produces(&["application/json", "text/csv", "application/vnd.apache.arrow.stream"]),
    ]
}

/// The permission matrix as a markdown table (docs/api.md holds a copy; a
/// test keeps them equal).
pub fn permission_matrix() -> String {
    let mut out = String::from(
        "| method | route | viewer | member | admin | scope |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for e in table() {
        let cell = |r: Role| if e.access.allows(r) { "yes" } else { "403" };
        let other = match e.access {
            Access::Public => "public",
            Access::Role(_) => "own org only",
            Access::Platform => "platform admin / MSP admin",
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            e.method,
            e.path,
            cell(Role::Viewer),
            cell(Role::Member),
            cell(Role::Admin),
            other
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_hold_the_enforced_permission_matrix() {
        let docs = include_str!("../../docs/api.md");
        let matrix = permission_matrix();
        assert!(
            docs.contains(&matrix),
            "docs/api.md is out of date; paste this permission matrix into it:\n{matrix}"
        );
    }

    /// The per-section route tables of docs/api.md (`| \`POST /path…\` |
    /// role | what |`) name the role the route table enforces (one said
    /// viewer for marking a notification read, which needs member).
    #[test]
    fn docs_route_tables_name_the_enforced_role() {
        let docs = include_str!("../../docs/api.md");
        let routes = table();
        let mut checked = 0;
        for line in docs.lines() {
            let Some(rest) = line.strip_prefix("| `") else {
                continue;
            };
            // The route cell may hold an escaped `\|`: it ends at "` |".
            let Some((route, cells)) = rest.split_once("` |") else {
                continue;
            };
            let role = cells.split('|').next().unwrap_or_default();
            let Some((method, path)) = route.split_once(' ') else {
                continue;
            };
            let path = path.split(['?', '[']).next().unwrap();
            let Some(e) = routes
                .iter()
                .find(|e| e.method.as_str() == method && e.path == path)
            else {
                continue;
            };
            let documented = role.trim();
            let enforced = match e.access {
                Access::Public => "public",
                Access::Platform => "platform",
                Access::Role(Role::Viewer) => "viewer",
                Access::Role(Role::Member) => "member",
                Access::Role(Role::Admin) => "admin",
            };
            assert!(
                documented.starts_with(enforced),
                "docs/api.md says {documented:?} for {method} {path}; the route table enforces {enforced}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} documented routes found");
    }

    #[test]
    fn routes_are_unique() {
        let t = table();
        let mut seen = std::collections::HashSet::new();
        for e in &t {
            assert!(
                seen.insert((e.method.clone(), e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
        }
    }
}
