//! `flotilla run --plan-refs GLOB`: the daemon reviews pull requests too. On each poll it lists
//! the refs matching the glob (`refs/pull/*/head`), and for every head commit it has not planned
//! yet renders the plan against the merge base with the followed branch (render mode, as
//! `flotilla plan`) and writes the markdown as a note on that head under `<notes-ref>-plan`,
//! pushed like the other notes, so a CI bot or a reviewer reads it with git alone.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{Daemon, DaemonError};
use crate::git::Note;
use crate::review::{self, commits};

impl Daemon {
    /// Plans every new head of the `--plan-refs` refs; a head already planned (in memory, or
    /// with a plan note from an earlier run) is skipped. Errors of one head are logged and the
    /// head is tried again next poll; the others proceed.
    pub(super) async fn review_refs(&mut self) -> Result<(), DaemonError> {
        let Some(glob) = self.options().plan_refs.clone() else {
            return Ok(());
        };
        let plan_ref = self.options().plan_ref();
        let branch_ref = format!("refs/heads/{}", self.options().branch);
        let options = commits::Options {
            subdir: self.options().path.clone(),
            notes_ref: self.options().notes_ref.clone(),
            kustomize: self.kustomize_tool.clone().ok(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let push = self.options().push_notes;
        let known: BTreeSet<String> = self.planned.clone();
        let (planned, failed) = self
            .with_git(move |g| {
                let heads = g.matching_refs(&glob)?;
                let branch = g.resolve(&branch_ref)?;
                let mut notes = Vec::new();
                let mut planned = Vec::new();
                let mut failed = Vec::new();
                for head in heads {
                    if known.contains(&head.commit) || planned.contains(&head.commit) {
                        planned.push(head.commit);
                        continue;
                    }
                    if g.read_note(&plan_ref, &head.commit)?.is_some() {
                        planned.push(head.commit);
                        continue;
                    }
                    let base = g.merge_base(&branch, &head.commit)?;
                    match commits::review_commits(g, &base, &head.commit, &options) {
                        Ok(plan) => {
                            info!(
                                head = %head.name,
                                commit = %head.commit,
                                changes = plan.exit_code() == 1,
                                "planned"
                            );
                            notes.push(Note {
                                notes_ref: plan_ref.clone(),
                                commit: head.commit.clone(),
                                text: review::markdown(&plan),
                            });
                            planned.push(head.commit);
                        }
                        Err(e) => failed.push(format!("{}: {e}", head.name)),
                    }
                }
                if !notes.is_empty() {
                    let push = push.unwrap_or_else(|| g.is_remote());
                    g.publish_notes(&notes, push)?;
                }
                Ok((planned, failed))
            })
            .await?;
        for failure in failed {
            warn!(error = %failure, "planning a review ref failed; retrying next poll");
        }
        // Only heads that still match are remembered: memory follows the open pull requests.
        self.planned = planned.into_iter().collect();
        Ok(())
    }
}
