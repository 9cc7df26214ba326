//! Where a run meets its workflow's policy manifest and its tenant's trusted keys: the one
//! enforcement point every front end goes through (`plan`, `start`, `resume`, uploads).

use corral_host::artifact::minisign::PublicKey;
use corral_host::artifact::signed::{Seal, SignatureError, check_signature};

use super::RunService;
use crate::error::ServiceError;
use crate::spec::RunSpec;

impl RunService {
    /// `spec` bounded by its workflow's manifest: each limit the smallest of the spec's (a
    /// tenant's run is already capped by its quotas) and the manifest's, the grants narrowed to
    /// the manifest's, and a provider or model it lacks refused before anything runs. A tenant
    /// with trusted keys runs only workflows one of them signed.
    pub(super) fn bounded(&self, mut spec: RunSpec) -> Result<RunSpec, ServiceError> {
        let workflow = self.component(
            spec.tenant.as_deref(),
            &spec.workflow.name,
            &spec.workflow.component,
        )?;
        self.check_trusted(spec.tenant.as_deref(), workflow.name(), workflow.seal())?;
        if let Some(policy) = workflow.policy() {
            let provider = spec
                .provider
                .as_deref()
                .unwrap_or_else(|| self.inner.config.default_provider());
            policy
                .check_provider(provider, spec.model.as_deref())
                .map_err(|error| {
                    ServiceError::Invalid(format!(
                        "{} refuses this run: {error} (run it with a granted provider and model, or rebuild it with a manifest that grants them)",
                        spec.workflow.name
                    ))
                })?;
            spec.limits = policy.bound(&spec.limits);
        }
        Ok(spec)
    }

    /// Refuses the workflow `workflow` (its seal read from its bytes) for `tenant` unless one
    /// of the tenant's trusted keys signed it (a tenant without trusted keys takes any workflow).
    pub(super) fn check_trusted(
        &self,
        tenant: Option<&str>,
        workflow: &str,
        seal: Option<&Seal>,
    ) -> Result<(), ServiceError> {
        let Some(name) = tenant else {
            return Ok(());
        };
        let Some(tenant) = self.tenancy()?.tenant(name)? else {
            return Ok(());
        };
        let keys = &tenant.settings.trusted_keys;
        if keys.is_empty() {
            return Ok(());
        }
        let trusted = keys
            .iter()
            .map(|key| PublicKey::parse(key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                ServiceError::Invalid(format!(
                    "tenant {name}'s trusted_keys in corral.toml: {error} (ask the operator to fix it)"
                ))
            })?;
        check_signature(seal, &trusted).map(|_| ()).map_err(|error| {
            let fix = match error {
                SignatureError::Unsigned => {
                    "sign it with `corral sign WORKFLOW.wasm --policy policy.toml --key KEY` and upload the signed file"
                }
                SignatureError::Tampered(_) => {
                    "upload the file exactly as it was signed, or sign it again"
                }
                SignatureError::Untrusted { .. } => {
                    "sign it with a trusted key, or ask the operator to add its public key to trusted_keys of the tenant in corral.toml"
                }
            };
            ServiceError::Invalid(format!(
                "{workflow} is refused for tenant {name}, which requires signed workflows: {error}; {fix}"
            ))
        })
    }
}
