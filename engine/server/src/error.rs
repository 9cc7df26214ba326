//! [`ApiError`]: every failure the API answers, rendered once as `{code, message, hint}` with a
//! status that tells the kinds apart. Nothing a client sends makes the server answer 500 or panic.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use corral_host::tools::ApplyError;
use corral_service::{ErrorKind, ServiceError};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// More fields (a quota's use, a plan).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            hint: None,
            extra: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 Not Found, worded the same for what does not exist and what the caller may not see.
    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id '{id}'"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        });
        if let (Some(extra), Some(object)) = (self.extra, body.as_object_mut())
            && let Some(fields) = extra.as_object()
        {
            for (key, value) in fields {
                object.insert(key.clone(), value.clone());
            }
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        match &error {
            ServiceError::UnknownRun(id) => return ApiError::not_found("run", id),
            ServiceError::UnknownWorkflow(hash) => {
                return ApiError::not_found("workflow", hash)
                    .hint("upload it with PUT /v1/workflows; it answers the hash");
            }
            ServiceError::Quota(quota) => {
                let mut answer =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                answer.hint = quota.frees.clone();
                answer.extra = Some(json!({
                    "quota": quota.quota,
                    "used": quota.used,
                    "limit": quota.limit,
                }));
                return answer;
            }
            ServiceError::OverBudget { budget, plan } => {
                let mut answer = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "over_budget", message)
                    .hint("raise budget_tokens, make the workflow smaller, or pass \"force\": true (the budget still stops it)");
                answer.extra = Some(json!({ "budget_tokens": budget, "plan": plan }));
                return answer;
            }
            ServiceError::Script(_) => {
                return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "script_invalid", message)
                    .hint(
                        "fix the script at the line and column named; `corral check` says the same",
                    );
            }
            ServiceError::Commands(refused) => {
                let mut answer = ApiError::bad_request("command_not_allowed", message).hint(
                    "leave the commands out of limits.allow_run, or ask the operator to add them \
                     to the tenant's `commands`",
                );
                answer.extra = Some(json!({ "commands": refused.refused }));
                return answer;
            }
            ServiceError::Apply(ApplyError::Conflicts(paths)) => {
                // Worded for the API (the service's message names the CLI's flags).
                let mut answer = ApiError::new(
                    StatusCode::CONFLICT,
                    "changes_conflict",
                    format!(
                        "the root changed since the run staged {} (nothing was applied): {}",
                        if paths.len() == 1 {
                            "this file"
                        } else {
                            "these files"
                        },
                        paths.join(", ")
                    ),
                )
                .hint(
                    "apply only the other paths ({\"paths\": [...]}), or run the workflow again \
                     on the root as it is now",
                );
                answer.extra = Some(json!({ "conflicts": paths }));
                return answer;
            }
            ServiceError::Apply(ApplyError::NotStaged(_)) => {
                return ApiError::bad_request("not_staged", message)
                    .hint("name paths that GET /v1/runs/{id}/diff shows, or none for all");
            }
            ServiceError::Apply(ApplyError::Io(_)) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "apply_failed", message)
                    .hint("the server could not write the tenant's root; tell the operator");
            }
            ServiceError::Load(_) => {
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "component_refused",
                    message,
                );
            }
            _ => {}
        }
        match error.kind() {
            ErrorKind::Invalid => ApiError::bad_request("invalid", message),
            ErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ErrorKind::OverBudget => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "over_budget", message)
            }
            ErrorKind::Quota => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
            }
            ErrorKind::Host => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).hint(
                    "the server's store failed; try again, and tell the operator if it persists",
                )
            }
        }
    }
}
