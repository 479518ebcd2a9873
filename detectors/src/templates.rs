//! The log template miner of `POST /api/insights/summary`: which messages
//! are the same kind of event, and what their template is.
//!
//! Drain ([`crate::drain`]) joins a message to a template when half its
//! tokens agree, so `Failed password for invalid user …` and `Failed none
//! for invalid user …`, or `Received disconnect from …: Bye Bye` and
//! `…: disconnected by user`, became one template. This miner follows the
//! later frequency-based parsers instead (Brain: Yu et al., "Brain: Log
//! Parsing with Bidirectional Parallel Tree", 2023): the words of one
//! event type occur exactly as often as each other, and a position is a
//! variable only when the data shows many values there.
//!
//! 1. **Tokens.** Whitespace separates tokens; a token is also split after
//!    `=` and after a `:` followed by a letter (`rhost=` `10.1.2.3`,
//!    `environment:` `user.dir=` `/`), so keys and values are apart. A
//!    number and the unit after it are one token (`<1 sec`), and a
//!    parenthesised number with a unit after another token (`(1.16 KB)`:
//!    the same size again) is left out, so optional restatements do not
//!    shift positions.
//! 2. **Masks.** IPv4 addresses (with a port), UUIDs, hex ids and numbers
//!    are masked inside tokens (`<IP>`, `<UUID>`, `<HEX>`, `<NUM>`), month
//!    and weekday names are `<DATE>`. Two messages with the same masked
//!    tokens have the same *shape*; the miner keeps one entry per shape.
//! 3. **Column frequencies.** For every message length, how often each
//!    masked token occurs at each position. In a message, the largest set
//!    of positions sharing one frequency is its *common pattern* (the
//!    words of its event type occur together, so equally often); messages
//!    with the same length and the same tokens there form a group.
//! 4. **Variables.** In a group, another position is a variable when it
//!    holds at least `variable_after` distinct (unmasked) values, or a
//!    masked value such as an address next to anything else. The first
//!    token names the event (`cupsd startup succeeded`, `boot (command
//!    12)`): when every value there is a plain word it needs
//!    `leading_word_factor` times as many values.
//! 5. **Across lengths.** A variable can span tokens (`0 bytes sent` /
//!    `12 ms` / `<1 sec`, a list of ids): templates of different lengths
//!    whose words — tokens without masks, digits or units — are the same
//!    sequence of at least three are one template.
//!
//! **Online.** [`TemplateMiner::add`] takes one message at a time in
//! O(tokens) and keeps only per-shape statistics (bounded by
//! [`MinerConfig::max_shapes`]); [`TemplateMiner::templates`] groups what
//! has been seen so far and can be called at any point. Because a position
//! becomes a variable only once it has shown enough values, a shape's
//! template can change as messages arrive: callers keep the [`ShapeId`]
//! `add` returns and map it through the latest [`Templates`].
//! **Deterministic:** the same messages in the same order give the same
//! templates and ids (ids follow first appearance; no hash-map order is
//! observable).
//!
//! Grouping accuracy on the Loghub benchmark samples is measured by
//! `benches/templates.sh` (docs/detectors.md has the figures).

use std::collections::{BTreeMap, HashMap};

/// The template token standing for "anything here".
pub const WILDCARD: &str = "<*>";

/// Masks that are a value on their own (a position holding one of them
/// and something else is a variable).
const VALUE_MASKS: [&str; 4] = ["<NUM>", "<IP>", "<HEX>", "<UUID>"];

/// Share of a group's messages each of a position's values must carry for
/// those values to be kinds of an event rather than a variable.
const KIND_SHARE: f64 = 0.15;
/// … and messages each, at least (a few names seen once each are values).
const KIND_MIN_MESSAGES: u64 = 3;

/// Units that belong to the number before them.
const UNITS: [&str; 19] = [
    "B", "KB", "MB", "GB", "TB", "kB", "KiB", "MiB", "GiB", "TiB", "sec", "secs", "s", "ms", "us",
    "ns", "min", "mins", "h",
];

const DATE_WORDS: [&str; 38] = [
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
    "Mon",
    "Tue",
    "Wed",
    "Thu",
    "Fri",
    "Sat",
    "Sun",
    "January",
    "February",
    "March",
    "April",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Sept",
];

#[derive(Debug, Clone, PartialEq)]
pub struct MinerConfig {
    /// Distinct values a position must show before it is a variable.
    pub variable_after: usize,
    /// How many times `variable_after` the first token needs when all its
    /// values are plain words (it usually names the event).
    pub leading_word_factor: usize,
    /// Distinct shapes kept; messages of new shapes beyond it are counted
    /// in [`TemplateMiner::untracked`] only.
    pub max_shapes: usize,
    /// Tokens of a message that count; the rest is ignored.
    pub max_tokens: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            variable_after: 4,
            leading_word_factor: 3,
            max_shapes: 200_000,
            max_tokens: 256,
        }
    }
}

/// A distinct masked token sequence, as returned by [`TemplateMiner::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(u32);

/// A template as the summary shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// 1, 2, … in order of first appearance.
    pub id: u32,
    /// Masked tokens joined by a space, `<*>` at variable positions.
    pub text: String,
    /// Messages with this template.
    pub count: u64,
    /// The first message of this template, verbatim.
    pub example: String,
}

/// The grouping of everything a miner has seen, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    templates: Vec<Template>,
    /// Shape index → index into `templates`.
    of_shape: Vec<usize>,
}

impl Templates {
    /// The template of a shape `add` returned.
    pub fn of(&self, shape: ShapeId) -> Option<&Template> {
        self.of_shape
            .get(shape.0 as usize)
            .and_then(|i| self.templates.get(*i))
    }

    /// Every template, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.iter()
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

#[derive(Debug)]
struct Shape {
    /// Masked tokens (interned).
    tokens: Vec<u32>,
    /// Per position, the distinct unmasked values seen (interned) and
    /// their messages, at most the largest threshold of them: beyond it
    /// the position is a variable whatever the rest are.
    raw: Vec<Vec<(u32, u64)>>,
    count: u64,
    example: String,
}

/// An online template miner (see the module documentation).
#[derive(Debug)]
pub struct TemplateMiner {
    config: MinerConfig,
    words: Vec<Box<str>>,
    interned: HashMap<Box<str>, u32>,
    shapes: Vec<Shape>,
    by_tokens: HashMap<Vec<u32>, u32>,
    /// (length, position, masked token) → messages.
    freq: HashMap<(u32, u32, u32), u64>,
    untracked: u64,
}

impl Default for TemplateMiner {
    fn default() -> Self {
        Self::new(MinerConfig::default())
    }
}

impl TemplateMiner {
    pub fn new(config: MinerConfig) -> Self {
        Self {
            config,
            words: Vec::new(),
            interned: HashMap::new(),
            shapes: Vec::new(),
            by_tokens: HashMap::new(),
            freq: HashMap::new(),
            untracked: 0,
        }
    }

    /// Adds one message. `None` when the message has a new shape and
    /// `max_shapes` are already kept.
    pub fn add(&mut self, message: &str) -> Option<ShapeId> {
        let raw_tokens = tokenize(message, self.config.max_tokens);
        let masked: Vec<u32> = raw_tokens.iter().map(|t| self.intern(&mask(t))).collect();
        let index = match self.by_tokens.get(&masked) {
            Some(i) => *i,
            None => {
                if self.shapes.len() >= self.config.max_shapes {
                    self.untracked += 1;
                    return None;
                }
                let i = self.shapes.len() as u32;
                self.shapes.push(Shape {
                    raw: vec![Vec::new(); masked.len()],
                    tokens: masked.clone(),
                    count: 0,
                    example: message.to_string(),
                });
                self.by_tokens.insert(masked.clone(), i);
                i
            }
        };
        let n = masked.len() as u32;
        for (p, token) in masked.iter().enumerate() {
            *self.freq.entry((n, p as u32, *token)).or_default() += 1;
        }
        let shape = index as usize;
        self.shapes[shape].count += 1;
        // A position keeps at most `cap` distinct raw values: a value it
        // will not keep is not interned either (unique ids and addresses
        // would otherwise grow the vocabulary with every message).
        let cap = self.config.variable_after * self.config.leading_word_factor.max(1);
        for (p, token) in raw_tokens.iter().enumerate() {
            let known = self.interned.get(token.as_str()).copied();
            let values = &self.shapes[shape].raw[p];
            if let Some(slot) = known.and_then(|id| values.iter().position(|(v, _)| *v == id)) {
                self.shapes[shape].raw[p][slot].1 += 1;
            } else if values.len() < cap {
                let id = known.unwrap_or_else(|| self.intern(token));
                self.shapes[shape].raw[p].push((id, 1));
            }
        }
        Some(ShapeId(index))
    }

    /// Messages not tracked because `max_shapes` was reached.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Distinct shapes kept.
    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }

    fn intern(&mut self, word: &str) -> u32 {
        if let Some(id) = self.interned.get(word) {
            return *id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.into());
        self.interned.insert(word.into(), id);
        id
    }

    fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }

    /// Groups everything seen so far into templates.
    pub fn templates(&self) -> Templates {
        // 3. Common pattern of each shape → groups (in first-seen order).
        let mut group_of: HashMap<(usize, Vec<(u32, u32)>), usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut patterns: Vec<Vec<bool>> = Vec::new();
        for (s, shape) in self.shapes.iter().enumerate() {
            let n = shape.tokens.len() as u32;
            let freqs: Vec<u64> = shape
                .tokens
                .iter()
                .enumerate()
                .map(|(p, t)| self.freq.get(&(n, p as u32, *t)).copied().unwrap_or(0))
                .collect();
            // Values (`<NUM>`, `<IP>` …) are not words of an event: they
            // take part only when a message has nothing else.
            let mut tally: BTreeMap<u64, usize> = BTreeMap::new();
            for (f, t) in freqs.iter().zip(&shape.tokens) {
                if !VALUE_MASKS.contains(&self.word(*t)) {
                    *tally.entry(*f).or_default() += 1;
                }
            }
            if tally.is_empty() {
                for f in &freqs {
                    *tally.entry(*f).or_default() += 1;
                }
            }
            // Most positions, then the higher frequency.
            let best = tally
                .iter()
                .max_by_key(|(f, k)| (**k, **f))
                .map(|(f, _)| *f)
                .unwrap_or(0);
            let in_pattern: Vec<bool> = freqs.iter().map(|f| *f == best).collect();
            let key: Vec<(u32, u32)> = shape
                .tokens
                .iter()
                .enumerate()
                .filter(|(p, _)| in_pattern[*p])
                .map(|(p, t)| (p as u32, *t))
                .collect();
            let g = *group_of
                .entry((shape.tokens.len(), key))
                .or_insert_with(|| {
                    groups.push(Vec::new());
                    patterns.push(in_pattern);
                    groups.len() - 1
                });
            groups[g].push(s);
        }

        // 4. Variables per group → each shape's template tokens.
        let mut texts: Vec<String> = Vec::new();
        let mut text_index: HashMap<String, usize> = HashMap::new();
        let mut tokens_of: Vec<Vec<String>> = Vec::new();
        let mut of_shape = vec![0usize; self.shapes.len()];
        for (members, pattern) in groups.iter().zip(&patterns) {
            let variable: Vec<bool> = (0..pattern.len())
                .map(|p| !pattern[p] && self.is_variable(members, p))
                .collect();
            let shown = self.shown_raw(members, &variable);
            for &s in members {
                let shape = &self.shapes[s];
                let tokens: Vec<String> = shape
                    .tokens
                    .iter()
                    .zip(&variable)
                    .map(|(t, v)| {
                        if *v {
                            WILDCARD.to_string()
                        } else {
                            self.word(*t).to_string()
                        }
                    })
                    .collect();
                let text = tokens.join(" ");
                let t = *text_index.entry(text).or_insert_with(|| {
                    // Shown with the word itself where a masked word
                    // (`ssh<NUM>`) has one value in the group (`ssh2`).
                    let display: Vec<&str> = tokens
                        .iter()
                        .enumerate()
                        .map(|(p, t)| match shown.get(&(p, shape.tokens[p])) {
                            Some(raw) => self.word(*raw),
                            None => t.as_str(),
                        })
                        .collect();
                    texts.push(display.join(" "));
                    tokens_of.push(tokens);
                    texts.len() - 1
                });
                of_shape[s] = t;
            }
        }

        // 5. Templates of different lengths with the same words are one.
        let mut parent: Vec<usize> = (0..texts.len()).collect();
        let mut by_words: HashMap<Vec<&str>, Vec<usize>> = HashMap::new();
        for (t, tokens) in tokens_of.iter().enumerate() {
            let words: Vec<&str> = tokens
                .iter()
                .map(String::as_str)
                .filter(|w| is_word(w))
                .collect();
            if words.len() >= 3 {
                by_words.entry(words).or_default().push(t);
            }
        }
        let mut families: Vec<&Vec<usize>> = by_words.values().collect();
        families.sort_unstable_by_key(|f| f[0]);
        for family in families {
            for (i, &a) in family.iter().enumerate() {
                for &b in &family[i + 1..] {
                    if tokens_of[a].len() != tokens_of[b].len() {
                        union(&mut parent, a, b);
                    }
                }
            }
        }

        // Final templates, numbered by first appearance.
        let mut number: HashMap<usize, usize> = HashMap::new();
        let mut templates: Vec<Template> = Vec::new();
        let mut final_of = vec![0usize; self.shapes.len()];
        for (s, shape) in self.shapes.iter().enumerate() {
            let root = find(&mut parent, of_shape[s]);
            let i = *number.entry(root).or_insert_with(|| {
                templates.push(Template {
                    id: templates.len() as u32 + 1,
                    text: texts[root].clone(),
                    count: 0,
                    example: shape.example.clone(),
                });
                templates.len() - 1
            });
            templates[i].count += shape.count;
            final_of[s] = i;
        }
        Templates {
            templates,
            of_shape: final_of,
        }
    }

    /// (position, masked token) → the one unmasked value it has among
    /// `members`, for constant tokens that are words with digits masked.
    fn shown_raw(&self, members: &[usize], variable: &[bool]) -> HashMap<(usize, u32), u32> {
        let mut values: HashMap<(usize, u32), Option<u32>> = HashMap::new();
        for &s in members {
            let shape = &self.shapes[s];
            for (p, token) in shape.tokens.iter().enumerate() {
                if variable[p] || !is_masked_word(self.word(*token)) {
                    continue;
                }
                let one = match shape.raw[p].as_slice() {
                    [(v, _)] => Some(*v),
                    _ => None,
                };
                values
                    .entry((p, *token))
                    .and_modify(|seen| {
                        if *seen != one {
                            *seen = None;
                        }
                    })
                    .or_insert(one);
            }
        }
        values
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// Whether position `p` is a variable among the shapes `members`.
    fn is_variable(&self, members: &[usize], p: usize) -> bool {
        let mut masked: Vec<u32> = members.iter().map(|s| self.shapes[*s].tokens[p]).collect();
        masked.sort_unstable();
        masked.dedup();
        if masked.len() < 2 {
            return false;
        }
        if masked.iter().any(|t| {
            let w = self.word(*t);
            VALUE_MASKS.contains(&w) || w.contains("<IP>")
        }) {
            return true;
        }
        let mut raw: BTreeMap<u32, u64> = BTreeMap::new();
        for s in members {
            for (v, n) in &self.shapes[*s].raw[p] {
                *raw.entry(*v).or_default() += n;
            }
        }
        let mut threshold = self.config.variable_after.max(2);
        if p == 0 && raw.keys().all(|r| is_plain_word(self.word(*r))) {
            threshold *= self.config.leading_word_factor.max(1);
        }
        if raw.len() < threshold {
            return false;
        }
        // A few words that each carry a good share of the messages (and
        // were seen several times) are
        // kinds of one event (`VM Started` / `Paused` / `Resumed` /
        // `Stopped`), not a value that varies; ids (with digits) are values.
        let messages: u64 = members.iter().map(|s| self.shapes[*s].count).sum();
        let kinds = raw.iter().all(|(v, n)| {
            !has_digit(self.word(*v))
                && *n >= KIND_MIN_MESSAGES
                && *n as f64 >= KIND_SHARE * messages as f64
        });
        !kinds
    }
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Joins two sets; the earlier template is the root.
fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

/// A template token that is a word of the event: not `<*>`, no mask, no
/// digit, not a unit.
fn is_word(token: &str) -> bool {
    token != WILDCARD
        && !token.contains('<')
        && !token.bytes().any(|b| b.is_ascii_digit())
        && !UNITS.contains(&token.trim_matches(|c| "()[],;:<>".contains(c)))
}

/// A word whose digits were masked (`ssh<NUM>`, `log<NUM>j`): letters
/// right next to `<NUM>`.
fn is_masked_word(masked: &str) -> bool {
    masked.match_indices("<NUM>").any(|(i, m)| {
        masked[..i].ends_with(|c: char| c.is_ascii_alphabetic())
            || masked[i + m.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
    })
}

/// Letters, `_`, `.` and `-`, with at most a trailing `:`, `;` or `,`.
fn is_plain_word(token: &str) -> bool {
    let body = token.strip_suffix([':', ';', ',']).unwrap_or(token);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '.' | '-'))
}

fn is_unit(word: &str) -> bool {
    UNITS.contains(&word.trim_end_matches([')', ']', ',', ';', '.']))
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
}

/// Step 1: the tokens of a message (at most `max` of them).
fn tokenize(message: &str, max: usize) -> Vec<String> {
    // A number and its unit are one token.
    let mut joined: Vec<String> = Vec::new();
    for word in message.split_whitespace() {
        match joined.last_mut() {
            Some(last) if is_unit(word) && has_digit(last) => {
                last.push(' ');
                last.push_str(word);
            }
            _ => joined.push(word.to_string()),
        }
        if joined.len() > max {
            break;
        }
    }
    let mut out: Vec<String> = Vec::new();
    for token in joined {
        // `(1.16 KB)` after another token restates it: left out.
        if !out.is_empty()
            && token.starts_with('(')
            && token.ends_with(')')
            && token.contains(' ')
            && has_digit(&token)
        {
            continue;
        }
        // Split after `key=`, and after `:` when a letter follows.
        let mut start = 0;
        let mut prev: Option<char> = None;
        for (j, c) in token.char_indices() {
            let split = match prev {
                // `key=value`, not `?a=b&c=d` in a URL.
                Some('=') => {
                    token[start..j - 1]
                        .chars()
                        .all(|k| k.is_ascii_alphanumeric() || matches!(k, '_' | '.' | '-'))
                        && j - 1 > start
                }
                Some(':') => c.is_alphabetic(),
                _ => false,
            };
            if j > start && split {
                out.push(token[start..j].to_string());
                start = j;
            }
            prev = Some(c);
        }
        out.push(token[start..].to_string());
    }
    out.truncate(max);
    out
}

/// Step 2: a token with its values masked.
fn mask(token: &str) -> String {
    if DATE_WORDS.contains(&token.trim_end_matches([',', ';'])) {
        return "<DATE>".to_string();
    }
    let b = token.as_bytes();
    let mut out = String::with_capacity(token.len());
    let mut i = 0;
    while i < b.len() {
        let after_word = i > 0 && (is_word_byte(b[i - 1]) || b[i - 1] == b'.');
        if !after_word && let Some(n) = ipv4_len(&b[i..]) {
            out.push_str("<IP>");
            i += n;
            continue;
        }
        let after_alnum = i > 0 && b[i - 1].is_ascii_alphanumeric();
        if !after_alnum && is_uuid(&b[i..]) {
            out.push_str("<UUID>");
            i += 36;
            continue;
        }
        // A negative number: `-` before a digit, not inside a word.
        if b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit) && !after_alnum {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str("<NUM>");
            continue;
        }
        if b[i].is_ascii_alphanumeric() {
            let start = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            mask_run(&token[start..i], &mut out);
            continue;
        }
        let c = token[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// One run of ASCII letters and digits.
fn mask_run(run: &str, out: &mut String) {
    let hex = |s: &str| s.bytes().all(|c| c.is_ascii_hexdigit());
    if let Some(rest) = run.strip_prefix("0x")
        && !rest.is_empty()
        && hex(rest)
    {
        out.push_str("<HEX>");
    } else if !has_digit(run) {
        out.push_str(run);
    } else if run.bytes().all(|c| c.is_ascii_digit()) {
        out.push_str("<NUM>");
    } else if run.len() >= 4 && hex(run) {
        out.push_str("<HEX>");
    } else {
        // Letters with digits (`node104`, `ssh2`): the digits are masked.
        let mut digits = false;
        for c in run.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push_str("<NUM>");
                }
                digits = true;
            } else {
                out.push(c);
                digits = false;
            }
        }
    }
}

/// Length of an IPv4 address (and `:port`) at the start of `b`, when it
/// is not followed by more of a word or another `.digit`.
fn ipv4_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    for part in 0..4 {
        let digits = b[i..]
            .iter()
            .take(3)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        i += digits;
        if part < 3 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    if b.get(i) == Some(&b':') {
        let port = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if port > 0 {
            i += 1 + port;
        }
    }
    let next = b.get(i).copied();
    if next.is_some_and(is_word_byte)
        || (next == Some(b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    Some(i)
}

/// `8-4-4-4-12` hex digits at the start of `b`, not followed by more.
fn is_uuid(b: &[u8]) -> bool {
    if b.len() < 36 || b.get(36).is_some_and(u8::is_ascii_alphanumeric) {
        return false;
    }
    b[..36].iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template id of every line, after all of them were seen.
    fn group(lines: &[&str]) -> (Vec<u32>, Templates) {
        let mut m = TemplateMiner::default();
        let shapes: Vec<ShapeId> = lines.iter().map(|l| m.add(l).unwrap()).collect();
        let t = m.templates();
        (shapes.iter().map(|s| t.of(*s).unwrap().id).collect(), t)
    }

    #[test]
    fn different_words_are_different_events() {
        let (ids, _) = group(&[
            "Failed password for invalid user admin from 10.0.0.1 port 22 ssh2",
            "Failed none for invalid user admin from 10.0.0.1 port 22 ssh2",
            "Failed password for invalid user admin from 10.0.0.2 port 23 ssh2",
            "Received disconnect from 10.0.0.1: 11: Bye Bye [preauth]",
            "Received disconnect from 10.0.0.1: 11: disconnected by user",
            "Received disconnect from 10.0.0.3: 11: Bye Bye [preauth]",
        ]);
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[3], ids[4]);
        assert_eq!(ids[3], ids[5]);
    }

    #[test]
    fn a_position_with_many_values_becomes_a_variable() {
        let names = ["admin", "oracle", "guest", "test", "ubnt", "pi"];
        let lines: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("Invalid user {n} from 10.0.0.{i}"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (ids, t) = group(&refs);
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        assert_eq!(t.iter().next().unwrap().text, "Invalid user <*> from <IP>");
        assert_eq!(t.iter().next().unwrap().count, 6);
        // Two alternatives stay two events.
        let (ids, _) = group(&[
            "Too many authentication failures for admin [preauth]",
            "Too many authentication failures for root [preauth]",
            "Too many authentication failures for admin [preauth]",
        ]);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(ids[0], ids[2]);
    }

    #[test]
    fn templates_show_values_masked_and_words_with_digits_as_they_are() {
        let lines: Vec<String> = (0..5)
            .map(|i| {
                format!(
                    "Failed password for root from 203.0.113.{i} port {} ssh2",
                    40000 + i
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (_, t) = group(&refs);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.iter().next().unwrap().text,
            "Failed password for root from <IP> port <NUM> ssh2"
        );
    }

    #[test]
    fn a_few_frequent_words_are_kinds_of_events_not_a_variable() {
        let mut lines = Vec::new();
        for (state, n) in [
            ("Started", 10),
            ("Paused", 10),
            ("Resumed", 9),
            ("Stopped", 20),
        ] {
            for i in 0..n {
                lines.push(format!(
                    "[instance: {i:08x}-0000-4000-8000-00000000000{}] VM {state} (Lifecycle Event)",
                    i % 10
                ));
            }
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (ids, t) = group(&refs);
        assert_eq!(
            t.len(),
            4,
            "{:?}",
            t.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        assert_eq!(ids[0], ids[9]);
        assert_ne!(ids[0], ids[10]);
        // Query strings are not split at every `=`, so they keep their length.
        let (ids, _) = group(&[
            "10.0.0.1 \"GET /v2/servers/detail HTTP/1.1\" status: 200 len: 1893 time: 0.24",
            "10.0.0.1 \"GET /v2/servers/detail?all_tenants=True&changes-since=2017-05-16 HTTP/1.1\" status: 200 len: 1893 time: 0.25",
            "10.0.0.2 \"GET /v2/servers/1 HTTP/1.1\" status: 200 len: 12 time: 0.20",
            "10.0.0.3 \"GET /v2/flavors HTTP/1.1\" status: 200 len: 1893 time: 0.22",
            "10.0.0.1 \"GET /v2/images HTTP/1.1\" status: 200 len: 1 time: 0.21",
        ]);
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        // A message of a word and a number is grouped by its word.
        let mut lines: Vec<String> = (0..20)
            .map(|i| format!("onStandStepChanged {}", 3000 + i))
            .collect();
        lines.extend((0..20).map(|i| format!("calculateCaloriesWithCache {i}")));
        lines.extend(
            ["theDayChanged 1", "isScreenOn 0", "timeStamp 12", "next 3"].map(String::from),
        );
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (ids, t) = group(&refs);
        assert_eq!(t.len(), 6);
        assert_eq!(ids[0], ids[19]);
        assert_ne!(ids[0], ids[20]);
    }

    #[test]
    fn the_leading_word_names_the_event() {
        let daemons = ["cupsd", "hcid", "klogd", "portmap", "sdpd", "rpc.statd"];
        let lines: Vec<String> = daemons
            .iter()
            .map(|d| format!("{d} startup succeeded"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (ids, _) = group(&refs);
        let distinct: std::collections::BTreeSet<u32> = ids.into_iter().collect();
        assert_eq!(distinct.len(), daemons.len());
    }

    #[test]
    fn an_address_next_to_a_name_is_a_variable() {
        let (ids, t) = group(&[
            "authentication failure; rhost=10.1.2.3 user=root",
            "authentication failure; rhost=host.example.net user=root",
            "authentication failure; rhost=10.1.2.4 user=root",
        ]);
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        assert_eq!(
            t.iter().next().unwrap().text,
            "authentication failure; rhost= <*> user= root"
        );
    }

    #[test]
    fn a_variable_spanning_several_tokens_is_one_template() {
        let (ids, _) = group(&[
            "proxy.example.com:5070 close, 0 bytes sent, 0 bytes received, lifetime 00:01",
            "proxy.example.com:5070 close, 1234 bytes (1.2 KB) sent, 5678 bytes (5.5 KB) received, lifetime <1 sec",
            "proxy.example.com:5070 close, 99 bytes sent, 5678 bytes (5.5 KB) received, lifetime 01:02:03",
            "proxy.example.com:5070 close, 12 bytes sent, 56 bytes received, lifetime 00:07",
            "proxy.example.com:5070 close, 13 bytes sent, 57 bytes received, lifetime 12 ms",
            "BLOCK* ask 10.0.0.1:50010 to delete blk_-123 blk_456",
            "BLOCK* ask 10.0.0.2:50010 to delete blk_789",
        ]);
        assert!(ids[..5].iter().all(|id| *id == ids[0]), "{ids:?}");
        assert_eq!(ids[5], ids[6]);
        assert_ne!(ids[0], ids[5]);
    }

    #[test]
    fn templates_change_as_evidence_arrives_and_ids_follow_first_appearance() {
        let mut m = TemplateMiner::default();
        let first = m.add("Invalid user alice from 10.0.0.1").unwrap();
        let second = m.add("Invalid user bob from 10.0.0.2").unwrap();
        let t = m.templates();
        assert_ne!(t.of(first).unwrap().id, t.of(second).unwrap().id);
        for name in ["carol", "dave", "eve"] {
            m.add(&format!("Invalid user {name} from 10.0.0.3"));
        }
        let t = m.templates();
        assert_eq!(t.of(first).unwrap().id, 1);
        assert_eq!(t.of(second).unwrap().id, 1);
        assert_eq!(t.of(first).unwrap().count, 5);
        assert_eq!(
            t.of(first).unwrap().example,
            "Invalid user alice from 10.0.0.1"
        );
    }

    #[test]
    fn limits_hold_against_hostile_input() {
        let mut m = TemplateMiner::new(MinerConfig {
            max_shapes: 2,
            max_tokens: 8,
            ..MinerConfig::default()
        });
        assert!(m.add("a b c").is_some());
        assert!(m.add(&"x ".repeat(100_000)).is_some());
        assert!(m.add("a new shape").is_none());
        assert_eq!(m.untracked(), 1);
        assert!(m.add("a b c").is_some(), "known shapes still count");
        let t = m.templates();
        assert_eq!(t.iter().map(|t| t.count).sum::<u64>(), 3);
        assert!(t.iter().all(|t| t.text.split(' ').count() <= 8));
        // Empty and whitespace-only messages are one (empty) template.
        let (ids, _) = group(&["", "   ", "\t"]);
        assert!(ids.iter().all(|id| *id == ids[0]));
    }

    #[test]
    fn tokens_and_masks() {
        assert_eq!(
            tokenize(
                "uid=0 rhost=host environment:user.dir=/ at 00:01 took <1 sec",
                64
            ),
            [
                "uid=",
                "0",
                "rhost=",
                "host",
                "environment:",
                "user.dir=",
                "/",
                "at",
                "00:01",
                "took",
                "<1 sec"
            ]
        );
        assert_eq!(
            tokenize("/a?b=c&d=e x==y =z", 64),
            ["/a?b=c&d=e", "x=", "=y", "=z"]
        );
        assert_eq!(
            tokenize("sent 10 bytes (1.2 KB) ok", 64),
            ["sent", "10", "bytes", "ok"]
        );
        assert_eq!(mask("10.1.2.3:443"), "<IP>");
        assert_eq!(mask("/10.1.2.3:443,"), "/<IP>,");
        assert_eq!(
            mask("5.36.59.76.dynamic.example.net"),
            "<IP>.dynamic.example.net"
        );
        assert_eq!(mask("10.1.2.3.4"), "<NUM>.<NUM>.<NUM>.<NUM>.<NUM>");
        assert_eq!(mask("uid=1000"), "uid=<NUM>");
        assert_eq!(mask("blk_-6952295868487656571"), "blk_<NUM>");
        assert_eq!(mask("node-104"), "node-<NUM>");
        assert_eq!(mask("0x3fa9c"), "<HEX>");
        assert_eq!(mask("snapshot.300000dcd"), "snapshot.<HEX>");
        assert_eq!(
            mask("job-550e8400-e29b-41d4-a716-446655440000"),
            "job-<UUID>"
        );
        assert_eq!(
            mask("tcpconn4.tencent.com:80"),
            "tcpconn<NUM>.tencent.com:<NUM>"
        );
        assert_eq!(mask("Jul"), "<DATE>");
        assert_eq!(mask("sshd(pam_unix)"), "sshd(pam_unix)");
        assert_eq!(mask("Grüße=5"), "Grüße=<NUM>");
        assert!(
            is_masked_word("ssh<NUM>")
                && is_masked_word("<NUM>th")
                && !is_masked_word("node-<NUM>")
        );
    }
}
