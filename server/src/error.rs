//! Typed errors and the one place that maps them (and every other failed request) to the JSON
//! error body `{"error": "<code>", "message": "<text>"}` and its HTTP status.

use std::marker::PhantomData;

use poem::{Response, http::StatusCode};
use poem_openapi::{
    ApiResponse, Object, ResponseContent,
    payload::Json,
    registry::{MetaResponse, MetaResponses, Registry},
};

use crate::{bus::BusError, store::StoreError};

/// What went wrong, in the terms of the API.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no client is registered with this id")]
    UnknownClient,
    #[error("the name `{0}` is already registered")]
    NameTaken(String),
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("message is {size} bytes; the limit is {limit}")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("request body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::UnknownClient | AppError::NameTaken(_) | AppError::TopicExists(_) => {
                StatusCode::CONFLICT
            }
            AppError::TopicNotFound(_) => StatusCode::NOT_FOUND,
            AppError::MessageTooLarge { .. } | AppError::PayloadTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code; also used in WebSocket error frames.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Forbidden(_) => "forbidden",
            AppError::UnknownClient => "unknown_client",
            AppError::NameTaken(_) => "name_taken",
            AppError::TopicNotFound(_) => "topic_not_found",
            AppError::TopicExists(_) => "topic_exists",
            AppError::MessageTooLarge { .. } => "message_too_large",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::Unavailable(_) => "unavailable",
        }
    }

    /// Where the id is the credential (subscribe, WebSocket upgrade), an unknown id is a refusal
    /// (403), not a conflict.
    pub fn unknown_client_forbidden(self) -> Self {
        match self {
            AppError::UnknownClient => AppError::Forbidden("unknown client id"),
            other => other,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.code().to_owned(), message: self.to_string() }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UnknownClient => AppError::UnknownClient,
            StoreError::NameTaken(name) => AppError::NameTaken(name),
            StoreError::TopicNotFound(name) => AppError::TopicNotFound(name),
            StoreError::TopicExists(name) => AppError::TopicExists(name),
            StoreError::Unavailable(why) => {
                AppError::Unavailable(format!("store unavailable: {why}"))
            }
        }
    }
}

impl From<BusError> for AppError {
    fn from(err: BusError) -> Self {
        AppError::Unavailable(err.to_string())
    }
}

impl poem::error::ResponseError for AppError {
    fn status(&self) -> StatusCode {
        AppError::status(self)
    }

    fn as_response(&self) -> Response {
        json_error(self.status(), &self.body())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Object, serde::Deserialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `forbidden`, `name_taken`, `topic_not_found`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

fn json_error(status: StatusCode, body: &ErrorBody) -> Response {
    let json = serde_json::json!({"error": body.error, "message": body.message});
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(json.to_string())
}

/// Turns any error that reached the top of the app into the JSON error body: our own
/// [`AppError`]s keep their code; poem's (bad JSON, bad path parameter, unknown route, refused
/// CORS origin, body over the size limit, ...) get a code from their status.
pub fn error_response(err: poem::Error) -> Response {
    if let Some(app) = err.downcast_ref::<AppError>() {
        return json_error(app.status(), &app.body());
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    // poem-openapi names path parameters by position internally (`param0`); keep the reason.
    if let Some(path) = err.downcast_ref::<poem_openapi::error::ParsePathError>() {
        let message = format!("invalid path parameter: {}", path.reason);
        return json_error(status, &ErrorBody { error: "bad_request".to_owned(), message });
    }
    let message = match err.to_string() {
        text if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text,
    };
    json_error(status, &ErrorBody { error: code.to_owned(), message })
}

/// The error statuses one operation documents, with their descriptions.
pub trait ErrorStatuses: Send + Sync + 'static {
    const STATUSES: &'static [(u16, &'static str)];
}

/// The error half of an operation's result: any [`AppError`], documented in the spec with the
/// statuses `S` lists. It becomes a `poem::Error`, which [`error_response`] renders.
pub struct ApiError<S>(pub AppError, PhantomData<S>);

impl<S> From<AppError> for ApiError<S> {
    fn from(err: AppError) -> Self {
        ApiError(err, PhantomData)
    }
}

impl<S> From<StoreError> for ApiError<S> {
    fn from(err: StoreError) -> Self {
        ApiError(err.into(), PhantomData)
    }
}

impl<S> From<ApiError<S>> for poem::Error {
    fn from(err: ApiError<S>) -> Self {
        poem::Error::from(err.0)
    }
}

impl<S: ErrorStatuses> ApiResponse for ApiError<S> {
    fn meta() -> MetaResponses {
        let responses = S::STATUSES
            .iter()
            .map(|&(status, description)| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: <Json<ErrorBody> as ResponseContent>::media_types(),
                headers: vec![],
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        <Json<ErrorBody> as ResponseContent>::register(registry);
    }
}

/// Declares the error statuses of an operation: `error_statuses!(Name: 403 "why", 409 "why");`.
macro_rules! error_statuses {
    ($(#[$meta:meta])* $name:ident: $($status:literal $description:literal),+ $(,)?) => {
        $(#[$meta])*
        pub struct $name;
        impl $crate::error::ErrorStatuses for $name {
            const STATUSES: &'static [(u16, &'static str)] = &[$(($status, $description)),+];
        }
    };
}
pub(crate) use error_statuses;
