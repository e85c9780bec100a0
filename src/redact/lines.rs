//! Splitting a byte stream into lines with bounded memory, for streamed
//! text and NDJSON: a line longer than the limit is never held whole; it
//! is replaced by a marker (fail closed) and skipped to its end.

/// What the splitter hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, with its newline (the last may lack one).
    Line(&'a [u8]),
    /// A line over the limit, dropped whole; `newline` says whether it
    /// ended (so the output keeps one line per input line).
    TooLong { newline: bool },
}

/// The marker written in place of an overlong line.
pub const TOO_LONG: &[u8] = b"[REDACTED:line-too-long]";

/// Accumulates chunks and yields whole lines.
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line,
            skipping: false,
        }
    }

    /// Feeds a chunk; calls `f` for every piece it completes.
    pub fn push<E>(
        &mut self,
        mut chunk: &[u8],
        mut f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            let nl = memchr::memchr(b'\n', chunk);
            if self.skipping {
                match nl {
                    Some(i) => {
                        self.skipping = false;
                        f(Piece::TooLong { newline: true })?;
                        chunk = &chunk[i + 1..];
                    }
                    None => return Ok(()),
                }
                continue;
            }
            match nl {
                Some(i) if self.buf.is_empty() && i <= self.max_line => {
                    f(Piece::Line(&chunk[..=i]))?;
                    chunk = &chunk[i + 1..];
                }
                Some(i) if self.buf.len() + i <= self.max_line => {
                    self.buf.extend_from_slice(&chunk[..=i]);
                    let line = std::mem::take(&mut self.buf);
                    f(Piece::Line(&line))?;
                    self.buf = line;
                    self.buf.clear();
                    chunk = &chunk[i + 1..];
                }
                Some(i) => {
                    self.buf.clear();
                    f(Piece::TooLong { newline: true })?;
                    chunk = &chunk[i + 1..];
                }
                None if self.buf.len() + chunk.len() <= self.max_line => {
                    self.buf.extend_from_slice(chunk);
                    return Ok(());
                }
                None => {
                    self.buf.clear();
                    self.skipping = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: the last line if it had no newline.
    pub fn finish<E>(&mut self, mut f: impl FnMut(Piece<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.skipping {
            self.skipping = false;
            return f(Piece::TooLong { newline: false });
        }
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            f(Piece::Line(&line))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut take = |p: Piece<'_>| -> Result<(), ()> {
            out.push(match p {
                Piece::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Piece::TooLong { newline } => format!("TOO LONG {newline}"),
            });
            Ok(())
        };
        for c in chunks {
            s.push(c, &mut take).unwrap();
        }
        s.finish(&mut take).unwrap();
        out
    }

    #[test]
    fn lines_cross_chunks_and_overlong_lines_are_dropped() {
        assert_eq!(split(&[b"ab", b"c\nde\nf"], 10), ["abc\n", "de\n", "f"]);
        // Exactly the limit passes, terminated or not; one more does not.
        assert_eq!(split(&[b"abc\nabc"], 3), ["abc\n", "abc"]);
        assert_eq!(
            split(&[b"abcd\nabcd"], 3),
            ["TOO LONG true", "TOO LONG false"]
        );
        assert_eq!(
            split(&[b"0123456789ABC", b"DEF\nok\n", b"xxxxxxxxxxxxxxxxx"], 10),
            ["TOO LONG true", "ok\n", "TOO LONG false"]
        );
    }
}
