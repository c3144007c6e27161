//! Validation errors as `FILE:LINE: message`, the format editors and CI annotations understand.

use std::fmt;

/// One problem in the config repo, located at a file and a 1-based line of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Path relative to the config root, `/`-separated.
    pub file: String,
    /// 1-based line in that file (1 when the problem is the file as a whole).
    pub line: usize,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `file:line`.
    pub fn new(file: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: line.max(1),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every problem found in one load, sorted by file and line. A repo with any of them is invalid
/// as a whole: nothing of it is applied and nothing is pruned.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    /// Records a problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Records a problem at `file:line`.
    pub fn error(&mut self, file: &str, line: usize, message: impl Into<String>) {
        self.push(Diagnostic::new(file, line, message));
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted, without exact duplicates.
    pub fn finish(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }
}
