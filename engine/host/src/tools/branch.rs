//! `corral runs apply --branch`: a run's changeset committed on a new branch of the root's
//! repository, on top of the commit HEAD named when the run started, leaving the working tree,
//! the index and HEAD alone.

use super::changes::{ApplyError, StagedChange, WriteGrant, check_path, select};
use super::{ToolLimits, ToolRoot, git};
use gix::objs::tree::EntryKind;
use std::path::Path;

impl ToolRoot {
    /// The commit id HEAD names, when the root is a repository Corral may read (see `git.rs`).
    pub fn head_commit(&self) -> Option<String> {
        let repo = git::repo(self).ok()?;
        repo.head_id().ok().map(|id| id.detach().to_string())
    }
}

/// Commits the selected `changes` on a new branch `name` whose parent is `base` (a commit id),
/// under the write rules and `grant`; returns the new commit's id. Writes objects and one
/// reference, nothing else: the working tree, the index and HEAD stay as they are.
pub fn commit_branch(
    root: &Path,
    changes: &[StagedChange],
    only: &[String],
    grant: &WriteGrant,
    name: &str,
    base: &str,
    message: &str,
) -> Result<String, ApplyError> {
    let refuse = |why: String| ApplyError::Refused(format!("--branch {name}: {why}"));
    let selected = select(changes, only)?;
    for change in &selected {
        check_path(&change.path, grant)?;
    }
    let full = format!("refs/heads/{name}");
    gix::refs::FullName::try_from(full.as_str()).map_err(|_| {
        refuse("not a valid branch name: use letters, digits, '-', '_', '.' and '/'".to_string())
    })?;
    let tools = ToolRoot::open(root, ToolLimits::default())
        .map_err(|error| refuse(format!("cannot open the root: {error}")))?;
    let mut repo = git::repo(&tools).map_err(|error| refuse(error.to_string()))?;
    // The reflog entry of the new branch names Corral, never an identity from anywhere else.
    {
        let mut config = repo.config_snapshot_mut();
        config
            .append_config(
                ["committer.name=Corral", "committer.email=corral@localhost"],
                gix::config::Source::Api,
            )
            .map_err(|error| ApplyError::Io(format!("--branch {name}: {error}")))?;
        config
            .commit()
            .map_err(|error| ApplyError::Io(format!("--branch {name}: {error}")))?;
    }
    if repo
        .try_find_reference(full.as_str())
        .ok()
        .flatten()
        .is_some()
    {
        return Err(refuse(
            "the branch already exists: pick another name (nothing was written)".to_string(),
        ));
    }
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        ApplyError::Io(format!("--branch {name}: cannot {what}: {error}"))
    };
    let base_id = gix::ObjectId::from_hex(base.as_bytes())
        .map_err(|_| refuse(format!("the run's base commit {base:?} is not a commit id")))?;
    let commit = repo.find_commit(base_id).map_err(|_| {
        refuse(format!(
            "the run's base commit {base} is not in the repository"
        ))
    })?;
    let tree = commit
        .tree_id()
        .map_err(|error| failed("read the base commit", &error))?;
    let mut editor = repo
        .edit_tree(tree)
        .map_err(|error| failed("read the base tree", &error))?;
    for change in &selected {
        match &change.content {
            Some(content) => {
                let blob = repo
                    .write_blob(content)
                    .map_err(|error| failed("write a blob", &error))?;
                // An executable stays executable.
                let kind = match commit
                    .tree()
                    .ok()
                    .and_then(|tree| tree.lookup_entry_by_path(&change.path).ok().flatten())
                {
                    Some(entry) if entry.mode().kind() == EntryKind::BlobExecutable => {
                        EntryKind::BlobExecutable
                    }
                    _ => EntryKind::Blob,
                };
                editor
                    .upsert(change.path.as_str(), kind, blob.detach())
                    .map_err(|error| failed(&format!("add {:?}", change.path), &error))?;
            }
            None => {
                editor
                    .remove(change.path.as_str())
                    .map_err(|error| failed(&format!("remove {:?}", change.path), &error))?;
            }
        }
    }
    let new_tree = editor
        .write()
        .map_err(|error| failed("write the tree", &error))?;
    let time = gix::date::Time::now_utc().to_string();
    let corral = gix::actor::SignatureRef {
        name: "Corral".into(),
        email: "corral@localhost".into(),
        time: &time,
    };
    let made = repo
        .new_commit_as(corral, corral, message, new_tree.detach(), [base_id])
        .map_err(|error| failed("write the commit", &error))?;
    repo.reference(
        full.as_str(),
        made.id,
        gix::refs::transaction::PreviousValue::MustNotExist,
        format!("corral: {message}"),
    )
    .map_err(|error| failed("create the branch", &error))?;
    Ok(made.id.to_string())
}
