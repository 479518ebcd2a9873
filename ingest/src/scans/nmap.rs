//! nmap XML (`nmap -oX`).
//!
//! Read with a streaming XML reader that expands no entities (no XXE, no
//! billion laughs) and keeps only what becomes records: per host its
//! status, addresses (IPv4/IPv6, MAC with vendor), first hostname and best
//! OS match; per port the state and service; script output is searched for
//! CVE ids. Open ports become `info` findings, CVEs become findings rated by
//! their CVSS score.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{Finding, Host, ScanReport, cves_in};
use schemas::Severity;

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn secs_ms(v: Option<String>) -> Option<i64> {
    v?.parse::<i64>().ok()?.checked_mul(1000)
}

/// A port being read.
#[derive(Default)]
struct Port {
    protocol: Option<String>,
    port: Option<u16>,
    open: bool,
    service: Option<String>,
    product: Option<String>,
    scripts: Vec<String>,
}

pub fn parse(xml: &str) -> Result<ScanReport, String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut report = ScanReport {
        scanner: "nmap".into(),
        status: "completed".into(),
        ..Default::default()
    };
    let mut host: Option<Host> = None;
    let mut port: Option<Port> = None;
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("invalid nmap XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"nmaprun" => {
                    saw_root = true;
                    let version = attr(&e, b"version");
                    report.scanner = match version {
                        Some(v) => format!("nmap {v}"),
                        None => "nmap".into(),
                    };
                    report.started_ms = secs_ms(attr(&e, b"start"));
                    report.target = attr(&e, b"args")
                        .and_then(|a| a.split_whitespace().last().map(str::to_string));
                }
                b"host" => host = Some(Host::default()),
                b"status" => {
                    if let Some(h) = host.as_mut() {
                        h.up = attr(&e, b"state").as_deref() == Some("up");
                    }
                }
                b"address" => {
                    if let Some(h) = host.as_mut() {
                        let addr = attr(&e, b"addr");
                        match attr(&e, b"addrtype").as_deref() {
                            Some("mac") => {
                                h.mac = addr;
                                h.vendor = attr(&e, b"vendor");
                            }
                            _ => {
                                if h.ip.is_none() {
                                    h.ip = addr;
                                }
                            }
                        }
                    }
                }
                b"hostname" => {
                    if let Some(h) = host.as_mut()
                        && h.hostname.is_none()
                    {
                        h.hostname = attr(&e, b"name");
                    }
                }
                b"osmatch" => {
                    if let Some(h) = host.as_mut()
                        && h.os.is_none()
                    {
                        h.os = attr(&e, b"name");
                    }
                }
                b"port" => {
                    port = Some(Port {
                        protocol: attr(&e, b"protocol"),
                        port: attr(&e, b"portid").and_then(|p| p.parse().ok()),
                        ..Default::default()
                    });
                }
                b"state" => {
                    if let Some(p) = port.as_mut() {
                        p.open = attr(&e, b"state").as_deref() == Some("open");
                    }
                }
                b"service" => {
                    if let Some(p) = port.as_mut() {
                        p.service = attr(&e, b"name");
                        let product = [attr(&e, b"product"), attr(&e, b"version")]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ");
                        p.product = (!product.is_empty()).then_some(product);
                    }
                }
                b"script" => {
                    if let Some(output) = attr(&e, b"output") {
                        match port.as_mut() {
                            Some(p) => p.scripts.push(output),
                            None => {
                                // Host scripts: CVEs without a port.
                                if let Some(h) = host.as_mut() {
                                    h.findings.extend(cve_findings(&output, &Port::default()));
                                }
                            }
                        }
                    }
                }
                b"finished" => {
                    report.finished_ms = secs_ms(attr(&e, b"time"));
                    if let Some(exit) = attr(&e, b"exit")
                        && exit != "success"
                    {
                        report.status = exit;
                    }
                }
                b"hosts" => report.hosts_total = attr(&e, b"total").and_then(|t| t.parse().ok()),
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"port" => {
                    if let (Some(p), Some(h)) = (port.take(), host.as_mut()) {
                        if p.open {
                            h.findings.push(open_port_finding(&p));
                        }
                        for script in &p.scripts {
                            h.findings.extend(cve_findings(script, &p));
                        }
                    }
                }
                b"host" => {
                    if let Some(h) = host.take() {
                        report.hosts.push(h);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err("not an nmap XML report: no <nmaprun> element".into());
    }
    if report.finished_ms.is_none() {
        // nmap writes <runstats> last: without it the scan was cut short.
        report.status = "incomplete".into();
    }
    Ok(report)
}

fn open_port_finding(p: &Port) -> Finding {
    let proto = p.protocol.clone().unwrap_or_else(|| "tcp".into());
    let port = p.port.map_or("?".to_string(), |n| n.to_string());
    let what = match (&p.service, &p.product) {
        (Some(s), Some(prod)) => format!(" ({s}, {prod})"),
        (Some(s), None) => format!(" ({s})"),
        (None, Some(prod)) => format!(" ({prod})"),
        (None, None) => String::new(),
    };
    Finding {
        port: p.port,
        protocol: Some(proto.clone()),
        service: p.service.clone(),
        product: p.product.clone(),
        severity: "info".into(),
        cvss: None,
        title: format!("open port {port}/{proto}{what}"),
        cve: None,
    }
}

fn cve_findings(output: &str, p: &Port) -> Vec<Finding> {
    cves_in(output)
        .into_iter()
        .map(|(cve, cvss)| Finding {
            port: p.port,
            protocol: p.protocol.clone(),
            service: p.service.clone(),
            product: p.product.clone(),
            severity: cvss
                .map_or(Severity::Medium, Severity::from_cvss)
                .to_string(),
            cvss,
            title: match &p.product {
                Some(prod) => format!("{cve} in {prod}"),
                None => cve.clone(),
            },
            cve: Some(cve),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>
<nmaprun scanner="nmap" args="nmap -sV -oX - 10.0.0.0/24" start="1795732853" version="7.93" xmloutputversion="1.05">
<host starttime="1795732853" endtime="1795732864"><status state="up" reason="arp-response"/>
<address addr="10.0.0.5" addrtype="ipv4"/><address addr="AA:BB:CC:00:11:22" addrtype="mac" vendor="Dell"/>
<hostnames><hostname name="web-01.lan" type="PTR"/></hostnames>
<ports>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack"/><service name="ssh" product="OpenSSH" version="7.4" method="probed" conf="10"/>
<script id="vulners" output="&#xa;  cpe:/a:openbsd:openssh:7.4: &#xa;    &#9;CVE-2023-38408&#9;9.8&#9;https://vulners.com/cve/CVE-2023-38408&#xa;"/></port>
<port protocol="tcp" portid="23"><state state="closed" reason="reset"/><service name="telnet" method="table" conf="3"/></port>
<port protocol="udp" portid="161"><state state="open" reason="udp-response"/><service name="snmp"/></port>
</ports>
<os><osmatch name="Linux 4.15 - 5.8" accuracy="96"/></os>
</host>
<host><status state="down" reason="no-response"/><address addr="10.0.0.6" addrtype="ipv4"/></host>
<runstats><finished time="1795732864" exit="success"/><hosts up="1" down="1" total="256"/></runstats>
</nmaprun>"#;

    #[test]
    fn reads_hosts_ports_services_os_and_cves() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.scanner, "nmap 7.93");
        assert_eq!(r.target.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(
            (r.started_ms, r.finished_ms),
            (Some(1_795_732_853_000), Some(1_795_732_864_000))
        );
        assert_eq!((r.status.as_str(), r.hosts_total), ("completed", Some(256)));
        assert_eq!(r.hosts.len(), 2);
        let h = &r.hosts[0];
        assert!(h.up);
        assert_eq!(h.ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(h.mac.as_deref(), Some("AA:BB:CC:00:11:22"));
        assert_eq!(h.vendor.as_deref(), Some("Dell"));
        assert_eq!(h.hostname.as_deref(), Some("web-01.lan"));
        assert_eq!(h.os.as_deref(), Some("Linux 4.15 - 5.8"));
        let titles: Vec<_> = h.findings.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "open port 22/tcp (ssh, OpenSSH 7.4)",
                "CVE-2023-38408 in OpenSSH 7.4",
                "open port 161/udp (snmp)"
            ]
        );
        let cve = &h.findings[1];
        assert_eq!(
            (cve.severity.as_str(), cve.cvss, cve.port),
            ("critical", Some(9.8), Some(22))
        );
        assert!(!r.hosts[1].up);
    }

    #[test]
    fn refuses_what_is_not_nmap_and_marks_cut_reports() {
        assert!(
            parse("<html><body/></html>")
                .unwrap_err()
                .contains("no <nmaprun>")
        );
        assert!(
            parse("<nmaprun><host>").is_err()
                || parse("<nmaprun><host>").unwrap().status == "incomplete"
        );
        assert!(parse("not xml at all <<<").is_err());
        let cut = parse("<nmaprun scanner=\"nmap\"><host><status state=\"up\"/></host></nmaprun>")
            .unwrap();
        assert_eq!(cut.status, "incomplete");
    }

    #[test]
    fn entities_are_not_expanded() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE nmaprun [<!ENTITY x SYSTEM "file:///etc/passwd">]><nmaprun><host><hostnames><hostname name="&x;"/></hostnames></host><runstats><finished time="1"/></runstats></nmaprun>"#;
        let r = parse(xxe).unwrap();
        assert_ne!(
            r.hosts[0].hostname.as_deref().map(|h| h.contains("root:")),
            Some(true)
        );
    }
}
