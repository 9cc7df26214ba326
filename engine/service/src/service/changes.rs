//! A finished run's changeset: review (`diff`) and apply, for the CLI and the server alike.

use std::path::PathBuf;

use corral_host::tools::{self, Applied, StagedChange};
use corral_store::StoreError;

use super::RunService;
use crate::error::ServiceError;
use crate::spec::{RootRef, RunSpec};

/// A run's staged changes and the directory they apply to.
pub struct RunChanges {
    /// The run's full id.
    pub id: String,
    /// The run's root directory.
    pub root: PathBuf,
    /// What the run was granted to write.
    pub grant: tools::WriteGrant,
    /// Whether the run has finished (its changeset is complete).
    pub finished: bool,
    /// What the run staged, sorted by path.
    pub changes: Vec<StagedChange>,
}

impl RunService {
    /// The changes run `id` staged, and its root. A run still running has none recorded yet.
    pub fn run_changes_of(
        &self,
        scope: Option<&str>,
        id: &str,
    ) -> Result<RunChanges, ServiceError> {
        let id = self.resolve(scope, id)?;
        let store = self.store()?;
        let detail = store.run_detail(&id)?;
        let spec_text = detail
            .spec
            .ok_or_else(|| ServiceError::NotResumable(id.clone()))?;
        let spec: RunSpec = serde_json::from_str(&spec_text).map_err(|error| {
            ServiceError::Store(StoreError::Corrupt(format!(
                "the spec of run {id}: {error}"
            )))
        })?;
        let root = self.root_dir(&spec)?.ok_or_else(|| {
            ServiceError::Invalid(format!(
                "run {id} had no root directory, so it has no changes to review or apply"
            ))
        })?;
        let changes = store.changes(&id)?;
        let grant = tools::WriteGrant::parse(&spec.limits.allow_write).map_err(|error| {
            ServiceError::Store(StoreError::Corrupt(format!(
                "the spec of run {id}: {error}"
            )))
        })?;
        let finished = self.settled_status(&detail.summary)?.is_final();
        Ok(RunChanges {
            id,
            root,
            grant,
            finished,
            changes,
        })
    }

    /// A unified diff of what run `id` staged against its root as the root is now.
    pub fn diff(&self, scope: Option<&str>, id: &str) -> Result<String, ServiceError> {
        let run = self.run_changes_of(scope, id)?;
        unfinished(&run)?;
        Ok(tools::diff(&run.root, &run.changes)?)
    }

    /// Writes what run `id` staged (only `paths`, when given) into its root; refuses, writing
    /// nothing, when any of those files changed in the root since the run staged it.
    pub fn apply(
        &self,
        scope: Option<&str>,
        id: &str,
        paths: &[String],
    ) -> Result<Applied, ServiceError> {
        let run = self.run_changes_of(scope, id)?;
        unfinished(&run)?;
        if run.changes.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "run {} staged no changes, so there is nothing to apply (a run stages writes \
                 only when it is granted --allow-write)",
                run.id
            )));
        }
        Ok(tools::apply(&run.root, &run.changes, paths, &run.grant)?)
    }

    /// Commits what run `id` staged (only `paths`, when given) on a new branch `name` of its
    /// root's repository, on the commit HEAD named when the run started; the working tree, the
    /// index and HEAD stay as they are. Returns the new commit's id.
    pub fn apply_branch(
        &self,
        scope: Option<&str>,
        id: &str,
        paths: &[String],
        name: &str,
    ) -> Result<String, ServiceError> {
        let run = self.run_changes_of(scope, id)?;
        unfinished(&run)?;
        if run.changes.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "run {} staged no changes, so there is nothing to commit",
                run.id
            )));
        }
        let base = self.store()?.base_commit(&run.id)?.ok_or_else(|| {
            ServiceError::Invalid(format!(
                "run {} recorded no base commit (its root was not a git repository Corral could \
                 read when it ran), so there is nothing to branch from: apply it to the working \
                 tree instead (without --branch)",
                run.id
            ))
        })?;
        let count = if paths.is_empty() {
            run.changes.len()
        } else {
            paths.len()
        };
        let message = format!(
            "corral run {}: {count} file{}",
            run.id,
            if count == 1 { "" } else { "s" }
        );
        Ok(tools::commit_branch(
            &run.root,
            &run.changes,
            paths,
            &run.grant,
            name,
            &base,
            &message,
        )?)
    }

    /// The directory a spec's root names: its path, or for a tenant the operator's directory.
    fn root_dir(&self, spec: &RunSpec) -> Result<Option<PathBuf>, ServiceError> {
        match &spec.root {
            None => Ok(None),
            Some(RootRef::Path(dir)) => Ok(Some(dir.clone())),
            Some(RootRef::Named(name)) => {
                let tenant = self.tenant_of(spec)?;
                tenant
                    .as_ref()
                    .and_then(|tenant| tenant.settings.roots.get(name))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        ServiceError::Invalid(format!(
                            "the run's root '{name}' is no longer configured for its tenant"
                        ))
                    })
            }
        }
    }
}

/// A run still running has no complete changeset yet.
fn unfinished(run: &RunChanges) -> Result<(), ServiceError> {
    if run.finished {
        return Ok(());
    }
    Err(ServiceError::Invalid(format!(
        "run {} has not finished, so its changes are not recorded yet: wait for it to end \
         (`corral runs watch {}`), then review or apply them",
        run.id, run.id
    )))
}
