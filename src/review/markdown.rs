//! The review as a pull-request comment: a title, a summary table, then one collapsible section
//! per group of clusters whose changes read the same (as the human note groups them), diffs in
//! fenced blocks; capped below GitHub's 65,536-character comment limit with a visible marker.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};

use super::{
    ClusterReview, LabelSource, Membership, ObjectAction, ProfileReview, Review, Side, Targeting,
};

/// Largest markdown produced, in bytes (so also in characters): below GitHub's 65,536-character
/// limit for a comment, with room for a bot's own header.
pub const MARKDOWN_LIMIT: usize = 60_000;

/// Bytes kept free for the truncation marker.
const MARKER_RESERVE: usize = 300;

/// Rows of the summary table before the rest is summed up in one line.
const TABLE_ROWS: usize = 100;

/// Cluster names listed in a section's summary or the unchanged line before "and N more".
const NAMES_SHOWN: usize = 20;

/// The review as markdown, at most [`MARKDOWN_LIMIT`] bytes.
pub fn markdown(review: &Review) -> String {
    cap(&blocks(review), MARKDOWN_LIMIT)
}

/// A block of the output: its text, or a section of a group of clusters whose text is made
/// again only when it is shown (a big fleet's sections hold every diff; most are cut, and only
/// their length counts).
enum Block<'a> {
    /// Text made already.
    Text(String),
    /// `<details>` of clusters whose bodies read the same.
    Section {
        /// `<details><summary>…</summary>\n\n`.
        head: String,
        /// The first member, whose body is the section's.
        first: &'a ClusterReview,
        /// Length of the whole block.
        len: usize,
    },
}

/// What [`cap`] needs of a block.
trait Piece {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// The text.
    fn text(&self) -> std::borrow::Cow<'_, str>;
}

impl Piece for String {
    fn len(&self) -> usize {
        String::len(self)
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

/// Ends every section after its trimmed body.
const SECTION_TAIL: &str = "\n\n</details>\n\n";

impl Piece for Block<'_> {
    fn len(&self) -> usize {
        match self {
            Block::Text(text) => text.len(),
            Block::Section { len, .. } => *len,
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Block::Text(text) => std::borrow::Cow::Borrowed(text),
            Block::Section { head, first, .. } => std::borrow::Cow::Owned(format!(
                "{head}{}{SECTION_TAIL}",
                cluster_body(first).trim_end()
            )),
        }
    }
}

/// The review as blocks: each is kept whole or, when it is a section that does not fit, cut
/// at a line with its fence and `<details>` closed.
fn blocks(review: &Review) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    out.push(Block::Text(format!(
        "### flotilla plan `{}`..`{}`\n\n",
        short(&review.base.commit),
        short(&review.head.commit)
    )));
    if !review.errors.is_empty() {
        for side in [Side::Base, Side::Head] {
            let errors: Vec<&str> = review
                .errors
                .iter()
                .filter(|e| e.side == side)
                .map(|e| e.message.as_str())
                .collect();
            if errors.is_empty() {
                continue;
            }
            let commit = match side {
                Side::Base => &review.base.commit,
                Side::Head => &review.head.commit,
            };
            let mut text = format!(
                "**{side} `{}` is invalid** ({} error{}): nothing can be planned until it is fixed.\n\n",
                short(commit),
                errors.len(),
                plural(errors.len())
            );
            fenced(&mut text, "text", &(errors.join("\n") + "\n"));
            out.push(Block::Text(text));
        }
        return out;
    }
    let counts = review.counts();
    let changed = review
        .clusters
        .iter()
        .filter(|c| c.counts.any_change() || c.membership != Membership::Stays)
        .count();
    let pending = review
        .clusters
        .iter()
        .filter(|c| {
            c.profiles
                .iter()
                .any(|p| p.pending.iter().any(|e| e.side == Side::Head))
        })
        .count();
    let mut summary = if changed == 0 && counts.errors == 0 && pending > 0 {
        format!(
            "**No change found offline**, but profiles on {pending} cluster{} need live data \
             (pending): their changed inputs cannot be rendered without the clusters.\n\n",
            plural(pending)
        )
    } else if changed == 0 && counts.errors == 0 {
        format!(
            "**No change** on {} cluster{}.\n\n",
            review.clusters.len(),
            plural(review.clusters.len())
        )
    } else {
        format!(
            "**{changed} of {} cluster{} would change**: {} added, {} changed, {} removed{}.\n\n",
            review.clusters.len(),
            plural(review.clusters.len()),
            counts.added,
            counts.changed,
            counts.removed,
            if counts.errors > 0 {
                format!(
                    ", **{} new render error{}**",
                    counts.errors,
                    plural(counts.errors)
                )
            } else {
                String::new()
            }
        )
    };
    let unreachable = review
        .clusters
        .iter()
        .filter(|c| c.unreachable.is_some())
        .count();
    if unreachable > 0 {
        let _ = write!(
            summary,
            "**{unreachable} cluster{} could not be asked** (see below).\n\n",
            plural(unreachable)
        );
    }
    // The table lists clusters that change (or fail); sections also show pending and notes.
    let changing = |c: &ClusterReview| {
        c.counts.any_change()
            || c.counts.errors > 0
            || c.membership != Membership::Stays
            || c.unreachable.is_some()
    };
    let rows: Vec<&ClusterReview> = review.clusters.iter().filter(|c| changing(c)).collect();
    let detailed: Vec<&ClusterReview> =
        review.clusters.iter().filter(|c| c.has_details()).collect();
    let quiet: Vec<&ClusterReview> = review.clusters.iter().filter(|c| !changing(c)).collect();
    if !rows.is_empty() {
        summary.push_str("| cluster | added | changed | removed | errors | labels from |\n");
        summary.push_str("|---|---:|---:|---:|---:|---|\n");
    }
    out.push(Block::Text(summary));
    for c in rows.iter().take(TABLE_ROWS) {
        let note = match (c.membership, c.paused) {
            (Membership::Joins, _) => " (joins the fleet)",
            (Membership::Leaves, _) => " (leaves the fleet)",
            (_, true) => " (paused)",
            _ => "",
        };
        out.push(Block::Text(format!(
            "| `{}`{note} | {} | {} | {} | {} | {} |\n",
            c.name,
            c.counts.added,
            c.counts.changed,
            c.counts.removed,
            c.counts.errors,
            if c.unreachable.is_some() {
                "unreachable".to_string()
            } else {
                label_source(&c.labels)
            }
        )));
    }
    if rows.len() > TABLE_ROWS {
        out.push(Block::Text(format!(
            "| … and {} more clusters | | | | | |\n",
            rows.len() - TABLE_ROWS
        )));
    }
    let mut tail = if rows.is_empty() {
        String::new()
    } else {
        String::from("\n")
    };
    if !quiet.is_empty() {
        let names: Vec<&str> = quiet.iter().map(|c| c.name.as_str()).collect();
        let _ = writeln!(
            tail,
            "Unchanged ({}): {}.\n",
            quiet.len(),
            name_list(&names, "`")
        );
    }
    out.push(Block::Text(tail));

    // Group clusters whose sections read the same.
    // In order of first appearance. Bodies are not kept (a big fleet's hold every diff): a
    // group is found by the hash of its body, and confirmed by making the first member's body
    // again and comparing the texts.
    let mut groups: Vec<(usize, Vec<&ClusterReview>)> = Vec::new();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for c in &detailed {
        let body = cluster_body(c);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let candidates = index.entry(hasher.finish()).or_default();
        match candidates
            .iter()
            .find(|i| cluster_body(groups[**i].1[0]) == body)
        {
            Some(i) => groups[*i].1.push(c),
            None => {
                candidates.push(groups.len());
                groups.push((body.trim_end().len(), vec![c]));
            }
        }
    }
    drop(index);
    for (body_len, members) in groups {
        let names: Vec<&str> = members.iter().map(|c| c.name.as_str()).collect();
        let c = members[0].counts;
        let mut what = Vec::new();
        for (n, word) in [
            (c.added, "added"),
            (c.changed, "changed"),
            (c.removed, "removed"),
            (c.errors, "new errors"),
        ] {
            if n > 0 {
                what.push(format!("{n} {word}"));
            }
        }
        if members[0].unreachable.is_some() {
            what.push("unreachable".into());
        }
        if what.is_empty() {
            what.push("no change".into());
        }
        let head = format!(
            "<details><summary><b>{}</b>: {}</summary>\n\n",
            name_list(&names, ""),
            what.join(", "),
        );
        out.push(Block::Section {
            len: head.len() + body_len + SECTION_TAIL.len(),
            head,
            first: members[0],
        });
    }
    out
}

/// A section's body: what the cluster's change is, without its name (so equal bodies group).
fn cluster_body(c: &ClusterReview) -> String {
    let mut out = String::new();
    match c.membership {
        Membership::Joins => out.push_str("Joins the fleet: flotilla starts managing it.\n\n"),
        Membership::Leaves => out.push_str(
            "Leaves the fleet: flotilla stops managing it and deletes nothing there.\n\n",
        ),
        Membership::Stays => {}
    }
    if c.paused {
        out.push_str("Paused: nothing is applied until `spec.paused` is removed.\n\n");
    }
    if let Some(why) = &c.unreachable {
        let _ = write!(
            out,
            "Could not be asked, so nothing is known about it: {why}\n\n"
        );
    }
    for p in &c.profiles {
        profile_body(&mut out, p);
    }
    out
}

fn profile_body(out: &mut String, p: &ProfileReview) {
    let targeting = match p.targeting {
        Targeting::Stays => "",
        Targeting::StartsMatching => " — starts matching",
        Targeting::StopsMatching => " — stops matching: withdrawn",
        Targeting::StopsMatchingLeaves => {
            " — stops matching: objects left in place (LeavePolicies)"
        }
    };
    let _ = writeln!(out, "**profile `{}`**{targeting}\n", p.profile);
    for e in &p.errors {
        let _ = writeln!(out, "- render error in {}:", e.side);
        fenced(out, "text", &(e.message.clone() + "\n"));
    }
    if !p.pending.is_empty() {
        // The same reason on both sides is said once.
        let mut reasons: Vec<(&str, Vec<String>)> = Vec::new();
        for e in &p.pending {
            match reasons.iter_mut().find(|(m, _)| *m == e.message) {
                Some((_, sides)) => sides.push(e.side.to_string()),
                None => reasons.push((&e.message, vec![e.side.to_string()])),
            }
        }
        let _ = writeln!(
            out,
            "- needs live data (pending) in {}:",
            sides(&p.pending).join(" and ")
        );
        let lines: Vec<String> = reasons
            .iter()
            .map(|(m, sides)| format!("{}: {m}", sides.join(" and ")))
            .collect();
        fenced(out, "text", &(lines.join("\n") + "\n"));
    }
    for n in &p.notes {
        let _ = writeln!(out, "- note ({}): {}", n.side, n.message);
    }
    for o in &p.objects {
        let verb = match o.action {
            ObjectAction::Added => "added",
            ObjectAction::Changed => "changed",
            ObjectAction::Removed => "removed",
            ObjectAction::Released => "released (left in place)",
        };
        let place = if o.management {
            " (management cluster)"
        } else {
            ""
        };
        let _ = writeln!(out, "- {verb} `{}`{place}", o.key);
        fenced(out, "diff", &o.diff);
    }
    for r in &p.releases {
        let key = r.key.strip_prefix("helm:").unwrap_or(&r.key);
        let _ = writeln!(out, "- helm release `{key}`: {}", r.summary);
        if let Some(diff) = &r.values_diff {
            fenced(out, "diff", diff);
        }
    }
    out.push('\n');
}

/// The distinct sides of some messages, in order.
fn sides(messages: &[super::SideError]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in messages {
        let s = m.side.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Appends `text` in a fence longer than any backtick run inside it.
fn fenced(out: &mut String, lang: &str, text: &str) {
    let mut longest = 0;
    let mut run = 0;
    for ch in text.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    let _ = write!(out, "{fence}{lang}\n{text}");
    if !text.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "{fence}");
}

fn label_source(labels: &LabelSource) -> String {
    match labels {
        LabelSource::Inventory => "inventory".into(),
        LabelSource::StateNote { commit, .. } => format!("state note `{}`", short(commit)),
        LabelSource::Live { .. } => "live".into(),
    }
}

/// `a, b, c and 7 more`, each name wrapped in `quote`.
fn name_list(names: &[&str], quote: &str) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| format!("{quote}{n}{quote}"))
        .collect();
    let mut text = shown.join(", ");
    if names.len() > NAMES_SHOWN {
        let _ = write!(text, " and {} more", names.len() - NAMES_SHOWN);
    }
    text
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Joins the blocks within `limit` bytes. A block that does not fit ends the output: a section
/// is cut at a line boundary (its open fence and `<details>` closed), any other block is left
/// out, and a marker says how many characters of how many were cut.
fn cap(blocks: &[impl Piece], limit: usize) -> String {
    let total: usize = blocks.iter().map(Piece::len).sum();
    if total <= limit {
        return blocks.iter().map(Piece::text).collect();
    }
    let budget = limit.saturating_sub(MARKER_RESERVE);
    let mut out = String::new();
    for block in blocks {
        if out.len() + block.len() <= budget {
            out.push_str(&block.text());
            continue;
        }
        let text = block.text();
        if text.starts_with("<details>") {
            cut_section(&mut out, &text, budget);
        }
        break;
    }
    let shown = out.len();
    let _ = write!(
        out,
        "\n**⚠ plan truncated**: {} of {total} characters not shown; \
         run `flotilla plan --format json` for the whole plan.\n",
        total - shown
    );
    out
}

/// Appends as many whole lines of `section` as fit in `budget`, then closes what is open.
fn cut_section(out: &mut String, section: &str, budget: usize) {
    const CLOSING: usize = 40;
    let mut fence: Option<String> = None;
    let mut taken = String::new();
    for line in section.split_inclusive('\n') {
        if out.len() + taken.len() + line.len() + CLOSING > budget {
            break;
        }
        let trimmed = line.trim_end();
        let ticks = trimmed.chars().take_while(|c| *c == '`').count();
        match &fence {
            Some(f) if trimmed == f => fence = None,
            None if ticks >= 3 => fence = Some("`".repeat(ticks)),
            _ => {}
        }
        taken.push_str(line);
    }
    if taken.is_empty() {
        return;
    }
    out.push_str(&taken);
    if let Some(f) = fence {
        let _ = writeln!(out, "{f}");
    }
    out.push_str("\n*(section cut)*\n</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_short_output_and_cuts_long_output_with_a_marker() {
        let section = |n: usize| {
            format!(
                "<details><summary>s</summary>\n\n```diff\n{}```\n</details>\n",
                "+line\n".repeat(n)
            )
        };
        struct Case {
            blocks: Vec<String>,
            limit: usize,
            cut: bool,
        }
        let cases = [
            Case {
                blocks: vec!["title\n".into(), section(3)],
                limit: 1000,
                cut: false,
            },
            Case {
                blocks: vec!["title\n".into(), section(300)],
                limit: 1000,
                cut: true,
            },
            Case {
                blocks: vec!["title\n".into(), "row\n".repeat(400), section(3)],
                limit: 1000,
                cut: true,
            },
            Case {
                blocks: vec!["t\n".into(), section(10), section(10), section(400)],
                limit: 1200,
                cut: true,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let got = cap(&case.blocks, case.limit);
            assert!(got.len() <= case.limit, "case {i}: {} bytes", got.len());
            assert_eq!(got.contains("plan truncated"), case.cut, "case {i}: {got}");
            if !case.cut {
                assert_eq!(got, case.blocks.concat(), "case {i}");
                continue;
            }
            let total: usize = case.blocks.iter().map(String::len).sum();
            assert!(got.contains(&format!("of {total} characters")), "{got}");
            // Fences and <details> are balanced after the cut.
            let fences = got.lines().filter(|l| l.starts_with("```")).count();
            assert_eq!(fences % 2, 0, "case {i}: {got}");
            assert_eq!(
                got.matches("<details>").count(),
                got.matches("</details>").count(),
                "case {i}: {got}"
            );
        }
    }

    #[test]
    fn fences_outgrow_backticks_in_the_text() {
        let mut out = String::new();
        fenced(&mut out, "diff", "+a ``` b\n");
        assert!(out.starts_with("````diff\n"), "{out}");
        assert!(out.ends_with("\n````\n"), "{out}");
    }

    #[test]
    fn name_lists_are_capped() {
        let names: Vec<String> = (0..25).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = name_list(&names, "`");
        assert!(text.ends_with("`c19` and 5 more"), "{text}");
        assert_eq!(name_list(&names[..2], ""), "c0, c1");
    }
}
