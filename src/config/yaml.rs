//! Splitting files into YAML documents and deserializing each with lines relative to the file.

use serde::de::DeserializeOwned;
use serde_saphyr::Location;

use super::Diagnostic;

/// One document of a multi-document file, with where it starts.
#[derive(Debug, Clone, Copy)]
pub struct RawDocument<'a> {
    /// The document's text, including its `---` line if any.
    pub text: &'a str,
    /// Lines of the file before this document (add to a document line to get a file line).
    pub offset: usize,
}

impl RawDocument<'_> {
    /// The file line of a location reported inside this document.
    pub fn line(&self, location: &Location) -> usize {
        self.offset + usize::try_from(location.line()).unwrap_or(1).max(1)
    }

    /// The file line of the document's first non-blank, non-comment line.
    pub fn first_line(&self) -> usize {
        let skipped = self
            .text
            .lines()
            .take_while(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#') || t == "---"
            })
            .count();
        self.offset + skipped + 1
    }
}

/// Splits a file at its document markers. A `---` at the start of a line always starts a new
/// document in YAML (it cannot occur inside a scalar at column 0), so a line-based split is
/// exact, and each document is then parsed on its own: one broken document does not hide the
/// errors of the others.
pub fn split_documents(text: &str) -> Vec<RawDocument<'_>> {
    let mut documents = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 0;
    let mut byte = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && index > 0 {
            documents.push(RawDocument {
                text: &text[start_byte..byte],
                offset: start_line,
            });
            start_byte = byte;
            start_line = index;
        }
        byte += line.len();
    }
    documents.push(RawDocument {
        text: &text[start_byte..],
        offset: start_line,
    });
    documents
}

/// Deserializes one document into `T`, turning serde-saphyr's error into a diagnostic at the
/// file line it points to.
pub fn parse<T: DeserializeOwned>(file: &str, doc: &RawDocument) -> Result<T, Diagnostic> {
    serde_saphyr::from_str::<T>(doc.text).map_err(|err| to_diagnostic(file, doc, &err))
}

fn to_diagnostic(file: &str, doc: &RawDocument, err: &serde_saphyr::Error) -> Diagnostic {
    let location = err.location();
    let line = location
        .as_ref()
        .map(|l| doc.line(l))
        .unwrap_or_else(|| doc.first_line());
    let mut message = err.without_snippet().to_string();
    if let Some(l) = location {
        let suffix = format!(" at line {}, column {}", l.line(), l.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    if !message.contains('`')
        && let Some(key) = location.as_ref().and_then(|l| key_before(doc.text, l))
    {
        message = format!("{key}: {message}");
    }
    Diagnostic::new(file, line, message)
}

/// The mapping key written before a location on its line (`tier` in `  tier: high`), so that
/// messages like "invalid u32" say which field they are about.
fn key_before(text: &str, location: &Location) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(location.line()).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(location.column()).ok()?.saturating_sub(1);
    let prefix: String = line.chars().take(column).collect();
    let before_colon = prefix.trim_end().strip_suffix(':')?;
    let key: String = before_colon
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!key.is_empty()).then_some(key)
}

/// Parses text that must be YAML (any number of documents of any shape), reporting the first
/// syntax error with its line inside `text`.
pub fn check_yaml(text: &str) -> Result<(), (usize, String)> {
    for doc in split_documents(text) {
        if let Err(err) = serde_saphyr::from_str::<serde_json::Value>(doc.text) {
            let d = to_diagnostic("", &doc, &err);
            return Err((d.line, d.message));
        }
    }
    Ok(())
}

/// Parses Helm values: one YAML document that is a mapping (or empty), with the line of the
/// first error inside `text`.
pub fn check_values(text: &str) -> Result<serde_json::Value, (usize, String)> {
    let doc = RawDocument { text, offset: 0 };
    match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Null) => Ok(serde_json::Value::Object(Default::default())),
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err((doc.first_line(), "values must be a mapping".to_string())),
        Err(err) => {
            let d = to_diagnostic("", &doc, &err);
            Err((d.line, d.message))
        }
    }
}

/// A manifest must be a Kubernetes object: a mapping with apiVersion, kind and metadata.name.
pub fn check_object(object: &serde_json::Value) -> Result<(), String> {
    let serde_json::Value::Object(map) = object else {
        return Err("is not a mapping (a Kubernetes object)".into());
    };
    for field in ["apiVersion", "kind"] {
        if map
            .get(field)
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("has no {field}"));
        }
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(serde_json::Value::as_str);
    if name.is_none_or(str::is_empty) {
        return Err("has no metadata.name".into());
    }
    Ok(())
}

/// Parses text that must be YAML manifests (one or more documents), reporting the first error
/// with its line inside `text`. Used for sources and repo files that are not templates.
pub fn check_manifests(text: &str) -> Result<Vec<serde_json::Value>, (usize, String)> {
    let mut values = Vec::new();
    for doc in split_documents(text) {
        // The plainest documents (most rendered manifests) skip the full parser; anything else,
        // errors included, is serde-saphyr's.
        let parsed = match super::yaml_fast::parse(doc.text) {
            Some(value) => Ok(value),
            None => serde_saphyr::from_str::<serde_json::Value>(doc.text),
        };
        match parsed {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => {
                if let Err(problem) = check_object(&value) {
                    return Err((
                        doc.first_line(),
                        format!("document {}: {problem}", values.len() + 1),
                    ));
                }
                values.push(value)
            }
            Err(err) => {
                let d = to_diagnostic("", &doc, &err);
                return Err((d.line, d.message));
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_markers_and_keeps_line_offsets() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: |\n  ---not a marker\n---\n";
        let docs = split_documents(text);
        let offsets: Vec<usize> = docs.iter().map(|d| d.offset).collect();
        assert_eq!(offsets, vec![0, 1, 3, 6]);
        assert_eq!(docs[0].text, "a: 1\n");
        assert!(docs[2].text.contains("---not a marker"));
    }

    #[test]
    fn marker_must_be_followed_by_space_or_end() {
        let docs = split_documents("a: 1\n----\n---x\n");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn parse_errors_carry_the_file_line() {
        let text = "a: 1\n---\nb: [1,\n";
        let docs = split_documents(text);
        let err = parse::<serde_json::Value>("f.yaml", &docs[1]).expect_err("unterminated flow");
        assert_eq!(err.file, "f.yaml");
        assert!(err.line >= 3, "{err}");
        assert!(!err.message.contains("at line"), "{err}");
    }
}
