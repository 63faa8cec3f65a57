//! The HTTP API's contract in one place: the views the routes write and the OpenAPI document
//! describes, and the typed [`Client`] that reads them.

mod client;
mod views;

pub use self::client::{Client, ClientError, JobsQuery, UploadReport};
pub use self::views::{
    CaptionUploadView, CreatedView, JobPageView, JobView, MultipartUploadView, NotificationOutcome,
    NotificationView, PartUploadView, Problem, SourceView, UploadView, UploadedPartView,
    WebhookSecretView,
};
