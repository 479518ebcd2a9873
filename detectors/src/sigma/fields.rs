//! Sigma field names → where a log record keeps them.
//!
//! A field is, in order: a column of the record of that name (any case;
//! `message`, `host`, `app`, `pid`, `severity`, `facility`, `msg_id`,
//! `source_ip`, `input`, `parse_status`); a column an alias names (the
//! taxonomy's and common shippers' spellings, [`FieldMap::default`]); or
//! else a key of the record's `structured_data` JSON object (where the
//! JSON receivers keep every field they do not map to a column, and syslog
//! keeps RFC 5424 structured data), tried as written and, for a dotted
//! name, as a path into nested objects. An alias may name several keys:
//! the first present in a record is used. Keyword searches (lists of plain
//! values) match `message`.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Schema};

use super::rule::Search;

/// Where a Sigma field is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Column(String),
    /// Keys of `structured_data`, the first present wins.
    Json(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct FieldMap {
    /// The record columns a rule may name.
    columns: &'static [&'static str],
    /// Whether a name that is no column or alias is read from
    /// `structured_data` (logs) or refused at compile time (findings,
    /// which have no such column).
    json_fallback: bool,
    /// Lower-cased Sigma name → source.
    aliases: HashMap<String, Source>,
    keyword_field: String,
    /// `product:x`, `service:x`, `category:x` (lower case) → the search a
    /// record must pass for rules of that log source to see it, as YAML
    /// text (kept for the documentation table) and parsed.
    logsources: HashMap<String, (String, Search)>,
}

/// Which records rules of a log source see, by default: each entry is a
/// Sigma search (YAML) over the record's fields. A `logsource` term not
/// listed here (or in `[pipeline.rules.logsources]`) narrows nothing: a
/// rule missing records it should see is worse than one evaluated on
/// records it cannot match, so only terms a record identifies reliably
/// are listed — by program name (any shipper keeps it in `app`), facility,
/// or an access log's request method.
const LOGSOURCES: &[(&str, &str)] = &[
    // sshd, OpenSSH ≥ 9.8's sshd-session, journald's sshd.service.
    ("service:sshd", "{app|startswith: sshd}"),
    // Syslog's auth (4) and authpriv (10) facilities, or the programs
    // that log there when a shipper dropped the facility.
    (
        "service:auth",
        "[{facility: [4, 10]}, {app|startswith: sshd}, {app: [sudo, su, login, systemd-logind, passwd, useradd, usermod, userdel, groupadd, chpasswd, polkitd]}]",
    ),
    ("service:sudo", "{app: sudo}"),
    ("service:su", "{app: su}"),
    ("service:cron", "{app|startswith: cron}"),
    ("service:vsftpd", "{app: vsftpd}"),
    ("service:syslog", "{input|startswith: syslog_}"),
    // Access logs: a web server's or proxy's program name, or a request
    // method among the fields the HTTP receivers keep.
    (
        "category:webserver",
        "[{app: [nginx, apache, apache2, httpd, lighttpd, caddy, iis, w3svc, tomcat]}, {cs-method|exists: true}]",
    ),
    (
        "category:proxy",
        "[{app: [squid, haproxy, traefik, envoy, nginx]}, {cs-method|exists: true}]",
    ),
];

fn parse_logsource(term: &str, yaml: &str) -> super::SigmaResult<Search> {
    let body: serde_json::Value = serde_saphyr::from_str(yaml)
        .map_err(|e| super::SigmaError::new(format!("logsource {term:?}: not valid YAML: {e}")))?;
    let mut budget = super::rule::MAX_VALUES;
    super::rule::parse_search("logsource", &body, &mut budget)
        .map_err(|e| super::SigmaError::new(format!("logsource {term:?}: {}", e.0)))
}

/// Record columns a rule may name (the others are bookkeeping or bytes).
const COLUMNS: &[&str] = &[
    "message",
    "host",
    "app",
    "pid",
    "severity",
    "facility",
    "msg_id",
    "source_ip",
    "input",
    "parse_status",
    "source_country",
    "source_asn",
    "source_as_org",
];

impl Default for FieldMap {
    fn default() -> Self {
        let mut aliases = HashMap::new();
        let column = |aliases: &mut HashMap<String, Source>, column: &str, names: &[&str]| {
            for n in names {
                aliases.insert(n.to_string(), Source::Column(column.to_string()));
            }
        };
        column(
            &mut aliases,
            "message",
            &["msg", "log", "_raw", "event.original"],
        );
        column(
            &mut aliases,
            "host",
            &[
                "hostname",
                "host.name",
                "computer",
                "computername",
                "dvc",
                "dvchost",
            ],
        );
        column(
            &mut aliases,
            "app",
            &[
                "program",
                "appname",
                "app_name",
                "ident",
                "service",
                "process.name",
                "processname",
            ],
        );
        column(&mut aliases, "pid", &["procid", "processid", "process.pid"]);
        column(&mut aliases, "msg_id", &["msgid"]);
        column(
            &mut aliases,
            "source_ip",
            &[
                "src_ip",
                "srcip",
                "src",
                "client_ip",
                "clientip",
                "c-ip",
                "sourceip",
                "source.ip",
                "ipaddress",
                "ip",
            ],
        );
        let json = |aliases: &mut HashMap<String, Source>, names: &[&str], keys: &[&str]| {
            for n in names {
                aliases.insert(
                    n.to_string(),
                    Source::Json(keys.iter().map(|k| k.to_string()).collect()),
                );
            }
        };
        // Web server and proxy access logs (Sigma's webserver/proxy
        // taxonomy, W3C names) → the keys access-log shippers send.
        json(
            &mut aliases,
            &["cs-method", "http.request.method"],
            &[
                "method",
                "http.request.method",
                "request_method",
                "cs-method",
            ],
        );
        json(
            &mut aliases,
            &["c-uri", "cs-uri", "url.original", "url"],
            &["url", "uri", "path", "request", "url.original", "c-uri"],
        );
        json(
            &mut aliases,
            &["cs-uri-query", "url.query"],
            &["query", "query_string", "url.query", "cs-uri-query"],
        );
        json(
            &mut aliases,
            &["sc-status", "http.response.status_code"],
            &[
                "status",
                "status_code",
                "http.response.status_code",
                "sc-status",
            ],
        );
        json(
            &mut aliases,
            &["c-useragent", "cs-user-agent", "user_agent.original"],
            &[
                "user_agent",
                "useragent",
                "http_user_agent",
                "user_agent.original",
                "c-useragent",
            ],
        );
        json(
            &mut aliases,
            &["cs-referrer", "cs-referer", "http.request.referrer"],
            &["referer", "referrer", "http_referer", "cs-referrer"],
        );
        json(
            &mut aliases,
            &["cs-host", "url.domain"],
            &["vhost", "server_name", "cs-host", "url.domain"],
        );
        json(
            &mut aliases,
            &["user", "username", "user.name", "targetusername"],
            &["user", "username", "user.name", "TargetUserName"],
        );
        let logsources = LOGSOURCES
            .iter()
            .map(|(term, yaml)| {
                let search = parse_logsource(term, yaml).expect("the default log sources parse");
                (term.to_string(), (yaml.to_string(), search))
            })
            .collect();
        FieldMap {
            columns: COLUMNS,
            json_fallback: true,
            aliases,
            keyword_field: "message".into(),
            logsources,
        }
    }
}

/// Finding columns a rule may name.
const FINDING_COLUMNS: &[&str] = &[
    "ip",
    "port",
    "protocol",
    "service",
    "product",
    "severity",
    "cvss",
    "title",
    "cve",
    "device_id",
    "scan_id",
    "finding_id",
];

/// The `logsource` category that selects scan findings instead of logs.
pub const FINDINGS_CATEGORY: &str = "vulnerability";

impl FieldMap {
    /// The map of rules over scan findings (`logsource: {category:
    /// vulnerability}`): the finding's columns under their names and the
    /// taxonomy's (ECS's `destination.ip`, `vulnerability.id`…); keyword
    /// searches match the title. A name that is none of these is refused
    /// when the rule is compiled.
    pub fn findings() -> Self {
        let mut aliases = HashMap::new();
        for (column, names) in [
            (
                "ip",
                &[
                    "dst_ip",
                    "dest_ip",
                    "destinationip",
                    "destination.ip",
                    "host.ip",
                    "target",
                ][..],
            ),
            (
                "port",
                &[
                    "dst_port",
                    "dest_port",
                    "destinationport",
                    "destination.port",
                ][..],
            ),
            ("protocol", &["network.transport", "proto"][..]),
            ("service", &["service.name", "network.protocol"][..]),
            ("product", &["software", "product.name", "package.name"][..]),
            ("severity", &["vulnerability.severity", "risk", "level"][..]),
            (
                "cvss",
                &["cvss_score", "vulnerability.score.base", "score"][..],
            ),
            (
                "title",
                &[
                    "name",
                    "vulnerability.description",
                    "vulnerability.name",
                    "finding",
                ][..],
            ),
            ("cve", &["cve_id", "cveid", "vulnerability.id"][..]),
            ("device_id", &["device", "asset", "asset_id"][..]),
        ] {
            for n in names {
                aliases.insert(n.to_string(), Source::Column(column.to_string()));
            }
        }
        FieldMap {
            columns: FINDING_COLUMNS,
            json_fallback: false,
            aliases,
            keyword_field: "title".into(),
            logsources: HashMap::new(),
        }
    }
}

impl FieldMap {
    /// The default map with `overrides` (Sigma field name → `column` or
    /// `structured_data:key|other.key`) put over it: a deployment's own
    /// field names without a code change. A column must be one a rule may
    /// name.
    pub fn with_overrides(
        mut self,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> super::SigmaResult<Self> {
        for (name, to) in overrides {
            let source = match to.strip_prefix("structured_data:") {
                Some(keys) => {
                    let keys: Vec<String> = keys
                        .split('|')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect();
                    if keys.is_empty() {
                        return Err(super::SigmaError::new(format!(
                            "field {name:?}: structured_data: names no key"
                        )));
                    }
                    Source::Json(keys)
                }
                None if self.columns.contains(&to.as_str()) => Source::Column(to.clone()),
                None => {
                    return Err(super::SigmaError::new(format!(
                        "field {name:?} → {to:?}: a column ({}) or structured_data:key",
                        self.columns.join(", ")
                    )));
                }
            };
            self.aliases.insert(name.to_ascii_lowercase(), source);
        }
        Ok(self)
    }

    /// The default log sources with `overrides` (`"service:sshd" =
    /// "{app: [sshd, sshd-session]}"`) put over them; an empty value makes
    /// the term narrow nothing.
    pub fn with_logsources(
        mut self,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> super::SigmaResult<Self> {
        for (term, yaml) in overrides {
            let key = term.to_ascii_lowercase();
            let valid = key.split_once(':').is_some_and(|(kind, name)| {
                matches!(kind, "product" | "service" | "category") && !name.is_empty()
            });
            if !valid {
                return Err(super::SigmaError::new(format!(
                    "logsource {term:?}: write product:NAME, service:NAME or category:NAME"
                )));
            }
            if yaml.trim().is_empty() {
                self.logsources.remove(&key);
                continue;
            }
            let search = parse_logsource(term, yaml)?;
            self.logsources.insert(key, (yaml.clone(), search));
        }
        Ok(self)
    }

    /// The searches a record must pass for a rule of `logsource` to see
    /// it: one per term (product, service, category) the map knows.
    pub(crate) fn logsource_searches(&self, logsource: &super::LogSource) -> Vec<&Search> {
        [
            ("product", &logsource.product),
            ("service", &logsource.service),
            ("category", &logsource.category),
        ]
        .into_iter()
        .filter_map(|(kind, name)| {
            let name = name.as_deref()?.to_ascii_lowercase();
            self.logsources
                .get(&format!("{kind}:{name}"))
                .map(|(_, search)| search)
        })
        .collect()
    }

    /// The log source table as documented: (term, search YAML).
    pub fn logsource_table(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .logsources
            .iter()
            .map(|(term, (yaml, _))| (term.clone(), yaml.clone()))
            .collect();
        rows.sort();
        rows
    }

    /// Where `field` is read from, refusing a name this map cannot read
    /// (findings have no `structured_data` to fall back on).
    pub fn resolve_checked(&self, field: &str, schema: &Schema) -> super::SigmaResult<Source> {
        let source = self.resolve(field, schema);
        if !self.json_fallback && matches!(source, Source::Json(_)) {
            return Err(super::SigmaError::new(format!(
                "field {field:?} is not a finding field; rules over scan findings \
                 (logsource category {FINDINGS_CATEGORY}) may name {}",
                self.columns.join(", ")
            )));
        }
        Ok(source)
    }

    /// Where `field` is read from, for batches of `schema`.
    pub fn resolve(&self, field: &str, schema: &Schema) -> Source {
        let lower = field.to_ascii_lowercase();
        if self.columns.contains(&lower.as_str()) && schema.index_of(&lower).is_ok() {
            return Source::Column(lower);
        }
        if let Some(source) = self.aliases.get(&lower) {
            if let Source::Column(c) = source
                && schema.index_of(c).is_err()
            {
                return Source::Json(vec![field.to_string()]);
            }
            return source.clone();
        }
        Source::Json(vec![field.to_string()])
    }

    /// Where keyword searches look.
    pub fn keyword_source(&self) -> Source {
        Source::Column(self.keyword_field.clone())
    }

    /// Whether a column holds numbers (compared numerically by `lt`…).
    pub fn is_numeric(data_type: &DataType) -> bool {
        data_type.is_numeric()
    }

    /// The mapping as documented: (Sigma name, where it is read).
    pub fn table(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .aliases
            .iter()
            .map(|(name, source)| {
                let to = match source {
                    Source::Column(c) => format!("column {c}"),
                    Source::Json(keys) => format!("structured_data {}", keys.join(" | ")),
                };
                (name.clone(), to)
            })
            .collect();
        rows.sort();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_documented_log_source_table_is_the_default() {
        let doc = include_str!("../../../docs/sigma.md");
        for (term, yaml) in FieldMap::default().logsource_table() {
            // A `|` in a table cell is written `\|`.
            let row = format!("| `{term}` | `{}` |", yaml.replace('|', "\\|"));
            assert!(doc.contains(&row), "docs/sigma.md lacks {row}");
        }
    }

    #[test]
    fn overrides_replace_and_add_names() {
        let schema = schemas::schema::schema(schemas::RecordKind::Logs);
        let overrides = BTreeMap::from([
            (
                "ClientIP".to_string(),
                "structured_data:client|clientAddr".to_string(),
            ),
            ("user".to_string(), "host".to_string()),
        ]);
        let map = FieldMap::default().with_overrides(&overrides).unwrap();
        assert_eq!(
            map.resolve("clientip", &schema),
            Source::Json(vec!["client".into(), "clientAddr".into()])
        );
        assert_eq!(map.resolve("user", &schema), Source::Column("host".into()));
        for bad in ["raw", "structured_data:", "nowhere"] {
            let o = BTreeMap::from([("x".to_string(), bad.to_string())]);
            assert!(FieldMap::default().with_overrides(&o).is_err(), "{bad}");
        }
    }
}
