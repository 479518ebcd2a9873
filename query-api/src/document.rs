//! Documents a customer keeps — invoices and compliance reports — built
//! once as a small block model and rendered two ways: HTML (maud, every
//! value escaped) and PDF (pdf-writer).
//!
//! The PDF uses only the standard 14 fonts every reader has (Helvetica for
//! prose, Courier for tables so columns line up without font metrics), so
//! no font file ships with the binary. They are WinAnsi-encoded: a
//! character outside Latin-1 prints as `?` in the PDF; the HTML rendering
//! keeps every character. A logo is linked from the HTML only: the server
//! never fetches a tenant-supplied URL to embed it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::error::ApiError;
use crate::state::AppState;

/// Who the document is from, as its header shows it.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub name: String,
    pub logo_url: Option<String>,
    /// `#RRGGBB`.
    pub primary_color: String,
}

impl Default for Letterhead {
    fn default() -> Self {
        Self {
            name: "SecureNet".into(),
            logo_url: None,
            primary_color: "#1F3A5F".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Block {
    Heading(String),
    Paragraph(String),
    /// Label/value pairs, one per line.
    Facts(Vec<(String, String)>),
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

#[derive(Debug, Clone)]
pub struct Document {
    pub letterhead: Letterhead,
    pub title: String,
    /// Lines under the title (organization, period, generated at).
    pub subtitle: Vec<String>,
    pub blocks: Vec<Block>,
}

impl Document {
    pub fn new(letterhead: Letterhead, title: impl Into<String>) -> Self {
        Self {
            letterhead,
            title: title.into(),
            subtitle: Vec::new(),
            blocks: Vec::new(),
        }
    }

    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    pub fn facts<L: Into<String>, V: Into<String>>(
        &mut self,
        facts: impl IntoIterator<Item = (L, V)>,
    ) -> &mut Self {
        self.blocks.push(Block::Facts(
            facts
                .into_iter()
                .map(|(l, v)| (l.into(), v.into()))
                .collect(),
        ));
        self
    }

    pub fn table(&mut self, columns: &[&str], rows: Vec<Vec<String>>) -> &mut Self {
        self.blocks.push(Block::Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        });
        self
    }

    pub fn to_html(&self) -> String {
        let color = safe_color(&self.letterhead.primary_color);
        let style = format!(
            "body{{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222}}\
             header{{border-bottom:4px solid {color};margin-bottom:1em}}\
             h1{{color:{color}}}h2{{color:{color};margin-top:1.5em}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
             dl{{display:grid;grid-template-columns:max-content auto;gap:2px 1em}}dt{{font-weight:bold}}"
        );
        let markup: Markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (self.title) " — " (self.letterhead.name) }
                    style { (PreEscaped(style)) }
                }
                body {
                    header {
                        @if let Some(logo) = &self.letterhead.logo_url {
                            img src=(logo) alt=(self.letterhead.name) height="48";
                        }
                        p.brand { strong { (self.letterhead.name) } }
                    }
                    h1 { (self.title) }
                    @for line in &self.subtitle { p { (line) } }
                    @for block in &self.blocks {
                        @match block {
                            Block::Heading(t) => h2 { (t) },
                            Block::Paragraph(t) => p { (t) },
                            Block::Facts(facts) => dl {
                                @for (l, v) in facts { dt { (l) } dd { (v) } }
                            },
                            Block::Table { columns, rows } => table {
                                thead { tr { @for c in columns { th { (c) } } } }
                                tbody {
                                    @for row in rows { tr { @for v in row { td { (v) } } } }
                                }
                            },
                        }
                    }
                }
            }
        };
        markup.into_string()
    }

    /// A4 pages, laid out top to bottom with page breaks between lines.
    pub fn to_pdf(&self) -> Vec<u8> {
        let mut layout = Layout::new(&self.letterhead);
        layout.line(Font::Bold, 18.0, &self.title);
        for line in &self.subtitle {
            layout.line(Font::Regular, 10.0, line);
        }
        for block in &self.blocks {
            match block {
                Block::Heading(t) => {
                    // Never a heading alone at the foot of a page.
                    layout.need(60.0);
                    layout.gap(8.0);
                    layout.line(Font::Bold, 13.0, t);
                }
                Block::Paragraph(t) => {
                    for line in wrap(t, HELVETICA_CHARS_PER_LINE) {
                        layout.line(Font::Regular, 10.0, &line);
                    }
                }
                Block::Facts(facts) => {
                    let width = facts.iter().map(|(l, _)| l.chars().count()).max();
                    let width = width.unwrap_or(0).min(40);
                    for (l, v) in facts {
                        let text = format!("{l:<width$}  {v}");
                        for line in wrap_hard(&text, COURIER_CHARS_PER_LINE) {
                            layout.line(Font::Mono, 9.0, &line);
                        }
                    }
                }
                Block::Table { columns, rows } => {
                    // A wide table is set smaller (down to 6 pt, 137
                    // characters) before any line is cut.
                    let lines = table_lines(columns, rows);
                    let widest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
                    let size = if widest > COURIER_CHARS_PER_LINE {
                        (LINE_WIDTH / (0.6 * widest as f32)).max(6.0)
                    } else {
                        9.0
                    };
                    let per_line = (LINE_WIDTH / (0.6 * size)) as usize;
                    for line in lines.iter().flat_map(|l| wrap_hard(l, per_line)) {
                        layout.line(Font::Mono, size, &line);
                    }
                }
            }
            layout.gap(4.0);
        }
        layout.finish(&self.title, &self.letterhead.name)
    }
}

/// `#RRGGBB` or the default colour: the value goes into a stylesheet.
fn safe_color(c: &str) -> &str {
    let ok = c.len() == 7 && c.starts_with('#') && c.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
    if ok { c } else { "#1F3A5F" }
}

fn rgb(c: &str) -> (f32, f32, f32) {
    let c = safe_color(c);
    let channel = |i: usize| u8::from_str_radix(&c[i..i + 2], 16).unwrap_or(0) as f32 / 255.0;
    (channel(1), channel(3), channel(5))
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
/// The text width between the margins, in points.
const LINE_WIDTH: f32 = PAGE_W - 2.0 * MARGIN;
/// Courier is 0.6 em wide: 495 pt of line at 9 pt.
const COURIER_CHARS_PER_LINE: usize = 91;
/// Helvetica averages about 0.5 em; 10 pt prose wraps on the safe side.
const HELVETICA_CHARS_PER_LINE: usize = 90;

/// Greedy word wrap at `width` characters; longer words are cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A table as fixed-width text: each column as wide as its widest cell
/// (cells cut with `…` beyond 40 characters), the header underlined.
fn table_lines(columns: &[String], rows: &[Vec<String>]) -> Vec<String> {
    const MAX_CELL: usize = 40;
    let cut = |s: &str| -> String {
        if s.chars().count() > MAX_CELL {
            let mut out: String = s.chars().take(MAX_CELL - 1).collect();
            out.push('…');
            out
        } else {
            s.to_string()
        }
    };
    let mut widths: Vec<usize> = columns.iter().map(|c| cut(c).chars().count()).collect();
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cut(v).chars().count());
            }
        }
    }
    let render = |cells: &[String]| -> String {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            let v = cells.get(i).map(|s| cut(s)).unwrap_or_default();
            let pad = w.saturating_sub(v.chars().count());
            line.push_str(&v);
            line.push_str(&" ".repeat(pad + 2));
        }
        line.trim_end().to_string()
    };
    let mut out = vec![render(columns)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    if rows.is_empty() {
        out.push("(none)".into());
    }
    out.extend(rows.iter().map(|r| render(r)));
    out
}

/// Cuts a fixed-width line into pieces (a table wider than the page
/// continues on the next line rather than off the page).
fn wrap_hard(line: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= width {
        return vec![line.to_string()];
    }
    chars.chunks(width).map(|c| c.iter().collect()).collect()
}

/// WinAnsiEncoding bytes: ASCII and Latin-1 map to themselves, a few
/// typographic characters to their WinAnsi codes, anything else to `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '€' => 0x80,
            '…' => 0x85,
            '–' => 0x96,
            '—' => 0x97,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            _ => b'?',
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn resource(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
            Font::Mono => Name(b"F3"),
        }
    }
}

/// Lines placed top to bottom on A4 pages; a new page when the next line
/// does not fit. Every page carries the letterhead band and a footer.
struct Layout {
    pages: Vec<Content>,
    y: f32,
    brand: String,
    color: (f32, f32, f32),
}

impl Layout {
    fn new(letterhead: &Letterhead) -> Self {
        let mut layout = Self {
            pages: Vec::new(),
            y: 0.0,
            brand: letterhead.name.clone(),
            color: rgb(&letterhead.primary_color),
        };
        layout.new_page();
        layout
    }

    fn new_page(&mut self) {
        let mut page = Content::new();
        let (r, g, b) = self.color;
        page.set_fill_rgb(r, g, b);
        page.rect(0.0, PAGE_H - 36.0, PAGE_W, 36.0);
        page.fill_nonzero();
        page.set_fill_rgb(1.0, 1.0, 1.0);
        page.begin_text();
        page.set_font(Font::Bold.resource(), 14.0);
        page.next_line(MARGIN, PAGE_H - 24.0);
        page.show(Str(&win_ansi(&self.brand)));
        page.end_text();
        page.set_fill_rgb(0.13, 0.13, 0.13);
        self.pages.push(page);
        self.y = PAGE_H - 36.0 - 30.0;
    }

    /// A new page unless `points` of height are left on this one.
    fn need(&mut self, points: f32) {
        if self.y - points < MARGIN {
            self.new_page();
        }
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    fn line(&mut self, font: Font, size: f32, text: &str) {
        let leading = size * 1.35;
        if self.y - leading < MARGIN || self.pages.is_empty() {
            self.new_page();
        }
        self.y -= leading;
        let Some(page) = self.pages.last_mut() else {
            return;
        };
        page.begin_text();
        page.set_font(font.resource(), size);
        page.next_line(MARGIN, self.y);
        page.show(Str(&win_ansi(text)));
        page.end_text();
    }

    fn finish(self, title: &str, author: &str) -> Vec<u8> {
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let info = Ref::new(3);
        let fonts = [Ref::new(4), Ref::new(5), Ref::new(6)];
        let mut pdf = Pdf::new();
        pdf.catalog(catalog).pages(tree);
        let count = self.pages.len();
        let page_ids: Vec<Ref> = (0..count).map(|i| Ref::new(7 + 2 * i as i32)).collect();
        pdf.pages(tree)
            .kids(page_ids.iter().copied())
            .count(count as i32);
        for (font, base) in
            fonts
                .iter()
                .zip([&b"Helvetica"[..], &b"Helvetica-Bold"[..], &b"Courier"[..]])
        {
            pdf.type1_font(*font)
                .base_font(Name(base))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        for (i, mut content) in self.pages.into_iter().enumerate() {
            let page_id = page_ids[i];
            let content_id = Ref::new(8 + 2 * i as i32);
            content.set_fill_rgb(0.45, 0.45, 0.45);
            content.begin_text();
            content.set_font(Font::Regular.resource(), 8.0);
            content.next_line(MARGIN, 28.0);
            let footer = format!("{title} - page {} of {count}", i + 1);
            content.show(Str(&win_ansi(&footer)));
            content.end_text();
            let mut page = pdf.page(page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
            page.parent(tree);
            page.contents(content_id);
            let mut resources = page.resources();
            let mut names = resources.fonts();
            names.pair(Font::Regular.resource(), fonts[0]);
            names.pair(Font::Bold.resource(), fonts[1]);
            names.pair(Font::Mono.resource(), fonts[2]);
            names.finish();
            resources.finish();
            page.finish();
            pdf.stream(content_id, &content.finish());
        }
        pdf.document_info(info)
            .title(TextStr(title))
            .author(TextStr(author))
            .producer(TextStr("SecureNet"));
        pdf.finish()
    }
}

/// Whether the caller asked for the PDF: `format=pdf`, or no `format` and
/// an `Accept` naming `application/pdf`. `format` is `json`/`html` (the
/// other rendering of the route) or `pdf`.
pub fn wants_pdf(format: Option<&str>, headers: &axum::http::HeaderMap) -> Result<bool, ApiError> {
    match format {
        Some("pdf") => Ok(true),
        Some("json" | "html") => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!(
            "format {other:?}: use pdf or the route's default"
        ))),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/pdf"))),
    }
}

/// A PDF download named `<name>.pdf`.
pub fn pdf_response(pdf: Vec<u8>, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}.pdf\"", file_name(name)),
            ),
        ],
        pdf,
    )
        .into_response()
}

/// An HTML page; scripts, frames and remote content other than images are
/// refused by its Content-Security-Policy (tenant data is in it).
pub fn html_response(html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src https:",
            ),
        ],
        html,
    )
        .into_response()
}

fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The letterhead of `org`'s documents: the branding its notifications
/// carry (its own, else its MSP's, while the plan includes white-label),
/// else SecureNet's.
pub async fn letterhead_for(
    state: &AppState,
    org: &control::Organization,
) -> Result<Letterhead, ApiError> {
    Ok(match state.store.applied_branding(org).await? {
        Some(applied) => {
            let b = applied.branding;
            Letterhead {
                name: b.name,
                logo_url: b.logo_url,
                primary_color: b
                    .primary_color
                    .unwrap_or_else(|| Letterhead::default().primary_color),
            }
        }
        None => Letterhead::default(),
    })
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Document {
        let mut doc = Document::new(
            Letterhead {
                name: "Acme <Shield>".into(),
                logo_url: Some("https://acme.test/logo.png?a=1&b=\"2\"".into()),
                primary_color: "#0A1B2C".into(),
            },
            "Compliance report",
        );
        doc.subtitle.push("acme · 2026-11".into());
        doc.heading("Devices")
            .table(
                &["host", "critical"],
                vec![vec!["<script>alert(1)</script>".into(), "2".into()]],
            )
            .facts([("retention", "30 days")])
            .paragraph("word ".repeat(100));
        doc
    }

    #[test]
    fn html_escapes_every_value() {
        let html = sample().to_html();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("Acme &lt;Shield&gt;"));
        assert!(html.contains("&amp;b=&quot;2&quot;"));
        assert!(html.contains("#0A1B2C"));
    }

    #[test]
    fn a_hostile_colour_never_reaches_the_stylesheet() {
        let mut doc = sample();
        doc.letterhead.primary_color = "red;}</style><script>".into();
        let html = doc.to_html();
        assert!(!html.contains("<script>"));
        assert!(html.contains("#1F3A5F"));
    }

    #[test]
    fn pdf_is_well_formed_and_breaks_pages() {
        let mut doc = sample();
        let rows = (0..200).map(|i| vec![format!("host-{i}"), i.to_string()]);
        doc.table(&["host", "n"], rows.collect());
        let pdf = doc.to_pdf();
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.ends_with(b"%%EOF") || pdf.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&pdf);
        // 200 rows of 12 pt leading need more than one A4 page.
        let pages = text.matches("/Type /Page").count() - text.matches("/Type /Pages").count();
        assert!(pages >= 3, "{pages} pages");
        assert!(text.contains(&format!("/Count {pages}")));
        assert!(text.contains("(host-199"));
        assert!(text.contains("page 1 of"));
    }

    #[test]
    fn text_outside_latin1_is_replaced_not_dropped() {
        assert_eq!(win_ansi("é€日"), vec![0xe9, 0x80, b'?']);
    }

    #[test]
    fn wrapping_keeps_every_word() {
        let text = "alpha beta gamma delta epsilon averyveryverylongword";
        let lines = wrap(text, 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 10), "{lines:?}");
        assert_eq!(lines.join(" ").replace(' ', ""), text.replace(' ', ""));
    }
}
