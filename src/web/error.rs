//! The one place where failures become HTTP status codes and the contract's error body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppError;
use crate::audit::AuditError;
use crate::auth::AuthError;
use crate::keys::KeyError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first: send a bearer token or the session cookie",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn sealed() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the appliance is sealed; an administrator must unseal it (custos unseal)",
        )
    }
    /// The data directory's file system is (nearly) full: nothing was changed.
    pub fn storage_full(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", message)
    }
    pub fn throttled(wait: std::time::Duration) -> Self {
        let s = wait.as_secs().max(1);
        Self {
            retry_after: Some(s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed attempts; try again in {s} s"),
            )
        }
    }
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    pub fn into_response_value(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut res = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::conflict(m),
            StoreError::NotFound(m) => Self::not_found(format!("{m} not found")),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DiskFull =>
            {
                tracing::error!(error = %f, "the database could not be written: its disk is full");
                Self::storage_full(
                    "the appliance's storage is full; nothing was changed (an administrator must free space)",
                )
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::SystemIoFailure =>
            {
                tracing::error!(error = %f, "the database could not be written: I/O error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_error",
                    "the appliance could not write to its storage (I/O error); nothing was changed, and the server log has the details",
                )
            }
            other => Self::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            AuthError::Throttled(d) => Self::throttled(d),
            AuthError::WeakPassword(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", m)
            }
            AuthError::Store(s) => s.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(s) => s.into(),
            other => Self::internal(other),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Store(s) => s.into(),
            other => Self::internal(other),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Key(KeyError::WrongPassphrase) => Self::new(
                StatusCode::FORBIDDEN,
                "wrong_passphrase",
                "wrong passphrase",
            ),
            AppError::Key(k @ (KeyError::WeakPassphrase | KeyError::PassphraseNeeded)) => {
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_passphrase",
                    k.to_string(),
                )
            }
            AppError::Refused(m) => Self::conflict(m),
            AppError::Throttled(d) => Self::throttled(d),
            AppError::Store(s) => s.into(),
            other => Self::internal(other),
        }
    }
}
