//! TCP syslog framing (RFC 6587): octet counting (`LEN SP MSG`) and
//! newline-terminated frames, auto-detected per frame.
//!
//! A frame starting with a non-zero digit followed by up to nine digits and a
//! space is octet-counted; anything else runs to the next `\n`. (A
//! newline-framed message without PRI that starts with "digits + space" is
//! ambiguous by the RFC's own design; senders put `<PRI>` first.)
//!
//! GELF over TCP ([`Framer::nul_delimited`]) has one framing only: every
//! message ends with a NUL byte.
//!
//! Memory is bounded by `max_frame`: an over-long frame is emitted cut at
//! `max_frame` bytes and marked truncated, and the rest of it is skipped as
//! it arrives — it is never buffered.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Bytes,
    pub truncated: bool,
}

/// Incremental frame splitter for one TCP stream.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_frame: usize,
    /// Bytes of the current over-long frame still to discard: `Some(n)` for
    /// octet counting, `None` + `skip_to_delimiter` for delimited framing.
    skip: usize,
    skip_to_delimiter: bool,
    /// Frames end with this byte (`\n` for syslog, NUL for GELF).
    delimiter: u8,
    /// Octet counting is recognised (syslog only).
    octet_counting: bool,
}

impl Framer {
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame: max_frame.max(16),
            skip: 0,
            skip_to_delimiter: false,
            delimiter: b'\n',
            octet_counting: true,
        }
    }

    /// Frames that end with a NUL byte (GELF over TCP).
    pub fn nul_delimited(max_frame: usize) -> Self {
        Self {
            delimiter: 0,
            octet_counting: false,
            ..Self::new(max_frame)
        }
    }

    /// The read buffer, for `AsyncReadExt::read_buf`.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if !self.discard() {
                return None;
            }
            if self.buf.is_empty() {
                return None;
            }
            // Stray separators between frames.
            if matches!(self.buf[0], b'\n' | b'\r' | b'\0') {
                self.buf.advance(1);
                continue;
            }
            if !self.octet_counting {
                return self.delimited();
            }
            return match octet_count(&self.buf) {
                Count::Complete(len, header) => self.counted(len, header),
                Count::NeedMore => None,
                Count::NotCounted => self.delimited(),
            };
        }
    }

    /// At end of stream: whatever is left becomes a last frame.
    pub fn finish(&mut self) -> Option<Frame> {
        if let Some(f) = self.next_frame() {
            return Some(f);
        }
        if self.skip > 0 || self.skip_to_delimiter || self.buf.is_empty() {
            self.buf.clear();
            return None;
        }
        let bytes = self.buf.split().freeze();
        let truncated = bytes.len() > self.max_frame;
        Some(Frame {
            bytes: bytes.slice(..bytes.len().min(self.max_frame)),
            truncated,
        })
    }

    /// Drops bytes of an over-long frame; true when done.
    fn discard(&mut self) -> bool {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return false;
            }
        }
        if self.skip_to_delimiter {
            match memchr::memchr(self.delimiter, &self.buf) {
                Some(i) => {
                    self.buf.advance(i + 1);
                    self.skip_to_delimiter = false;
                }
                None => {
                    self.buf.clear();
                    return false;
                }
            }
        }
        true
    }

    fn counted(&mut self, len: usize, header: usize) -> Option<Frame> {
        if len > self.max_frame {
            if self.buf.len() < header + self.max_frame {
                return None;
            }
            self.buf.advance(header);
            let bytes = self.buf.split_to(self.max_frame).freeze();
            self.skip = len - self.max_frame;
            return Some(Frame {
                bytes,
                truncated: true,
            });
        }
        if self.buf.len() < header + len {
            return None;
        }
        self.buf.advance(header);
        Some(Frame {
            bytes: self.buf.split_to(len).freeze(),
            truncated: false,
        })
    }

    fn delimited(&mut self) -> Option<Frame> {
        let limit = self.buf.len().min(self.max_frame + 1);
        // memchr: a byte-wise `position` was 116 ns a 306-byte frame, 5× the
        // octet-counted framer (criterion `frame_newline_300B`).
        match memchr::memchr(self.delimiter, &self.buf[..limit]) {
            Some(i) => {
                let mut bytes = self.buf.split_to(i + 1).freeze();
                bytes.truncate(i);
                if self.delimiter == b'\n' && bytes.ends_with(b"\r") {
                    bytes.truncate(i - 1);
                }
                Some(Frame {
                    bytes,
                    truncated: false,
                })
            }
            None if self.buf.len() > self.max_frame => {
                let bytes = self.buf.split_to(self.max_frame).freeze();
                self.skip_to_delimiter = true;
                Some(Frame {
                    bytes,
                    truncated: true,
                })
            }
            None => None,
        }
    }
}

enum Count {
    /// (message length, header length including the space)
    Complete(usize, usize),
    NeedMore,
    NotCounted,
}

fn octet_count(buf: &[u8]) -> Count {
    if !matches!(buf.first(), Some(b'1'..=b'9')) {
        return Count::NotCounted;
    }
    let digits = buf
        .iter()
        .take(11)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > 10 {
        return Count::NotCounted;
    }
    match buf.get(digits) {
        None => Count::NeedMore,
        Some(b' ') => {
            // At most 10 ASCII digits: parses, and fits in usize on 64-bit.
            let len = buf[..digits]
                .iter()
                .fold(0usize, |n, d| n * 10 + (d - b'0') as usize);
            Count::Complete(len, digits + 1)
        }
        Some(_) => Count::NotCounted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut f = Framer::new(max);
        let mut out = vec![];
        for chunk in input {
            f.buffer().extend_from_slice(chunk);
            while let Some(frame) = f.next_frame() {
                out.push((
                    String::from_utf8_lossy(&frame.bytes).into_owned(),
                    frame.truncated,
                ));
            }
        }
        if let Some(frame) = f.finish() {
            out.push((
                String::from_utf8_lossy(&frame.bytes).into_owned(),
                frame.truncated,
            ));
        }
        out
    }

    fn ok(s: &str) -> (String, bool) {
        (s.to_string(), false)
    }

    #[test]
    fn newline_and_octet_counting_mixed_per_frame() {
        let got = frames(&[b"<13>a\n9 <13>b\nc d\n<13>c\r\n5 <13>e"], 1024);
        assert_eq!(
            got,
            [ok("<13>a"), ok("<13>b\nc d"), ok("<13>c"), ok("<13>e")]
        );
    }

    #[test]
    fn frames_split_across_reads() {
        let got = frames(&[b"1", b"0 <13>hello", b"!<13>x", b"yz\n<13>tail"], 1024);
        assert_eq!(got, [ok("<13>hello!"), ok("<13>xyz"), ok("<13>tail")]);
    }

    #[test]
    fn over_long_frames_are_truncated_and_the_rest_skipped() {
        let long = format!("<13>{}\n<13>next\n", "x".repeat(100));
        let got = frames(&[long.as_bytes()], 20);
        assert_eq!(
            got,
            [(format!("<13>{}", "x".repeat(16)), true), ok("<13>next")]
        );
        let counted = format!("104 <13>{}<13>after\n", "y".repeat(100));
        let got = frames(&[&counted.as_bytes()[..50], &counted.as_bytes()[50..]], 20);
        assert_eq!(
            got,
            [(format!("<13>{}", "y".repeat(16)), true), ok("<13>after")]
        );
    }

    #[test]
    fn gelf_frames_end_only_at_nul() {
        let mut f = Framer::nul_delimited(64);
        f.buffer()
            .extend_from_slice(b"{\"a\":\n1}\0\0{\"b\":2}\x00{\"c\"");
        let mut got = Vec::new();
        while let Some(frame) = f.next_frame() {
            got.push(String::from_utf8(frame.bytes.to_vec()).unwrap());
        }
        assert_eq!(got, ["{\"a\":\n1}", "{\"b\":2}"]);
        f.buffer().extend_from_slice(&[b'x'; 100]);
        f.buffer().extend_from_slice(b"\0{}\0");
        let cut = f.next_frame().unwrap();
        assert!(cut.truncated && cut.bytes.len() == 64);
        assert_eq!(&f.next_frame().unwrap().bytes[..], b"{}");
    }

    #[test]
    fn digits_without_space_are_newline_framed() {
        let got = frames(&[b"2026-11-26 text\n123abc\n"], 1024);
        assert_eq!(got, [ok("2026-11-26 text"), ok("123abc")]);
    }
}
