//! Sigma string values: `*` matches any run of characters, `?` one
//! character, `\*` `\?` `\\` are the characters themselves (any other
//! backslash is literal, as Windows paths need); and the modifiers that
//! rewrite a value before it is matched (`windash`, `base64`,
//! `base64offset`, then `contains`/`startswith`/`endswith`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{SigmaError, SigmaResult};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Piece {
    Lit(String),
    Star,
    One,
}

/// A value as pieces, literals merged and stars collapsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern(Vec<Piece>);

/// What a pattern needs of the matching machinery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Any value (a lone `*`): the field is present.
    Any,
    Exact(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// Inner wildcards: a LIKE pattern (`%`, `_`, `\` escapes).
    Like(String),
}

impl Pattern {
    /// A Sigma value with its wildcards and escapes.
    pub fn parse(value: &str) -> Self {
        let mut pieces = Vec::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&n @ ('*' | '?' | '\\')) => {
                        chars.next();
                        push_char(&mut pieces, n);
                    }
                    _ => push_char(&mut pieces, '\\'),
                },
                '*' => {
                    if pieces.last() != Some(&Piece::Star) {
                        pieces.push(Piece::Star);
                    }
                }
                '?' => pieces.push(Piece::One),
                c => push_char(&mut pieces, c),
            }
        }
        Pattern(pieces)
    }

    /// `text` as it is, no wildcards.
    pub fn literal(text: &str) -> Self {
        if text.is_empty() {
            Pattern(Vec::new())
        } else {
            Pattern(vec![Piece::Lit(text.to_string())])
        }
    }

    pub fn has_wildcards(&self) -> bool {
        self.0.iter().any(|p| !matches!(p, Piece::Lit(_)))
    }

    /// The text of a pattern without wildcards.
    pub fn text(&self) -> Option<String> {
        if self.has_wildcards() {
            return None;
        }
        Some(
            self.0
                .iter()
                .map(|p| match p {
                    Piece::Lit(s) => s.as_str(),
                    _ => "",
                })
                .collect(),
        )
    }

    /// Wrapped in stars as `contains`/`startswith`/`endswith` ask.
    pub fn wrapped(mut self, star_before: bool, star_after: bool) -> Self {
        if star_before && self.0.first() != Some(&Piece::Star) {
            self.0.insert(0, Piece::Star);
        }
        if star_after && self.0.last() != Some(&Piece::Star) {
            self.0.push(Piece::Star);
        }
        self
    }

    /// Lower-cased literals, for matching against a lower-cased column.
    pub fn lowercase(&self) -> Self {
        Pattern(
            self.0
                .iter()
                .map(|p| match p {
                    Piece::Lit(s) => Piece::Lit(s.to_lowercase()),
                    other => other.clone(),
                })
                .collect(),
        )
    }

    pub fn shape(&self) -> Shape {
        use Piece::*;
        match self.0.as_slice() {
            [] => Shape::Exact(String::new()),
            [Star] => Shape::Any,
            [Lit(s)] => Shape::Exact(s.clone()),
            [Star, Lit(s), Star] => Shape::Contains(s.clone()),
            [Lit(s), Star] => Shape::StartsWith(s.clone()),
            [Star, Lit(s)] => Shape::EndsWith(s.clone()),
            pieces => {
                let mut like = String::new();
                for p in pieces {
                    match p {
                        Star => like.push('%'),
                        One => like.push('_'),
                        Lit(s) => {
                            for c in s.chars() {
                                if matches!(c, '%' | '_' | '\\') {
                                    like.push('\\');
                                }
                                like.push(c);
                            }
                        }
                    }
                }
                Shape::Like(like)
            }
        }
    }
}

fn push_char(pieces: &mut Vec<Piece>, c: char) {
    if let Some(Piece::Lit(s)) = pieces.last_mut() {
        s.push(c);
    } else {
        pieces.push(Piece::Lit(c.to_string()));
    }
}

/// The dashes Windows command lines accept where `-` or `/` is written.
const WINDASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
/// At most this many option dashes per value (5^n variants).
const MAX_WINDASH_PLACES: usize = 4;

/// `windash`: every option dash (a `-` or `/` after a non-word character
/// and before a word character, e.g. `cmd -enc`) in each of its five
/// spellings, all combinations.
pub fn windash(value: &str) -> SigmaResult<Vec<String>> {
    let chars: Vec<char> = value.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let places: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && !word(i.checked_sub(1).and_then(|j| chars.get(j)))
                && word(chars.get(i + 1))
        })
        .collect();
    if places.len() > MAX_WINDASH_PLACES {
        return Err(SigmaError::new(format!(
            "windash: {value:?} has {} option dashes, more than {MAX_WINDASH_PLACES}",
            places.len()
        )));
    }
    let mut out = vec![chars];
    for &at in &places {
        out = out
            .into_iter()
            .flat_map(|v| {
                WINDASHES.iter().map(move |&d| {
                    let mut v = v.clone();
                    v[at] = d;
                    v
                })
            })
            .collect();
    }
    Ok(out.into_iter().map(|v| v.into_iter().collect()).collect())
}

/// `base64`: the value's Base64 encoding.
pub fn base64(value: &str) -> String {
    STANDARD.encode(value.as_bytes())
}

/// `base64offset`: the three encodings of the value as it appears at any
/// offset inside a longer Base64-encoded text — each cut to the characters
/// that depend on the value alone.
pub fn base64offset(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let n = bytes.len();
    (0..3)
        .map(|shift| {
            let mut padded = vec![b' '; shift];
            padded.extend_from_slice(bytes);
            let encoded = STANDARD.encode(&padded);
            // Leading characters that also encode the padding go; so do
            // trailing ones that depend on whatever follows the value.
            let start = [0, 2, 3][shift];
            let cut_end = [0, 3, 2][(n + shift) % 3];
            let end = encoded.len().saturating_sub(cut_end);
            encoded.get(start..end.max(start)).unwrap_or("").to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_escapes() {
        assert_eq!(
            Pattern::parse("*\\cmd.exe").shape(),
            Shape::EndsWith("\\cmd.exe".into())
        );
        assert_eq!(Pattern::parse("a\\*b").shape(), Shape::Exact("a*b".into()));
        assert_eq!(Pattern::parse("**x*").shape(), Shape::Contains("x".into()));
        assert_eq!(
            Pattern::parse("a?b*c%_").shape(),
            Shape::Like("a_b%c\\%\\_".into())
        );
        assert_eq!(Pattern::parse("*").shape(), Shape::Any);
        assert_eq!(Pattern::parse("").shape(), Shape::Exact(String::new()));
        assert_eq!(
            Pattern::parse("Fail")
                .wrapped(true, true)
                .lowercase()
                .shape(),
            Shape::Contains("fail".into())
        );
    }

    #[test]
    fn windash_spells_option_dashes_five_ways() {
        let v = windash(" -enc ").unwrap();
        assert_eq!(v.len(), 5);
        assert!(v.contains(&" /enc ".to_string()));
        assert!(v.contains(&" \u{2013}enc ".to_string()));
        // A dash inside a word is not an option.
        assert_eq!(windash("x-y").unwrap(), vec!["x-y".to_string()]);
        assert_eq!(windash(" -a -b").unwrap().len(), 25);
        assert!(windash(" -a -b -c -d -e").is_err());
    }

    #[test]
    fn base64offset_finds_the_value_at_any_offset() {
        let needle = "http://";
        let variants = base64offset(needle);
        for prefix in ["", "x", "xy", "abc", "abcd"] {
            let encoded = STANDARD.encode(format!("{prefix}{needle}-tail").as_bytes());
            assert!(
                variants.iter().any(|v| encoded.contains(v.as_str())),
                "{prefix:?}: {encoded} has none of {variants:?}"
            );
        }
        assert_eq!(base64("abc"), "YWJj");
    }
}
