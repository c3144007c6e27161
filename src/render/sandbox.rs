//! The template sandbox every flotilla template is rendered in (DESIGN §3 "Templates").
//!
//! Templates come from the config repository, so they are treated as untrusted: the sandbox is a
//! [`tera::Tera`] (tera 2) that holds no templates, only a fixed set of filters, tests and
//! functions that are pure functions of their input. Each `check`/`render` works on a cheap clone
//! of that instance holding exactly one template (`render` keeps it for the next render of the
//! same source), so nothing one template does can be seen by the next, and
//! `{% include %}`/`{% extends %}` can only ever name a template that does not exist.
//!
//! What tera 2.4 gives us, and what this module adds on top of it:
//! - Strictness: tera 2 errors on an undefined variable or attribute when it is printed, iterated,
//!   indexed further or given to most filters. The built-in `safe` and `str` filters silently turn
//!   an undefined value into an empty string, so they are replaced by strict versions, and every
//!   filter registered here rejects undefined input. Known gaps that cannot be closed from outside
//!   tera: the `~` concatenation operator and list/map literals treat an undefined operand as
//!   empty, and `if`/`or`/comparisons treat it as false (like `is defined`).
//! - Sandboxing: tera 2.4's only built-in functions are `range` (bounded to 100 000 items) and
//!   `throw`; there is no `get_env`, `now` or `get_random`, no filter reads anything outside its
//!   input, and templates cannot be loaded from files (the `glob_fs` feature is off). Unknown
//!   functions and filters are rejected when the template is parsed.
//! - No autoescaping: output is YAML, so HTML escaping is turned off for every template name.
//! - Determinism: Cargo.toml turns on tera's `preserve_order`, so `{% for k, v in map %}` follows
//!   the context's order (serde_json's sorted keys); `keys`, `values` and `pairs` are replaced
//!   by versions ordered by key anyway, and `to_yaml` / `to_json` sort map keys. Without this a
//!   map loop would render differently per run and cause needless re-applies.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{Error as _, SerializeMap as _, SerializeSeq as _};
use serde::{Serialize, Serializer};
use tera::value::Key;

use crate::config::yaml::check_manifests;
use tera::{Context, Error, ErrorKind, Kwargs, Map, ReportError, State, Tera, TeraResult, Value};

/// Renders untrusted templates from the config repo: strict, with no access to environment,
/// files or network.
///
/// It is `Send + Sync`, so one instance can be shared by every render. It remembers the
/// templates it compiled, the last context it converted and the non-templated manifests it
/// parsed ([`Sandbox::manifests`]), because a fleet renders the same few sources for every
/// cluster and redoing that work per cluster dominated a fleet's render time. The memory is
/// bounded, holds only pure results, and a clone starts with an empty one.
#[derive(Debug)]
pub struct Sandbox {
    /// Holds only the safe filters/tests/functions and never any template: every compile clones
    /// it and adds the one template it works on, so templates never see each other.
    tera: Tera,
    /// Compiled one-template copies of `tera` and the last converted context.
    memo: Mutex<Memo>,
}

/// What [`check_manifests`] makes of a text: its objects, or the line and message of the first
/// problem.
pub type ParsedManifests = Result<Vec<serde_json::Value>, (usize, String)>;

/// How many compiled templates a [`Sandbox`] keeps before it forgets them all, so memory stays
/// flat however many distinct sources a repository has.
const MEMO_TEMPLATES: usize = 512;

/// How many bytes of manifest text a [`Sandbox`] keeps parsed before it forgets them all. The
/// parsed objects take up to about 25 times their text (measured with small ConfigMaps), so this
/// bounds the memo to a few tens of MiB.
const MEMO_MANIFEST_BYTES: usize = 1 << 20;

/// What a [`Sandbox`] remembers between renders. Only pure results are kept: a compiled template
/// is a function of its name and source, a tera context of the JSON it was converted from.
#[derive(Debug, Default)]
struct Memo {
    /// source → name → the one-template tera instance, or the error compiling it gave
    /// (nested so a lookup needs no owned key).
    templates: HashMap<String, HashMap<String, Result<Arc<Tera>, TemplateError>>>,
    /// How many compiled templates `templates` holds in all.
    compiled: usize,
    /// Non-templated manifest text → what [`check_manifests`] made of it.
    manifests: HashMap<String, Arc<ParsedManifests>>,
    /// Total length of the keys of `manifests`.
    manifest_bytes: usize,
    /// The last context given to `render` and its conversion: the renders of one cluster share
    /// one context.
    context: Option<(serde_json::Value, Context)>,
}

impl Clone for Sandbox {
    /// The same filters; the copy compiles its own templates.
    fn clone(&self) -> Self {
        Self {
            tera: self.tera.clone(),
            memo: Mutex::default(),
        }
    }
}

/// Why a template could not be parsed or rendered, in a form fit for a status note.
///
/// `line` is 1-based and counts lines within the template source (not the file it may be
/// embedded in), so callers can add their own offset. `message` is one or a few lines of plain
/// text (no ANSI, no source excerpt); for an undefined variable or field it names it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// 1-based line within the template source where the problem is, when tera reports one.
    pub line: Option<usize>,
    /// Human-readable description of the problem.
    pub message: String,
}

impl Default for Sandbox {
    /// Same as [`Sandbox::new`]: a sandbox has no configuration.
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Builds the sandbox: tera's pure built-ins, strict replacements for the built-ins that
    /// swallow undefined values, flotilla's filters, and autoescaping turned off.
    pub fn new() -> Self {
        let mut tera = Tera::default();
        // Output is YAML: never HTML-escape, whatever the template name ends with.
        tera.autoescape_on(Vec::<&'static str>::new());

        // Built-ins that turn an undefined value into "" are replaced by strict versions.
        tera.register_filter("safe", strict_safe);
        tera.register_filter("str", strict_str);
        // Built-ins that iterate a hash map in random order are replaced by ordered versions.
        tera.register_filter("keys", sorted_keys);
        tera.register_filter("values", sorted_values);
        tera.register_filter("pairs", sorted_pairs);

        // flotilla's filters. `indent` is tera 2's built-in: `indent(width=4, first=false,
        // blank=false)` indents every line but the first, skipping blank lines, like jinja.
        tera.register_filter("to_yaml", to_yaml);
        tera.register_filter("to_json", to_json);
        tera.register_filter("b64encode", b64encode);
        tera.register_filter("b64decode", b64decode);

        Self {
            tera,
            memo: Mutex::default(),
        }
    }

    /// Parses `source` without rendering it (used by `flotilla validate`), so a bad template is
    /// reported before any cluster is touched. Also rejects unknown filters, tests and
    /// functions, and any `{% include %}`/`{% extends %}` (no other template exists).
    pub fn check(&self, name: &str, source: &str) -> Result<(), TemplateError> {
        self.compile(name, source).map(drop)
    }

    /// Renders `source` with `context`, a JSON object whose keys become top-level variables
    /// (`cluster` and one per `templateResourceRefs` identifier). Any undefined variable or
    /// field is an error rather than empty output, so a typo cannot ship a half-rendered object.
    pub fn render(
        &self,
        name: &str,
        source: &str,
        context: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        if !context.is_object() {
            return Err(TemplateError {
                line: None,
                message: "template context must be a JSON object".to_string(),
            });
        }
        let remembered = match &self.memo().context {
            Some((json, converted)) if json == context => Some(converted.clone()),
            _ => None,
        };
        let context = match remembered {
            Some(converted) => converted,
            None => {
                let converted = Context::from_serialize(context).map_err(|e| TemplateError {
                    line: None,
                    message: format!("invalid template context: {e}"),
                })?;
                self.memo().context = Some((context.clone(), converted.clone()));
                converted
            }
        };
        let tera = self.compiled(name, source)?;
        tera.render(name, &context)
            .map_err(|e| TemplateError::from_tera(&e, source))
    }

    /// [`check_manifests`] of a text that is not a template, parsed once per sandbox: a file
    /// every cluster gets as is would otherwise be parsed again for each of them. The objects
    /// are copies the caller may change.
    pub fn manifests(&self, text: &str) -> ParsedManifests {
        if let Some(known) = self.memo().manifests.get(text).cloned() {
            return (*known).clone();
        }
        let parsed = Arc::new(check_manifests(text));
        if text.len() <= MEMO_MANIFEST_BYTES {
            let mut memo = self.memo();
            if memo.manifest_bytes + text.len() > MEMO_MANIFEST_BYTES {
                memo.manifests.clear();
                memo.manifest_bytes = 0;
            }
            if memo
                .manifests
                .insert(text.to_string(), Arc::clone(&parsed))
                .is_none()
            {
                memo.manifest_bytes += text.len();
            }
        }
        Arc::unwrap_or_clone(parsed)
    }

    /// The one-template copy of the sandbox for (`name`, `source`), compiled on first use and
    /// remembered (errors too), so every cluster rendering the same source shares one compile.
    fn compiled(&self, name: &str, source: &str) -> Result<Arc<Tera>, TemplateError> {
        if let Some(known) = self
            .memo()
            .templates
            .get(source)
            .and_then(|names| names.get(name))
        {
            return known.clone();
        }
        // Compiled outside the lock: another thread may compile the same source meanwhile,
        // which only costs time (both results are the same).
        let compiled = self.compile(name, source).map(Arc::new);
        let mut memo = self.memo();
        if memo.compiled >= MEMO_TEMPLATES {
            memo.templates.clear();
            memo.compiled = 0;
        }
        let names = memo.templates.entry(source.to_string()).or_default();
        if names.insert(name.to_string(), compiled.clone()).is_none() {
            memo.compiled += 1;
        }
        compiled
    }

    /// The memo, also after a panic elsewhere poisoned the lock: it holds only finished pure
    /// results, never a half-made one.
    fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a one-template copy of the sandbox: the clone is a few hundred nanoseconds (it
    /// copies `Arc`s to the registered functions), and dropping it forgets the template.
    fn compile(&self, name: &str, source: &str) -> Result<Tera, TemplateError> {
        let mut tera = self.tera.clone();
        tera.add_raw_template(name, source)
            .map_err(|e| TemplateError::from_tera(&e, source))?;
        Ok(tera)
    }
}

impl TemplateError {
    /// The variable or field path this error says is undefined (`StorageBucket.status` of
    /// "Field `StorageBucket.status` is not defined"), when it is about one: rendering maps an
    /// undefined field of a templateResourceRef's object to *pending* (the object has no such
    /// field yet) instead of a failure.
    pub fn undefined_path(&self) -> Option<&str> {
        let message = self.message.as_str();
        for prefix in ["Field `", "Variable `"] {
            if let Some(path) = backticked_after(message, prefix)
                && message[prefix.len() + path.len()..].starts_with("` is not defined")
            {
                return Some(path);
            }
        }
        if message.contains("undefined")
            && let Some((_, rest)) = message.rsplit_once("(in `")
        {
            return rest.split_once('`').map(|(path, _)| path);
        }
        None
    }

    /// The top-level variable of [`TemplateError::undefined_path`] (`StorageBucket`).
    pub fn undefined_variable(&self) -> Option<&str> {
        let path = self.undefined_path()?;
        let end = path
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(path.len());
        (end > 0).then(|| &path[..end])
    }

    /// Turns a tera error into a line and a short message. Tera reports some errors as a
    /// structured [`ReportError`] and others (unknown filters/functions/templates) only as
    /// pre-formatted text, which is parsed here.
    fn from_tera(error: &Error, source: &str) -> Self {
        match error.kind() {
            ErrorKind::SyntaxError(report) | ErrorKind::RenderingError(report) => {
                Self::from_report(report, source)
            }
            ErrorKind::Msg(text) => Self::from_report_text(text),
            ErrorKind::MissingParent { parent, .. } => Self {
                line: line_mentioning(source, "extends", parent),
                message: format!(
                    "cannot extend `{parent}`: templates cannot extend or include other templates or files"
                ),
            },
            ErrorKind::TemplateNotFound(template) => Self {
                line: line_mentioning(source, "include", template),
                message: format!(
                    "template `{template}` not found: templates cannot include other templates or files"
                ),
            },
            _ => Self {
                line: None,
                message: one_paragraph(&error.to_string()),
            },
        }
    }

    /// Uses the report's span for the line, and names the offending expression when the message
    /// is about an undefined value but does not say which one.
    fn from_report(report: &ReportError, source: &str) -> Self {
        let span = report.span();
        let line = (span.start_line > 0).then_some(span.start_line);
        let mut message = one_paragraph(report.message());
        let snippet = expression_snippet(source, &span.range)
            .filter(|s| !s.is_empty() && s.len() <= 120 && !s.contains('\n'));

        if let Some(field) = backticked_after(&message, "Field `") {
            // tera points at the missing field only (`nope`); name the whole path instead.
            if source.get(span.range.clone()) == Some(field)
                && let Some(path) = dotted_path_ending_at(source, &span.range)
            {
                message =
                    message.replacen(&format!("Field `{field}`"), &format!("Field `{path}`"), 1);
            }
        } else if message.contains("undefined")
            && let Some(snippet) = snippet
            && !message.contains(&format!("`{snippet}`"))
        {
            message = format!("{message} (in `{snippet}`)");
        }
        Self { line, message }
    }

    /// Parses tera's text reports (`error: <msg>\n --> <name>:<line>:<col>\n ...`), joined by
    /// blank lines when there are several; anything else is kept as a plain message.
    fn from_report_text(text: &str) -> Self {
        let mut entries: Vec<(String, Option<usize>)> = Vec::new();
        for raw in text.lines() {
            if let Some(message) = raw.strip_prefix("error: ") {
                entries.push((message.trim().to_string(), None));
            } else if let Some(location) = raw.trim_start().strip_prefix("--> ")
                && let Some(last) = entries.last_mut()
                && last.1.is_none()
            {
                // `<name>:<line>:<col>`; the name may itself contain ':'.
                last.1 = location.rsplit(':').nth(1).and_then(|n| n.parse().ok());
            }
        }
        match entries.as_slice() {
            [] => Self {
                line: None,
                message: one_paragraph(text),
            },
            [(message, line)] => Self {
                line: *line,
                message: message.clone(),
            },
            [(_, first_line), ..] => Self {
                line: *first_line,
                message: entries
                    .iter()
                    .map(|(message, line)| match line {
                        Some(line) => format!("{message} (line {line})"),
                        None => message.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        }
    }
}

/// Collapses a multi-line message into lines without trailing blanks, so it stays short.
fn one_paragraph(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text between `prefix` and the next backtick, e.g. the field name in "Field `x` is ...".
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(inside, _)| inside)
}

/// The source text of the expression a span points at. tera's spans are sometimes short: for an
/// index expression they stop before the closing bracket (`a['b'`), and for a dotted path given
/// to a filter they cover only its first segment (`cluster` of `cluster.spec.x`), so closing
/// brackets and the rest of the dotted path are added back.
fn expression_snippet<'a>(source: &'a str, range: &Range<usize>) -> Option<&'a str> {
    let snippet = source.get(range.clone())?;
    let rest = source.get(range.end..)?;
    let open = snippet.matches(['[', '(']).count();
    let closed = snippet.matches([']', ')']).count();
    let brackets = rest
        .chars()
        .take(open.saturating_sub(closed))
        .take_while(|c| matches!(c, ']' | ')'))
        .count();
    let path = if snippet.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
        rest[brackets..]
            .char_indices()
            .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '?'))
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8())
    } else {
        0
    };
    // `a?.b`: the span covers only `b`, so walk back over the path it belongs to.
    let before = source.get(..range.start)?;
    let start = if before.ends_with(['.', '?']) {
        before
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '?'))
            .last()
            .map_or(range.start, |(i, _)| i)
    } else {
        range.start
    };
    source
        .get(start..range.end + brackets + path)
        .map(|s| s.trim_matches(['.', '?']))
}

/// The `a.b.c` path that ends at `range` in `source` (tera's span covers only `c`), if it has
/// more than one segment.
fn dotted_path_ending_at<'a>(source: &'a str, range: &Range<usize>) -> Option<&'a str> {
    let before = source.get(..range.start)?;
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '?'))
        .last()
        .map_or(range.start, |(i, _)| i);
    let path = source.get(start..range.end)?.trim_start_matches(['.', '?']);
    (path.contains('.') && !path.starts_with(|c: char| c.is_ascii_digit())).then_some(path)
}

/// The 1-based line of the first `{% <tag> ... %}` that mentions `what`, for errors tera reports
/// without a position.
fn line_mentioning(source: &str, tag: &str, what: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| l.contains(tag) && l.contains(what))
        .map(|i| i + 1)
}

/// Whether `value` is, or contains, tera's "undefined" (e.g. `[nope]`), which would otherwise be
/// serialized as null or printed as nothing.
fn contains_undefined(value: &Value) -> bool {
    if value.is_undefined() {
        return true;
    }
    if let Some(map) = value.as_map() {
        return map.values().any(contains_undefined);
    }
    if let Some(items) = value.as_array() {
        return items.iter().any(contains_undefined);
    }
    false
}

/// Rejects undefined input. It is reported as an invalid argument so tera points the error at the
/// filter's input expression, which then names the undefined variable in the message.
fn ensure_defined(value: &Value) -> TeraResult<()> {
    if !contains_undefined(value) {
        return Ok(());
    }
    let actual = if value.is_undefined() {
        "undefined"
    } else {
        "a value containing undefined"
    };
    Err(Error::new(ErrorKind::InvalidArgument {
        expected_type: "a defined value".to_string(),
        actual_type: actual.to_string(),
    }))
}

/// Strict `safe`: tera's built-in prints an undefined value as "". Without autoescaping it is
/// otherwise the identity, kept so templates written for HTML habits still work.
fn strict_safe(value: &Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    ensure_defined(value)?;
    Ok(match value.as_str() {
        Some(s) => Value::safe_string(s),
        None => Value::safe_string(&value.to_string()),
    })
}

/// Strict `str`: tera's built-in turns an undefined value into "".
fn strict_str(value: &Value, _: Kwargs, _: &State) -> TeraResult<String> {
    ensure_defined(value)?;
    Ok(value.to_string())
}

/// Map entries ordered by key, because tera's maps iterate in random order.
fn sorted_entries(map: &Map) -> Vec<(&Key<'static>, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `keys`, ordered so that rendered output is reproducible.
fn sorted_keys(map: &Map, _: Kwargs, _: &State) -> Vec<Value> {
    sorted_entries(map)
        .into_iter()
        .map(|(k, _)| Value::from(k.clone()))
        .collect()
}

/// `values`, ordered by key so that rendered output is reproducible.
fn sorted_values(map: &Map, _: Kwargs, _: &State) -> Vec<Value> {
    sorted_entries(map)
        .into_iter()
        .map(|(_, v)| v.clone())
        .collect()
}

/// `pairs` (`[key, value]` lists), ordered by key so that rendered output is reproducible.
fn sorted_pairs(map: &Map, _: Kwargs, _: &State) -> Vec<Value> {
    sorted_entries(map)
        .into_iter()
        .map(|(k, v)| Value::from(vec![Value::from(k.clone()), v.clone()]))
        .collect()
}

/// Serializes a tera value with map keys sorted, so `to_yaml`/`to_json` output is stable.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_undefined() {
            return Err(S::Error::custom("cannot serialize an undefined value"));
        }
        if let Some(map) = self.0.as_map() {
            let entries = sorted_entries(map);
            let mut out = serializer.serialize_map(Some(entries.len()))?;
            for (k, v) in entries {
                out.serialize_entry(k, &Sorted(v))?;
            }
            return out.end();
        }
        if let Some(items) = self.0.as_array() {
            let mut out = serializer.serialize_seq(Some(items.len()))?;
            for item in items {
                out.serialize_element(&Sorted(item))?;
            }
            return out.end();
        }
        self.0.serialize(serializer)
    }
}

/// `to_yaml`: the value as YAML (keys sorted), without a leading `---` or the final newline, so
/// it can be placed inline (`key: {{ v | to_yaml }}`) or as a block with `indent`.
fn to_yaml(value: &Value, _: Kwargs, _: &State) -> TeraResult<String> {
    ensure_defined(value)?;
    let yaml = serde_saphyr::to_string(&Sorted(value))
        .map_err(|e| Error::message(format!("to_yaml: {e}")))?;
    let yaml = yaml
        .strip_prefix("---\n")
        .or_else(|| yaml.strip_prefix("--- "))
        .unwrap_or(&yaml);
    Ok(yaml.strip_suffix('\n').unwrap_or(yaml).to_string())
}

/// `to_json`: compact JSON (keys sorted); `pretty=true` for indented output.
fn to_json(value: &Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    ensure_defined(value)?;
    let pretty = kwargs.get::<bool>("pretty")?.unwrap_or(false);
    let json = if pretty {
        serde_json::to_string_pretty(&Sorted(value))
    } else {
        serde_json::to_string(&Sorted(value))
    };
    json.map_err(|e| Error::message(format!("to_json: {e}")))
}

/// `b64encode`: standard base64 (with padding) of a string's UTF-8 bytes, e.g. for Secret data.
fn b64encode(value: &str, _: Kwargs, _: &State) -> String {
    BASE64.encode(value)
}

/// `b64decode`: decodes standard base64 into a string; invalid base64 or a non-UTF-8 result is an
/// error rather than garbage in the manifest.
fn b64decode(value: &str, _: Kwargs, _: &State) -> TeraResult<String> {
    let bytes = BASE64
        .decode(value)
        .map_err(|e| Error::message(format!("b64decode: invalid base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::message("b64decode: the decoded bytes are not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster_context() -> serde_json::Value {
        json!({
            "cluster": {
                "metadata": {"name": "prod-1", "labels": {"env": "prod", "tier": "gold"}},
                "spec": {
                    "clusterNetwork": {"pods": {"cidrBlocks": ["10.0.0.0/16", "10.1.0.0/16"]}},
                },
                "status": {"version": {"gitVersion": "v1.31.2", "major": "1", "minor": "31"}},
            },
            "claim": {"status": {"endpoint": "db.example:5432"}, "empty": null},
        })
    }

    fn render(source: &str) -> Result<String, TemplateError> {
        Sandbox::new().render("test.yaml", source, &cluster_context())
    }

    #[test]
    fn sandbox_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + Default>() {}
        assert_traits::<Sandbox>();
    }

    #[test]
    fn remembered_templates_and_contexts_render_like_fresh_ones() {
        let sandbox = Sandbox::new();
        let source = "name: {{ cluster.metadata.name }}";
        let context = |name: &str| json!({"cluster": {"metadata": {"name": name}}});
        for name in ["a", "b", "a", "b"] {
            let rendered = sandbox.render("t.yaml", source, &context(name));
            assert_eq!(rendered, Ok(format!("name: {name}")));
        }
        // The same source under another name is its own template; errors are remembered as is.
        let bad = "{{ cluster.metadata.name | nope }}";
        let fresh = Sandbox::new().render("u.yaml", bad, &context("a"));
        assert!(fresh.is_err());
        for _ in 0..2 {
            assert_eq!(sandbox.render("u.yaml", bad, &context("a")), fresh);
        }
        // An undefined variable is still an error with a remembered template and context.
        let undefined = sandbox.render("t.yaml", source, &json!({"other": 1}));
        assert_eq!(
            undefined.map_err(|e| e.undefined_variable().map(str::to_string)),
            Err(Some("cluster".to_string()))
        );
        // Templates never see each other, remembered or not.
        let include = sandbox.render("i.yaml", "{% include \"t.yaml\" %}", &context("a"));
        assert!(include.is_err());
        // The memory is bounded: past the limit it starts over.
        for i in 0..MEMO_TEMPLATES + 5 {
            let source = format!("n: {i}");
            assert_eq!(
                sandbox.render("t.yaml", &source, &context("a")),
                Ok(source.clone())
            );
        }
        assert!(sandbox.memo().compiled <= MEMO_TEMPLATES);
    }

    #[test]
    fn remembered_manifests_parse_like_fresh_ones() {
        let sandbox = Sandbox::new();
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        let mut first = sandbox.manifests(text);
        assert_eq!(first, check_manifests(text));
        // The caller's copy is its own: changing it does not change what comes back next.
        if let Ok(objects) = &mut first {
            objects.clear();
        }
        assert_eq!(sandbox.manifests(text), check_manifests(text));
        let bad = "apiVersion: v1\nkind: ConfigMap\n";
        assert!(check_manifests(bad).is_err());
        for _ in 0..2 {
            assert_eq!(sandbox.manifests(bad), check_manifests(bad));
        }
    }

    #[test]
    fn undefined_variables_and_fields_are_errors_naming_them() {
        let cases = [
            ("{{ nope }}", "nope"),
            ("{{ cluster.spec.nope }}", "cluster.spec.nope"),
            ("{{ cluster.nope.deeper }}", "cluster.nope"),
            (
                "{{ cluster.metadata.labels.region }}",
                "cluster.metadata.labels.region",
            ),
            ("{{ cluster['spec']['nope'] }}", "cluster['spec']['nope']"),
            (
                "{{ cluster.spec.clusterNetwork.pods.cidrBlocks[7] }}",
                "cidrBlocks[7]",
            ),
            ("{{ nope | upper }}", "nope"),
            ("{{ nope | safe }}", "nope"),
            ("{{ cluster.spec.nope | safe }}", "cluster.spec.nope"),
            ("{{ cluster.spec.nope | str }}", "cluster.spec.nope"),
            ("{{ cluster.spec.nope | to_yaml }}", "cluster.spec.nope"),
            ("{{ cluster.spec.nope | to_json }}", "cluster.spec.nope"),
            ("{{ cluster.spec.nope | b64encode }}", "cluster.spec.nope"),
            (
                "{{ cluster.spec.nope | indent(width=2) }}",
                "cluster.spec.nope",
            ),
            ("{{ [nope] | to_json }}", "[nope]"),
            (
                "{% for x in cluster.spec.nope %}{{ x }}{% endfor %}",
                "cluster.spec.nope",
            ),
            ("{% if nope.x %}yes{% endif %}", "nope"),
        ];
        for (source, name) in cases {
            let err = render(source).expect_err(source);
            assert!(
                err.message.contains(name),
                "{source}: message {:?} should name {name}",
                err.message
            );
            assert_eq!(err.line, Some(1), "{source}: {err:?}");
            assert!(!err.message.contains('\u{1b}'), "{source}: ANSI in {err:?}");
        }
    }

    #[test]
    fn undefined_paths_and_variables_are_named() {
        let context = json!({
            "cluster": {"metadata": {"name": "c1"}},
            "Bucket": {"metadata": {"name": "b"}, "status": {}},
        });
        let cases: [(&str, Option<&str>, Option<&str>); 11] = [
            (
                "{{ Bucket.status.url }}",
                Some("Bucket.status.url"),
                Some("Bucket"),
            ),
            ("{{ Bucket.spec.url }}", Some("Bucket.spec"), Some("Bucket")),
            (
                "{{ Bucket.spec.url | upper }}",
                Some("Bucket.spec"),
                Some("Bucket"),
            ),
            (
                "{{ Bucket.spec.url | to_yaml }}",
                Some("Bucket.spec"),
                Some("Bucket"),
            ),
            (
                "{% for u in Bucket.spec.urls %}{{ u }}{% endfor %}",
                Some("Bucket.spec"),
                Some("Bucket"),
            ),
            (
                "{{ Bucket['spec']['url'] }}",
                Some("Bucket['spec']"),
                Some("Bucket"),
            ),
            ("{{ Other.status }}", Some("Other"), Some("Other")),
            ("{{ cluster.spec }}", Some("cluster.spec"), Some("cluster")),
            ("{{ [nope] | to_json }}", Some("[nope]"), None),
            ("{{ Bucket.metadata.name | nothere }}", None, None),
            ("{{ 1 / 0 }}", None, None),
        ];
        for (source, path, variable) in cases {
            let err = Sandbox::new()
                .render("t.yaml", source, &context)
                .expect_err(source);
            assert_eq!(err.undefined_path(), path, "{source}: {err:?}");
            assert_eq!(err.undefined_variable(), variable, "{source}: {err:?}");
        }
    }

    #[test]
    fn optional_values_can_still_be_handled() {
        let cases = [
            ("{{ cluster.spec.nope | default(value='d') }}", "d"),
            ("{{ nope | default(value='d') }}", "d"),
            (
                "{{ cluster.metadata.labels.region | default(value='eu') }}",
                "eu",
            ),
            (
                "{% if cluster.spec.nope is defined %}y{% else %}n{% endif %}",
                "n",
            ),
            (
                "{% if cluster.spec is defined %}y{% else %}n{% endif %}",
                "y",
            ),
            ("{% if nope is undefined %}y{% else %}n{% endif %}", "y"),
            ("{{ claim.empty | default(value='x') }}", ""),
            ("{{ claim.status.endpoint }}", "db.example:5432"),
        ];
        for (source, expected) in cases {
            assert_eq!(render(source).as_deref(), Ok(expected), "{source}");
        }
    }

    #[test]
    fn templates_cannot_read_the_environment() {
        let name = format!("FLOTILLA_SANDBOX_TEST_{}", std::process::id());
        let secret = format!("sandbox-secret-{}", std::process::id());
        // SAFETY: the variable name is unique to this test and process; nothing else reads or
        // writes it, and the std environment lock guards std's own accessors.
        unsafe { std::env::set_var(&name, &secret) };

        // Functions that read the environment, time, randomness or files do not exist: the
        // template is rejected when parsed.
        let rejected_at_parse = [
            format!("{{{{ get_env(name='{name}') }}}}"),
            format!("{{{{ get_env(name='{name}', default='x') }}}}"),
            "{{ now() }}".to_string(),
            "{{ now(timestamp=true) }}".to_string(),
            "{{ get_random(start=0, end=10) }}".to_string(),
            "{{ read_file(path='/proc/self/environ') }}".to_string(),
            "{{ load_data(path='/proc/self/environ') }}".to_string(),
            "{% include '/proc/self/environ' %}".to_string(),
            "{% extends '/proc/self/environ' %}".to_string(),
            "{% import '/proc/self/environ' as env %}".to_string(),
        ];
        // The environment is not a variable either.
        let rejected_at_render = [
            format!("{{{{ env.{name} }}}}"),
            format!("{{{{ {name} }}}}"),
            format!("{{{{ __tera_context.{name} }}}}"),
        ];
        // These render, but must not contain the value.
        let rendered = [
            format!("{{{{ {name} | default(value='x') }}}}"),
            "{{ __tera_context }}".to_string(),
            "{{ __tera_context | to_json }}".to_string(),
        ];
        let sandbox = Sandbox::new();
        let ctx = cluster_context();
        for source in &rejected_at_parse {
            let err = sandbox.check("env.yaml", source).expect_err(source);
            assert!(!err.message.contains(&secret), "{source}: {err:?}");
            let err = sandbox.render("env.yaml", source, &ctx).expect_err(source);
            assert!(!err.message.contains(&secret), "{source}: {err:?}");
        }
        for source in &rejected_at_render {
            let err = sandbox.render("env.yaml", source, &ctx).expect_err(source);
            assert!(!err.message.contains(&secret), "{source}: {err:?}");
        }
        for source in &rendered {
            let output = sandbox.render("env.yaml", source, &ctx).expect(source);
            assert!(!output.contains(&secret), "{source} leaked: {output}");
        }
        // SAFETY: as above.
        unsafe { std::env::remove_var(&name) };
    }

    #[test]
    fn include_and_extends_cannot_read_files() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let sources = [
            format!("{{% include '{manifest}' %}}"),
            "{% include 'Cargo.toml' %}".to_string(),
            "{% include './Cargo.toml' %}".to_string(),
            format!("{{% extends '{manifest}' %}}"),
            "{% extends 'Cargo.toml' %}".to_string(),
            "a: 1\nb: 2\n{% include 'src/lib.rs' %}".to_string(),
        ];
        let sandbox = Sandbox::new();
        for source in &sources {
            let err = sandbox.check("t.yaml", source).expect_err(source);
            assert!(err.line.is_some(), "{source}: {err:?}");
            let err = sandbox
                .render("t.yaml", source, &cluster_context())
                .expect_err(source);
            assert!(!err.message.contains("[package]"), "{source}: {err:?}");
        }
        let err = sandbox
            .check("t.yaml", "a: 1\nb: 2\n{% include 'src/lib.rs' %}")
            .expect_err("include");
        assert_eq!(err.line, Some(3), "{err:?}");
        let err = sandbox
            .check("t.yaml", "# header\n{% extends 'Cargo.toml' %}")
            .expect_err("extends");
        assert_eq!(err.line, Some(2), "{err:?}");
    }

    #[test]
    fn templates_do_not_outlive_their_render() {
        let sandbox = Sandbox::new();
        let ctx = cluster_context();
        assert_eq!(sandbox.render("first", "one", &ctx).as_deref(), Ok("one"));
        assert!(sandbox.check("second", "two").is_ok());
        for name in ["first", "second"] {
            let source = format!("{{% include '{name}' %}}");
            assert!(sandbox.render("third", &source, &ctx).is_err(), "{name}");
            let source = format!("{{% extends '{name}' %}}");
            assert!(sandbox.render("third", &source, &ctx).is_err(), "{name}");
        }
        // A template may include itself only in a cycle, which tera rejects.
        assert!(sandbox.check("me", "{% include 'me' %}").is_err());
    }

    #[test]
    fn no_autoescaping_whatever_the_name() {
        let ctx = json!({"s": "<a href=\"x\">&'</a>"});
        let sandbox = Sandbox::new();
        for name in ["t.html", "t.htm", "t.xml", "t.yaml", "t"] {
            assert_eq!(
                sandbox.render(name, "{{ s }}", &ctx).as_deref(),
                Ok("<a href=\"x\">&'</a>"),
                "{name}"
            );
        }
    }

    #[test]
    fn filters() {
        let ctx = json!({
            "map": {"b": 1, "a": "x", "c": true},
            "list": ["one", 2, {"k": "v"}],
            "nested": {"z": {"y": [1, {"x": null}]}, "a": [], "num": "42", "s": "multi\nline"},
            "scalar": "plain",
            "ml": "a\nb\n\nc",
        });
        let cases: &[(&str, &str)] = &[
            ("{{ map | to_yaml }}", "a: x\nb: 1\nc: true"),
            ("{{ list | to_yaml }}", "- one\n- 2\n- k: v"),
            (
                "{{ nested | to_yaml }}",
                // `y` is quoted: it is a boolean in YAML 1.1.
                "a: []\nnum: \"42\"\ns: |-\n  multi\n  line\nz:\n  \"y\":\n  - 1\n  - x: null",
            ),
            ("{{ scalar | to_yaml }}", "plain"),
            ("{{ 5 | to_yaml }}", "5"),
            (
                "spec:\n  {{ map | to_yaml | indent(width=2) }}",
                "spec:\n  a: x\n  b: 1\n  c: true",
            ),
            ("{{ map | to_json }}", r#"{"a":"x","b":1,"c":true}"#),
            ("{{ list | to_json }}", r#"["one",2,{"k":"v"}]"#),
            ("{{ scalar | to_json }}", r#""plain""#),
            (
                "{{ map | to_json(pretty=true) }}",
                "{\n  \"a\": \"x\",\n  \"b\": 1,\n  \"c\": true\n}",
            ),
            ("{{ scalar | b64encode }}", "cGxhaW4="),
            ("{{ 'cGxhaW4=' | b64decode }}", "plain"),
            ("{{ ml | b64encode | b64decode }}", "a\nb\n\nc"),
            ("{{ '' | b64encode }}", ""),
            ("{{ ml | indent(width=2) }}", "a\n  b\n\n  c"),
            ("{{ ml | indent(width=2, first=true) }}", "  a\n  b\n\n  c"),
            ("{{ ml | indent(width=2, blank=true) }}", "a\n  b\n  \n  c"),
            ("{{ ml | indent }}", "a\n    b\n\n    c"),
            ("{{ map | keys | join(sep=',') }}", "a,b,c"),
            ("{{ map | values | join(sep=',') }}", "x,1,true"),
            (
                "{% for p in map | pairs %}{{ p[0] }}={{ p[1] }};{% endfor %}",
                "a=x;b=1;c=true;",
            ),
            ("{{ scalar | safe }}", "plain"),
            ("{{ 3 | str }}", "3"),
        ];
        let sandbox = Sandbox::new();
        for (source, expected) in cases {
            assert_eq!(
                sandbox.render("f.yaml", source, &ctx).as_deref(),
                Ok(*expected),
                "{source}"
            );
        }
    }

    #[test]
    fn filter_errors() {
        let cases = [
            ("{{ 'not base64!' | b64decode }}", "invalid base64"),
            ("{{ '/w==' | b64decode }}", "UTF-8"),
            ("{{ 5 | b64encode }}", "got `i64`"),
        ];
        let sandbox = Sandbox::new();
        for (source, needle) in cases {
            let err = sandbox
                .render("f.yaml", source, &json!({}))
                .expect_err(source);
            assert!(err.message.contains(needle), "{source}: {err:?}");
            assert_eq!(err.line, Some(1), "{source}: {err:?}");
        }
    }

    #[test]
    fn loops_over_context_lists() {
        let source = "cidrs:\n{% for cidr in cluster.spec.clusterNetwork.pods.cidrBlocks %}- cidr: {{ cidr }}\n{% endfor %}";
        assert_eq!(
            render(source).as_deref(),
            Ok("cidrs:\n- cidr: 10.0.0.0/16\n- cidr: 10.1.0.0/16\n")
        );
    }

    #[test]
    fn errors_carry_the_line_within_the_template() {
        let cases = [
            // Syntax errors (lexer/parser).
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ cluster.metadata.name | }}\n",
                3,
            ),
            ("a: 1\nb: 2\n{% if %}yes{% endif %}\n", 3),
            ("a: 1\nb: 2\nc: {{ }}\n", 3),
            // Unknown filter/function (validated when the template is added).
            ("a: 1\nb: 2\nc: {{ cluster | nofilter }}\n", 3),
            ("a: 1\nb: 2\nc: {{ get_env(name='HOME') }}\n", 3),
            // Rendering errors.
            ("a: 1\nb: 2\nc: {{ cluster.metadata.nope }}\n", 3),
            ("a: 1\nb: 2\n\n\nc: {{ nope }}\n", 5),
        ];
        let sandbox = Sandbox::new();
        for (source, line) in cases {
            let err = sandbox
                .render("t.yaml", source, &cluster_context())
                .expect_err(source);
            assert_eq!(err.line, Some(line), "{source}: {err:?}");
            assert!(!err.message.contains("-->"), "{source}: {err:?}");
            assert!(!err.message.contains('\u{1b}'), "{source}: {err:?}");
        }
        // `check` reports parse-time errors the same way.
        let err = sandbox
            .check(
                "t.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ cluster.metadata.name | }}\n",
            )
            .expect_err("syntax error");
        assert_eq!(err.line, Some(3), "{err:?}");
        // Several unknown names are all listed; the line is the first one's.
        let err = sandbox
            .check("t.yaml", "a\n{{ x | nofilter }}\n{{ y | otherfilter }}")
            .expect_err("unknown filters");
        assert_eq!(err.line, Some(2), "{err:?}");
        assert!(err.message.contains("nofilter"), "{err:?}");
        assert!(
            err.message.contains("otherfilter (line 3)")
                || err.message.contains("otherfilter` (line 3)"),
            "{err:?}"
        );
    }

    #[test]
    fn check_accepts_valid_templates_without_context() {
        let sandbox = Sandbox::new();
        assert_eq!(
            sandbox.check(
                "t.yaml",
                "name: {{ cluster.metadata.name | default(value='x') }}"
            ),
            Ok(())
        );
        assert_eq!(
            sandbox.check("t.yaml", "{{ undefined_is_fine_at_check }}"),
            Ok(())
        );
    }

    #[test]
    fn context_must_be_an_object() {
        let err = Sandbox::new()
            .render("t.yaml", "x", &json!(["not", "an", "object"]))
            .expect_err("array context");
        assert_eq!(err.line, None);
        assert!(err.message.contains("object"), "{err:?}");
    }
}
