//! The condition of a Sigma detection: search identifiers combined with
//! `and`, `or`, `not` and parentheses (precedence `not` > `and` > `or`),
//! and the quantifiers `1 of <pattern>`, `all of <pattern>`, `1 of them`,
//! `all of them` (patterns may end in or contain `*`; `them` leaves out
//! identifiers starting with `_`). Aggregations after `|` (the deprecated
//! `count() by …` form) are refused: Sigma correlation rules replace them.

use super::{SigmaError, SigmaResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Search(String),
    /// `1 of …` (`all == false`) or `all of …` over the named searches.
    Of {
        all: bool,
        searches: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    And,
    Or,
    Not,
    Open,
    Close,
    One,
    All,
    Of,
    Word(String),
}

fn tokenize(text: &str) -> SigmaResult<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                out.push(Token::Open);
                chars.next();
            }
            ')' => {
                out.push(Token::Close);
                chars.next();
            }
            '|' => {
                return Err(SigmaError::new(format!(
                    "condition {text:?}: aggregations after '|' (count() …) are not supported; \
                     write a Sigma correlation rule instead"
                )));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') => {
                let mut end = i;
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') {
                        end = j + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &text[i..end];
                out.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "of" => Token::Of,
                    "all" => Token::All,
                    "1" => Token::One,
                    _ => Token::Word(word.to_string()),
                });
            }
            other => {
                return Err(SigmaError::new(format!(
                    "condition {text:?}: unexpected character {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

/// Parses `text`, resolving identifiers and patterns against `names` (the
/// detection's searches). An unknown identifier or a pattern matching
/// nothing is an error.
pub fn parse(text: &str, names: &[String]) -> SigmaResult<Cond> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        text,
        tokens,
        at: 0,
        names,
        depth: 0,
    };
    let cond = p.or()?;
    if p.at != p.tokens.len() {
        return Err(p.error("unexpected words after the end of the condition"));
    }
    Ok(cond)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
    names: &'a [String],
    depth: usize,
}

/// Nesting deeper than this is refused (parsing recurses).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn error(&self, what: &str) -> SigmaError {
        SigmaError::new(format!("condition {:?}: {what}", self.text))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> SigmaResult<Cond> {
        let mut parts = vec![self.and()?];
        while self.eat(&Token::Or) {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Or(parts)
        })
    }

    fn and(&mut self) -> SigmaResult<Cond> {
        let mut parts = vec![self.unary()?];
        while self.eat(&Token::And) {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::And(parts)
        })
    }

    fn unary(&mut self) -> SigmaResult<Cond> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let out = if self.eat(&Token::Not) {
            Cond::Not(Box::new(self.unary()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(out)
    }

    fn primary(&mut self) -> SigmaResult<Cond> {
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or()?;
                if !self.eat(&Token::Close) {
                    return Err(self.error("missing ')'"));
                }
                Ok(inner)
            }
            Some(Token::One) | Some(Token::All) => {
                let all = self.tokens[self.at] == Token::All;
                self.at += 1;
                if !self.eat(&Token::Of) {
                    return Err(self.error("expected 'of' after '1' or 'all'"));
                }
                let Some(Token::Word(target)) = self.tokens.get(self.at).cloned() else {
                    return Err(self.error("expected a search pattern or 'them' after 'of'"));
                };
                self.at += 1;
                let searches: Vec<String> = if target.eq_ignore_ascii_case("them") {
                    self.names
                        .iter()
                        .filter(|n| !n.starts_with('_'))
                        .cloned()
                        .collect()
                } else {
                    self.names
                        .iter()
                        .filter(|n| glob_name(&target, n))
                        .cloned()
                        .collect()
                };
                if searches.is_empty() {
                    return Err(self.error(&format!("'{target}' names no search")));
                }
                Ok(Cond::Of { all, searches })
            }
            Some(Token::Word(w)) => {
                self.at += 1;
                if w.contains('*') {
                    return Err(self.error(&format!(
                        "'{w}': a pattern needs '1 of' or 'all of' before it"
                    )));
                }
                if !self.names.contains(&w) {
                    return Err(self.error(&format!("no search named '{w}'")));
                }
                Ok(Cond::Search(w))
            }
            Some(t) => Err(self.error(&format!("unexpected {t:?}"))),
            None => Err(self.error("ends too early")),
        }
    }
}

/// `pattern` (with `*` for any run of characters) matches `name`.
fn glob_name(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer wildcard match with backtracking to the last star.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let n = names(&["a", "b", "c"]);
        assert_eq!(
            parse("a or b and not c", &n).unwrap(),
            Cond::Or(vec![
                Cond::Search("a".into()),
                Cond::And(vec![
                    Cond::Search("b".into()),
                    Cond::Not(Box::new(Cond::Search("c".into())))
                ])
            ])
        );
        assert_eq!(
            parse("(a or b) and c", &n).unwrap(),
            Cond::And(vec![
                Cond::Or(vec![Cond::Search("a".into()), Cond::Search("b".into())]),
                Cond::Search("c".into())
            ])
        );
    }

    #[test]
    fn quantifiers_resolve_patterns_and_them() {
        let n = names(&["selection_a", "selection_b", "filter", "_helper"]);
        assert_eq!(
            parse("1 of selection_* and not filter", &n).unwrap(),
            Cond::And(vec![
                Cond::Of {
                    all: false,
                    searches: names(&["selection_a", "selection_b"])
                },
                Cond::Not(Box::new(Cond::Search("filter".into())))
            ])
        );
        assert_eq!(
            parse("all of them", &n).unwrap(),
            Cond::Of {
                all: true,
                searches: names(&["selection_a", "selection_b", "filter"])
            }
        );
        assert!(glob_name("sel*_x*", "sel_1_x2"));
        assert!(!glob_name("sel*_x", "sel_1_x2"));
    }

    #[test]
    fn mistakes_are_named() {
        let n = names(&["a"]);
        for (text, says) in [
            ("a and b", "no search named 'b'"),
            ("a |count() > 5", "aggregations"),
            ("(a", "missing ')'"),
            ("1 of x*", "names no search"),
            ("a*", "needs '1 of'"),
            ("a a", "unexpected words"),
            ("a and", "ends too early"),
        ] {
            let e = parse(text, &n).unwrap_err().0;
            assert!(e.contains(says), "{text}: {e}");
        }
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep, &n).unwrap_err().0.contains("too deeply"));
    }
}
