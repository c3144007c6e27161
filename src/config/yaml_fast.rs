//! A fast path for the plainest YAML documents, so that rendering a fleet does not pay a full
//! YAML parse for every object of every cluster (a templated manifest is parsed once per
//! cluster it renders for).
//!
//! [`parse`] accepts only a small subset: nested block mappings of single-line scalars (plain
//! `word`s, `"double"` quotes without escapes, `'single'` quotes without `''`), comment and
//! blank lines, an optional leading `---`. Anything else — sequences, flow collections, block or
//! multi-line scalars, tags, anchors, escapes, duplicate keys, tabs, non-ASCII, odd indentation,
//! trailing spaces, large or deep documents — returns `None`, and the caller parses the
//! document with serde-saphyr as before. Within the subset the result is the value serde-saphyr
//! gives: a plain scalar is typed by serde-saphyr itself (on the scalar alone, as a mapping
//! value; memoized per thread), quoted scalars are strings, and keys are only accepted when
//! serde-saphyr would type them as that very string. The unit tests compare both parsers on
//! generated documents.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Map, Value};

/// Documents longer than this go to serde-saphyr (far below its budgets: events, nodes).
const MAX_BYTES: usize = 64 * 1024;
/// Nesting deeper than this goes to serde-saphyr (its own limit is 64).
const MAX_DEPTH: usize = 16;
/// Keys longer than this go to serde-saphyr (simple keys have a lookahead limit).
const MAX_KEY: usize = 128;
/// Plain scalars remembered per thread before the memo is emptied.
const MEMO_ENTRIES: usize = 4096;

thread_local! {
    /// Plain scalar text → what serde-saphyr makes of it (`None`: not for the fast path).
    static PLAIN: RefCell<HashMap<String, Option<Value>>> = RefCell::new(HashMap::new());
}

/// One content line: its indentation and the text after it.
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The value of a document of the subset, or `None` when it is outside the subset (the caller
/// then parses it with serde-saphyr). Never wrong: `Some(v)` is what serde-saphyr returns.
pub fn parse(text: &str) -> Option<Value> {
    if text.len() > MAX_BYTES
        || !text
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let mut lines = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        if index == 0 && line == "---" {
            continue;
        }
        let content = line.trim_start_matches(' ');
        if content.is_empty() {
            continue;
        }
        if content.starts_with('#') {
            continue;
        }
        if line.ends_with(' ') {
            return None;
        }
        lines.push(Line {
            indent: line.len() - content.len(),
            text: content,
        });
    }
    if lines.first()?.indent != 0 {
        return None;
    }
    let (map, next) = mapping(&lines, 0, 0, 0)?;
    (next == lines.len()).then_some(Value::Object(map))
}

/// The block mapping whose keys are at `indent`, from line `at`; with the line after it.
fn mapping(
    lines: &[Line],
    mut at: usize,
    indent: usize,
    depth: usize,
) -> Option<(Map<String, Value>, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut map = Map::new();
    while let Some(line) = lines.get(at) {
        if line.indent < indent {
            break;
        }
        if line.indent > indent {
            return None;
        }
        let (key, rest) = line.text.split_once(':')?;
        let string_key =
            |typed: Option<&Value>| matches!(typed, Some(Value::String(s)) if s == key);
        if key.len() > MAX_KEY || !is_word(key) || !with_plain(key, string_key) {
            return None;
        }
        let value = if rest.is_empty() {
            let child = lines.get(at + 1).filter(|l| l.indent > indent)?;
            let (child, next) = mapping(lines, at + 1, child.indent, depth + 1)?;
            at = next;
            Value::Object(child)
        } else {
            let scalar = rest.strip_prefix(' ')?.trim_start_matches(' ');
            at += 1;
            // A deeper line would continue the scalar (a multi-line plain scalar) or be an error.
            if lines.get(at).is_some_and(|l| l.indent > indent) {
                return None;
            }
            scalar_value(scalar)?
        };
        if map.insert(key.to_string(), value).is_some() {
            return None;
        }
    }
    Some((map, at))
}

/// A single-line scalar of the subset.
fn scalar_value(text: &str) -> Option<Value> {
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote) {
            let inner = inner.strip_suffix(quote)?;
            // No escapes: `\` in double quotes, `''` in single quotes.
            if inner.contains(quote) || (quote == '"' && inner.contains('\\')) {
                return None;
            }
            return Some(Value::String(inner.to_string()));
        }
    }
    // A sign or dot may lead (`-1`, `.5`, `-.inf`) when a letter, digit or dot follows: `-`
    // followed by a space or the line's end would be a sequence entry.
    let word = match text.as_bytes() {
        [b'-' | b'+' | b'.', next, ..] if next.is_ascii_alphanumeric() || *next == b'.' => {
            is_word(&text[1..])
                || text[1..].starts_with('.') && text.len() > 2 && is_word(&text[2..])
        }
        _ => is_word(text),
    };
    if !word {
        return None;
    }
    with_plain(text, |typed| typed.cloned())
}

/// A plain scalar that cannot be anything but one plain scalar on its line: an ASCII letter or
/// digit, then letters, digits and `.`, `_`, `/`, `-` (no indicator, space, colon or `#`).
fn is_word(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// `f` of what serde-saphyr makes of a plain scalar written as a mapping value (`None`: an
/// error), memoized per thread.
fn with_plain<T>(text: &str, f: impl FnOnce(Option<&Value>) -> T) -> T {
    PLAIN.with(|memo| {
        if let Some(known) = memo.borrow().get(text) {
            return f(known.as_ref());
        }
        let typed = match serde_saphyr::from_str::<Value>(&format!("k: {text}\n")) {
            Ok(Value::Object(mut map)) if map.len() == 1 => map.remove("k"),
            _ => None,
        };
        let out = f(typed.as_ref());
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(text.to_string(), typed);
        out
    })
}

thread_local! {
    /// String → how serde-saphyr writes it as a mapping value (`None`: not on one line).
    static STRING_TEXT: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
    /// Another scalar, by its JSON → how serde-saphyr writes it as a mapping value.
    static SCALAR_TEXT: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
    /// Key → how serde-saphyr writes it as a mapping key (`None`: not on one line).
    static KEY_TEXT: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
}

/// Strings and keys longer than this are written by serde-saphyr (long ones may be folded).
const MAX_SCALAR_OUT: usize = 64;

/// `serde_saphyr::to_string(value)` for the plainest values: a non-empty mapping of nested
/// non-empty mappings and scalars (no sequence, no empty collection), short one-line scalars.
/// `None` for anything else (the caller then runs serde-saphyr). Each scalar's text is the one
/// serde-saphyr writes for it as the value of a one-key mapping, memoized per thread; in block
/// style its choice of plain or quoted does not depend on where the scalar is.
pub fn to_string(value: &Value) -> Option<String> {
    let Value::Object(map) = value else {
        return None;
    };
    let mut out = String::new();
    write_mapping(map, 0, &mut out)?;
    Some(out)
}

/// Writes a non-empty block mapping at `indent`.
fn write_mapping(map: &Map<String, Value>, indent: usize, out: &mut String) -> Option<()> {
    if map.is_empty() || indent > 2 * MAX_DEPTH {
        return None;
    }
    for (key, value) in map {
        out.extend(std::iter::repeat_n(' ', indent));
        with_text(&KEY_TEXT, key, || key_text(key), |text| out.push_str(text))?;
        match value {
            Value::Object(child) => {
                out.push_str(":\n");
                write_mapping(child, indent + 2, out)?;
            }
            Value::Array(_) => return None,
            Value::String(text) => {
                out.push_str(": ");
                let make = || {
                    (text.len() <= MAX_SCALAR_OUT)
                        .then(|| value_text(value))
                        .flatten()
                };
                with_text(&STRING_TEXT, text, make, |text| out.push_str(text))?;
                out.push('\n');
            }
            scalar => {
                out.push_str(": ");
                let memo = scalar.to_string();
                with_text(
                    &SCALAR_TEXT,
                    &memo,
                    || value_text(scalar),
                    |text| out.push_str(text),
                )?;
                out.push('\n');
            }
        }
    }
    Some(())
}

/// `f` of a memoized text (`None` when `make` found none).
fn with_text(
    memo: &'static std::thread::LocalKey<RefCell<HashMap<String, Option<String>>>>,
    key: &str,
    make: impl FnOnce() -> Option<String>,
    f: impl FnOnce(&str),
) -> Option<()> {
    memo.with(|memo| {
        if let Some(known) = memo.borrow().get(key) {
            return known.as_deref().map(f);
        }
        let text = make();
        let out = text.as_deref().map(f);
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key.to_string(), text);
        out
    })
}

/// How serde-saphyr writes a scalar as a mapping value, when it is one line.
fn value_text(scalar: &Value) -> Option<String> {
    let mut map = Map::new();
    map.insert("k".into(), scalar.clone());
    let text = serde_saphyr::to_string(&Value::Object(map)).ok()?;
    let inner = text.strip_prefix("k: ")?.strip_suffix('\n')?;
    (!inner.contains('\n')).then(|| inner.to_string())
}

/// How serde-saphyr writes a key, when it is one line and short.
fn key_text(key: &str) -> Option<String> {
    if key.len() > MAX_SCALAR_OUT {
        return None;
    }
    let mut map = Map::new();
    map.insert(key.to_string(), Value::from(0));
    let text = serde_saphyr::to_string(&Value::Object(map)).ok()?;
    let inner = text.strip_suffix(": 0\n")?;
    (!inner.is_empty() && !inner.contains('\n')).then(|| inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(text: &str) -> Option<Value> {
        serde_saphyr::from_str::<Value>(text).ok()
    }

    #[test]
    fn accepts_the_templated_configmap_shape() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p1-o1\n  namespace: bench\n\
                    data:\n  cluster: \"c17\"\n  shard: \"s7\"\n  value: \"v1\"\n";
        let fast = parse(text);
        assert!(
            fast.is_some(),
            "the benchmark's shape must take the fast path"
        );
        assert_eq!(fast, saphyr(text));
    }

    #[test]
    fn table_of_documents_agrees_with_serde_saphyr_or_declines() {
        // (document, whether the fast path must take it)
        let cases: &[(&str, bool)] = &[
            ("a: b\n", true),
            ("---\na: b\n", true),
            ("# c\na: b\n\n  # d\nc:\n  d: e\n", true),
            (
                "a: 1\nb: -1\nc: 1.5\nd: 0x1F\ne: 0o17\nf: 1e3\ng: 012\n",
                true,
            ),
            (
                "a: true\nb: yes\nc: no\nd: on\ne: off\nf: y\ng: n\nh: True\n",
                true,
            ),
            (
                "a: null\nb: Null\nc: inf\nd: nan\ne: NaN\nf: 1_000\ng: 0X1F\n",
                true,
            ),
            ("a: \"true\"\nb: '1'\nc: \"\"\nd: ''\ne: 'a: b # c'\n", true),
            ("true: a\n", false),
            ("1: a\n", false),
            ("null: a\n", false),
            ("a: b\na: c\n", false),
            ("a:\n  b: c\n d: e\n", false),
            ("a: b\n  c\n", false),
            ("a:\nb: c\n", false),
            ("a: b \n", false),
            ("a:\tb\n", false),
            ("a: [1, 2]\n", false),
            ("a: {}\n", false),
            ("a:\n- b\n", false),
            ("a: |\n  x\n", false),
            ("a: \"x\\ny\"\n", false),
            ("a: 'it''s'\n", false),
            ("a: &x b\nc: *x\n", false),
            ("a: !!str 1\n", false),
            ("a:b\n", false),
            (" a: b\n", false),
            ("--- a: b\n", false),
            ("a: b\n...\n", false),
            ("a: b # c\n", false),
            ("a: é\n", false),
            ("", false),
            ("# only a comment\n", false),
        ];
        for (text, fast) in cases {
            let got = parse(text);
            assert_eq!(got.is_some(), *fast, "{text:?}: {got:?}");
            if let Some(value) = got {
                assert_eq!(Some(value), saphyr(text), "{text:?}");
            }
        }
    }

    #[test]
    fn writes_what_serde_saphyr_writes_or_declines() {
        use serde_json::json;
        let long = "x".repeat(100);
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "b"}, "data": {"cluster": "c17", "value": "v1"}}),
                true,
            ),
            (
                json!({"a": {"b": {"c": {"d": "deep"}}}, "e": 1, "f": -2.5, "g": true, "h": null}),
                true,
            ),
            (
                json!({"a": "true", "b": "1", "c": "", "d": "a: b", "e": "#x", "f": "x #y", "g": "- x"}),
                true,
            ),
            (
                json!({"a": "null", "b": "~", "c": "0x1F", "d": "yes", "e": " lead", "f": "trail ", "g": "'q'"}),
                true,
            ),
            (
                json!({"true": 1, "1": 2, "a b": 3, "a:b": 4, "": 5, "-": 6, "?": 7}),
                true,
            ),
            (json!({"a": "x\ny"}), false),
            (json!({"a": [1]}), false),
            (json!({"a": {}}), false),
            (json!({}), false),
            (json!("scalar"), false),
            (json!({"a": long}), false),
        ];
        for (value, fast) in cases {
            let got = to_string(&value);
            assert_eq!(got.is_some(), fast, "{value}: {got:?}");
            if let Some(text) = got {
                assert_eq!(Some(text), serde_saphyr::to_string(&value).ok(), "{value}");
            }
        }
    }

    #[test]
    fn generated_values_are_written_as_serde_saphyr_writes_them() {
        let words = [
            "a",
            "name",
            "app.kubernetes.io/name",
            "true",
            "1",
            "0.5",
            "null",
            "~",
            "",
            " ",
            "a b",
            "a: b",
            "#c",
            "x #y",
            "- x",
            "'q'",
            "\"q\"",
            "yes",
            "No",
            "0x1F",
            "1e3",
            "@at",
            "`tick",
            "%p",
            "&a",
            "*a",
            "!t",
            "|",
            ">",
            "[",
            "{",
            "é",
            "tab\there",
            "a\\b",
            "2024-01-01",
            "12:30",
            "-1",
            ".inf",
            "very-long-name-of-a-cluster-in-a-region-0001",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut taken = 0;
        for _ in 0..3000 {
            fn value(rng: &mut Rng, words: &[&str], depth: usize) -> Value {
                let mut map = Map::new();
                for _ in 0..(1 + rng.next() % 4) {
                    let key = rng.pick(words).to_string();
                    let v = match rng.next() % 8 {
                        0 if depth < 4 => value(rng, words, depth + 1),
                        1 => Value::from(rng.next() % 1000),
                        2 => Value::Bool(rng.next().is_multiple_of(2)),
                        3 => Value::Null,
                        _ => Value::String(rng.pick(words).to_string()),
                    };
                    map.insert(key, v);
                }
                Value::Object(map)
            }
            let v = value(&mut rng, &words, 0);
            if let Some(text) = to_string(&v) {
                taken += 1;
                assert_eq!(Some(text), serde_saphyr::to_string(&v).ok(), "{v}");
            }
        }
        assert!(taken > 1000, "the fast path took only {taken} values");
    }

    /// A tiny deterministic generator (xorshift), so the test needs no crate and never flakes.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % 1_000_003).unwrap_or(0)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.next() % items.len()]
        }
    }

    #[test]
    fn generated_documents_agree_with_serde_saphyr() {
        let keys = [
            "a",
            "b",
            "name",
            "app.kubernetes.io/name",
            "x_y",
            "k-1",
            "1",
            "true",
            "yes",
            "null",
            "on",
            "0x1",
            "a b",
            "a#b",
            "\"q\"",
            "-a",
            "<<",
            "~",
        ];
        let scalars = [
            "v1",
            "ConfigMap",
            "1",
            "-1",
            "+1",
            "0.5",
            ".5",
            "1e3",
            "0x1F",
            "0o17",
            "0b11",
            "012",
            "1_000",
            "true",
            "False",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "n",
            "null",
            "Null",
            "~",
            "inf",
            ".inf",
            "-.inf",
            "nan",
            ".NaN",
            "Infinity",
            "\"s\"",
            "\"\"",
            "''",
            "'x y'",
            "\"a\\\"b\"",
            "'it''s'",
            "a b",
            "a: b",
            "a #c",
            "#c",
            "[1]",
            "{}",
            "&a x",
            "*a",
            "!!int 1",
            "|",
            ">",
            "- x",
            "2024-01-01",
            "12:30",
            "1.0.0",
            "v1.2",
            "a/b",
            "x.y",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            if rng.next().is_multiple_of(5) {
                text.push_str("---\n");
            }
            let mut indents = vec![0usize];
            for _ in 0..(1 + rng.next() % 6) {
                let depth = rng.next() % indents.len();
                let indent = indents[depth];
                indents.truncate(depth + 1);
                let key = rng.pick(&keys);
                match rng.next() % 9 {
                    0 => {
                        text.push_str(&format!("{}{key}:\n", " ".repeat(indent)));
                        indents.push(indent + [1, 2, 4][rng.next() % 3]);
                    }
                    1 => text.push_str(&format!("{}# comment\n", " ".repeat(indent))),
                    2 => text.push('\n'),
                    _ => text.push_str(&format!(
                        "{}{key}: {}\n",
                        " ".repeat(indent + usize::from(rng.next().is_multiple_of(23))),
                        rng.pick(&scalars)
                    )),
                }
            }
            if let Some(value) = parse(&text) {
                taken += 1;
                assert_eq!(Some(value), saphyr(&text), "{text:?}");
            }
        }
        assert!(taken > 500, "the fast path took only {taken} documents");
    }
}
