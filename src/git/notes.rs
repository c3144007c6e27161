//! Status notes (`refs/notes/flotilla`, `refs/notes/flotilla-state`): read one, write ours, and
//! push the notes refs, merging with other writers by rewriting only our own notes on top of the
//! remote's notes when a push is rejected.

use std::collections::BTreeMap;

use git2::{Oid, Signature};

use super::remote::PushOutcome;
use super::{GitError, GitSource};

/// How many pushes of one notes ref are tried before giving up.
const MAX_PUSH_ATTEMPTS: u32 = 5;

/// Who writes flotilla's notes, so `git log refs/notes/flotilla` tells them apart from humans'.
const SIGNATURE_NAME: &str = "flotilla";
const SIGNATURE_EMAIL: &str = "flotilla@localhost";

/// One note to write: on which notes ref, on which commit, with what text. The text replaces any
/// note flotilla wrote on that commit before (the notes ref's history keeps the old versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `refs/notes/flotilla`, or the short form `flotilla`.
    pub notes_ref: String,
    /// The annotated commit (any revision that names a commit).
    pub commit: String,
    /// The note's text.
    pub text: String,
}

/// What [`GitSource::publish_notes`] did, so the daemon can log how contended the notes were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// One entry per notes ref pushed, in ref order; empty when nothing was pushed (local
    /// repository, or `push` false).
    pub pushed: Vec<PushedRef>,
}

/// One notes ref that reached the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    /// The full notes ref.
    pub notes_ref: String,
    /// Pushes it took: 1 when nobody else had pushed notes in between.
    pub attempts: u32,
}

/// `flotilla` → `refs/notes/flotilla`; full names are kept.
fn full_notes_ref(notes_ref: &str) -> String {
    if notes_ref.starts_with("refs/") {
        notes_ref.to_string()
    } else {
        format!("refs/notes/{notes_ref}")
    }
}

impl GitSource {
    /// Refreshes a notes ref of the mirror from the remote, so `flotilla status` shows what a
    /// daemon elsewhere pushed even when the branch did not move. Nothing to do for a local
    /// repository.
    pub fn fetch_notes(&self, notes_ref: &str) -> Result<(), GitError> {
        if !self.is_remote() {
            return Ok(());
        }
        self.fetch_force(&full_notes_ref(notes_ref))
    }

    /// The note on `commit` under `notes_ref` (`refs/notes/flotilla` or `flotilla`), or `None`
    /// when there is none (or the notes ref does not exist yet).
    pub fn read_note(&self, notes_ref: &str, commit: &str) -> Result<Option<String>, GitError> {
        let notes_ref = self.checked_notes_ref(notes_ref)?;
        let oid = self.find_commit(commit)?.id();
        match self.repo.find_note(Some(&notes_ref), oid) {
            Ok(note) => Ok(Some(
                String::from_utf8_lossy(note.message_bytes()).into_owned(),
            )),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.repo_err(format!("read {notes_ref} on {oid}"), &e)),
        }
    }

    /// The state notes of `commit` for the human notes ref `notes_ref`: `<notes_ref>-state`
    /// and every shard's `<notes_ref>/shard-<i>-state` that exists (found by listing the refs,
    /// so readers need no `--shards`), as (ref, text) in ref order. A remote's are refreshed
    /// first (a failed refresh is logged and the mirror's are read).
    pub fn state_notes(
        &self,
        notes_ref: &str,
        commit: &str,
    ) -> Result<Vec<(String, String)>, GitError> {
        let base = full_notes_ref(notes_ref);
        if self.is_remote() {
            for refspec in [format!("{base}-state"), format!("{base}/*")] {
                if let Err(e) = self.fetch_force(&refspec) {
                    tracing::warn!(error = %e, %refspec, "could not refresh notes from the remote; reading the mirror's");
                }
            }
        }
        let mut refs = vec![format!("{base}-state")];
        let references = self
            .repo
            .references_glob(&format!("{base}/shard-*-state"))
            .map_err(|e| self.repo_err("list the shard notes refs", &e))?;
        let mut shards: Vec<(u32, String)> = references
            .flatten()
            .filter_map(|r| {
                let name = r.name().ok()?.to_string();
                Some((crate::shard::state_ref_shard(&base, &name)?, name))
            })
            .collect();
        shards.sort();
        refs.extend(shards.into_iter().map(|(_, name)| name));
        let mut out = Vec::new();
        for r in refs {
            if let Some(text) = self.read_note(&r, commit)? {
                out.push((r, text));
            }
        }
        Ok(out)
    }

    /// Whether the notes ref exists here or on the remote (a sharded daemon cannot write
    /// `<ref>/shard-<i>` next to an existing `<ref>`: Git refs are paths, and a file and a
    /// directory of one name clash).
    pub fn has_notes_ref(&self, notes_ref: &str) -> Result<bool, GitError> {
        let full = full_notes_ref(notes_ref);
        if self.repo.find_reference(&full).is_ok() {
            return Ok(true);
        }
        self.remote_has_ref(&full)
    }

    /// Writes the notes locally (replacing flotilla's previous note on each commit), then, for a
    /// remote and when `push` is set, pushes every touched notes ref. A rejected push (someone
    /// else pushed notes meanwhile) is answered by fetching the remote's notes ref over ours,
    /// rewriting only the notes given here on top of it (other commits' notes from other writers
    /// are kept) and pushing again, at most 5 times per ref; then [`GitError::NotesRejected`].
    /// A notes ref that does not exist on the remote yet is simply created.
    pub fn publish_notes(&self, notes: &[Note], push: bool) -> Result<PublishReport, GitError> {
        let signature = Signature::now(SIGNATURE_NAME, SIGNATURE_EMAIL)
            .map_err(|e| self.repo_err("make the notes signature", &e))?;
        let mut by_ref: BTreeMap<String, Vec<(Oid, &str)>> = BTreeMap::new();
        for note in notes {
            let notes_ref = self.checked_notes_ref(&note.notes_ref)?;
            let oid = self.find_commit(&note.commit)?.id();
            by_ref
                .entry(notes_ref)
                .or_default()
                .push((oid, note.text.as_str()));
        }
        for (notes_ref, ours) in &by_ref {
            self.write_notes(notes_ref, ours, &signature)?;
        }
        let mut report = PublishReport::default();
        if !push || !self.is_remote() {
            tracing::debug!(repo = %self.display, refs = by_ref.len(), "notes written locally, not pushed");
            return Ok(report);
        }
        for (notes_ref, ours) in &by_ref {
            let attempts = self.push_notes_ref(notes_ref, ours, &signature)?;
            report.pushed.push(PushedRef {
                notes_ref: notes_ref.clone(),
                attempts,
            });
        }
        Ok(report)
    }

    fn push_notes_ref(
        &self,
        notes_ref: &str,
        ours: &[(Oid, &str)],
        signature: &Signature<'_>,
    ) -> Result<u32, GitError> {
        let mut reason = String::new();
        for attempt in 1..=MAX_PUSH_ATTEMPTS {
            match self.push_ref(notes_ref)? {
                PushOutcome::Accepted => {
                    tracing::info!(repo = %self.display, %notes_ref, attempt, notes = ours.len(), "notes pushed");
                    return Ok(attempt);
                }
                PushOutcome::Rejected(why) => {
                    tracing::warn!(repo = %self.display, %notes_ref, attempt, reason = %why, "notes push rejected; merging with the remote's notes");
                    reason = why;
                    if attempt == MAX_PUSH_ATTEMPTS {
                        break;
                    }
                    self.fetch_force(notes_ref)?;
                    self.write_notes(notes_ref, ours, signature)?;
                }
            }
        }
        Err(GitError::NotesRejected {
            repo: self.display.clone(),
            notes_ref: notes_ref.to_string(),
            attempts: MAX_PUSH_ATTEMPTS,
            reason,
        })
    }

    fn write_notes(
        &self,
        notes_ref: &str,
        notes: &[(Oid, &str)],
        signature: &Signature<'_>,
    ) -> Result<(), GitError> {
        for (oid, text) in notes {
            self.repo
                .note(signature, signature, Some(notes_ref), *oid, text, true)
                .map_err(|e| self.repo_err(format!("write {notes_ref} on {oid}"), &e))?;
        }
        Ok(())
    }

    fn checked_notes_ref(&self, notes_ref: &str) -> Result<String, GitError> {
        let full = full_notes_ref(notes_ref);
        if full.starts_with("refs/notes/") && git2::Reference::is_valid_name(&full) {
            Ok(full)
        } else {
            Err(GitError::Repo {
                repo: self.display.clone(),
                action: format!("use notes ref {notes_ref:?}"),
                message: "not a valid ref under refs/notes/".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_notes_refs_are_completed() {
        assert_eq!(super::full_notes_ref("flotilla"), "refs/notes/flotilla");
        assert_eq!(
            super::full_notes_ref("refs/notes/flotilla-state"),
            "refs/notes/flotilla-state"
        );
    }
}
