//! Kubernetes label selectors, in both of the forms a `ClusterProfile` may use for its
//! `clusterSelector`: the string form of `k8s.io/apimachinery/pkg/labels.Parse`
//! (`"env=prod,tier in (a,b)"`) and the object form of `metav1.LabelSelector`
//! (`{matchLabels, matchExpressions}`).
//!
//! The module is pure: it takes strings and label maps and returns values. The parser is a
//! faithful port of the Go parser (same tokens, same lookahead, same quirks), and validation
//! follows `IsQualifiedName` / `IsValidLabelValue`, so a selector accepted by `kubectl` is
//! accepted here and vice versa. Decisions where we had to pick a behaviour:
//!
//! * `a in ()` is accepted and means `a in ("")`, as in Kubernetes; likewise a list may hold empty
//!   values through commas: `(a,)`, `(,a)`, `(,)` and `(a,,b)` all add `""`. Kubernetes' quirk
//!   that `(a,,)` is a syntax error while `(a,b,)` is not is reproduced too.
//! * `a=` / `a!=` compare against the empty value, as in Kubernetes.
//! * `>` and `<` (integer comparisons, string form only) are supported as in Kubernetes; the
//!   object form accepts only `In`, `NotIn`, `Exists` and `DoesNotExist` (case-sensitive).
//! * `==` is parsed as [`Operator::Equals`] and displayed as `=`.
//! * Whitespace is exactly Kubernetes' set: space, tab, CR and LF. Any other character that is
//!   not an operator symbol becomes part of a key or value and then fails validation.
//! * Deviation: Go's lexer treats a NUL byte as the end of the input and silently ignores the
//!   rest; here NUL is an ordinary character, so such input fails validation instead.
//! * Requirements are kept sorted (by key, then operator, then values), values are sorted and
//!   de-duplicated, and duplicate requirements are dropped. None of this changes what matches;
//!   it makes `Display` canonical and `==` compare meaning rather than spelling.
//! * Positions in syntax errors are 0-based character (not byte) offsets into the string.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Maximum length of a label value and of the name part of a label key.
pub const LABEL_NAME_MAX_LEN: usize = 63;
/// Maximum length of the DNS-subdomain prefix of a label key.
pub const LABEL_PREFIX_MAX_LEN: usize = 253;

/// A parsed, validated label selector: the conjunction of its requirements.
///
/// It exists so that both selector forms compile into one value that can be matched against a
/// cluster's effective labels, compared and printed canonically. The empty selector matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One condition of a selector on a single label key.
///
/// It exists so that callers (plans, reports) can inspect what a selector asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// The label key the condition is about.
    pub key: String,
    /// How the label's value is compared with `values`.
    pub operator: Operator,
    /// The operand values: one for `=`/`!=`/`>`/`<`, at least one for `in`/`notin`, none for
    /// `Exists`/`DoesNotExist`. Sorted and de-duplicated in a validated selector.
    pub values: Vec<String>,
}

/// The comparison a requirement makes, with Kubernetes' `selection.Operator` semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` / `key==value` / `matchLabels`: the key is present with that value.
    Equals,
    /// `key!=value`: the key is absent or has another value.
    NotEquals,
    /// `key in (a,b)` / `In`: the key is present with one of the values.
    In,
    /// `key notin (a,b)` / `NotIn`: the key is absent or has none of the values.
    NotIn,
    /// `key` / `Exists`: the key is present, whatever its value.
    Exists,
    /// `!key` / `DoesNotExist`: the key is absent.
    DoesNotExist,
    /// `key>n` (string form only): the key is present and its value is an integer above `n`.
    GreaterThan,
    /// `key<n` (string form only): the key is present and its value is an integer below `n`.
    LessThan,
}

/// The object form of a selector as it appears in YAML (`metav1.LabelSelector`).
///
/// It exists so that configuration documents can be deserialized strictly (unknown fields are
/// errors) before [`Selector::from_object`] validates the contents.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorObject {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, AND-ed with `match_labels`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<ExpressionObject>,
}

/// One entry of `matchExpressions` (`metav1.LabelSelectorRequirement`), as written.
///
/// The operator is kept as a string so that an unknown operator is reported by name, with its
/// position, by [`Selector::from_object`] rather than as an opaque deserialization error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionObject {
    /// The label key.
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist` (case-sensitive).
    pub operator: String,
    /// Non-empty for `In`/`NotIn`, empty or absent for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A selector as written in a `ClusterProfile`'s `clusterSelector`: either form.
///
/// It exists so that configuration keeps what the user wrote (for round-tripping and messages)
/// and compiles it into a [`Selector`] separately.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectorSpec {
    /// The string form, e.g. `"env=prod,tier in (a,b)"`.
    Text(String),
    /// The object form, `{matchLabels, matchExpressions}`.
    Object(SelectorObject),
}

/// Where in a selector an error was found, so that messages can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// No location: a key or value validated on its own.
    Unspecified,
    /// A 0-based character offset into the string form.
    Position(usize),
    /// A field path in the object form, e.g. `matchExpressions[1].values[0]`.
    Field(String),
}

/// Everything that can be wrong with a selector, a label key or a label value.
///
/// One error type for the module; every message names the offending key, value or token and
/// where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label key fails Kubernetes' `IsQualifiedName`.
    #[error("invalid label key {key:?}{}: {reason}", suffix(.at))]
    InvalidKey {
        /// The key as written.
        key: String,
        /// Why it is invalid (Kubernetes' wording, `; `-separated).
        reason: String,
        /// Where it was found.
        at: Location,
    },
    /// A label value fails Kubernetes' `IsValidLabelValue`.
    #[error("invalid label value {value:?}{}{}: {reason}", for_key(.key), suffix(.at))]
    InvalidValue {
        /// The value as written.
        value: String,
        /// The key it belongs to, when known.
        key: Option<String>,
        /// Why it is invalid.
        reason: String,
        /// Where it was found.
        at: Location,
    },
    /// The string form does not follow the grammar.
    #[error(
        "invalid label selector syntax at position {position}: found {}, expected {expected}",
        describe_found(.found)
    )]
    Syntax {
        /// 0-based character offset of the offending token.
        position: usize,
        /// The offending token; empty for the end of the string.
        found: String,
        /// What the parser expected there.
        expected: &'static str,
    },
    /// An object-form expression names an operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "unknown label selector operator {operator:?} for key {key:?}{} (expected In, NotIn, Exists or DoesNotExist)",
        suffix(.at)
    )]
    UnknownOperator {
        /// The expression's key.
        key: String,
        /// The operator as written.
        operator: String,
        /// Where it was found.
        at: Location,
    },
    /// An operator got the wrong number of values (e.g. `In` with none, `Exists` with some).
    #[error(
        "label selector operator {operator} for key {key:?}{} {expected} (got {found:?})",
        suffix(.at)
    )]
    ValueCount {
        /// The requirement's key.
        key: String,
        /// The operator as written.
        operator: String,
        /// What the operator requires, e.g. "needs at least one value".
        expected: &'static str,
        /// The values that were given.
        found: Vec<String>,
        /// Where it was found.
        at: Location,
    },
    /// `>` or `<` with a value that is not a 64-bit integer.
    #[error(
        "label selector operator {operator} for key {key:?}{} needs an integer, found {value:?}",
        suffix(.at)
    )]
    NotAnInteger {
        /// The requirement's key.
        key: String,
        /// The operator as written.
        operator: String,
        /// The offending value.
        value: String,
        /// Where it was found.
        at: Location,
    },
}

fn suffix(at: &Location) -> String {
    match at {
        Location::Unspecified => String::new(),
        Location::Position(p) => format!(" at position {p}"),
        Location::Field(path) => format!(" in {path}"),
    }
}

fn for_key(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" for key {k:?}"),
        None => String::new(),
    }
}

fn describe_found(found: &str) -> String {
    if found.is_empty() {
        "end of string".to_owned()
    } else {
        format!("{found:?}")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Unspecified => Ok(()),
            Location::Position(p) => write!(f, "position {p}"),
            Location::Field(path) => f.write_str(path),
        }
    }
}

impl Operator {
    /// Kubernetes' `selection.Operator` spelling, used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation (k8s.io/apimachinery/pkg/util/validation)

const NAME_REASON: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')";
const VALUE_REASON: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character \
     (e.g. 'MyValue', 'my_value' or '12345')";
const PREFIX_REASON: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
     character (e.g. 'example.com')";
const SLASHES_REASON: &str = "a qualified name must consist of alphanumeric characters, '-', \
     '_' or '.', and must start and end with an alphanumeric character, with an optional DNS \
     subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])`, anchored.
fn is_qualified_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    match (s.chars().next(), s.chars().next_back()) {
        (Some(first), Some(last)) => {
            alnum(first)
                && alnum(last)
                && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, anchored.
fn is_dns1123_label(s: &str) -> bool {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (s.chars().next(), s.chars().next_back()) {
        (Some(first), Some(last)) => {
            lower_alnum(first) && lower_alnum(last) && s.chars().all(|c| lower_alnum(c) || c == '-')
        }
        _ => false,
    }
}

/// Kubernetes' `IsQualifiedName`; returns the reasons joined as Kubernetes joins them.
fn key_problems(key: &str) -> Option<String> {
    let mut errs: Vec<String> = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > LABEL_PREFIX_MAX_LEN {
                    errs.push(format!(
                        "prefix part must be no more than {LABEL_PREFIX_MAX_LEN} characters"
                    ));
                }
                if !prefix.split('.').all(is_dns1123_label) {
                    errs.push(format!("prefix part {PREFIX_REASON}"));
                }
            }
            *name
        }
        _ => return Some(SLASHES_REASON.to_owned()),
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > LABEL_NAME_MAX_LEN {
            errs.push(format!(
                "name part must be no more than {LABEL_NAME_MAX_LEN} characters"
            ));
        }
        if !is_qualified_name_part(name) {
            errs.push(format!("name part {NAME_REASON}"));
        }
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// Kubernetes' `IsValidLabelValue`.
fn value_problems(value: &str) -> Option<String> {
    let mut errs: Vec<String> = Vec::new();
    if value.len() > LABEL_NAME_MAX_LEN {
        errs.push(format!(
            "must be no more than {LABEL_NAME_MAX_LEN} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(VALUE_REASON.to_owned());
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

fn check_key(key: &str, at: &Location) -> Result<(), SelectorError> {
    match key_problems(key) {
        None => Ok(()),
        Some(reason) => Err(SelectorError::InvalidKey {
            key: key.to_owned(),
            reason,
            at: at.clone(),
        }),
    }
}

/// Checks a label key the way Kubernetes does (`IsQualifiedName`): an optional DNS-1123
/// subdomain prefix of at most 253 characters and a `/`, then a name of 1 to 63 characters,
/// alphanumeric at both ends, `[-_.A-Za-z0-9]` inside.
///
/// Public because Cluster labels and classifier labels must obey the same rules as selectors.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    check_key(key, &Location::Unspecified)
}

/// Checks a label value the way Kubernetes does (`IsValidLabelValue`): empty, or at most 63
/// characters, alphanumeric at both ends, `[-_.A-Za-z0-9]` inside.
///
/// Public because Cluster labels and classifier labels must obey the same rules as selectors.
pub fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    match value_problems(value) {
        None => Ok(()),
        Some(reason) => Err(SelectorError::InvalidValue {
            value: value.to_owned(),
            key: None,
            reason,
            at: Location::Unspecified,
        }),
    }
}

/// Kubernetes' `NewRequirement` minus the key check (callers check the key first, at the point
/// Kubernetes does): value count, integer operands for `>`/`<`, then each value.
fn build_requirement(
    key: String,
    operator: Operator,
    operator_name: &str,
    values: Vec<(String, Location)>,
    at: &Location,
) -> Result<Requirement, SelectorError> {
    let count_problem = match operator {
        Operator::In | Operator::NotIn if values.is_empty() => Some("needs at least one value"),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Some("takes no values"),
        Operator::Equals | Operator::NotEquals | Operator::GreaterThan | Operator::LessThan
            if values.len() != 1 =>
        {
            Some("takes exactly one value")
        }
        _ => None,
    };
    if let Some(expected) = count_problem {
        return Err(SelectorError::ValueCount {
            key,
            operator: operator_name.to_owned(),
            expected,
            found: values.into_iter().map(|(v, _)| v).collect(),
            at: at.clone(),
        });
    }
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        for (value, value_at) in &values {
            if value.parse::<i64>().is_err() {
                return Err(SelectorError::NotAnInteger {
                    key,
                    operator: operator_name.to_owned(),
                    value: value.clone(),
                    at: value_at.clone(),
                });
            }
        }
    }
    for (value, value_at) in &values {
        if let Some(reason) = value_problems(value) {
            return Err(SelectorError::InvalidValue {
                value: value.clone(),
                key: Some(key),
                reason,
                at: value_at.clone(),
            });
        }
    }
    let mut values: Vec<String> = values.into_iter().map(|(v, _)| v).collect();
    values.sort();
    values.dedup();
    Ok(Requirement {
        key,
        operator,
        values,
    })
}

// ---------------------------------------------------------------------------------------------
// Requirement and Selector

impl Requirement {
    /// Builds a validated requirement (Kubernetes' `NewRequirement`), for code that constructs
    /// selectors rather than parsing them. Values are sorted and de-duplicated.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let key = key.into();
        check_key(&key, &Location::Unspecified)?;
        let values = values
            .into_iter()
            .map(|v| (v, Location::Unspecified))
            .collect();
        build_requirement(
            key,
            operator,
            operator.as_str(),
            values,
            &Location::Unspecified,
        )
    }

    /// Whether a set of labels satisfies this requirement, with Kubernetes' semantics (notably:
    /// `!=` and `notin` match when the key is missing; `>`/`<` never match a non-integer).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.key);
        let listed = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => actual.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => actual.is_none_or(|v| !listed(v)),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = actual.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// Kubernetes' `Requirement.String()`: `key=v`, `key!=v`, `key in (a,b)`, `key notin (a)`,
/// `key`, `!key`, `key>n`, `key<n`.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let values = self.values.join(",");
        match self.operator {
            Operator::Exists | Operator::DoesNotExist => Ok(()),
            Operator::Equals => write!(f, "={values}"),
            Operator::NotEquals => write!(f, "!={values}"),
            Operator::GreaterThan => write!(f, ">{values}"),
            Operator::LessThan => write!(f, "<{values}"),
            Operator::In => write!(f, " in ({values})"),
            Operator::NotIn => write!(f, " notin ({values})"),
        }
    }
}

impl Selector {
    /// The selector that matches every set of labels (what an empty selector means).
    pub fn everything() -> Selector {
        Selector::default()
    }

    fn normalized(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// Parses the string form with `labels.Parse`' grammar; empty or whitespace-only text is
    /// [`Selector::everything`].
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut parser = Parser::new(lex(text));
        parser.parse_selector().map(Selector::normalized)
    }

    /// Compiles and validates the object form (`LabelSelectorAsSelector`); an empty object is
    /// [`Selector::everything`].
    pub fn from_object(obj: &SelectorObject) -> Result<Selector, SelectorError> {
        let mut requirements =
            Vec::with_capacity(obj.match_labels.len() + obj.match_expressions.len());
        let labels_at = Location::Field("matchLabels".to_owned());
        for (key, value) in &obj.match_labels {
            check_key(key, &labels_at)?;
            requirements.push(build_requirement(
                key.clone(),
                Operator::Equals,
                "matchLabels",
                vec![(value.clone(), labels_at.clone())],
                &labels_at,
            )?);
        }
        for (i, expr) in obj.match_expressions.iter().enumerate() {
            let field = |name: &str| Location::Field(format!("matchExpressions[{i}].{name}"));
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: expr.key.clone(),
                        operator: other.to_owned(),
                        at: field("operator"),
                    });
                }
            };
            check_key(&expr.key, &field("key"))?;
            let values = expr
                .values
                .iter()
                .enumerate()
                .map(|(j, v)| (v.clone(), field(&format!("values[{j}]"))))
                .collect();
            requirements.push(build_requirement(
                expr.key.clone(),
                operator,
                &expr.operator,
                values,
                &field("values"),
            )?);
        }
        Ok(Selector::normalized(requirements))
    }

    /// Builds a selector from requirements constructed in code, validating each one as
    /// [`Requirement::new`] does.
    pub fn from_requirements(
        requirements: impl IntoIterator<Item = Requirement>,
    ) -> Result<Selector, SelectorError> {
        let requirements = requirements
            .into_iter()
            .map(|r| Requirement::new(r.key, r.operator, r.values))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selector::normalized(requirements))
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, sorted by key, for callers that inspect what is asked for.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector has no requirements, i.e. matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The canonical string form (Kubernetes' `Selector.String()`), e.g. `env=prod,tier in (a,b)`;
/// parsing it gives back an equal selector. The empty selector displays as `""`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Same as [`Selector::parse`], so that `"env=prod".parse::<Selector>()` works.
impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

impl SelectorSpec {
    /// Parses and validates whichever form was written.
    pub fn compile(&self) -> Result<Selector, SelectorError> {
        match self {
            SelectorSpec::Text(text) => Selector::parse(text),
            SelectorSpec::Object(obj) => Selector::from_object(obj),
        }
    }
}

/// Writes a string for the string form and a mapping for the object form.
impl Serialize for SelectorSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SelectorSpec::Text(text) => serializer.serialize_str(text),
            SelectorSpec::Object(obj) => obj.serialize(serializer),
        }
    }
}

/// Reads a string as the string form and a mapping as the object form. Written by hand (not
/// `#[serde(untagged)]`) so that an error inside the object form, such as an unknown field,
/// keeps its own message and location.
impl<'de> Deserialize<'de> for SelectorSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SelectorSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a label selector: a string such as \"env=prod,tier in (a,b)\" or a mapping with \
             matchLabels and/or matchExpressions",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SelectorSpec, E> {
        Ok(SelectorSpec::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SelectorSpec, E> {
        Ok(SelectorSpec::Text(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SelectorSpec, A::Error> {
        SelectorObject::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(SelectorSpec::Object)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser: a port of k8s.io/apimachinery/pkg/labels/selector.go

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identifier,
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Bang,
    Comma,
    OpenParen,
    CloseParen,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    position: usize,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn symbol(c: char) -> Option<Kind> {
    Some(match c {
        '=' => Kind::Equals,
        '!' => Kind::Bang,
        '(' => Kind::OpenParen,
        ')' => Kind::CloseParen,
        ',' => Kind::Comma,
        '>' => Kind::GreaterThan,
        '<' => Kind::LessThan,
        _ => return None,
    })
}

/// Splits the text into tokens, always ending with one `End` token.
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while chars.get(i).copied().is_some_and(is_whitespace) {
            i += 1;
        }
        let start = i;
        let Some(&c) = chars.get(i) else {
            tokens.push(Token {
                kind: Kind::End,
                text: String::new(),
                position: start,
            });
            return tokens;
        };
        let kind = if let Some(single) = symbol(c) {
            // The only two-character symbols are "!=" and "=="; Go's greedy scan never
            // produces anything longer.
            let double = match (c, chars.get(i + 1)) {
                ('!', Some('=')) => Some(Kind::NotEquals),
                ('=', Some('=')) => Some(Kind::DoubleEquals),
                _ => None,
            };
            i += if double.is_some() { 2 } else { 1 };
            double.unwrap_or(single)
        } else {
            while chars
                .get(i)
                .is_some_and(|&c| !is_whitespace(c) && symbol(c).is_none())
            {
                i += 1;
            }
            Kind::Identifier
        };
        let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
        let kind = match (kind, text.as_str()) {
            (Kind::Identifier, "in") => Kind::In,
            (Kind::Identifier, "notin") => Kind::NotIn,
            (kind, _) => kind,
        };
        tokens.push(Token {
            kind,
            text,
            position: start,
        });
    }
}

/// In the `Values` context the keywords `in` and `notin` are plain identifiers, so that they
/// can be keys and values (`in in (notin)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end: Token,
}

fn unexpected(token: &Token, expected: &'static str) -> SelectorError {
    SelectorError::Syntax {
        position: token.position,
        found: token.text.clone(),
        expected,
    }
}

impl Parser {
    fn new(tokens: Vec<Token>) -> Parser {
        let end_position = tokens.last().map_or(0, |t| t.position);
        Parser {
            tokens,
            next: 0,
            end: Token {
                kind: Kind::End,
                text: String::new(),
                position: end_position,
            },
        }
    }

    fn peek(&self, context: Context) -> Token {
        let mut token = self.tokens.get(self.next).unwrap_or(&self.end).clone();
        if context == Context::Values && matches!(token.kind, Kind::In | Kind::NotIn) {
            token.kind = Kind::Identifier;
        }
        token
    }

    fn take(&mut self, context: Context) -> Token {
        let token = self.peek(context);
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn parse_selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.peek(Context::Values);
            match token.kind {
                Kind::Identifier | Kind::Bang => {
                    requirements.push(self.parse_requirement()?);
                    let after = self.take(Context::Values);
                    match after.kind {
                        Kind::End => return Ok(requirements),
                        Kind::Comma => {
                            let next = self.peek(Context::Values);
                            if !matches!(next.kind, Kind::Identifier | Kind::Bang) {
                                return Err(unexpected(&next, "a requirement after ','"));
                            }
                        }
                        _ => return Err(unexpected(&after, "',' or end of string")),
                    }
                }
                Kind::End => return Ok(requirements),
                _ => return Err(unexpected(&token, "'!', a label key or end of string")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.take(Context::Values);
        let negated = token.kind == Kind::Bang;
        if negated {
            token = self.take(Context::Values);
        }
        if token.kind != Kind::Identifier {
            return Err(unexpected(&token, "a label key"));
        }
        let at = Location::Position(token.position);
        check_key(&token.text, &at)?;
        let key = token.text;
        // As in Go, `!key` ends the requirement whatever follows; the caller then insists on
        // ',' or the end.
        if negated {
            return build_requirement(key, Operator::DoesNotExist, "!", Vec::new(), &at);
        }
        if matches!(self.peek(Context::Values).kind, Kind::End | Kind::Comma) {
            return build_requirement(key, Operator::Exists, "exists", Vec::new(), &at);
        }
        let op_token = self.take(Context::KeyAndOperator);
        let operator = match op_token.kind {
            Kind::In => Operator::In,
            Kind::NotIn => Operator::NotIn,
            Kind::Equals | Kind::DoubleEquals => Operator::Equals,
            Kind::NotEquals => Operator::NotEquals,
            Kind::GreaterThan => Operator::GreaterThan,
            Kind::LessThan => Operator::LessThan,
            _ => {
                return Err(unexpected(
                    &op_token,
                    "an operator (in, notin, =, ==, !=, >, <)",
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        let values = values
            .into_iter()
            .map(|(v, p)| (v, Location::Position(p)))
            .collect();
        build_requirement(key, operator, &op_token.text, values, &at)
    }

    /// `( values )`; `()` means the single empty value, as in Kubernetes.
    fn parse_values(&mut self) -> Result<Vec<(String, usize)>, SelectorError> {
        let open = self.take(Context::Values);
        if open.kind != Kind::OpenParen {
            return Err(unexpected(&open, "'('"));
        }
        let first = self.peek(Context::Values);
        match first.kind {
            Kind::Identifier | Kind::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.take(Context::Values);
                if close.kind != Kind::CloseParen {
                    return Err(unexpected(&close, "')'"));
                }
                Ok(values)
            }
            Kind::CloseParen => {
                self.take(Context::Values);
                Ok(vec![(String::new(), first.position)])
            }
            _ => Err(unexpected(&first, "a value, ',' or ')'")),
        }
    }

    /// Go's `parseIdentifiersList`, quirks included: empty values come from `(,`, `,)` and
    /// `,,`, but `(a,,)` is an error.
    fn parse_identifiers_list(&mut self) -> Result<Vec<(String, usize)>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let token = self.take(Context::Values);
            match token.kind {
                Kind::Identifier => {
                    values.push((token.text, token.position));
                    let next = self.peek(Context::Values);
                    match next.kind {
                        Kind::Comma => continue,
                        Kind::CloseParen => return Ok(values),
                        _ => return Err(unexpected(&next, "',' or ')'")),
                    }
                }
                Kind::Comma => {
                    if values.is_empty() {
                        values.push((String::new(), token.position));
                    }
                    let next = self.peek(Context::Values);
                    if next.kind == Kind::CloseParen {
                        values.push((String::new(), next.position));
                        return Ok(values);
                    }
                    if next.kind == Kind::Comma {
                        self.take(Context::Values);
                        values.push((String::new(), next.position));
                    }
                }
                _ => return Err(unexpected(&token, "a value or ','")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; absent means the empty value.
    fn parse_exact_value(&mut self) -> Result<(String, usize), SelectorError> {
        let next = self.peek(Context::Values);
        if matches!(next.kind, Kind::End | Kind::Comma) {
            return Ok((String::new(), next.position));
        }
        let token = self.take(Context::Values);
        if token.kind == Kind::Identifier {
            Ok((token.text, token.position))
        } else {
            Err(unexpected(&token, "a value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn object(yaml: &str) -> SelectorObject {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    /// Label pairs in a table row.
    type Pairs = &'static [(&'static str, &'static str)];

    /// (selector in the string form, labels, expected match)
    const TEXT_MATCHES: &[(&str, Pairs, bool)] = &[
        ("", &[], true),
        ("", &[("env", "prod")], true),
        (" \t\r\n ", &[("env", "prod")], true),
        ("env=prod", &[("env", "prod")], true),
        ("env=prod", &[("env", "dev")], false),
        ("env=prod", &[], false),
        ("env==prod", &[("env", "prod")], true),
        ("env==prod", &[("env", "dev")], false),
        ("env!=prod", &[("env", "dev")], true),
        ("env!=prod", &[("env", "prod")], false),
        ("env!=prod", &[("other", "x")], true),
        ("env in (prod,staging)", &[("env", "staging")], true),
        ("env in (prod,staging)", &[("env", "dev")], false),
        ("env in (prod)", &[], false),
        ("env notin (prod,staging)", &[("env", "dev")], true),
        ("env notin (prod,staging)", &[("env", "prod")], false),
        ("env notin (prod)", &[], true),
        ("env", &[("env", "")], true),
        ("env", &[("env", "x")], true),
        ("env", &[("other", "x")], false),
        ("!env", &[], true),
        ("!env", &[("env", "")], false),
        ("env=", &[("env", "")], true),
        ("env=", &[("env", "x")], false),
        ("env=", &[], false),
        ("env!=", &[("env", "x")], true),
        ("env in ()", &[("env", "")], true),
        ("env in ()", &[("env", "x")], false),
        ("env in (a,)", &[("env", "")], true),
        ("env in (,a)", &[("env", "a")], true),
        ("env in (a,,b)", &[("env", "")], true),
        ("env notin (,)", &[("env", "")], false),
        ("a=1,b=2", &[("a", "1"), ("b", "2")], true),
        ("a=1,b=2", &[("a", "1")], false),
        ("a=1,b=2", &[("a", "1"), ("b", "3")], false),
        ("  a = 1 ,\tb\n!=\r2 , c ", &[("a", "1"), ("c", "")], true),
        (
            "  a = 1 ,\tb\n!=\r2 , c ",
            &[("a", "1"), ("b", "2"), ("c", "")],
            false,
        ),
        ("x in(a,b),!y", &[("x", "b")], true),
        ("x in(a,b),!y", &[("x", "b"), ("y", "")], false),
        ("x\tnotin\t(\ta\t,\tb\t)", &[("x", "c")], true),
        ("in in (in,notin)", &[("in", "notin")], true),
        ("notin notin (in)", &[("notin", "in")], false),
        ("notin", &[("notin", "")], true),
        ("!in", &[("in", "")], false),
        ("a=in", &[("a", "in")], true),
        ("example.com/role=db", &[("example.com/role", "db")], true),
        ("example.com/role=db", &[("role", "db")], false),
        ("env=prod,env!=prod", &[("env", "prod")], false),
        ("n>5", &[("n", "6")], true),
        ("n>5", &[("n", "5")], false),
        ("n>5", &[("n", "x")], false),
        ("n>5", &[], false),
        ("n<5", &[("n", "4")], true),
        ("n<5", &[("n", "10")], false),
        ("n>007", &[("n", "8")], true),
        ("n>4,n<6", &[("n", "5")], true),
    ];

    #[test]
    fn string_form_matches() {
        for &(text, pairs, expected) in TEXT_MATCHES {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                selector.matches(&labels(pairs)),
                expected,
                "{text:?} against {pairs:?}"
            );
        }
    }

    /// (selector in the object form, as YAML; labels; expected match)
    const OBJECT_MATCHES: &[(&str, Pairs, bool)] = &[
        ("{}", &[], true),
        ("{}", &[("env", "prod")], true),
        (
            "{matchLabels: {}, matchExpressions: []}",
            &[("a", "b")],
            true,
        ),
        ("{matchLabels: {env: prod}}", &[("env", "prod")], true),
        ("{matchLabels: {env: prod}}", &[("env", "dev")], false),
        ("{matchLabels: {env: prod}}", &[], false),
        (
            "{matchLabels: {env: prod, tier: web}}",
            &[("env", "prod")],
            false,
        ),
        ("{matchLabels: {env: ''}}", &[("env", "")], true),
        (
            "{matchExpressions: [{key: env, operator: In, values: [prod, dev]}]}",
            &[("env", "dev")],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: In, values: [prod, dev]}]}",
            &[("env", "qa")],
            false,
        ),
        (
            "{matchExpressions: [{key: env, operator: In, values: [prod]}]}",
            &[],
            false,
        ),
        (
            "{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}",
            &[("env", "dev")],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}",
            &[("env", "prod")],
            false,
        ),
        (
            "{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}",
            &[],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: Exists}]}",
            &[("env", "x")],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: Exists}]}",
            &[],
            false,
        ),
        (
            "{matchExpressions: [{key: env, operator: Exists, values: []}]}",
            &[("env", "")],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: DoesNotExist}]}",
            &[],
            true,
        ),
        (
            "{matchExpressions: [{key: env, operator: DoesNotExist}]}",
            &[("env", "x")],
            false,
        ),
        (
            "matchLabels:\n  env: prod\nmatchExpressions:\n- key: tier\n  operator: In\n  values: [a, b]\n- {key: legacy, operator: DoesNotExist}\n",
            &[("env", "prod"), ("tier", "b")],
            true,
        ),
        (
            "matchLabels:\n  env: prod\nmatchExpressions:\n- key: tier\n  operator: In\n  values: [a, b]\n- {key: legacy, operator: DoesNotExist}\n",
            &[("env", "prod"), ("tier", "b"), ("legacy", "")],
            false,
        ),
    ];

    #[test]
    fn object_form_matches() {
        for &(yaml, pairs, expected) in OBJECT_MATCHES {
            let selector =
                Selector::from_object(&object(yaml)).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
            assert_eq!(
                selector.matches(&labels(pairs)),
                expected,
                "{yaml:?} against {pairs:?}"
            );
        }
    }

    #[test]
    fn empty_selectors_are_everything() {
        for selector in [
            Selector::everything(),
            Selector::default(),
            Selector::parse("").unwrap(),
            Selector::parse("  \n\t ").unwrap(),
            Selector::from_object(&SelectorObject::default()).unwrap(),
        ] {
            assert!(selector.is_empty());
            assert_eq!(selector, Selector::everything());
            assert_eq!(selector.to_string(), "");
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("anything", "at-all")])));
        }
    }

    /// (string form, prefix of the expected error message)
    const TEXT_ERRORS: &[(&str, &str)] = &[
        // Syntax.
        (
            "a in (b",
            "invalid label selector syntax at position 7: found end of string, expected ',' or ')'",
        ),
        (
            "a in (",
            "invalid label selector syntax at position 6: found end of string, expected a value, ',' or ')'",
        ),
        (
            "a in b",
            "invalid label selector syntax at position 5: found \"b\", expected '('",
        ),
        (
            "a in",
            "invalid label selector syntax at position 4: found end of string, expected '('",
        ),
        (
            "a notin ",
            "invalid label selector syntax at position 8: found end of string, expected '('",
        ),
        (
            "a in (b c)",
            "invalid label selector syntax at position 8: found \"c\", expected ',' or ')'",
        ),
        (
            "a in (b,,)",
            "invalid label selector syntax at position 9: found \")\", expected a value or ','",
        ),
        (
            "a in (b,",
            "invalid label selector syntax at position 8: found end of string, expected a value or ','",
        ),
        (
            "a in (b))",
            "invalid label selector syntax at position 8: found \")\", expected ',' or end of string",
        ),
        (
            "a in ((b)",
            "invalid label selector syntax at position 6: found \"(\", expected a value, ',' or ')'",
        ),
        (
            "a=b,",
            "invalid label selector syntax at position 4: found end of string, expected a requirement after ','",
        ),
        (
            "a=b, ",
            "invalid label selector syntax at position 5: found end of string, expected a requirement after ','",
        ),
        (
            ",a",
            "invalid label selector syntax at position 0: found \",\", expected '!', a label key or end of string",
        ),
        (
            "a,,b",
            "invalid label selector syntax at position 2: found \",\", expected a requirement after ','",
        ),
        (
            "=a",
            "invalid label selector syntax at position 0: found \"=\", expected '!', a label key",
        ),
        (
            "a b",
            "invalid label selector syntax at position 2: found \"b\", expected an operator (in, notin, =, ==, !=, >, <)",
        ),
        (
            "a ~ b",
            "invalid label selector syntax at position 2: found \"~\", expected an operator",
        ),
        (
            "a IN (b)",
            "invalid label selector syntax at position 2: found \"IN\", expected an operator",
        ),
        (
            "a)",
            "invalid label selector syntax at position 1: found \")\", expected an operator",
        ),
        (
            "a!b",
            "invalid label selector syntax at position 1: found \"!\", expected an operator",
        ),
        (
            "a=b=c",
            "invalid label selector syntax at position 3: found \"=\", expected ',' or end of string",
        ),
        (
            "a=b c",
            "invalid label selector syntax at position 4: found \"c\", expected ',' or end of string",
        ),
        (
            "a=(b)",
            "invalid label selector syntax at position 2: found \"(\", expected a value",
        ),
        (
            "a===b",
            "invalid label selector syntax at position 3: found \"=\", expected a value",
        ),
        (
            "a>=1",
            "invalid label selector syntax at position 2: found \"=\", expected a value",
        ),
        (
            "!a=b",
            "invalid label selector syntax at position 2: found \"=\", expected ',' or end of string",
        ),
        (
            "!a in (b)",
            "invalid label selector syntax at position 3: found \"in\", expected ',' or end of string",
        ),
        (
            "!!a",
            "invalid label selector syntax at position 1: found \"!\", expected a label key",
        ),
        (
            "!",
            "invalid label selector syntax at position 1: found end of string, expected a label key",
        ),
        (
            "ab in (é",
            "invalid label selector syntax at position 8: found end of string, expected ',' or ')'",
        ),
        // Keys, with their position.
        (
            "-bad=x",
            "invalid label key \"-bad\" at position 0: name part must consist",
        ),
        (
            "a=1, bad-=x",
            "invalid label key \"bad-\" at position 5: name part",
        ),
        ("!_a", "invalid label key \"_a\" at position 1: name part"),
        (
            "a/b/c",
            "invalid label key \"a/b/c\" at position 0: a qualified name",
        ),
        (
            "/a",
            "invalid label key \"/a\" at position 0: prefix part must be non-empty",
        ),
        (
            "a/",
            "invalid label key \"a/\" at position 0: name part must be non-empty",
        ),
        (
            "Example.com/a",
            "invalid label key \"Example.com/a\" at position 0: prefix part a lowercase RFC 1123",
        ),
        ("é=b", "invalid label key \"é\" at position 0: name part"),
        // Go would stop at the NUL and accept "a=b"; we reject it.
        (
            "a=b\0c",
            "invalid label value \"b\\0c\" for key \"a\" at position 2:",
        ),
        ("-bad in (", "invalid label key \"-bad\" at position 0"),
        // Values, with their key and position.
        (
            "a=-bad",
            "invalid label value \"-bad\" for key \"a\" at position 2: a valid label must",
        ),
        (
            "a in (ok, -bad)",
            "invalid label value \"-bad\" for key \"a\" at position 10",
        ),
        (
            "a notin (b/c)",
            "invalid label value \"b/c\" for key \"a\" at position 9",
        ),
        ("é=b,x=ü", "invalid label key \"é\" at position 0"),
        (
            "x=ü,é=b",
            "invalid label value \"ü\" for key \"x\" at position 2",
        ),
        ("ü=é", "invalid label key \"ü\" at position 0"),
        (
            "x=é , y=ü",
            "invalid label value \"é\" for key \"x\" at position 2",
        ),
        (
            "k=v, y=ü",
            "invalid label value \"ü\" for key \"y\" at position 7",
        ),
        // Integer comparisons.
        (
            "n>b",
            "label selector operator > for key \"n\" at position 2 needs an integer, found \"b\"",
        ),
        (
            "n<",
            "label selector operator < for key \"n\" at position 2 needs an integer, found \"\"",
        ),
        (
            "n>-1",
            "invalid label value \"-1\" for key \"n\" at position 2",
        ),
        (
            "n>99999999999999999999",
            "label selector operator > for key \"n\" at position 2 needs an integer",
        ),
    ];

    #[test]
    fn string_form_errors() {
        for &(text, expected) in TEXT_ERRORS {
            match Selector::parse(text) {
                Ok(s) => panic!("{text:?} parsed as {s:?}, expected error {expected:?}"),
                Err(e) => assert!(
                    e.to_string().starts_with(expected),
                    "{text:?}:\n  got      {e}\n  expected {expected}..."
                ),
            }
        }
    }

    #[test]
    fn error_values_are_structured() {
        assert_eq!(
            Selector::parse("a in (b"),
            Err(SelectorError::Syntax {
                position: 7,
                found: String::new(),
                expected: "',' or ')'",
            })
        );
        assert_eq!(
            Selector::parse("x=1,-bad"),
            Err(SelectorError::InvalidKey {
                key: "-bad".into(),
                reason: format!("name part {NAME_REASON}"),
                at: Location::Position(4),
            })
        );
        assert_eq!(
            validate_label_key("-bad").map_err(|e| e.to_string()),
            Err(format!(
                "invalid label key \"-bad\": name part {NAME_REASON}"
            ))
        );
        assert_eq!(
            validate_label_value("bad value").map_err(|e| e.to_string()),
            Err(format!("invalid label value \"bad value\": {VALUE_REASON}"))
        );
        let long = "a".repeat(64);
        assert_eq!(
            validate_label_value(&long).map_err(|e| e.to_string()),
            Err(format!(
                "invalid label value \"{long}\": must be no more than 63 characters"
            ))
        );
    }

    /// (object form as YAML, prefix of the expected error message)
    const OBJECT_ERRORS: &[(&str, &str)] = &[
        (
            "{matchExpressions: [{key: env, operator: Foo}]}",
            "unknown label selector operator \"Foo\" for key \"env\" in matchExpressions[0].operator (expected In, NotIn, Exists or DoesNotExist)",
        ),
        (
            "{matchExpressions: [{key: a, operator: Exists}, {key: env, operator: in, values: [x]}]}",
            "unknown label selector operator \"in\" for key \"env\" in matchExpressions[1].operator",
        ),
        (
            "{matchExpressions: [{key: env, operator: '='}]}",
            "unknown label selector operator \"=\"",
        ),
        (
            "{matchExpressions: [{key: env, operator: In}]}",
            "label selector operator In for key \"env\" in matchExpressions[0].values needs at least one value (got [])",
        ),
        (
            "{matchExpressions: [{key: env, operator: NotIn, values: []}]}",
            "label selector operator NotIn for key \"env\" in matchExpressions[0].values needs at least one value",
        ),
        (
            "{matchExpressions: [{key: env, operator: Exists, values: [a]}]}",
            "label selector operator Exists for key \"env\" in matchExpressions[0].values takes no values (got [\"a\"])",
        ),
        (
            "{matchExpressions: [{key: env, operator: DoesNotExist, values: ['']}]}",
            "label selector operator DoesNotExist for key \"env\" in matchExpressions[0].values takes no values",
        ),
        (
            "{matchLabels: {-bad: x}}",
            "invalid label key \"-bad\" in matchLabels: name part",
        ),
        (
            "{matchLabels: {env: bad value}}",
            "invalid label value \"bad value\" for key \"env\" in matchLabels: a valid label",
        ),
        (
            "{matchExpressions: [{key: 'a b', operator: Exists}]}",
            "invalid label key \"a b\" in matchExpressions[0].key",
        ),
        (
            "{matchExpressions: [{key: '', operator: Exists}]}",
            "invalid label key \"\" in matchExpressions[0].key: name part must be non-empty",
        ),
        (
            "{matchExpressions: [{key: env, operator: In, values: [ok, 'no!']}]}",
            "invalid label value \"no!\" for key \"env\" in matchExpressions[0].values[1]",
        ),
    ];

    #[test]
    fn object_form_errors() {
        for &(yaml, expected) in OBJECT_ERRORS {
            match Selector::from_object(&object(yaml)) {
                Ok(s) => panic!("{yaml:?} compiled to {s:?}, expected error {expected:?}"),
                Err(e) => assert!(
                    e.to_string().starts_with(expected),
                    "{yaml:?}:\n  got      {e}\n  expected {expected}..."
                ),
            }
        }
    }

    #[test]
    fn label_keys() {
        let name63 = "a".repeat(63);
        let label63 = "b".repeat(63);
        let prefix253 = format!("{label63}.{label63}.{label63}.{}", "c".repeat(61));
        assert_eq!(prefix253.len(), 253);
        let cases: Vec<(String, bool)> = vec![
            ("a".into(), true),
            ("A".into(), true),
            ("1".into(), true),
            ("in".into(), true),
            ("a.b_c-D9".into(), true),
            ("example.com/a".into(), true),
            ("a-b.c/x".into(), true),
            ("kubernetes.io/metadata.name".into(), true),
            ("1.2.3/x".into(), true),
            (name63.clone(), true),
            (format!("{prefix253}/{name63}"), true),
            ("".into(), false),
            ("-a".into(), false),
            ("a-".into(), false),
            ("_a".into(), false),
            ("a_".into(), false),
            (".a".into(), false),
            ("a.".into(), false),
            ("a b".into(), false),
            ("a=b".into(), false),
            ("a/b/c".into(), false),
            ("/a".into(), false),
            ("a/".into(), false),
            ("/".into(), false),
            ("Example.com/a".into(), false),
            ("ex_ample.com/a".into(), false),
            ("-ex.com/a".into(), false),
            ("ex-.com/a".into(), false),
            ("ex..com/a".into(), false),
            (".ex.com/a".into(), false),
            ("ex.com./a".into(), false),
            ("ex.com/-a".into(), false),
            (format!("{name63}a"), false),
            (format!("{prefix253}c/a"), false),
            (format!("x/{name63}a"), false),
            ("é".into(), false),
            ("aé".into(), false),
            ("a\0".into(), false),
        ];
        for (key, valid) in cases {
            assert_eq!(validate_label_key(&key).is_ok(), valid, "key {key:?}");
        }
    }

    #[test]
    fn label_values() {
        let cases: Vec<(String, bool)> = vec![
            ("".into(), true),
            ("a".into(), true),
            ("Z".into(), true),
            ("0".into(), true),
            ("a.b-c_D".into(), true),
            ("v1.2.3".into(), true),
            ("a".repeat(63), true),
            ("a".repeat(64), false),
            ("-a".into(), false),
            ("a-".into(), false),
            ("_a".into(), false),
            (".a".into(), false),
            ("a b".into(), false),
            ("a/b".into(), false),
            (" ".into(), false),
            ("é".into(), false),
            ("a,b".into(), false),
        ];
        for (value, valid) in cases {
            assert_eq!(
                validate_label_value(&value).is_ok(),
                valid,
                "value {value:?}"
            );
        }
    }

    /// (input, canonical Display)
    const DISPLAY: &[(&str, &str)] = &[
        ("", ""),
        ("  ", ""),
        ("a", "a"),
        ("!a", "!a"),
        ("  b = 2 , a ", "a,b=2"),
        ("a==b", "a=b"),
        ("a!=b", "a!=b"),
        ("a=", "a="),
        ("a=,b", "a=,b"),
        ("x in (c, b, a, b)", "x in (a,b,c)"),
        ("x notin (b,)", "x notin (,b)"),
        ("x in (,b,c)", "x in (,b,c)"),
        ("x in ()", "x in ()"),
        ("x in (,)", "x in ()"),
        ("!y, x", "x,!y"),
        ("!a,a", "a,!a"),
        ("a, a", "a"),
        ("n<10,n>5", "n>5,n<10"),
        ("in in (in),notin,!x", "in in (in),notin,!x"),
        ("example.com/x notin (b,a)", "example.com/x notin (a,b)"),
        ("z=1,y=2,x=3", "x=3,y=2,z=1"),
    ];

    #[test]
    fn display_is_canonical_and_round_trips() {
        for &(input, canonical) in DISPLAY {
            let parsed = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parsed.to_string(), canonical, "display of {input:?}");
            assert_eq!(
                Selector::parse(canonical).as_ref(),
                Ok(&parsed),
                "round trip of {input:?}"
            );
            assert_eq!(canonical.parse::<Selector>(), Ok(parsed));
        }
    }

    #[test]
    fn object_form_displays_like_string_form() {
        let obj = object(
            "{matchLabels: {b: '2', a: '1'}, matchExpressions: [{key: a, operator: NotIn, values: [y, x, y]}, {key: c, operator: Exists}, {key: d, operator: DoesNotExist}]}",
        );
        let selector = Selector::from_object(&obj).unwrap();
        assert_eq!(selector.to_string(), "a=1,a notin (x,y),b=2,c,!d");
        assert_eq!(Selector::parse(&selector.to_string()), Ok(selector));
    }

    #[test]
    fn requirements_are_exposed_sorted() {
        let selector = Selector::parse("tier in (b,a), env=prod, !legacy").unwrap();
        assert_eq!(
            selector.requirements(),
            &[
                Requirement {
                    key: "env".into(),
                    operator: Operator::Equals,
                    values: vec!["prod".into()],
                },
                Requirement {
                    key: "legacy".into(),
                    operator: Operator::DoesNotExist,
                    values: vec![],
                },
                Requirement {
                    key: "tier".into(),
                    operator: Operator::In,
                    values: vec!["a".into(), "b".into()],
                },
            ]
        );
        assert_eq!(
            Selector::from_requirements(selector.requirements().to_vec()),
            Ok(selector.clone())
        );
    }

    #[test]
    fn requirement_new_validates() {
        let cases: &[(&str, Operator, &[&str], bool)] = &[
            ("a", Operator::Equals, &["b"], true),
            ("a", Operator::Equals, &[], false),
            ("a", Operator::Equals, &["b", "c"], false),
            ("a", Operator::In, &[], false),
            ("a", Operator::In, &[""], true),
            ("a", Operator::Exists, &[], true),
            ("a", Operator::Exists, &["x"], false),
            ("a", Operator::GreaterThan, &["12"], true),
            ("a", Operator::LessThan, &["x"], false),
            ("-a", Operator::Exists, &[], false),
            ("a", Operator::NotIn, &["-x"], false),
        ];
        for &(key, op, values, ok) in cases {
            let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
            assert_eq!(
                Requirement::new(key, op, values.clone()).is_ok(),
                ok,
                "{key} {op} {values:?}"
            );
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ProfileSpec {
        cluster_selector: SelectorSpec,
    }

    enum Expect {
        Text(&'static str),
        Object(&'static str),
        Error(&'static str),
    }

    /// (YAML document, expected form and canonical compiled selector, or error substring)
    const YAML: &[(&str, Expect)] = &[
        ("clusterSelector: env=prod", Expect::Text("env=prod")),
        (
            "clusterSelector: \"env=prod, tier in (a, b)\"",
            Expect::Text("env=prod,tier in (a,b)"),
        ),
        (
            "clusterSelector: tier notin (a,b),!legacy",
            Expect::Text("!legacy,tier notin (a,b)"),
        ),
        ("clusterSelector: '!legacy'", Expect::Text("!legacy")),
        ("clusterSelector: ''", Expect::Text("")),
        (
            "clusterSelector: {matchLabels: {env: prod}}",
            Expect::Object("env=prod"),
        ),
        ("clusterSelector: {}", Expect::Object("")),
        (
            "clusterSelector:\n  matchLabels:\n    env: prod\n  matchExpressions:\n  - key: tier\n    operator: In\n    values: [b, a]\n",
            Expect::Object("env=prod,tier in (a,b)"),
        ),
        (
            "clusterSelector: {matchLabels: {env: prod}, matchLabel: {}}",
            Expect::Error("unknown field `matchLabel`"),
        ),
        (
            "clusterSelector: {matchExpressions: [{key: a, operator: In, value: [x]}]}",
            Expect::Error("unknown field `value`"),
        ),
        (
            "clusterSelector: {matchExpressions: [{key: a}]}",
            Expect::Error("missing field `operator`"),
        ),
        (
            "clusterSelector: [env=prod]",
            Expect::Error("a label selector"),
        ),
    ];

    #[test]
    fn selector_spec_from_yaml() {
        for (yaml, expect) in YAML {
            let parsed: Result<ProfileSpec, _> = serde_saphyr::from_str(yaml);
            match (parsed, expect) {
                (Ok(spec), Expect::Text(canonical)) => {
                    assert!(
                        matches!(spec.cluster_selector, SelectorSpec::Text(_)),
                        "{yaml:?}: {spec:?}"
                    );
                    assert_eq!(
                        spec.cluster_selector.compile().unwrap().to_string(),
                        *canonical
                    );
                }
                (Ok(spec), Expect::Object(canonical)) => {
                    assert!(
                        matches!(spec.cluster_selector, SelectorSpec::Object(_)),
                        "{yaml:?}: {spec:?}"
                    );
                    assert_eq!(
                        spec.cluster_selector.compile().unwrap().to_string(),
                        *canonical
                    );
                }
                (Err(e), Expect::Error(fragment)) => {
                    assert!(e.to_string().contains(fragment), "{yaml:?}: {e}");
                }
                (Ok(spec), _) => panic!("{yaml:?}: unexpectedly parsed as {spec:?}"),
                (Err(e), _) => panic!("{yaml:?}: {e}"),
            }
        }
    }

    #[test]
    fn selector_spec_compile_errors_keep_their_message() {
        let spec: ProfileSpec = serde_saphyr::from_str(
            "clusterSelector: {matchExpressions: [{key: env, operator: Equals, values: [a]}]}",
        )
        .unwrap();
        assert_eq!(
            spec.cluster_selector.compile(),
            Err(SelectorError::UnknownOperator {
                key: "env".into(),
                operator: "Equals".into(),
                at: Location::Field("matchExpressions[0].operator".into()),
            })
        );
        let spec = SelectorSpec::Text("env in (a".into());
        assert!(matches!(
            spec.compile(),
            Err(SelectorError::Syntax { position: 9, .. })
        ));
    }

    #[test]
    fn selector_spec_serializes_both_forms() {
        let specs = [
            SelectorSpec::Text("env=prod,tier in (a,b)".into()),
            SelectorSpec::Object(object(
                "{matchLabels: {env: prod}, matchExpressions: [{key: t, operator: Exists}]}",
            )),
        ];
        for spec in specs {
            let json = serde_json::to_string(&spec).unwrap();
            let back: SelectorSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "json {json}");
            let yaml = serde_saphyr::to_string(&spec).unwrap();
            let back: SelectorSpec = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(back, spec, "yaml {yaml}");
        }
        assert_eq!(
            serde_json::to_string(&SelectorSpec::Text("a".into())).unwrap(),
            "\"a\""
        );
        assert_eq!(
            serde_json::to_string(&SelectorSpec::Object(object("{matchLabels: {a: b}}"))).unwrap(),
            r#"{"matchLabels":{"a":"b"}}"#
        );
    }

    /// Deterministic pseudo-random inputs from an alphabet full of operators, whitespace and
    /// multi-byte characters: parsing must never panic, and whatever parses must round-trip.
    #[test]
    fn arbitrary_input_never_panics_and_round_trips() {
        const ALPHABET: &[char] = &[
            'a', 'b', 'z', '1', '=', '!', '(', ')', ',', ' ', '\t', '\n', 'i', 'n', 'o', 't', 'é',
            'ü', '\0', '/', '.', '-', '_', '>', '<', 'A', '日',
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = next() % 12;
            let text: String = (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect();
            let _ = validate_label_key(&text);
            let _ = validate_label_value(&text);
            if let Ok(selector) = Selector::parse(&text) {
                parsed += 1;
                assert_eq!(
                    Selector::parse(&selector.to_string()).as_ref(),
                    Ok(&selector),
                    "{text:?} displayed as {selector}"
                );
            }
        }
        assert!(parsed > 100, "only {parsed} inputs parsed");
    }
}
