use std::net::IpAddr;

use control::notify::Channel;
use prometheus::Registry;

use super::targets::*;
use super::*;

#[test]
fn backoff_doubles_up_to_the_cap() {
    let c = NotifyConfig::default();
    assert_eq!(
        (0..4).map(|a| backoff(&c, a)).collect::<Vec<_>>(),
        [1_000, 2_000, 4_000, 8_000]
    );
    assert_eq!(backoff(&c, 20), 300_000);
    assert_eq!(backoff(&c, 200), 300_000);
}

#[test]
fn targets_are_checked() {
    let c = NotifyConfig::default();
    let hook = |t: &str| validate_target(&c, ChannelKind::Webhook, t);
    assert!(hook("https://hooks.example.com/x").is_ok());
    for bad in [
        "ftp://x/y",
        "not a url",
        "http://127.0.0.1:8080/",
        "http://10.0.0.5/",
        "http://localhost/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.1.2.3]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://app.localhost./",
        // Found by the attack suite: every non-global form.
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[2002:7f00:1::1]/",
        "http://[::ffff:0:7f00:1]/",
        "http://[fec0::1]/",
        "http://[fd00::1]/",
        "http://[2001::1]/",
        "http://[2001:db8::1]/",
        "http://[100::1]/",
        "http://198.18.0.1/",
        "http://192.0.0.1/",
        "http://192.0.2.7/",
        "http://198.51.100.1/",
        "http://203.0.113.9/",
        "http://192.88.99.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ] {
        assert!(hook(bad).is_err(), "{bad}");
    }
    assert!(hook("http://100.128.0.1/").is_ok(), "outside 100.64/10");
    assert!(hook("http://[2606:4700::1111]/").is_ok(), "global IPv6");
    assert!(hook("http://93.184.216.34/").is_ok(), "global IPv4");
    // The host's own addresses, whatever they are.
    for own in own_addresses() {
        let url = match own {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        };
        assert!(hook(&url).is_err(), "{url}");
    }
    let open = NotifyConfig {
        allow_private_targets: true,
        ..NotifyConfig::default()
    };
    assert!(validate_target(&open, ChannelKind::Webhook, "http://127.0.0.1:8080/").is_ok());
    // Email needs SMTP configured and a valid address.
    assert!(validate_target(&c, ChannelKind::Email, "ops@example.com").is_err());
    let smtp = NotifyConfig {
        smtp: Some(SmtpConfig {
            url: "smtp://127.0.0.1:25".into(),
            from: "a@b.c".into(),
        }),
        ..NotifyConfig::default()
    };
    assert!(validate_target(&smtp, ChannelKind::Email, "ops@example.com").is_ok());
    assert!(validate_target(&smtp, ChannelKind::Email, "not an address").is_err());
}

/// Names are checked when resolved: a name that leads only to private
/// addresses fails, so DNS cannot route a webhook into our network.
#[tokio::test]
async fn webhook_names_resolving_to_private_addresses_are_not_reached() {
    use reqwest::dns::Resolve;
    let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
    let err = PublicAddressesOnly
        .resolve(name("localhost"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("private or loopback"), "{err}");
    // End to end through the delivery client: no connection is made.
    let notifier = Notifier::new(NotifyConfig::default(), &Registry::new()).unwrap();
    let err = notifier
        .http
        .post("http://localhost:9/hook")
        .send()
        .await
        .unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("private or loopback"), "{chain}");
    // A channel stored with a private IP literal (e.g. while private
    // targets were allowed) is refused at delivery, before any request.
    let channel = Channel {
        id: "c1".into(),
        org_id: "acme".into(),
        kind: ChannelKind::Webhook,
        target: "http://[::ffff:127.0.0.1]:9/hook".into(),
        secret: None,
        min_severity: "low".into(),
        created_at: 0,
    };
    let n = control::notify::Notification {
        id: "n1".into(),
        org_id: schemas::TenantId::new("acme").unwrap(),
        kind: "anomaly".into(),
        severity: "high".into(),
        title: "t".into(),
        body: json!({}),
        ref_id: "a1".into(),
        created_at: 0,
        read_at: None,
    };
    let (status, err) = notifier.send(&channel, &n, "d1", None).await.unwrap_err();
    assert_eq!(status, None);
    assert!(err.contains("private or loopback"), "{err}");
}
