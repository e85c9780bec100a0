//! Splitting a byte stream into lines with bounded memory, for streamed
//! text and NDJSON: a line longer than the limit is never held whole; it
//! is replaced by a marker (fail closed) and skipped to its end. The whole
//! lines of a chunk are handed out together, so the scanner pays its fixed
//! cost per chunk, not per line.

/// What the splitter hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// One or more complete lines, each with its newline (the last line
    /// of the stream may lack one).
    Lines(&'a [u8]),
    /// Bytes of a line over the limit, in order, as they go by: they are
    /// dropped, but what they held may matter to the lines after (a
    /// private key begun in them).
    Skipped(&'a [u8]),
    /// The end of a line over the limit, dropped whole; `newline` says
    /// whether it ended (so the output keeps one line per input line).
    TooLong { newline: bool },
}

/// The lines of a block, each with its newline (the last may lack one).
/// `memchr` finds the newlines: `split_inclusive` with a byte closure
/// tested one byte at a time and was 6 instructions a byte of NDJSON.
pub fn each_line(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', block);
    std::iter::from_fn(move || {
        let end = match ends.next() {
            Some(i) => i + 1,
            None if start < block.len() => block.len(),
            None => return None,
        };
        let line = &block[start..end];
        start = end;
        Some(line)
    })
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
        // First what an earlier chunk left: a line being skipped, or the
        // start of a line.
        if self.skipping {
            let Some(i) = memchr::memchr(b'\n', chunk) else {
                return f(Piece::Skipped(chunk));
            };
            self.skipping = false;
            f(Piece::Skipped(&chunk[..i]))?;
            f(Piece::TooLong { newline: true })?;
            chunk = &chunk[i + 1..];
        }
        if !self.buf.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(i) if self.buf.len() + i <= self.max_line => {
                    self.buf.extend_from_slice(&chunk[..=i]);
                    let line = std::mem::take(&mut self.buf);
                    f(Piece::Lines(&line))?;
                    self.buf = line;
                    self.buf.clear();
                    chunk = &chunk[i + 1..];
                }
                Some(i) => {
                    f(Piece::Skipped(&self.buf))?;
                    self.buf.clear();
                    f(Piece::Skipped(&chunk[..i]))?;
                    f(Piece::TooLong { newline: true })?;
                    chunk = &chunk[i + 1..];
                }
                None if self.buf.len() + chunk.len() <= self.max_line => {
                    self.buf.extend_from_slice(chunk);
                    return Ok(());
                }
                None => {
                    f(Piece::Skipped(&self.buf))?;
                    self.buf.clear();
                    self.skipping = true;
                    return f(Piece::Skipped(chunk));
                }
            }
        }
        // Then the chunk's whole lines, together, with each overlong one
        // cut out.
        let (mut block, mut line) = (0, 0);
        for i in memchr::memchr_iter(b'\n', chunk) {
            if i - line > self.max_line {
                if block < line {
                    f(Piece::Lines(&chunk[block..line]))?;
                }
                f(Piece::Skipped(&chunk[line..i]))?;
                f(Piece::TooLong { newline: true })?;
                block = i + 1;
            }
            line = i + 1;
        }
        if block < line {
            f(Piece::Lines(&chunk[block..line]))?;
        }
        let tail = &chunk[line..];
        if tail.len() <= self.max_line {
            self.buf.extend_from_slice(tail);
        } else {
            self.skipping = true;
            f(Piece::Skipped(tail))?;
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
            f(Piece::Lines(&line))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_agrees_with_split_inclusive() {
        for block in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\nb",
            b"a\n\nb\n",
            b"\n\n\n",
            b"one line\nand another without its newline",
        ] {
            let want: Vec<&[u8]> = block.split_inclusive(|&c| c == b'\n').collect();
            let got: Vec<&[u8]> = each_line(block).collect();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(block));
        }
    }

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let mut take = |p: Piece<'_>| -> Result<(), ()> {
            match p {
                Piece::Lines(b) => out.extend(
                    b.split_inclusive(|&c| c == b'\n')
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                ),
                Piece::Skipped(b) => skipped.extend_from_slice(b),
                Piece::TooLong { newline } => {
                    let line = String::from_utf8(std::mem::take(&mut skipped)).unwrap();
                    out.push(format!("TOO LONG {newline} {line}"));
                }
            }
            Ok(())
        };
        for c in chunks {
            s.push(c, &mut take).unwrap();
        }
        s.finish(&mut take).unwrap();
        assert!(
            skipped.is_empty(),
            "skipped bytes after the last line's end"
        );
        out
    }

    /// Every byte of a dropped line is handed out as skipped, in order,
    /// before the line's end, wherever the chunks cut it.
    #[test]
    fn lines_cross_chunks_and_overlong_lines_are_dropped() {
        assert_eq!(split(&[b"ab", b"c\nde\nf"], 10), ["abc\n", "de\n", "f"]);
        // Exactly the limit passes, terminated or not; one more does not.
        assert_eq!(split(&[b"abc\nabc"], 3), ["abc\n", "abc"]);
        assert_eq!(
            split(&[b"abcd\nabcd"], 3),
            ["TOO LONG true abcd", "TOO LONG false abcd"]
        );
        assert_eq!(
            split(&[b"0123456789ABC", b"DEF\nok\n", b"xxxxxxxxxxxxxxxxx"], 10),
            [
                "TOO LONG true 0123456789ABCDEF",
                "ok\n",
                "TOO LONG false xxxxxxxxxxxxxxxxx"
            ]
        );
        let input = b"short\n0123456789abcdef\nok\n0123456789ABCDEFGH\nend";
        let whole = split(&[input], 10);
        assert_eq!(
            whole,
            [
                "short\n",
                "TOO LONG true 0123456789abcdef",
                "ok\n",
                "TOO LONG true 0123456789ABCDEFGH",
                "end"
            ]
        );
        for cut in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(cut).collect();
            assert_eq!(split(&chunks, 10), whole, "cut {cut}");
        }
    }
}
