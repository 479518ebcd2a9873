//! Drain: online log template mining with a fixed-depth prefix tree.
//!
//! After He et al., "Drain: An Online Log Parsing Approach with Fixed Depth
//! Tree" (ICWS 2017), with the conventions of logpai/Drain3:
//!
//! 1. Masking. Each whitespace token is scanned for obvious variables, which
//!    are replaced by `<IP>` (IPv4, optionally `:port`), `<UUID>`, `<EMAIL>`,
//!    `<NUM>` (signed integers and decimals) and `<HEX>` (`0x…`, or eight or
//!    more hex digits with at least one digit). Masking happens inside tokens
//!    too (`uid=1000` → `uid=<NUM>`, `12:00:01` → `<NUM>:<NUM>:<NUM>`), so
//!    variables never reach the similarity measure as distinct words.
//! 2. Tree search. The root's children split by token count, so messages of
//!    different lengths never share a template. Below that come `depth - 3`
//!    layers keyed by the leading tokens (`depth` counts the root, the length
//!    layer and the leaf layer, as in the paper and Drain3; never the last
//!    token). A token with a digit or a mask goes to the `<*>` child, and so
//!    does any token once a node has `max_children` children: the tree stays
//!    small however many distinct words lead the messages.
//! 3. Matching. The leaf's clusters are scored by the share of positions whose
//!    template token equals the message token, `<*>` positions not counting;
//!    ties go to the template with more `<*>`. The best one joins if its score
//!    reaches `similarity` (positions that differ become `<*>`); otherwise the
//!    message starts a new cluster.
//!
//! Everything is deterministic: ids are handed out in order, leaves keep
//! clusters in insertion order and hash maps are only ever looked up, never
//! iterated. Beyond `max_clusters`, the least recently used cluster (created
//! or matched longest ago) is dropped; a message of its shape that comes back
//! starts a new cluster with a new id.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The template token standing for "anything here".
const WILDCARD: &str = "<*>";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Depth of the leaves, counting the root and the token-count layer: the
    /// leading `depth - 3` tokens route a message (at least 3 is meaningful;
    /// smaller values route by length only).
    pub depth: usize,
    /// Share of equal tokens (0..=1) a message needs to join a cluster.
    pub similarity: f64,
    /// Children per tree node before further tokens go to the `<*>` child
    /// (values below 1 act as 1).
    pub max_children: usize,
    /// Clusters kept; beyond it the least recently used one is evicted
    /// (values below 1 act as 1).
    pub max_clusters: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.5,
            max_children: 100,
            max_clusters: 10_000,
        }
    }
}

/// A log template and the messages it has absorbed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub id: u32,
    /// Masked tokens joined by a single space, `<*>` where messages differed.
    pub template: String,
    /// Messages matched, including the first.
    pub count: u64,
    /// The first message, verbatim.
    pub example: String,
}

#[derive(Debug)]
struct Entry {
    cluster: Cluster,
    tokens: Vec<String>,
    /// Tree node holding this cluster's id.
    leaf: usize,
    /// Tick of the last `add` that created or matched it (key into `lru`).
    last_used: u64,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, usize>,
    /// Clusters in a leaf, oldest first; empty for inner nodes.
    clusters: Vec<u32>,
}

/// An online template miner; feed it messages with [`Drain::add`].
#[derive(Debug)]
pub struct Drain {
    config: DrainConfig,
    /// First layer: token count → node.
    by_length: HashMap<usize, usize>,
    /// Arena of tree nodes; nodes are never removed.
    nodes: Vec<Node>,
    clusters: BTreeMap<u32, Entry>,
    /// Last-use tick → cluster id: the first entry is the eviction candidate.
    lru: BTreeMap<u64, u32>,
    tick: u64,
    next_id: u32,
}

impl Drain {
    pub fn new(config: DrainConfig) -> Self {
        Self {
            config,
            by_length: HashMap::new(),
            nodes: Vec::new(),
            clusters: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            next_id: 1,
        }
    }

    pub fn config(&self) -> &DrainConfig {
        &self.config
    }

    /// Adds one message; returns the id of its cluster (template) and whether
    /// the cluster is new.
    pub fn add(&mut self, message: &str) -> (u32, bool) {
        let tokens: Vec<Token> = message.split_whitespace().map(mask_token).collect();
        self.tick += 1;

        if let Some(leaf) = self.find_leaf(&tokens)
            && let Some(id) = self.best_match(leaf, &tokens)
            && let Some(entry) = self.clusters.get_mut(&id)
        {
            entry.cluster.count += 1;
            let mut changed = false;
            for (t, m) in entry.tokens.iter_mut().zip(&tokens) {
                if t != WILDCARD && *t != m.text {
                    *t = WILDCARD.to_string();
                    changed = true;
                }
            }
            if changed {
                entry.cluster.template = entry.tokens.join(" ");
            }
            self.lru.remove(&entry.last_used);
            entry.last_used = self.tick;
            self.lru.insert(self.tick, id);
            return (id, false);
        }

        let id = self.allocate_id();
        let leaf = self.insert_path(&tokens);
        self.nodes[leaf].clusters.push(id);
        let tokens: Vec<String> = tokens.into_iter().map(|t| t.text).collect();
        let cluster = Cluster {
            id,
            template: tokens.join(" "),
            count: 1,
            example: message.to_string(),
        };
        self.clusters.insert(
            id,
            Entry {
                cluster,
                tokens,
                leaf,
                last_used: self.tick,
            },
        );
        self.lru.insert(self.tick, id);
        self.evict();
        (id, true)
    }

    /// All clusters, by id.
    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values().map(|e| &e.cluster)
    }

    pub fn cluster(&self, id: u32) -> Option<&Cluster> {
        self.clusters.get(&id).map(|e| &e.cluster)
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Leading tokens that route a message of `n` tokens: never the last
    /// one, so two messages that differ in one token can always meet in a
    /// leaf (Drain3 does the same).
    fn prefix_len(&self, n: usize) -> usize {
        self.config.depth.saturating_sub(3).min(n.saturating_sub(1))
    }

    /// The leaf a message would be compared in, without growing the tree.
    fn find_leaf(&self, tokens: &[Token]) -> Option<usize> {
        let mut node = *self.by_length.get(&tokens.len())?;
        for tok in &tokens[..self.prefix_len(tokens.len())] {
            let children = &self.nodes[node].children;
            let exact = if tok.variable {
                None
            } else {
                children.get(tok.text.as_str())
            };
            // An unknown word may have overflowed into `<*>` when inserted.
            node = *exact.or_else(|| children.get(WILDCARD))?;
        }
        Some(node)
    }

    /// The leaf for a new cluster, created as needed.
    fn insert_path(&mut self, tokens: &[Token]) -> usize {
        let n = tokens.len();
        let mut node = match self.by_length.get(&n) {
            Some(&node) => node,
            None => {
                let node = self.push_node();
                self.by_length.insert(n, node);
                node
            }
        };
        for tok in &tokens[..self.prefix_len(n)] {
            node = self.child_for_insert(node, tok);
        }
        node
    }

    fn child_for_insert(&mut self, node: usize, tok: &Token) -> usize {
        let children = &self.nodes[node].children;
        let key = if tok.variable {
            WILDCARD
        } else if let Some(&child) = children.get(tok.text.as_str()) {
            return child;
        } else {
            // Drain3's rule: the last free slot is kept for `<*>`.
            let len = children.len();
            let max = self.config.max_children;
            let room = if children.contains_key(WILDCARD) {
                len < max
            } else {
                len + 1 < max
            };
            if room { tok.text.as_str() } else { WILDCARD }
        };
        if let Some(&child) = children.get(key) {
            return child;
        }
        let child = self.push_node();
        self.nodes[node].children.insert(key.to_string(), child);
        child
    }

    fn push_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// The leaf's most similar cluster, if similar enough.
    fn best_match(&self, leaf: usize, tokens: &[Token]) -> Option<u32> {
        // All templates in a leaf have `tokens.len()` tokens, so comparing
        // match counts compares similarities exactly.
        let mut best: Option<(usize, usize, u32)> = None;
        for &id in &self.nodes[leaf].clusters {
            let Some(entry) = self.clusters.get(&id) else {
                continue;
            };
            let (mut equal, mut wildcards) = (0, 0);
            for (t, m) in entry.tokens.iter().zip(tokens) {
                if t == WILDCARD {
                    wildcards += 1;
                } else if *t == m.text {
                    equal += 1;
                }
            }
            if best.is_none_or(|(e, w, _)| (equal, wildcards) > (e, w)) {
                best = Some((equal, wildcards, id));
            }
        }
        let (equal, _, id) = best?;
        let similarity = if tokens.is_empty() {
            1.0
        } else {
            equal as f64 / tokens.len() as f64
        };
        (similarity >= self.config.similarity).then_some(id)
    }

    fn allocate_id(&mut self) -> u32 {
        // Ids only repeat after 2^32 clusters, and then skip live ones.
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.clusters.contains_key(&id) {
                return id;
            }
        }
    }

    fn evict(&mut self) {
        let cap = self.config.max_clusters.max(1);
        while self.clusters.len() > cap {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            if let Some(entry) = self.clusters.remove(&id) {
                let leaf = &mut self.nodes[entry.leaf].clusters;
                if let Some(pos) = leaf.iter().position(|&c| c == id) {
                    leaf.remove(pos);
                }
            }
        }
    }
}

/// One whitespace-separated token after masking.
#[derive(Debug)]
struct Token {
    text: String,
    /// Holds a digit or a mask: routed through `<*>` in the tree.
    variable: bool,
}

/// Characters that may belong to a maskable value; anything else (`=`, `,`,
/// `/`, brackets, quotes…) separates values inside a token.
fn is_value_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | ':' | '-' | '+' | '_' | '@')
}

fn mask_token(raw: &str) -> Token {
    let mut text = String::with_capacity(raw.len());
    let mut masked = false;
    let mut rest = raw;
    while !rest.is_empty() {
        let start = rest.find(is_value_char).unwrap_or(rest.len());
        text.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c| !is_value_char(c)).unwrap_or(rest.len());
        masked |= mask_value(&rest[..end], &mut text);
        rest = &rest[end..];
    }
    let variable = masked || text.bytes().any(|b| b.is_ascii_digit());
    Token { text, variable }
}

/// Appends `word` to `out`, masked where it (or a `:@_-+`-separated piece of
/// it) is a variable; returns whether anything was masked.
fn mask_value(word: &str, out: &mut String) -> bool {
    // Punctuation ending a sentence or a `key:` label is not part of a value.
    let core = word.trim_start_matches(':').trim_end_matches(['.', ':']);
    if core.is_empty() {
        out.push_str(word);
        return false;
    }
    let start = word.len() - word.trim_start_matches(':').len();
    let end = start + core.len();
    out.push_str(&word[..start]);
    let masked = if let Some(mask) = classify(core) {
        out.push_str(mask);
        true
    } else {
        // `12:00:01`, `pid_42`, `10.0.0.1-10.0.0.9`, `user@10.0.0.1`.
        let mut masked = false;
        let mut rest = core;
        while !rest.is_empty() {
            let cut = rest.find([':', '@', '_', '-', '+']).unwrap_or(rest.len());
            let (piece, tail) = rest.split_at(cut);
            match classify(piece) {
                Some(mask) => {
                    out.push_str(mask);
                    masked = true;
                }
                None => out.push_str(piece),
            }
            let mut chars = tail.chars();
            if let Some(sep) = chars.next() {
                out.push(sep);
            }
            rest = chars.as_str();
        }
        masked
    };
    out.push_str(&word[end..]);
    masked
}

fn classify(s: &str) -> Option<&'static str> {
    if is_uuid(s) {
        Some("<UUID>")
    } else if is_email(s) {
        Some("<EMAIL>")
    } else if is_ipv4(s) {
        Some("<IP>")
    } else if is_number(s) {
        Some("<NUM>")
    } else if is_hex(s) {
        Some("<HEX>")
    } else {
        None
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'));
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let tld_ok = labels
        .last()
        .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && labels_ok && tld_ok
}

/// Dotted-quad IPv4, optionally with `:port`.
fn is_ipv4(s: &str) -> bool {
    let (addr, port) = match s.split_once(':') {
        Some((addr, port)) => (addr, Some(port)),
        None => (s, None),
    };
    let octets_ok = addr.split('.').count() == 4
        && addr.split('.').all(|o| {
            (1..=3).contains(&o.len())
                && o.bytes().all(|b| b.is_ascii_digit())
                && o.parse::<u16>().is_ok_and(|v| v <= 255)
        });
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| v <= 65_535)
    });
    octets_ok && port_ok
}

/// Integers and decimals, optionally signed and with an exponent.
fn is_number(s: &str) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int = digits(&b[i..]);
    if int == 0 {
        return false;
    }
    i += int;
    if b.get(i) == Some(&b'.') {
        let frac = digits(&b[i + 1..]);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        j += usize::from(matches!(b.get(j), Some(b'+' | b'-')));
        let exp = digits(&b[j..]);
        if exp == 0 {
            return false;
        }
        i = j + exp;
    }
    i == b.len()
}

fn is_hex(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit());
    }
    s.len() >= 8
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(message: &str) -> String {
        message
            .split_whitespace()
            .map(|t| mask_token(t).text)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn template(drain: &Drain, id: u32) -> &str {
        &drain.cluster(id).expect("cluster exists").template
    }

    #[test]
    fn masks_ip_port_hex_uuid_numbers_and_email() {
        assert_eq!(masked("from 10.0.0.1 port 22"), "from <IP> port <NUM>");
        assert_eq!(masked("to 192.168.1.254:8443,"), "to <IP>,");
        assert_eq!(masked("at 10.1.2.3."), "at <IP>.");
        assert_eq!(
            masked("addr 0xdeadBEEF id 1a2b3c4d5e"),
            "addr <HEX> id <HEX>"
        );
        assert_eq!(
            masked("job 550e8400-e29b-41d4-a716-446655440000 done"),
            "job <UUID> done"
        );
        assert_eq!(
            masked("n=-17 t=+3.25 r=1.5e-3 x 42"),
            "n=<NUM> t=<NUM> r=<NUM> x <NUM>"
        );
        assert_eq!(masked("mail <alice.b@example.org>"), "mail <<EMAIL>>");
        assert_eq!(
            masked("sshd[4242]: at 12:00:01"),
            "sshd[<NUM>]: at <NUM>:<NUM>:<NUM>"
        );
        assert_eq!(masked("user_7 root@10.0.0.5"), "user_<NUM> root@<IP>");
        // Not variables: words, versions, short or digit-free hex, bad IPs.
        assert_eq!(
            masked("deadbeef abc123 v1.2.3 1.2.3 300.1.1.1 ssh2"),
            "deadbeef abc123 v1.2.3 1.2.3 300.1.1.1 ssh2"
        );
        assert!(!mask_token("password").variable);
        assert!(mask_token("ssh2").variable);
        assert!(mask_token("10.0.0.1").variable);
    }

    #[test]
    fn sshd_failed_passwords_collapse_into_one_template() {
        let mut drain = Drain::new(DrainConfig::default());
        let messages = [
            "Failed password for root from 10.0.0.1 port 22 ssh2",
            "Failed password for admin from 10.0.0.2 port 2222 ssh2",
            "Failed password for root from 172.16.4.20 port 52113 ssh2",
            "Failed password for oracle from 192.168.7.9 port 40000 ssh2",
        ];
        let ids: Vec<u32> = messages.iter().map(|m| drain.add(m).0).collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        assert_eq!(drain.len(), 1);
        let cluster = drain.cluster(ids[0]).expect("cluster exists");
        assert_eq!(
            cluster.template,
            "Failed password for <*> from <IP> port <NUM> ssh2"
        );
        assert_eq!(cluster.count, 4);
        assert_eq!(cluster.example, messages[0]);
    }

    #[test]
    fn structurally_different_messages_stay_separate() {
        let mut drain = Drain::new(DrainConfig::default());
        let (failed, _) = drain.add("Failed password for root from 10.0.0.1 port 22 ssh2");
        let (accepted, _) = drain.add("Accepted password for root from 10.0.0.1 port 22 ssh2");
        // Same length and first token, but only 1 of 6 tokens shared.
        let (disk, _) = drain.add("disk sda1 is 91 percent full");
        let (quota, _) = drain.add("disk quota exceeded for user bob");
        let (failed_again, new) = drain.add("Failed password for bob from 10.0.0.9 port 22 ssh2");
        assert!(!new);
        assert_eq!(failed_again, failed);
        let ids = [failed, accepted, disk, quota];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(drain.len(), 4);
        assert_eq!(template(&drain, disk), "disk sda1 is <NUM> percent full");
        assert_eq!(template(&drain, quota), "disk quota exceeded for user bob");
    }

    #[test]
    fn messages_of_different_lengths_never_merge() {
        let mut drain = Drain::new(DrainConfig {
            similarity: 0.0,
            ..DrainConfig::default()
        });
        let (a, _) = drain.add("connection reset by peer");
        let (b, _) = drain.add("connection reset by peer again");
        let (c, _) = drain.add("connection reset");
        let (d, _) = drain.add("connection reset by peer");
        assert!(a != b && b != c && a != c);
        assert_eq!(a, d);
        assert_eq!(drain.len(), 3);
        assert_eq!(template(&drain, a), "connection reset by peer");
    }

    #[test]
    fn new_cluster_is_reported_once() {
        let mut drain = Drain::new(DrainConfig::default());
        let results: Vec<(u32, bool)> = (0..50)
            .map(|i| drain.add(&format!("worker {i} heartbeat ok from host-{}", i % 7)))
            .collect();
        assert_eq!(results.iter().filter(|(_, new)| *new).count(), 1);
        assert!(results[0].1);
        assert!(results.iter().all(|(id, _)| *id == results[0].0));
        assert_eq!(
            drain.cluster(results[0].0).expect("cluster exists").count,
            50
        );
        assert!(drain.add("something else entirely").1);
    }

    #[test]
    fn empty_message_has_its_own_cluster() {
        let mut drain = Drain::new(DrainConfig::default());
        let (id, new) = drain.add("");
        assert!(new);
        assert_eq!(drain.add("   \t ").0, id);
        assert_eq!(template(&drain, id), "");
        assert_eq!(drain.cluster(id).expect("cluster exists").count, 2);
    }

    #[test]
    fn max_children_overflow_shares_wildcard_branch() {
        let mut drain = Drain::new(DrainConfig {
            max_children: 3,
            ..DrainConfig::default()
        });
        let (alpha, _) = drain.add("alpha service started");
        let (beta, _) = drain.add("beta service started");
        // Third child slot is `<*>`: gamma and delta land there and merge.
        let (gamma, _) = drain.add("gamma service started");
        let (delta, new) = drain.add("delta service started");
        assert!(alpha != beta && beta != gamma && alpha != gamma);
        assert!(!new);
        assert_eq!(delta, gamma);
        assert_eq!(template(&drain, gamma), "<*> service started");
        // Known words keep their own branch.
        assert_eq!(drain.add("alpha service started").0, alpha);
        assert_eq!(drain.len(), 3);
    }

    #[test]
    fn eviction_keeps_most_recently_used() {
        let mut drain = Drain::new(DrainConfig {
            max_clusters: 2,
            ..DrainConfig::default()
        });
        let (a, _) = drain.add("user alice logged in");
        let (b, _) = drain.add("disk full on /var");
        assert_eq!(drain.add("user bob logged in").0, a); // a is now newer than b
        let (c, new) = drain.add("kernel panic not syncing");
        assert!(new);
        assert_eq!(drain.len(), 2);
        assert!(drain.cluster(b).is_none());
        assert!(drain.cluster(a).is_some() && drain.cluster(c).is_some());
        assert_eq!(drain.cluster(a).expect("cluster exists").count, 2);
        // b's shape comes back as a new cluster, evicting a (now the oldest).
        let (b2, new) = drain.add("disk full on /var");
        assert!(new);
        assert!(b2 != b && b2 != a && b2 != c);
        assert!(drain.cluster(a).is_none());
        let ids: Vec<u32> = drain.clusters().map(|c| c.id).collect();
        assert_eq!(ids, vec![c, b2]);
    }

    /// SplitMix64: a tiny deterministic generator for test data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
        fn ip(&mut self) -> String {
            let v = self.next_u64();
            format!("10.{}.{}.{}", v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff)
        }
        fn uuid(&mut self) -> String {
            let (a, b) = (self.next_u64(), self.next_u64());
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xffff,
                b >> 48,
                b & 0xffff_ffff_ffff
            )
        }
    }

    const USERS: &[&str] = &["root", "admin", "alice", "bob", "oracle", "deploy", "git"];
    const HOSTS: &[&str] = &["api.example.com", "db7.internal", "cdn.example.net"];

    fn synthetic(rng: &mut Rng, pattern: u64) -> String {
        let n = rng.below(100_000);
        let m = rng.below(1_000);
        let port = rng.below(65_536);
        let user = rng.pick(USERS);
        match pattern {
            0 => format!("Failed password for {user} from {} port {n} ssh2", rng.ip()),
            1 => format!(
                "Accepted publickey for {user} from {} port {n} ssh2",
                rng.ip()
            ),
            2 => format!("Connection closed by {} port {n} [preauth]", rng.ip()),
            3 => format!("Invalid user {user} from {} port {n}", rng.ip()),
            4 => format!("session opened for user {user} by (uid={m})"),
            5 => format!("session closed for user {user}"),
            6 => format!("Possible SYN flooding on port {m}. Sending cookies."),
            7 => format!("GET /api/v1/items/{n} returned {m} in {}.{m} ms", m % 7),
            8 => format!(
                "POST /api/v1/login from {} user {user}@example.com status {m}",
                rng.ip()
            ),
            9 => format!("worker {m} finished job {} in {n}.5 s", rng.uuid()),
            10 => format!("cache miss for key 0x{:012x} in shard {m}", rng.next_u64()),
            11 => format!("disk usage on /dev/sda{} is {m} percent", m % 4),
            12 => format!("Started process {n} with args --verbose --level {}", m % 5),
            13 => format!(
                "firewall blocked {} to {}:{port} proto TCP",
                rng.ip(),
                rng.ip()
            ),
            14 => format!("user {user}.x@corp.example.org changed password"),
            15 => format!("Out of memory: Killed process {n} ({user}) total-vm:{m}kB"),
            16 => format!(
                "TLS handshake failed with {}:{port}: certificate expired",
                rng.ip()
            ),
            17 => format!("Scheduled backup {} completed with {m} files", rng.uuid()),
            18 => format!("Rate limit exceeded for tenant {user} on route /v1/ingest"),
            _ => format!(
                "DNS query {} resolved to {} in {m} ms",
                rng.pick(HOSTS),
                rng.ip()
            ),
        }
    }

    #[test]
    fn synthetic_stream_recovers_its_patterns() {
        const PATTERNS: u64 = 20;
        let mut rng = Rng(7);
        let mut drain = Drain::new(DrainConfig::default());
        let mut per_pattern: Vec<Vec<u32>> = vec![Vec::new(); PATTERNS as usize];
        for _ in 0..100_000 {
            let pattern = rng.below(PATTERNS);
            let (id, _) = drain.add(&synthetic(&mut rng, pattern));
            let ids = &mut per_pattern[pattern as usize];
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let templates: Vec<&str> = drain.clusters().map(|c| c.template.as_str()).collect();
        assert_eq!(drain.len(), PATTERNS as usize, "{templates:#?}");
        assert_eq!(drain.clusters().map(|c| c.count).sum::<u64>(), 100_000);
        // No two patterns share a cluster.
        let mut all: Vec<u32> = per_pattern.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), per_pattern.iter().map(Vec::len).sum::<usize>());
        assert!(templates.contains(&"Failed password for <*> from <IP> port <NUM> ssh2"));
        assert!(templates.contains(&"cache miss for key <HEX> in shard <NUM>"));
        assert!(templates.contains(&"Scheduled backup <UUID> completed with <NUM> files"));
        assert!(templates.contains(&"firewall blocked <IP> to <IP> proto TCP"));
    }

    #[test]
    fn same_input_gives_same_clusters() {
        let run = || {
            let mut rng = Rng(11);
            let mut drain = Drain::new(DrainConfig {
                max_clusters: 8,
                ..DrainConfig::default()
            });
            for _ in 0..5_000 {
                let pattern = rng.below(20);
                drain.add(&synthetic(&mut rng, pattern));
            }
            drain.clusters().cloned().collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
