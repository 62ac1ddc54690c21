//! Parsing Nix's `--log-format internal-json` stream: one `@nix {json}` line per event.
//!
//! This is the wrapper's hot path (a build printing a million log lines is a million
//! calls), so events borrow from the line wherever the JSON has no escapes, and fields
//! are decoded by a small visitor instead of a generic `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The prefix Nix puts before every JSON event on stderr.
pub const PREFIX: &[u8] = b"@nix ";

/// Activity types (`start.type`) the wrapper acts on. Others pass through untouched.
pub mod activity {
    /// "querying info about missing paths", among others.
    pub const UNKNOWN: u64 = 0;
    pub const COPY_PATH: u64 = 100;
    pub const FILE_TRANSFER: u64 = 101;
    pub const REALISE: u64 = 102;
    pub const COPY_PATHS: u64 = 103;
    pub const BUILDS: u64 = 104;
    pub const BUILD: u64 = 105;
    pub const SUBSTITUTE: u64 = 108;
    pub const POST_BUILD_HOOK: u64 = 110;
    pub const BUILD_WAITING: u64 = 111;
}

/// Result types (`result.type`) the wrapper acts on.
pub mod result {
    pub const BUILD_LOG_LINE: u64 = 101;
    pub const SET_PHASE: u64 = 104;
    pub const PROGRESS: u64 = 105;
    pub const SET_EXPECTED: u64 = 106;
    pub const POST_BUILD_LOG_LINE: u64 = 107;
}

/// One field of a `start` or `result` event: Nix writes only integers and strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<'a> {
    Int(u64),
    Str(Cow<'a, str>),
    /// Anything else a newer Nix might send (negative or float numbers, null, ...).
    Other,
}

impl Field<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Field::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map(Field::Int).unwrap_or(Field::Other))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

/// The fields of any event, as Nix writes them. Unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    id: Option<u64>,
    #[serde(rename = "type")]
    ty: Option<u64>,
    level: Option<u64>,
    parent: Option<u64>,
    #[serde(borrow, default)]
    fields: Vec<Field<'a>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    msg: Option<Cow<'a, str>>,
}

/// One event of the JSON log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Start {
        id: u64,
        ty: u64,
        level: u64,
        parent: u64,
        text: Cow<'a, str>,
        fields: Vec<Field<'a>>,
    },
    Stop {
        id: u64,
    },
    /// A result carrying one line of text: a build log line (101) or a post-build-hook
    /// line (107). Split from [`Event::Result`] because it is nearly every line of a
    /// chatty build and needs no field list.
    LogLine {
        id: u64,
        ty: u64,
        line: Cow<'a, str>,
    },
    Result {
        id: u64,
        ty: u64,
        fields: Vec<Field<'a>>,
    },
    Msg {
        level: u64,
        msg: Cow<'a, str>,
    },
    /// An action this wrapper does not know (a newer Nix or Lix): ignored, never fatal.
    Other,
}

/// What one stderr line of Nix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Event(Event<'a>),
    /// Not an `@nix` line (a program writing to stderr directly): show it as is.
    Plain,
    /// An `@nix` line whose JSON could not be read: shown as is, never fatal.
    Malformed,
}

/// Classifies and parses one stderr line (without its newline).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    if let Some(event) = fast_log_line(line) {
        return Line::Event(event);
    }
    let Some(json) = line.strip_prefix(PREFIX) else {
        return Line::Plain;
    };
    match serde_json::from_slice::<Raw<'_>>(json) {
        Ok(raw) => Line::Event(from_raw(raw)),
        Err(_) => Line::Malformed,
    }
}

fn is_line_result(ty: u64) -> bool {
    ty == result::BUILD_LOG_LINE || ty == result::POST_BUILD_LOG_LINE
}

/// How Nix (nlohmann::json, keys sorted) writes a log line result:
/// `@nix {"action":"result","fields":["TEXT"],"id":N,"type":101}`.
const LOG_LINE_HEAD: &[u8] = br#"@nix {"action":"result","fields":[""#;
const LOG_LINE_ID: &[u8] = br#""],"id":"#;
const LOG_LINE_TYPE: &[u8] = br#","type":"#;

/// Reads a log line result without a JSON parser when it has exactly the shape Nix
/// writes and its text has no escapes; anything else is left to serde.
fn fast_log_line(line: &[u8]) -> Option<Event<'_>> {
    let rest = line.strip_prefix(LOG_LINE_HEAD)?;
    // Without a backslash the first quote ends the string.
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let rest = rest[end..].strip_prefix(LOG_LINE_ID)?;
    let (id, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(LOG_LINE_TYPE)?;
    let (ty, rest) = leading_number(rest)?;
    if rest != b"}" || !is_line_result(ty) {
        return None;
    }
    Some(Event::LogLine {
        id,
        ty,
        line: Cow::Borrowed(text),
    })
}

/// A decimal number at the start of `bytes`, and what follows it.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in &bytes[..digits] {
        n = n * 10 + u64::from(b - b'0');
    }
    Some((n, &bytes[digits..]))
}

fn from_raw(raw: Raw<'_>) -> Event<'_> {
    match (&*raw.action, raw.id) {
        ("start", Some(id)) => Event::Start {
            id,
            ty: raw.ty.unwrap_or(0),
            level: raw.level.unwrap_or(0),
            parent: raw.parent.unwrap_or(0),
            text: raw.text.unwrap_or(Cow::Borrowed("")),
            fields: raw.fields,
        },
        ("stop", Some(id)) => Event::Stop { id },
        ("result", Some(id)) => {
            let ty = raw.ty.unwrap_or(0);
            let mut fields = raw.fields;
            if is_line_result(ty) && fields.len() == 1 {
                if let Some(Field::Str(line)) = fields.pop() {
                    return Event::LogLine { id, ty, line };
                }
            }
            Event::Result { id, ty, fields }
        }
        ("msg", _) => Event::Msg {
            level: raw.level.unwrap_or(0),
            msg: raw.msg.unwrap_or(Cow::Borrowed("")),
        },
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Event<'_> {
        match parse_line(line.as_bytes()) {
            Line::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn the_events_of_nix_2_8_parse() {
        // Lines as Nix 2.8 writes them (keys sorted, as nlohmann::json does).
        let start = event(
            r#"@nix {"action":"start","fields":["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv","",1,1],"id":123,"level":3,"parent":7,"text":"building '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv'","type":105}"#,
        );
        let Event::Start {
            id,
            ty,
            parent,
            fields,
            ..
        } = start
        else {
            panic!("{start:?}")
        };
        assert_eq!((id, ty, parent), (123, 105, 7));
        assert_eq!(
            fields[0].as_str(),
            Some("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv")
        );
        assert_eq!(fields[1].as_str(), Some(""));
        assert_eq!(fields[2].as_u64(), Some(1));

        assert_eq!(
            event(r#"@nix {"action":"stop","id":123}"#),
            Event::Stop { id: 123 }
        );
        let line =
            event(r#"@nix {"action":"result","fields":["a \"quoted\" line"],"id":123,"type":101}"#);
        assert_eq!(
            line,
            Event::LogLine {
                id: 123,
                ty: 101,
                line: Cow::Owned("a \"quoted\" line".into())
            }
        );
        // The fast path (no escapes) and serde agree.
        let plain = r#"@nix {"action":"result","fields":["checking for gcc... yes"],"id":96469260435460,"type":101}"#;
        let expected = Event::LogLine {
            id: 96469260435460,
            ty: 101,
            line: Cow::Borrowed("checking for gcc... yes"),
        };
        assert_eq!(fast_log_line(plain.as_bytes()), Some(expected.clone()));
        assert_eq!(event(plain), expected);
        let json = &plain.as_bytes()[PREFIX.len()..];
        assert_eq!(from_raw(serde_json::from_slice(json).unwrap()), expected);
        // Other shapes fall back to serde rather than being misread.
        for odd in [
            r#"@nix {"action":"result","fields":["x"],"id":1,"type":105}"#,
            r#"@nix {"action":"result","fields":["x"],"id":1,"type":101,"more":1}"#,
            r#"@nix {"action":"result","fields":["x","y"],"id":1,"type":101}"#,
            r#"@nix {"action":"result","fields":["x\ty"],"id":1,"type":101}"#,
        ] {
            assert_eq!(fast_log_line(odd.as_bytes()), None, "{odd}");
        }
        let progress = event(r#"@nix {"action":"result","fields":[3,10,2,0],"id":5,"type":105}"#);
        let Event::Result { fields, .. } = progress else {
            panic!()
        };
        assert_eq!(
            fields.iter().map(|f| f.as_u64()).collect::<Vec<_>>(),
            [Some(3), Some(10), Some(2), Some(0)]
        );
        assert_eq!(
            event(r#"@nix {"action":"msg","level":0,"msg":"error: boom"}"#),
            Event::Msg {
                level: 0,
                msg: Cow::Borrowed("error: boom")
            }
        );
    }

    #[test]
    fn unknown_actions_and_field_kinds_pass_through_and_garbage_is_not_fatal() {
        assert_eq!(
            event(r#"@nix {"action":"fancyNewThing","id":1}"#),
            Event::Other
        );
        let e = event(
            r#"@nix {"action":"result","fields":[-1,1.5,null,[1],{"a":1}],"id":1,"type":999,"extra":true}"#,
        );
        assert_eq!(
            e,
            Event::Result {
                id: 1,
                ty: 999,
                fields: vec![Field::Other; 5]
            }
        );
        assert_eq!(parse_line(b"@nix {not json"), Line::Malformed);
        assert_eq!(parse_line(b"warning: plain text"), Line::Plain);
        assert_eq!(parse_line(b""), Line::Plain);
    }
}
