//! Reading and writing `.drv` files: Nix's derivations in ATerm syntax,
//! `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`.
//!
//! This module owns the syntax and nothing else: it does not check that paths are valid
//! store paths or that output paths match their hashes (that needs the store), so it reads
//! derivations of any system and any store directory.
//!
//! Nix strings are bytes. We decode them as UTF-8 and, where that fails, convert lossily
//! (invalid sequences become U+FFFD): the ledger stores text, and every derivation Nix
//! evaluates from Nix expressions is UTF-8 in practice. Such a derivation still parses,
//! but [`Derivation::to_aterm`] then no longer reproduces the file byte for byte.
//!
//! The parser is [`parse`] (its own module); this one holds the types, the writer
//! ([`Derivation::to_aterm`]) and reading a file.
//!
//! Where Nix's own reader is more lenient than its writer (stray commas in lists, bytes
//! after the final `)`, repeated keys), we reject: Nix never writes those, so they mean a
//! damaged file, and a record built from a guess would be worse than an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Error, Result};

mod parse;

pub use parse::{parse, parse_outputs, DrvParseError, Found};

/// One output of a derivation, as written in the .drv.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerivationOutput {
    /// The output's store path; empty for floating content-addressed outputs.
    pub path: String,
    /// `r:sha256` style hash algorithm for fixed-output derivations, else empty.
    pub hash_algo: String,
    /// The expected hash for fixed-output derivations, else empty. Kept as written: Nix
    /// writes hex, and `nix show-derivation` prints it as hex too.
    pub hash: String,
}

impl DerivationOutput {
    /// Whether the output's content is fixed in advance by a hash (a fetch).
    pub fn is_fixed_output(&self) -> bool {
        !self.hash.is_empty()
    }
}

/// A parsed derivation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and, for each, the outputs of it that are used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    pub input_srcs: BTreeSet<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    /// The builder's environment. With structured attrs, `__json` holds the attributes as
    /// a JSON text, kept here unparsed; see [`Derivation::structured_attrs`].
    pub env: BTreeMap<String, String>,
}

impl Derivation {
    /// The structured attributes (the parsed `__json` variable), for derivations built
    /// with `__structuredAttrs = true`. `None` when there is no `__json`, or when it is
    /// not valid JSON (Nix would refuse to build such a derivation).
    pub fn structured_attrs(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.env.get("__json")?).ok()
    }

    /// Whether this is a fixed-output derivation: Nix's definition is exactly one output,
    /// `out`, with a hash.
    pub fn is_fixed_output(&self) -> bool {
        self.outputs.len() == 1
            && self
                .outputs
                .get("out")
                .is_some_and(DerivationOutput::is_fixed_output)
    }

    /// Writes the derivation in ATerm syntax, exactly as Nix writes .drv files: for a
    /// file Nix wrote (in UTF-8), `parse(f)?.to_aterm()` gives back `f` byte for byte.
    pub fn to_aterm(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("Derive([");
        for (i, (name, o)) in self.outputs.iter().enumerate() {
            comma(&mut out, i);
            out.push('(');
            for (j, field) in [name, &o.path, &o.hash_algo, &o.hash]
                .into_iter()
                .enumerate()
            {
                comma(&mut out, j);
                write_string(&mut out, field);
            }
            out.push(')');
        }
        out.push_str("],[");
        for (i, (drv, outputs)) in self.input_drvs.iter().enumerate() {
            comma(&mut out, i);
            out.push('(');
            write_string(&mut out, drv);
            out.push(',');
            write_list(&mut out, outputs);
            out.push(')');
        }
        out.push_str("],");
        write_list(&mut out, &self.input_srcs);
        out.push(',');
        write_string(&mut out, &self.system);
        out.push(',');
        write_string(&mut out, &self.builder);
        out.push(',');
        write_list(&mut out, &self.args);
        out.push_str(",[");
        for (i, (name, value)) in self.env.iter().enumerate() {
            comma(&mut out, i);
            out.push('(');
            write_string(&mut out, name);
            out.push(',');
            write_string(&mut out, value);
            out.push(')');
        }
        out.push_str("])");
        out
    }
}

fn comma(out: &mut String, index: usize) {
    if index > 0 {
        out.push(',');
    }
}

fn write_list<'s>(out: &mut String, items: impl IntoIterator<Item = &'s String>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        comma(out, i);
        write_string(out, item);
    }
    out.push(']');
}

/// Nix's `printString`: only these five characters are escaped.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads and parses the .drv at `path`.
pub fn read(path: &Path) -> Result<Derivation> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|source| Error::Drv {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIMPLE: &str = concat!(
        r#"Derive([("dev","/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x-dev","",""),"#,
        r#"("out","/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x","","")],"#,
        r#"[("/nix/store/cccccccccccccccccccccccccccccccc-bash.drv",["out"]),"#,
        r#"("/nix/store/dddddddddddddddddddddddddddddddd-gcc.drv",["lib","out"])],"#,
        r#"["/nix/store/ffffffffffffffffffffffffffffffff-builder.sh"],"aarch64-darwin","#,
        r#""/nix/store/gggggggggggggggggggggggggggggggg-bash/bin/bash",["-e","b.sh"],"#,
        r#"[("a","say \"hi\"\\n\nnext\ttab\rcr"),("empty",""),("out","x")])"#
    );

    #[test]
    fn parses_every_part() {
        let d = parse(SIMPLE.as_bytes()).unwrap();
        assert_eq!(
            d.outputs.keys().collect::<Vec<_>>(),
            ["dev", "out"],
            "multi-output"
        );
        assert_eq!(
            d.outputs["out"].path,
            "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x"
        );
        assert!(!d.outputs["out"].is_fixed_output() && !d.is_fixed_output());
        assert_eq!(
            d.input_drvs["/nix/store/dddddddddddddddddddddddddddddddd-gcc.drv"],
            BTreeSet::from(["lib".to_string(), "out".to_string()])
        );
        assert_eq!(d.input_srcs.len(), 1);
        assert_eq!(d.system, "aarch64-darwin");
        assert!(d.builder.ends_with("/bin/bash"));
        assert_eq!(d.args, ["-e", "b.sh"]);
        assert_eq!(d.env["a"], "say \"hi\"\\n\nnext\ttab\rcr");
        assert_eq!(d.env["empty"], "");
        assert_eq!(d.structured_attrs(), None);
        assert_eq!(d.to_aterm(), SIMPLE);
    }

    #[test]
    fn fixed_output() {
        let text = concat!(
            r#"Derive([("out","/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz","r:sha256","#,
            r#""e0f16e93e0932f0bddfcb97d18b0648883344a1fc255a88ac21e66d67a21791b")],[],[],"#,
            r#""x","builtin:fetchurl",[],[])"#
        );
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(d.outputs["out"].hash_algo, "r:sha256");
        assert!(d.is_fixed_output());
        assert_eq!(
            parse_outputs(text.as_bytes()).unwrap(),
            [(
                "out".to_string(),
                "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz".to_string()
            )]
        );
    }

    #[test]
    fn structured_attrs() {
        let text = r#"Derive([("out","","sha256","")],[],[],"s","b",[],[("__json","{\"a\":[1,\"x\\\"y\"]}")])"#;
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(d.env["__json"], r#"{"a":[1,"x\"y"]}"#);
        assert_eq!(
            d.structured_attrs(),
            Some(serde_json::json!({"a": [1, "x\"y"]}))
        );
        // A floating content-addressed output has an algorithm but no path or hash.
        assert_eq!(d.outputs["out"].path, "");
        assert!(!d.is_fixed_output());
        assert_eq!(d.to_aterm(), text);
    }

    #[test]
    fn outputs_in_file_order_and_stop_early() {
        let head = &SIMPLE.as_bytes()[..SIMPLE.find("],[").unwrap() + 1];
        let outs = parse_outputs(head).unwrap();
        assert_eq!(outs[0].0, "dev");
        assert_eq!(
            outs[1],
            (
                "out".into(),
                "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x".into()
            )
        );
        assert!(parse_outputs(&head[..head.len() - 1]).is_err());
    }

    #[test]
    fn invalid_utf8_is_converted_lossily() {
        let mut text = br#"Derive([],[],[],"s","b",["#.to_vec();
        text.extend_from_slice(b"\"caf\xe9\",\"x\\\"\xff\"],[])");
        let d = parse(&text).unwrap();
        assert_eq!(d.args, ["caf\u{fffd}", "x\"\u{fffd}"]);
    }

    #[test]
    fn unknown_escapes_mean_the_byte_itself() {
        // Like Nix: `\x` is `x`, and a backslash before a multi-byte character keeps it.
        let valid = "Derive([],[],[],\"s\",\"b\",[\"\\é\\x\\\\\\\"\\n\"],[])";
        assert_eq!(parse(valid.as_bytes()).unwrap().args, ["éx\\\"\n"]);
        // The same through the path for files that are not UTF-8.
        let mut bytes = valid.replace("\"s\"", "\"\u{1}\"").into_bytes();
        let at = bytes.iter().position(|&b| b == 1).unwrap();
        bytes[at] = 0xff;
        let d = parse(&bytes).unwrap();
        assert_eq!(d.system, "\u{fffd}");
        assert_eq!(d.args, ["éx\\\"\n"]);
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "expected 'Derive(' at byte 0, found end of data"),
            (b"Derivx", "expected 'Derive(' at byte 5, found 'x'"),
            (
                b"DrvWithVersion(\"xp-dyn-drv\",",
                "unsupported derivation format",
            ),
            (b"Derive([", "expected '(' at byte 8, found end of data"),
            (
                b"Derive([(\"out\"",
                "expected ',' at byte 14, found end of data",
            ),
            (
                b"Derive([(\"out\",\"rel\"",
                "expected an absolute path or \"\" at byte 15",
            ),
            (
                b"Derive([(\"out\",\"/x",
                "unterminated string starting at byte 15",
            ),
            (
                b"Derive([(\"out\",\"/x\\",
                "unterminated string starting at byte 15",
            ),
            (
                b"Derive([],[],[],\"s\",\"b\",[],[]) ",
                "unexpected data after the derivation at byte 30",
            ),
            (
                b"Derive([],[],[],\"s\",\"b\",[] [])",
                "expected ',' at byte 26, found ' '",
            ),
            (
                b"Derive([],[],[\"x\"],",
                "expected an absolute path at byte 14",
            ),
            (
                b"Derive([],[],[],\"s\",\"b\",[],[(\"a\",\"1\"),(\"a\",\"2\")])",
                "duplicate environment variable at byte 38",
            ),
            (
                b"Derive([],[],[],\"s\",\"b\",[\"a\",],[])",
                "expected '\"' at byte 29, found ']'",
            ),
            (
                b"Derive([],[],[],\"s\",\"b\",[\"a\"\n],[])",
                "expected ',' or ']' at byte 28, found '\\n'",
            ),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        assert!(parse_outputs(b"Derive([(\"out\",\"/x\",\"\",\"\")").is_err());
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.drv");
        std::fs::write(&path, "Derive([x").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: not a derivation: expected '(' at byte 8, found 'x'",
                path.display()
            )
        );
        let err = read(&dir.path().join("missing.drv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing.drv"),
            "{err}"
        );
        std::fs::write(&path, SIMPLE).unwrap();
        assert_eq!(read(&path).unwrap(), parse(SIMPLE.as_bytes()).unwrap());
    }

    fn text() -> impl Strategy<Value = String> {
        // Weighted toward the characters the syntax and the escapes care about.
        proptest::string::string_regex(r#"([a-z/"\\\n\r\t(),\[\]]|.){0,12}"#).unwrap()
    }

    fn path() -> impl Strategy<Value = String> {
        text().prop_map(|s| format!("/{s}"))
    }

    prop_compose! {
        fn derivation()(
            outputs in proptest::collection::btree_map(
                text(),
                (prop_oneof![Just(String::new()), path()], text(), text())
                    .prop_map(|(path, hash_algo, hash)| DerivationOutput { path, hash_algo, hash }),
                0..4),
            input_drvs in proptest::collection::btree_map(
                path(), proptest::collection::btree_set(text(), 0..3), 0..4),
            input_srcs in proptest::collection::btree_set(path(), 0..4),
            system in text(),
            builder in text(),
            args in proptest::collection::vec(text(), 0..4),
            env in proptest::collection::btree_map(text(), text(), 0..6),
        ) -> Derivation {
            Derivation { outputs, input_drvs, input_srcs, system, builder, args, env }
        }
    }

    proptest! {
        #[test]
        fn writer_and_reader_round_trip(d in derivation()) {
            let text = d.to_aterm();
            prop_assert_eq!(parse(text.as_bytes()), Ok(d.clone()));
            let outputs: Vec<_> = d.outputs.iter().map(|(n, o)| (n.clone(), o.path.clone())).collect();
            prop_assert_eq!(parse_outputs(text.as_bytes()), Ok(outputs));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let _ = parse_outputs(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_header_never_panic(
            bytes in proptest::collection::vec(
                prop_oneof![
                    3 => proptest::sample::select(b"[](),\"\\/".to_vec()),
                    1 => any::<u8>(),
                ],
                0..256,
            )
        ) {
            let mut input = b"Derive(".to_vec();
            input.extend_from_slice(&bytes);
            let _ = parse(&input);
            let _ = parse_outputs(&input);
        }
    }
}
