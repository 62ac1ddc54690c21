//! The ATerm parser: a cursor over a .drv's bytes, one pass, strings copied once, and
//! errors that say what was expected at which byte.

use std::collections::BTreeSet;

use super::{Derivation, DerivationOutput};

/// Why bytes are not a derivation: each says what was expected where (a byte offset from
/// 0), in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrvParseError {
    #[error("expected {expected} at byte {at}, found {found}")]
    Unexpected {
        expected: String,
        at: usize,
        found: Found,
    },
    #[error("expected an absolute path{} at byte {at}", if *.or_empty { " or \"\"" } else { "" })]
    NotAbsolute { at: usize, or_empty: bool },
    #[error("duplicate {what} at byte {at}")]
    Duplicate { what: &'static str, at: usize },
    #[error("unterminated string starting at byte {at}")]
    UnterminatedString { at: usize },
    #[error("unexpected data after the derivation at byte {at}")]
    TrailingData { at: usize },
    #[error("unsupported derivation format DrvWithVersion (dynamic derivations)")]
    DynamicDerivation,
}

/// What stood where something else was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    EndOfData,
    Byte(u8),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::EndOfData => f.write_str("end of data"),
            Found::Byte(b) => write!(f, "'{}'", show(*b)),
        }
    }
}

/// Parses a whole derivation. The error is one line saying what was expected where.
pub fn parse(bytes: &[u8]) -> std::result::Result<Derivation, DrvParseError> {
    let mut p = Parser::whole(bytes);
    p.header()?;
    let mut drv = Derivation::default();

    p.list(|p| {
        let at = p.pos;
        let (name, output) = p.output()?;
        match drv.outputs.insert(name, output) {
            None => Ok(()),
            Some(_) => Err(DrvParseError::Duplicate {
                what: "output name",
                at,
            }),
        }
    })?;
    p.byte(b',')?;
    p.list(|p| {
        let at = p.pos;
        p.byte(b'(')?;
        let drv_path = p.path()?;
        p.byte(b',')?;
        let mut outputs = BTreeSet::new();
        p.list(|p| {
            outputs.insert(p.string()?);
            Ok(())
        })?;
        p.byte(b')')?;
        match drv.input_drvs.insert(drv_path, outputs) {
            None => Ok(()),
            Some(_) => Err(DrvParseError::Duplicate {
                what: "input derivation",
                at,
            }),
        }
    })?;
    p.byte(b',')?;
    p.list(|p| {
        drv.input_srcs.insert(p.path()?);
        Ok(())
    })?;
    p.byte(b',')?;
    drv.system = p.string()?;
    p.byte(b',')?;
    drv.builder = p.string()?;
    p.byte(b',')?;
    p.list(|p| {
        drv.args.push(p.string()?);
        Ok(())
    })?;
    p.byte(b',')?;
    p.list(|p| {
        let at = p.pos;
        p.byte(b'(')?;
        let name = p.string()?;
        p.byte(b',')?;
        let value = p.string()?;
        p.byte(b')')?;
        match drv.env.insert(name, value) {
            None => Ok(()),
            Some(_) => Err(DrvParseError::Duplicate {
                what: "environment variable",
                at,
            }),
        }
    })?;
    p.byte(b')')?;
    if p.pos != bytes.len() {
        return Err(DrvParseError::TrailingData { at: p.pos });
    }
    Ok(drv)
}

/// Parses only the outputs, as (name, path) in file order, and stops right after the
/// outputs list. The post-build hook calls this once per build, so it skips the hash
/// fields without copying them and allocates only the returned strings.
pub fn parse_outputs(bytes: &[u8]) -> std::result::Result<Vec<(String, String)>, DrvParseError> {
    let mut p = Parser::partial(bytes);
    p.header()?;
    // Nearly every derivation has one to three outputs.
    let mut outputs = Vec::with_capacity(2);
    p.list(|p| {
        p.byte(b'(')?;
        let name = p.string()?;
        p.byte(b',')?;
        let path = p.output_path()?;
        p.byte(b',')?;
        p.span()?;
        p.byte(b',')?;
        p.span()?;
        p.byte(b')')?;
        outputs.push((name, path));
        Ok(())
    })?;
    Ok(outputs)
}

/// A byte for an error message: printable ASCII as itself (so `"` is not shown as `\"`),
/// anything else escaped so the message stays on one line.
fn show(byte: u8) -> String {
    if byte == b' ' || byte.is_ascii_graphic() {
        char::from(byte).to_string()
    } else {
        byte.escape_ascii().to_string()
    }
}

/// One piece of an escaped string's content: a run of literal bytes, or an escape's
/// meaning.
enum Piece {
    Run(std::ops::Range<usize>),
    Byte(u8),
}

/// Undoes Nix's escapes in `raw` (a string's content without its quotes). Nix's reader
/// turns `\n \r \t` into control characters and takes any other escaped byte as itself,
/// so `\"` and `\\` work, and so would `\x`, meaning `x`.
///
/// Runs always start and end next to an ASCII byte or at the ends of `raw`, so they are
/// char boundaries when `raw` is text: a backslash before a non-ASCII byte is dropped
/// and the byte stays part of the following run.
fn unescape(raw: &[u8], mut piece: impl FnMut(Piece)) {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\\', raw.get(from..).unwrap_or_default()) {
        let at = from + i;
        piece(Piece::Run(from..at));
        from = match raw.get(at + 1) {
            Some(&b) if b.is_ascii() => {
                piece(Piece::Byte(match b {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                }));
                at + 2
            }
            _ => at + 1,
        };
    }
    piece(Piece::Run(from.min(raw.len())..raw.len()));
}

/// A cursor over the bytes of a .drv. Errors name the byte offset (from 0) at which the
/// input stopped making sense.
struct Parser<'a> {
    bytes: &'a [u8],
    /// The same bytes as text, when the whole input is valid UTF-8: then strings need no
    /// validation of their own, one pass over the file did it.
    text: Option<&'a str>,
    pos: usize,
}

type Parsed<T> = std::result::Result<T, DrvParseError>;

impl<'a> Parser<'a> {
    /// A parser for all of `bytes`, which it validates as UTF-8 once, up front.
    fn whole(bytes: &'a [u8]) -> Self {
        Parser {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
            pos: 0,
        }
    }

    /// A parser that may stop early: validating the whole input would cost more than the
    /// few strings it reads, so each is validated on its own.
    fn partial(bytes: &'a [u8]) -> Self {
        Parser {
            bytes,
            text: None,
            pos: 0,
        }
    }

    fn header(&mut self) -> Parsed<()> {
        const HEADER: &[u8] = b"Derive(";
        if self.bytes.starts_with(HEADER) {
            self.pos = HEADER.len();
            return Ok(());
        }
        // Newer Nix writes this for dynamic derivations (experimental): a different
        // grammar for inputs, so better to say so than to misread it.
        if self.bytes.starts_with(b"DrvWithVersion(") {
            return Err(DrvParseError::DynamicDerivation);
        }
        let len = self
            .bytes
            .iter()
            .zip(HEADER)
            .take_while(|(a, b)| a == b)
            .count();
        self.pos = len;
        Err(self.expected("'Derive('"))
    }

    /// Describes a mismatch at the current position.
    fn expected(&self, what: &str) -> DrvParseError {
        DrvParseError::Unexpected {
            expected: what.to_string(),
            at: self.pos,
            found: match self.bytes.get(self.pos) {
                None => Found::EndOfData,
                Some(&b) => Found::Byte(b),
            },
        }
    }

    fn byte(&mut self, want: u8) -> Parsed<()> {
        if self.bytes.get(self.pos) == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(&format!("'{}'", show(want))))
        }
    }

    /// `[` item (`,` item)* `]`, or `[]`.
    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Parsed<()>) -> Parsed<()> {
        self.byte(b'[')?;
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.expected("',' or ']'")),
            }
        }
    }

    /// Consumes a quoted string and returns the range of its content (between the
    /// quotes, escapes not yet undone) and whether it has any escapes. Finding the end
    /// first lets the copy be a single exact-size allocation, and lets the hook's reader
    /// skip strings it does not need without copying them at all.
    fn span(&mut self) -> Parsed<(usize, usize, bool)> {
        self.byte(b'"')?;
        let start = self.pos;
        let mut from = start;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(from..).unwrap_or_default();
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                break;
            };
            let at = from + i;
            if self.bytes.get(at) == Some(&b'"') {
                self.pos = at + 1;
                return Ok((start, at, escaped));
            }
            // A backslash escapes the next byte, whatever it is (see `unescape`).
            escaped = true;
            from = at + 2;
        }
        self.pos = self.bytes.len();
        Err(DrvParseError::UnterminatedString {
            at: start.saturating_sub(1),
        })
    }

    fn string(&mut self) -> Parsed<String> {
        let (start, end, escaped) = self.span()?;
        let raw = self.bytes.get(start..end).unwrap_or_default();
        Ok(match self.text {
            // Every range here is next to an ASCII byte, so `get` on the text cannot
            // fail; the fallbacks only keep this free of panics.
            Some(text) if !escaped => text.get(start..end).unwrap_or_default().to_owned(),
            Some(text) => {
                let mut out = String::with_capacity(raw.len());
                unescape(raw, |piece| match piece {
                    Piece::Run(r) => {
                        out.push_str(text.get(start + r.start..start + r.end).unwrap_or_default())
                    }
                    Piece::Byte(b) => out.push(char::from(b)),
                });
                out
            }
            None => {
                let mut out = Vec::with_capacity(raw.len());
                unescape(raw, |piece| match piece {
                    Piece::Run(r) => out.extend_from_slice(raw.get(r).unwrap_or_default()),
                    Piece::Byte(b) => out.push(b),
                });
                String::from_utf8(out)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        })
    }

    /// An absolute path (input derivations and sources), as Nix's `parsePath` requires.
    fn path(&mut self) -> Parsed<String> {
        let at = self.pos;
        let s = self.string()?;
        if s.starts_with('/') {
            Ok(s)
        } else {
            Err(DrvParseError::NotAbsolute {
                at,
                or_empty: false,
            })
        }
    }

    /// An output's path: absolute, or empty for outputs whose path is only known after
    /// the build (floating content-addressed, impure, deferred).
    fn output_path(&mut self) -> Parsed<String> {
        let at = self.pos;
        let s = self.string()?;
        if s.is_empty() || s.starts_with('/') {
            Ok(s)
        } else {
            Err(DrvParseError::NotAbsolute { at, or_empty: true })
        }
    }

    /// `("name","path","hashAlgo","hash")`
    fn output(&mut self) -> Parsed<(String, DerivationOutput)> {
        self.byte(b'(')?;
        let name = self.string()?;
        self.byte(b',')?;
        let path = self.output_path()?;
        self.byte(b',')?;
        let hash_algo = self.string()?;
        self.byte(b',')?;
        let hash = self.string()?;
        self.byte(b')')?;
        Ok((
            name,
            DerivationOutput {
                path,
                hash_algo,
                hash,
            },
        ))
    }
}
