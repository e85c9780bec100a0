//! Input formats, walked by a [`Session`]: the same shape and content type
//! out as in.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use serde_json::Value;

use super::action::{Action, ActionError, Tools};
use super::detectors::private_key::{PieceReader, count_begins, open_after, opens_block, past_end};
use super::detectors::secret::stands_in;
use super::detectors::{Finding, Kind, pan::is_card_number};
use super::fields::{self, FieldRules};
use super::lines::{Piece, TOO_LONG, each_line};
use super::scanner::Scanner;
use super::{Findings, Options};

mod binds;
mod members;
mod params;
mod raw;
mod yaml;

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Line by line.
    Text,
    /// One JSON document; structure kept, strings, keys and numbers scanned.
    Json,
    /// One JSON document per line; a line that does not parse is scanned as
    /// text, never passed through.
    Ndjson,
}

impl Format {
    /// From a media type (a `Content-Type` without parameters, in lower
    /// case).
    pub fn from_media_type(media_type: &str) -> Option<Format> {
        match media_type {
            "text/plain" => Some(Format::Text),
            "application/json" => Some(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// Text and NDJSON are processed line by line and can stream.
    pub fn is_line_based(self) -> bool {
        self != Format::Json
    }
}

/// Why a redaction stopped.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("the body is not valid JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error(transparent)]
    Action(#[from] ActionError),
}

/// Bytes of a dropped NDJSON line read again, decoded, with its next
/// piece: more than a begin marker with any real key type takes written
/// with escapes (six bytes a character). One with a longer type name,
/// written with escapes and cut between pieces, is not read.
const ESCAPED_OVERLAP: usize = 512;

/// One request's (or stream's) redaction: options, tools, findings, and
/// the state that runs across lines (an open PEM block).
pub struct Session<'a> {
    scanner: Arc<Scanner>,
    opts: &'a Options,
    fields: &'a FieldRules,
    tools: Tools<'a>,
    pub findings: Findings,
    pem_open: bool,
    /// Follows the PEM state through a dropped line's pieces
    /// ([`Session::piece`]).
    skipped: PieceReader,
    /// The end of a dropped NDJSON line's pieces, read again decoded with
    /// the next piece.
    skipped_escaped: Vec<u8>,
    /// Whether the block being walked may hold a name/value pair
    /// ([`fields::may_hold_a_pair`]).
    pairs: bool,
    /// Name/value pairs of enabled types the walk has met: checked against
    /// the raw count, as a parse drops duplicate keys.
    pairs_walked: usize,
    /// Begin markers the walk has read, while the document being walked
    /// has any ([`Session::walk_parsed`]).
    begins_read: Option<usize>,
    found: Vec<Finding>,
    /// The type of the last finding replaced (for report paths).
    last_kind: Kind,
    /// Whether a finding since the last reset had the `drop` action.
    dropped: bool,
    /// The text before ended on a `name:` line naming a secret: a `value:`
    /// line starting the next text holds one ([`yaml`]).
    named: bool,
    /// The text before ended inside a block scalar under a secret's name,
    /// whose key's line had this indentation: the next text's lines
    /// indented deeper are the secret's ([`yaml::block_lines`]). Text only
    /// ([`Session::ndjson_text_line`]).
    block: Option<usize>,
    /// Placeholders that a statement in the text before named after a
    /// secret or a security code (`password = $1`), with the type of their
    /// name's value:
    /// the next text's parameters list holds their values ([`params`]).
    /// Text only, as `block` is.
    params: std::collections::BTreeMap<u16, Kind>,
    /// A line too long to read came since the last parameters list: it
    /// may have named placeholders, so the next list is masked whole.
    params_lost: bool,
    /// The recent statements whose JDBC binds may come next, and the one
    /// being read ([`binds`]). Text only, as `params` is.
    binds: binds::Binds,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        scanner: Arc<Scanner>,
        opts: &'a Options,
        fields: &'a FieldRules,
        tools: Tools<'a>,
    ) -> Self {
        Self {
            scanner,
            opts,
            fields,
            tools,
            findings: Findings::default(),
            pem_open: false,
            skipped: PieceReader::default(),
            skipped_escaped: Vec::new(),
            pairs: false,
            pairs_walked: 0,
            begins_read: None,
            found: Vec::new(),
            last_kind: Kind::Secret,
            dropped: false,
            named: false,
            params: std::collections::BTreeMap::new(),
            params_lost: false,
            binds: binds::Binds::default(),
            block: None,
        }
    }

    /// A whole body: text and NDJSON line by line, JSON as one document.
    pub fn body(
        &mut self,
        format: Format,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        match format {
            Format::Json => self.json_document(input, out),
            Format::Text | Format::Ndjson => self.lines(format, input, out),
        }
    }

    /// Whole lines of a line-based format (the last may lack its newline).
    /// They are scanned as one block: no pattern crosses a newline, and a
    /// scan has a fixed cost that a short line would pay alone. With a
    /// budget, each line is timed on its own.
    pub fn lines(
        &mut self,
        format: Format,
        block: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        if self.opts.budget.is_some() {
            for line in each_line(block) {
                self.line(format, line, out)?;
            }
            return Ok(());
        }
        match format {
            Format::Ndjson => self.ndjson_block(block, out),
            _ => self.text_line(block, out),
        }
    }

    /// NDJSON lines: one raw scan of the block finds the lines a JSON walk
    /// could change; the others are copied as they are.
    fn ndjson_block(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        self.scanner.scan(block, &mut found);
        found.retain(|f| self.opts.enabled(f.kind));
        let binds = self.unread_binds(block, false, &mut found);
        self.pairs = fields::may_hold_a_pair(block);
        let mut b = 0;
        let mut k = 0;
        let mut start = 0;
        // Clean lines are copied a run at a time.
        let mut clean_from = 0;
        let mut result = Ok(());
        for line in each_line(block) {
            let end = start + line.len();
            while k < found.len() && found[k].range.end <= start {
                k += 1;
            }
            while b < binds.len() && binds[b] < start {
                b += 1;
            }
            // A bind's line is walked or read as text even where its value
            // was cut short.
            let bind = b < binds.len() && binds[b] < end;
            let hit = bind || k < found.len() && found[k].range.start < end;
            if hit || !self.passes_raw(line) {
                if !self.opts.report {
                    out.extend_from_slice(&block[clean_from..start]);
                }
                clean_from = end;
                if let Err(e) = self.ndjson_dirty(line, &found[k..], start, out) {
                    result = Err(e);
                    break;
                }
            }
            start = end;
        }
        if result.is_ok() && !self.opts.report {
            out.extend_from_slice(&block[clean_from..]);
        }
        self.found = found;
        result
    }

    /// A piece of a stream split by a [`LineSplitter`](super::lines::LineSplitter):
    /// lines are redacted; a line over the limit is written as
    /// [`TOO_LONG`], its bytes unread but for a private key begun (or
    /// ended) in them, which the lines after it must know of.
    pub fn piece(
        &mut self,
        format: Format,
        piece: Piece<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        match piece {
            Piece::Lines(l) => self.lines(format, l, out)?,
            Piece::Skipped(part) => self.skipped(format, part),
            Piece::TooLong { newline } => {
                self.skipped.end_line();
                self.skipped_escaped.clear();
                self.params.clear();
                self.params_lost = format == Format::Text;
                self.binds.lose();
                if !self.opts.report {
                    out.extend_from_slice(TOO_LONG);
                    if newline {
                        out.push(b'\n');
                    }
                }
            }
        }
        Ok(())
    }

    /// Follows the PEM state over a piece of a dropped line. In NDJSON, a
    /// begin marker written with JSON escapes opens the block too: the
    /// piece is read decoded after the last [`ESCAPED_OVERLAP`] bytes of
    /// the pieces before it.
    fn skipped(&mut self, format: Format, part: &[u8]) {
        if !self.opts.enabled(Kind::PrivateKey) || part.is_empty() {
            return;
        }
        self.pem_open = self.skipped.read(part, self.pem_open);
        if format != Format::Ndjson {
            return;
        }
        let mut window = std::mem::take(&mut self.skipped_escaped);
        window.extend_from_slice(part);
        if !self.pem_open
            && memchr::memmem::find(&window, b"\\u").is_some()
            && opens_block(&json_unescaped(&window))
        {
            self.pem_open = true;
        }
        window.drain(..window.len().saturating_sub(ESCAPED_OVERLAP));
        self.skipped_escaped = window;
    }

    /// One line (with its newline, if any) of a line-based format.
    pub fn line(
        &mut self,
        format: Format,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        let started = Instant::now();
        let mark = out.len();
        match format {
            Format::Ndjson => self.ndjson_line(line, out)?,
            _ => self.text_line(line, out)?,
        }
        self.enforce_budget(started, line, mark, out);
        Ok(())
    }

    /// Fail closed: output of a line that took longer than its budget is
    /// replaced by `*` for every byte but the newline.
    fn enforce_budget(&mut self, started: Instant, line: &[u8], mark: usize, out: &mut Vec<u8>) {
        if let Some(b) = self.opts.budget
            && started.elapsed() >= b
        {
            out.truncate(mark);
            if !self.opts.report {
                out.extend(line.iter().map(|&c| if c == b'\n' { b'\n' } else { b'*' }));
            }
        }
    }

    /// One line of text: every finding replaced; a PEM block left open at
    /// the end of the line keeps masking the following lines until its end
    /// marker.
    pub fn text_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        let mut rest = line;
        if self.pem_open {
            match past_end(line) {
                Some(e) => {
                    self.emit_mask_plain(&line[..e], out);
                    self.pem_open = false;
                    rest = &line[e..];
                }
                None => {
                    self.emit_mask_plain(line, out);
                    return Ok(());
                }
            }
        }
        let mut extra = self.yaml_pairs(rest);
        // Where a block carried from the text before ends: no header
        // inside it opens another.
        let mut carried = 0;
        if let Some(indent) = self.block.take() {
            let mut lines = Vec::new();
            carried = match yaml::block_lines(rest, 0, indent, &mut lines) {
                Some(end) => end,
                None => {
                    self.block = Some(indent);
                    rest.len()
                }
            };
            let secrets = lines.into_iter().map(|range| Finding {
                kind: Kind::Secret,
                range,
            });
            // In order: the block's lines come before any pair.
            extra = secrets.chain(extra).collect();
        }
        self.replace(rest, &extra, Some(carried), out)?;
        Ok(())
    }

    /// The values of the two-line YAML pairs in `text` that name a secret
    /// (`- name: DB_PASSWORD` then `  value: …`), one begun at the end of
    /// the text before included. Secrets only: a card or a code under such
    /// a name is found by its own shape, and an action such as `tokenize`
    /// takes only what is one. A vault token or a mask is kept.
    fn yaml_pairs(&mut self, text: &[u8]) -> Vec<Finding> {
        let mut pairs = Vec::new();
        let mut push = |r: std::ops::Range<usize>| {
            if !stands_in(&text[r.clone()]) {
                pairs.push(Finding {
                    kind: Kind::Secret,
                    range: r,
                });
            }
        };
        if std::mem::take(&mut self.named)
            && let Some(r) = yaml::value_at(text, 0)
        {
            push(r);
        }
        if !self.opts.enabled(Kind::Secret) {
            return pairs;
        }
        for (name, next) in yaml::names(text) {
            if self.fields.kind_of_bytes(&text[name]) != Some(Kind::Secret) {
                continue;
            }
            match next {
                Some(n) if n < text.len() => {
                    if let Some(r) = yaml::value_at(text, n) {
                        push(r);
                    }
                }
                _ => self.named = true,
            }
        }
        pairs
    }

    /// Leaves the PEM state as [`Session::text_line`] would after `line`,
    /// a line of JSON masked whole instead: a private key begun in it and
    /// not ended masks the lines after it, and one it ends masks no more.
    fn follow_pem(&mut self, line: &[u8]) {
        let mut rest = line;
        if self.pem_open {
            let Some(e) = past_end(line) else {
                return;
            };
            self.pem_open = false;
            rest = &line[e..];
        }
        self.pem_open = self.json_opens_pem(rest);
    }

    /// Whether `text` leaves a private key open ([`opens_block`]), when
    /// private keys are redacted.
    fn opens_pem(&self, text: &[u8]) -> bool {
        self.opts.enabled(Kind::PrivateKey) && opens_block(text)
    }

    /// [`Session::opens_pem`] for a line of JSON, read as written and with
    /// its escapes decoded: a marker written with escapes
    /// (`PRIVATE KEY\u002d----`) under a value no walk reads (a sensitive
    /// field's, a dropped duplicate key's) still opens the block.
    fn json_opens_pem(&self, line: &[u8]) -> bool {
        self.opens_pem(line)
            || memchr::memchr(b'\\', line).is_some() && self.opens_pem(&json_unescaped(line))
    }

    fn emit_mask_plain(&mut self, s: &[u8], out: &mut Vec<u8>) {
        if !self.opts.report {
            out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b'*' }));
        }
    }

    /// Scans `text` and writes it with every enabled finding replaced,
    /// and the `extra` ones found outside the scan (in order), and the
    /// lines of the block scalars whose header the scan found as a
    /// secret's value. For lines of text (`lines`: where a block carried
    /// from the text before ends), one left open at the end goes on in
    /// the next text. Returns the number of findings.
    fn replace(
        &mut self,
        text: &[u8],
        extra: &[Finding],
        lines: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<usize, RedactError> {
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        self.scanner.scan(text, &mut found);
        let blocks = self.block_scalars(text, &found, lines);
        if !blocks.is_empty() {
            merge(&mut found, &blocks);
        }
        if lines.is_some() {
            let mut values = self.parameters(text, &found);
            values.extend(self.bound(text));
            if !values.is_empty() {
                merge(&mut found, &values);
            }
        } else {
            let _ = self.unread_binds(text, true, &mut found);
        }
        if !extra.is_empty() {
            merge(&mut found, extra);
        }
        let mut at = 0;
        let mut n = 0;
        let mut failed = None;
        for f in found.iter().filter(|f| self.opts.enabled(f.kind)) {
            self.findings.add(f.kind);
            self.last_kind = f.kind;
            self.dropped |= self.opts.action(f.kind) == Action::Drop;
            n += 1;
            if self.opts.report {
                continue;
            }
            out.extend_from_slice(&text[at..f.range.start]);
            if let Err(e) =
                self.opts
                    .action(f.kind)
                    .apply(f.kind, &text[f.range.clone()], self.tools, out)
            {
                failed = Some(e);
                break;
            }
            at = f.range.end;
        }
        // After a failed action nothing more is written: the caller aborts.
        if !self.opts.report && failed.is_none() {
            out.extend_from_slice(&text[at..]);
        }
        // A begin marker is always inside some finding (it is found on a
        // pass of its own), of its own type or of one it was merged into.
        if n > 0 && self.opens_pem(text) {
            self.pem_open = true;
        }
        self.found = found;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(n)
    }

    /// The lines of the block scalars whose header (`password: |`) the
    /// scan found as a secret's value, in order ([`yaml::block_header`]),
    /// past `lines` (where a block carried into the text ends); with
    /// `lines`, the last one running to the text's end is left open for
    /// the next text.
    fn block_scalars(
        &mut self,
        text: &[u8],
        found: &[Finding],
        lines: Option<usize>,
    ) -> Vec<Finding> {
        let mut ranges = Vec::new();
        let mut done = lines.unwrap_or(0);
        for f in found {
            if f.kind != Kind::Secret
                || !matches!(text[f.range.start], b'|' | b'>')
                || f.range.start < done
            {
                continue;
            }
            let Some(indent) = yaml::block_header(text, &f.range) else {
                continue;
            };
            let end = memchr::memchr(b'\n', &text[f.range.end..]).and_then(|next| {
                yaml::block_lines(text, f.range.end + next + 1, indent, &mut ranges)
            });
            match end {
                Some(end) => done = end,
                None => {
                    if lines.is_some() {
                        self.block = Some(indent);
                    }
                    break;
                }
            }
        }
        ranges
            .into_iter()
            .map(|range| Finding {
                kind: Kind::Secret,
                range,
            })
            .collect()
    }

    /// The values in `text`'s parameters lists (`parameters: $1 = '…'`)
    /// of placeholders named after a secret or a security code, by a pair
    /// the scan `found` (`password: $1`), an SQL assignment or an INSERT's
    /// column list, in this text before the list or in the text before
    /// ([`params`]); every value of an error's context list, which comes
    /// before its statement, and of the first list after a line too long
    /// to read. A list uses up what was named before it; what is named
    /// after the last one waits for the next text's.
    fn parameters(&mut self, text: &[u8], found: &[Finding]) -> Vec<Finding> {
        // Placeholders and lists both hold a `$`.
        if memchr::memchr(b'$', text).is_none() {
            return Vec::new();
        }
        let wanted = |k: Kind| matches!(k, Kind::Secret | Kind::Cvv) && self.opts.enabled(k);
        let mut named: Vec<(usize, u16, Kind)> = found
            .iter()
            .filter(|f| wanted(f.kind))
            .filter_map(|f| {
                params::placeholder(&text[f.range.clone()]).map(|n| (f.range.end, n, f.kind))
            })
            .collect();
        let kind = |c: &[u8]| self.fields.kind_of_bytes(c).filter(|&k| wanted(k));
        named.extend(params::assigned(text, kind));
        named.extend(params::inserted(text, kind));
        let lists = params::lists(text);
        if named.is_empty() && lists.is_empty() {
            return Vec::new();
        }
        named.sort_by_key(|n| n.0);
        params::drop_errors_statements(text, &lists, &mut named);
        let mut named = named.into_iter().peekable();
        let mut values = Vec::new();
        for list in lists {
            while let Some((_, n, k)) = named.next_if(|n| n.0 <= list.start) {
                self.params.entry(n).or_insert(k);
            }
            let lost = std::mem::take(&mut self.params_lost);
            let context = (list.context || lost) && self.opts.enabled(Kind::Secret);
            for (n, range) in list.entries {
                let kind = match self.params.get(&n) {
                    Some(&kind) => kind,
                    None if context => Kind::Secret,
                    None => continue,
                };
                if !range.is_empty() && !stands_in(&text[range.clone()]) {
                    values.push(Finding { kind, range });
                }
            }
            self.params.clear();
        }
        for (_, n, k) in named {
            self.params.entry(n).or_insert(k);
        }
        values
    }

    /// The values of `text`'s JDBC binds (`binding parameter [2] as
    /// [VARCHAR] - […]`) that a recent statement puts under a name the
    /// field rules know, or under no name that can be told ([`binds`]).
    fn bound(&mut self, text: &[u8]) -> Vec<Finding> {
        let enabled = |k: Kind| self.opts.enabled(k);
        // A column the field rules name: masked as a secret (a code as a
        // code), not as its own type, whose action may want its shape (a
        // card's tokenization); an SSN or a key bare has none to find.
        let unknown = enabled(Kind::Secret).then_some(Kind::Secret);
        let kind = |c: &[u8]| match self.fields.kind_of_bytes(c)? {
            Kind::Cvv if enabled(Kind::Cvv) => Some(Kind::Cvv),
            _ => unknown,
        };
        (self.binds.values(text, kind, unknown).into_iter())
            .filter(|(_, range)| !range.is_empty() && !stands_in(&text[range.clone()]))
            .map(|(kind, range)| Finding { kind, range })
            .collect()
    }

    /// Adds to `found` the values of JDBC binds read without their
    /// statement (JSON strings, and NDJSON blocks scanned whole, which
    /// must agree): masked as secrets ([`binds::unread`]). Returns where
    /// each bind's words start.
    fn unread_binds(&self, text: &[u8], string: bool, found: &mut Vec<Finding>) -> Vec<usize> {
        if !self.opts.enabled(Kind::Secret) {
            return Vec::new();
        }
        let binds = binds::unread(text, string);
        let values: Vec<Finding> = (binds.iter().filter_map(|(_, v)| v.clone()))
            .filter(|range| !range.is_empty() && !stands_in(&text[range.clone()]))
            .map(|range| Finding {
                kind: Kind::Secret,
                range,
            })
            .collect();
        if !values.is_empty() {
            merge(found, &values);
        }
        binds.into_iter().map(|(at, _)| at).collect()
    }

    /// `s` redacted as a new string (None when nothing was found or in
    /// report mode), and whether a finding's action was `drop`.
    fn redact_string(&mut self, s: &str) -> Result<(Option<String>, bool), RedactError> {
        self.dropped = false;
        self.read_begins(s);
        if self.pem_open {
            // A key begun in an earlier string of the document runs on
            // into this one (`["-----BEGIN PRIVATE KEY-----", "MIIE…"]`):
            // masked to its end marker, as lines of text are.
            let mut out = Vec::new();
            self.text_line(s.as_bytes(), &mut out)?;
            // A string's YAML block, or placeholders it named, do not run
            // on into the next text.
            self.block = None;
            self.params.clear();
            self.binds.lose();
            if self.opts.report {
                return Ok((None, self.dropped));
            }
            let s = String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return Ok((Some(s), self.dropped));
        }
        if cannot_hold_anything(s.as_bytes()) {
            return Ok((None, false));
        }
        let mut out = Vec::new();
        if self.replace(s.as_bytes(), &[], None, &mut out)? == 0 || self.opts.report {
            return Ok((None, self.dropped));
        }
        // Replacements are ASCII over ASCII matches, so UTF-8 is kept.
        let s = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((Some(s), self.dropped))
    }

    /// One NDJSON line: a JSON document if it parses, text otherwise.
    pub fn ndjson_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        self.ndjson_block(line, out)
    }

    /// An NDJSON line that a walk may change. `found` are the findings of
    /// its block from the line on; the line starts at `base` in the block.
    /// Inside an open PEM block it is masked to the block's end marker
    /// and the rest scanned as text, or, if it is JSON, masked whole
    /// (neither walker knows of the block: a key's body line may well be
    /// JSON). Otherwise, without escapes, it is walked over its raw bytes;
    /// with them, parsed.
    fn ndjson_dirty(
        &mut self,
        line: &[u8],
        found: &[Finding],
        base: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        if self.pem_open {
            match past_end(line) {
                // A line of JSON that ends the block is masked whole: the
                // rest of it, scanned as text, would lose its field rules.
                Some(_) if raw::is_json(trim_newline(line)) => {
                    self.emit_mask_plain(line, out);
                    self.follow_pem(line);
                }
                Some(e) => {
                    self.ndjson_text_line(line, out)?;
                    // A begin marker after the end, written with escapes,
                    // opens the block too.
                    if !self.pem_open && self.json_opens_pem(&line[e..]) {
                        self.pem_open = true;
                    }
                }
                None => self.ndjson_text_line(line, out)?,
            }
            return Ok(());
        }
        let walked = if raw::is_plain_json(line)
            && !self.holds_a_pair(line)
            && !spans_strings(line, found, base)
        {
            self.raw_line(&mut raw::Raw::new(line, found, base), out)
        } else {
            self.ndjson_parsed(line, out)
        };
        // A private key begun in the line and not ended in it masks the
        // lines after it, and one ended in it no more, as the line reads,
        // whatever the walk saw of it (a line masked whole is not read).
        if walked.is_ok() {
            self.pem_open = self.json_opens_pem(line);
        }
        walked
    }

    /// One NDJSON line through the `Value` walker alone, never the raw
    /// one: the reference the raw walker is tested and fuzzed against.
    #[doc(hidden)]
    pub fn ndjson_line_parsed(
        &mut self,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RedactError> {
        self.ndjson_parsed(line, out)
    }

    /// An NDJSON line parsed and walked (scanned as text if it does not
    /// parse).
    fn ndjson_parsed(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        let trimmed = trim_newline(line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            if !self.opts.report {
                out.extend_from_slice(line);
            }
            return Ok(());
        }
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(mut v) => {
                if !self.walk_parsed(trimmed, &mut v)? {
                    self.findings.add(Kind::Secret);
                    self.emit_mask_plain(line, out);
                    return Ok(());
                }
                if !self.opts.report {
                    serde_json::to_writer(&mut *out, &v).expect("writing to a Vec");
                    out.extend_from_slice(&line[trimmed.len()..]);
                }
                Ok(())
            }
            // JSON that the parse refuses: neither walker can walk it.
            Err(_) if raw::is_json(trimmed) => {
                self.findings.add(Kind::Secret);
                self.follow_pem(line);
                self.emit_mask_plain(line, out);
                Ok(())
            }
            Err(_) => self.ndjson_text_line(line, out),
        }
    }

    /// An NDJSON line that is no JSON, scanned as text: it opens no YAML
    /// block over the lines after it, which are JSON (a walk copies a
    /// line with no finding without asking).
    fn ndjson_text_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        let done = self.text_line(line, out);
        self.block = None;
        self.params.clear();
        self.binds.lose();
        done
    }

    /// Walks `v`, parsed from `raw`. False when the parse lost what the
    /// walk needed: the document must then be masked whole (fail closed).
    /// A parse keeps one member a name, at the first one's place with the
    /// last one's value: it may drop a pair's name, and, in a document
    /// with a private key, a begin marker or the order of the strings a
    /// key masks in document order ([`members`]).
    fn walk_parsed(&mut self, raw: &[u8], v: &mut Value) -> Result<bool, RedactError> {
        let named = self.pairs_named(raw);
        let walked = self.pairs_walked;
        let begins = if self.opts.enabled(Kind::PrivateKey) {
            json_begins(raw)
        } else {
            0
        };
        if begins > 0 && members::in_text(raw) != Some(members::in_value(v)) {
            return Ok(false);
        }
        self.begins_read = (begins > 0).then_some(0);
        let mut path = String::from("$");
        let dropped = self.value(v, &mut path);
        let read = self.begins_read.take().unwrap_or(0);
        if dropped? {
            *v = Value::Null;
        }
        Ok(self.pairs_walked - walked >= named && read >= begins)
    }

    /// Counts the begin markers in a string the walk reads, when the
    /// document has any ([`Session::walk_parsed`]).
    fn read_begins(&mut self, s: &str) {
        if let Some(n) = &mut self.begins_read {
            *n += count_begins(s.as_bytes());
        }
    }

    /// Whether an NDJSON line whose raw scan finds nothing can pass through
    /// untouched, whether or not it parses (a JSON walk and a text scan both
    /// find what the raw scan found): it holds no escape (an escape could
    /// hide digits from the raw scan) and no key that names sensitive data
    /// (a CVV is just digits), and no PEM block opened by an earlier line
    /// is still open (its body lines scan clean but must be masked). Most
    /// log lines are clean; this spares them a parse, a walk and a scan per
    /// string. Nor may it hold a number checked by a value its digits do
    /// not show ([`reads_a_number_by_value`]), which the raw scan never sees.
    fn passes_raw(&self, line: &[u8]) -> bool {
        !self.pem_open
            && memchr::memchr(b'\\', line).is_none()
            && !self.fields.names_a_key(line)
            && !self.holds_a_pair(line)
            && !reads_a_number_by_value(line)
    }

    /// Whether a line of the block being walked holds a name/value pair
    /// naming sensitive data ([`FieldRules::names_a_pair`]).
    fn holds_a_pair(&self, line: &[u8]) -> bool {
        self.pairs && self.fields.names_a_pair(line)
    }

    /// One JSON document.
    pub fn json_document(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RedactError> {
        let started = Instant::now();
        let mut v: Value = serde_json::from_slice(input).map_err(|e| RedactError::Json {
            line: e.line(),
            column: e.column(),
        })?;
        if !self.walk_parsed(input, &mut v)? {
            self.findings.add(Kind::Secret);
            if !self.opts.report {
                out.extend_from_slice(b"\"[REDACTED:secret]\"");
            }
            return Ok(());
        }
        if !self.opts.report {
            serde_json::to_writer(&mut *out, &v).expect("writing to a Vec");
        }
        if let Some(b) = self.opts.budget
            && started.elapsed() >= b
        {
            out.clear();
            if !self.opts.report {
                out.extend_from_slice(b"\"[REDACTED:budget]\"");
            }
        }
        Ok(())
    }

    /// How many name/value pairs of enabled types raw JSON holds
    /// ([`FieldRules::pairs_named`]).
    fn pairs_named(&self, raw: &[u8]) -> usize {
        if !fields::may_hold_a_pair(raw) {
            return 0;
        }
        self.fields.pairs_named(raw, |k| self.opts.enabled(k))
    }

    /// The type an object's name/value pair names, counted when enabled.
    fn walk_pair(&mut self, object: &serde_json::Map<String, Value>) -> Option<Kind> {
        let kind = self.fields.pair_kind(object);
        if kind.is_some_and(|k| self.opts.enabled(k)) {
            self.pairs_walked += 1;
        }
        kind
    }

    fn note_path(&mut self, path: &str, k: Kind) {
        if self.opts.report {
            self.findings
                .paths
                .entry(path.to_owned())
                .or_insert(k.as_str());
        }
    }

    /// Redacts a value in place; true when it is to be dropped.
    fn value(&mut self, v: &mut Value, path: &mut String) -> Result<bool, RedactError> {
        match v {
            Value::String(s) => {
                let before = self.findings.total();
                let (new, drop) = self.redact_string(s)?;
                if self.findings.total() > before {
                    self.note_path(path, self.last_kind);
                }
                if let Some(n) = new {
                    *s = n;
                }
                Ok(drop)
            }
            Value::Number(n) => {
                let digits = number_digits(n);
                if self.opts.enabled(Kind::Pan) && is_card_number(&digits) {
                    self.findings.add(Kind::Pan);
                    self.note_path(path, Kind::Pan);
                    return self.replace_scalar(v, Kind::Pan, &digits, true);
                }
                Ok(false)
            }
            Value::Array(items) => {
                let len = path.len();
                for (i, item) in items.iter_mut().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    if self.value(item, path)? {
                        *item = Value::Null;
                    }
                    path.truncate(len);
                }
                Ok(false)
            }
            Value::Object(map) => {
                let len = path.len();
                let old = std::mem::take(map);
                // `{"name": "DB_PASSWORD", "value": ...}`: the name says
                // what its sibling holds.
                let paired = self.walk_pair(&old);
                for (k, mut val) in old {
                    // Read first, as written: a key begun in a name runs
                    // on into its value; one open before it masks it too.
                    let (key, _) = self.redact_string(&k)?;
                    push_key(path, &k);
                    let kind = self
                        .fields
                        .kind_of(&k)
                        .or(paired.filter(|_| fields::is_pair_value(&k)));
                    let drop = match kind {
                        Some(kind) if self.opts.enabled(kind) => {
                            self.sensitive(&mut val, kind, path)?
                        }
                        _ => self.value(&mut val, path)?,
                    };
                    path.truncate(len);
                    if !drop {
                        map.insert(key.unwrap_or(k), val);
                    }
                }
                Ok(false)
            }
            Value::Bool(_) | Value::Null => Ok(false),
        }
    }

    /// Everything under a key that names sensitive data is redacted, nested
    /// arrays and objects included; true when the field is to be dropped.
    /// Only a card field may hold a vault token, which is kept.
    fn sensitive(
        &mut self,
        v: &mut Value,
        kind: Kind,
        path: &mut String,
    ) -> Result<bool, RedactError> {
        match v {
            Value::Null => Ok(false),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if self.sensitive(item, kind, path)? {
                        *item = Value::Null;
                    }
                }
                Ok(false)
            }
            Value::Object(map) => {
                self.walk_pair(map);
                for (k, mut item) in std::mem::take(map) {
                    // Names are read as anywhere else, as written: a field
                    // rule says what its values hold, not its names
                    // (`{"password": {"4111…": 1}}`).
                    let (name, _) = self.redact_string(&k)?;
                    if !self.sensitive(&mut item, kind, path)? {
                        map.insert(name.unwrap_or(k), item);
                    }
                }
                Ok(false)
            }
            _ if kind == Kind::Pan && is_vault_token(v) => Ok(false),
            _ => {
                self.findings.add(kind);
                self.note_path(path, kind);
                // Masked whole unread; a key begun (or ended) in it still
                // runs on into the strings after it.
                if let Value::String(s) = v
                    && self.opts.enabled(Kind::PrivateKey)
                {
                    self.read_begins(s);
                    self.pem_open = open_after(s.as_bytes(), self.pem_open);
                }
                let (text, card) = match v {
                    Value::String(s) => (s.clone(), kind == Kind::Pan && whole_card(s)),
                    Value::Number(n) if kind == Kind::Pan => match card_number_digits(n) {
                        Some(digits) => (digits, true),
                        None => (scalar_text(v), false),
                    },
                    _ => (scalar_text(v), false),
                };
                self.replace_scalar(v, kind, &text, card)
            }
        }
    }

    /// Replaces a whole scalar by its action's output; true for drop.
    fn replace_scalar(
        &mut self,
        v: &mut Value,
        kind: Kind,
        text: &str,
        card: bool,
    ) -> Result<bool, RedactError> {
        Ok(match self.scalar_replacement(kind, text, card)? {
            Replacement::Keep => false,
            Replacement::Drop => true,
            Replacement::With(s) => {
                *v = Value::String(s);
                false
            }
        })
    }

    /// What a whole scalar under a sensitive field, or a card held in a
    /// JSON number, becomes; `card`: `text` is one card (see
    /// [`whole_card`] and [`card_number_digits`]).
    fn scalar_replacement(
        &mut self,
        kind: Kind,
        text: &str,
        card: bool,
    ) -> Result<Replacement, RedactError> {
        let action = self.opts.action(kind);
        if self.opts.report {
            return Ok(Replacement::Keep);
        }
        if action == Action::Drop {
            return Ok(Replacement::Drop);
        }
        // Tokenize and the card mask need a card; anything else in a card
        // field is masked whole.
        let card_like = kind == Kind::Pan && card;
        let action = match action {
            Action::Tokenize if !card_like => Action::Mask,
            a => a,
        };
        let kind_for_mask = if card_like { Kind::Pan } else { Kind::Secret };
        let mut out = Vec::new();
        let k = if action == Action::Mask {
            kind_for_mask
        } else {
            kind
        };
        action.apply(k, text.as_bytes(), self.tools, &mut out)?;
        Ok(Replacement::With(
            String::from_utf8_lossy(&out).into_owned(),
        ))
    }
}

/// What a scalar becomes.
enum Replacement {
    /// Left as it is (report mode).
    Keep,
    /// Its field removed (the `drop` action).
    Drop,
    With(String),
}

/// Whether a finding on `line` (at `base` in its block; `found` sorted,
/// from the line's first on) holds a `"`: in a line without escapes, a
/// string's end. Such a value (`password='x","b":"y'`) runs from one
/// string into the next, where the `Value` walker, reading each string
/// alone, finds none: the line takes that walk instead of the raw one, so
/// the two agree.
fn spans_strings(line: &[u8], found: &[Finding], base: usize) -> bool {
    found
        .iter()
        .take_while(|f| f.range.start < base + line.len())
        .any(|f| {
            let start = f.range.start.saturating_sub(base);
            let end = (f.range.end - base).min(line.len());
            memchr::memchr(b'"', &line[start..end]).is_some()
        })
}

/// Adds `extra` to the scan's `found` (each in order, neither
/// overlapping itself), keeping them in order: findings that overlap are
/// one, of the first's type, an extra one first on a tie (a whole field's
/// value: `4111 … hunter2` under a secret's name is masked whole, not as a
/// card with its last four kept).
fn merge(found: &mut Vec<Finding>, extra: &[Finding]) {
    let mut each: Vec<&Finding> = extra.iter().chain(found.iter()).collect();
    // Stable: on a tie, the extra one stays first.
    each.sort_by_key(|f| f.range.start);
    let mut all: Vec<Finding> = Vec::with_capacity(each.len());
    for f in each {
        match all.last_mut() {
            Some(last) if f.range.start < last.range.end => {
                last.range.end = last.range.end.max(f.range.end);
            }
            _ => all.push(f.clone()),
        }
    }
    *found = all;
}

/// The digits a JSON number is checked by: a float (`4111111111111111.0`,
/// `4.111e15`, `4111111111111111.5`) by the integer part of its value, so
/// it cannot hide a card, and an integer by its digits; either without its
/// sign (a text scan masks the card in `-4111111111111111` too).
fn number_digits(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_u64() && !n.is_i64() && f.abs() < 1e20 => {
            format!("{:.0}", f.abs().trunc())
        }
        _ => {
            let s = n.to_string();
            s.strip_prefix('-').map(str::to_owned).unwrap_or(s)
        }
    }
}

/// A number's digits when they are a card (by [`number_digits`], as a
/// number anywhere else): what a card field's number is replaced by, so
/// that both walkers, one of which sees the number as written and the
/// other as printed back, read it alike.
fn card_number_digits(n: &serde_json::Number) -> Option<String> {
    Some(number_digits(n)).filter(|d| is_card_number(d))
}

/// Whether `line` holds a JSON number whose value may be a card that its
/// digits do not show: one with an exponent (`62e17`), or a fraction after
/// eleven integer digits or more (`4111111111111110.9` is read as the f64
/// 4111111111111111.0). Below 10^10 no card comes of a fraction, even
/// rounded, so decimals, timestamps in seconds and versions do not count.
fn reads_a_number_by_value(line: &[u8]) -> bool {
    let at = |i: usize| number_read_by_value_at(line, i + 1);
    match &*NUMBER_MARKS {
        NumberMarks::Packed(s) => s.find_iter(line).any(|m| at(m.start())),
        NumberMarks::Automaton(a) => a.find_iter(line).any(|m| at(m.start())),
    }
}

/// A digit followed by `e`, `E` or `.`: where a JSON number may have an
/// exponent or a fraction. Found by aho-corasick's SIMD (Teddy) searcher
/// where the CPU has one: about 3 instructions a byte of NDJSON with the
/// checks (looking at every `e` with `memchr2` cost more for exponents
/// alone, `e` being the commonest letter in a log). Elsewhere (no SSSE3,
/// other architectures) by its automaton, a byte at a time, which the
/// general searcher also chose here (it has no prefilter for thirty
/// patterns of two bytes): 6 a byte more.
enum NumberMarks {
    Packed(aho_corasick::packed::Searcher),
    Automaton(aho_corasick::AhoCorasick),
}

static NUMBER_MARKS: LazyLock<NumberMarks> = LazyLock::new(|| {
    let pairs: Vec<[u8; 2]> = (b'0'..=b'9')
        .flat_map(|d| [[d, b'e'], [d, b'E'], [d, b'.']])
        .collect();
    match aho_corasick::packed::Searcher::new(&pairs) {
        Some(s) => NumberMarks::Packed(s),
        None => NumberMarks::Automaton(
            aho_corasick::AhoCorasick::new(&pairs).expect("thirty two-byte patterns build"),
        ),
    }
});

/// Whether the `e`, `E` or `.` at `i` (after a digit) is in a JSON number
/// token that [`reads_a_number_by_value`] is about. The token must start
/// and end where a value can (after `:`, `,`, `[`, whitespace or a line's
/// start; before `,`, `]`, `}`, whitespace or the line's end): hex in
/// strings, UUIDs and IP addresses (`"3e45"`, `-3e45-`, `"10.0.0.1"`) are
/// no numbers, so their lines still pass. Only a line that parses as JSON
/// is walked, so its numbers are well formed.
fn number_read_by_value_at(line: &[u8], i: usize) -> bool {
    let starts_value = |b: u8| matches!(b, b':' | b',' | b'[' | b' ' | b'\t' | b'\r' | b'\n');
    let ends_value = |b: u8| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n');
    let mut start = i - 1;
    while start > 0 && line[start - 1].is_ascii_digit() {
        start -= 1;
    }
    if line[i] == b'.' && i - start < 11 {
        // Too small to round into a card. An exponent after the fraction
        // (`4.1e15`) is the mark of its own `e`, which follows a digit.
        return false;
    }
    // An `e` may follow a fraction: its token starts before the `.`.
    while start > 0 && matches!(line[start - 1], b'0'..=b'9' | b'.') {
        start -= 1;
    }
    if start > 0 && line[start - 1] == b'-' {
        start -= 1;
    }
    let mut end = i;
    while end < line.len() && matches!(line[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
        end += 1;
    }
    if !(start == 0 || starts_value(line[start - 1]))
        || !(end == line.len() || ends_value(line[end]))
    {
        return false;
    }
    let token = &line[start..end];
    let token = token.strip_prefix(b"-").unwrap_or(token);
    // A JSON number ends with a digit.
    if !token.last().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let integer_digits = token.iter().take_while(|b| b.is_ascii_digit()).count();
    let exponent = token.iter().any(|&b| b == b'e' || b == b'E');
    exponent || (token.get(integer_digits) == Some(&b'.') && integer_digits >= 11)
}

/// Short strings with no digit, `@`, `=` or `:` match no detector (every
/// shape needs one of those, or is longer than 15 bytes): skip the scan.
fn cannot_hold_anything(s: &[u8]) -> bool {
    s.len() < 16
        && !s
            .iter()
            .any(|&b| b.is_ascii_digit() || matches!(b, b'@' | b'=' | b':'))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Begin markers in a JSON text, its escapes decoded.
fn json_begins(raw: &[u8]) -> usize {
    if memchr::memchr(b'\\', raw).is_some() {
        count_begins(&json_unescaped(raw))
    } else {
        count_begins(raw)
    }
}

/// `line` without its newline and a carriage return before it.
fn trim_newline(line: &[u8]) -> &[u8] {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    body.strip_suffix(b"\r").unwrap_or(body)
}

/// `line` with its JSON string escapes decoded (`\u002d` as `-`, `\n` as
/// a newline), for finding markers written with them. Escapes are decoded
/// wherever they stand; a lone surrogate's is U+FFFD, an unknown one is
/// kept as written.
fn json_unescaped(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let next = line.get(i + 1).copied();
        let simple = match next {
            _ if b != b'\\' => None,
            Some(b'n') => Some(b'\n'),
            Some(b't') => Some(b'\t'),
            Some(b'r') => Some(b'\r'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(c @ (b'"' | b'\\' | b'/')) => Some(c),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let unit = (b == b'\\' && next == Some(b'u'))
            .then(|| line.get(i + 2..i + 6))
            .flatten()
            .and_then(|h| u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match unit {
            Some(u) => {
                let c = char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER);
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += 6;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Whether `text`, a card field's whole string, is one card by the rules
/// the redactor finds cards in text with (groups joined by the gaps a card
/// may have, a no-break space or a dot as well as a space or a dash),
/// encoded spaces read as spaces, blanks around it aside. Strings only: a
/// number's written form is no text (`4111111111111111e-3` would print
/// as two groups joined by a dot).
fn whole_card(text: &str) -> bool {
    let decoded = text.replace("%20", " ");
    let card = decoded.trim();
    matches!(crate::vault::pan::find_cards(card).as_slice(), [r] if r.len() == card.len())
}

/// A vault token (a random token with a valid check, or the digits of a
/// preserving token, which fail Luhn) in a card field is kept.
fn is_vault_token(v: &Value) -> bool {
    matches!(v, Value::String(s) if crate::vault::token::Token::parse(s).is_ok())
}

/// `$.a`, or `$["…"]` for keys that are not plain identifiers or hold
/// more than four digits (a key can hold a card; a report never holds
/// values).
fn push_key(path: &mut String, k: &str) {
    let digits = k.bytes().filter(u8::is_ascii_digit).count();
    if !k.is_empty()
        && k.len() <= 64
        && digits <= 4
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        path.push('.');
        path.push_str(k);
    } else {
        path.push_str("[\"…\"]");
    }
}

#[cfg(test)]
mod tests {
    use super::reads_a_number_by_value;

    #[test]
    fn numbers_read_by_value_are_told_from_hex_versions_and_words() {
        for yes in [
            "62e17",
            "[1,-4.5E+15]",
            "{\"a\": 1e9}",
            "{\"a\":\t7e-3 }",
            "{\"a\":4111111111111110.9}",
            "[99999999999.99999999]",
            "-12345678901.5",
        ] {
            assert!(reads_a_number_by_value(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"id":"3e45"}"#,
            r#"{"u":"0f8e-3e45-11ee"}"#,
            r#"{"v":"1e5 items"}"#,
            r#"{"ip":"10.0.0.1","v":"1.2.3"}"#,
            r#"{"ts":1732875600.123456,"amount":12.5}"#,
            r#"{"a":"4111111111111110.9"}"#,
            "1e",
            "e5",
            r#"{"a":12,"b":"e3"}"#,
        ] {
            assert!(!reads_a_number_by_value(no.as_bytes()), "{no}");
        }
    }
}
