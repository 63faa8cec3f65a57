//! The OpenAPI 3.1 description of this API at `/openapi.json`, generated from the handlers'
//! own annotations and the request and response types they use (utoipa), so it cannot drift
//! from the code; a test validates it and calls every operation it lists.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{console, events, jobs, notifications, play, stream, thumbnail, uploads};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tcoder",
        description = "Self-hosted video transcoding: create a job, upload its source to the \
                       presigned URL, follow it, fetch the renditions. Errors are \
                       application/problem+json with a stable `code`. Events on NATS are \
                       described by /asyncapi.yaml.",
        license(name = "Apache-2.0")
    ),
    paths(
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::cancel,
        jobs::delete,
        uploads::get_upload,
        uploads::complete_upload,
        events::stream,
        thumbnail::thumbnail,
        stream::hls,
        jobs::webhook_secret,
        play::play,
        notifications::r2,
        notifications::s3,
        super::asyncapi,
        document,
        console::index,
        console::asset,
    ),
    modifiers(&Security, &DistinctOperationIds),
    tags(
        (name = "jobs", description = "Create, read, list, follow and cancel jobs"),
        (name = "webhooks", description = "Verifying tcoder's signed webhooks"),
        (name = "delivery", description = "Outputs through signed playback URLs"),
        (name = "notifications", description = "Object-created notifications from the bucket"),
        (name = "contracts", description = "Machine-readable descriptions"),
        (name = "console", description = "The web console"),
    )
)]
struct ApiDoc;

/// The two bearer schemes: tenants' API keys, and the store's notification secret.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "api_key",
            bearer("A tenant's API key (`tcoder keys create`; `tcoder up` writes .data/api-key)"),
        );
        components.add_security_scheme(
            "notification_secret",
            bearer("`[ingest] notification_secret`, shared with the store's notifier"),
        );
    }
}

/// One handler serves GET and HEAD of a playback URL; operation ids must be unique, so the
/// HEAD operation gets its own.
struct DistinctOperationIds;

impl utoipa::Modify for DistinctOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let (Some(get), Some(head)) = (&item.get, &mut item.head)
                && head.operation_id == get.operation_id
            {
                head.operation_id = head.operation_id.as_ref().map(|id| format!("{id}_head"));
            }
        }
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the document serializes"));

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "get_openapi", tag = "contracts",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub(crate) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_the_views_and_errors_the_handlers_use() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let schemas = &doc["components"]["schemas"];
        // The request's fields (flattened) and the job's own.
        let [spec, job] = schemas["JobView"]["allOf"].as_array().unwrap().as_slice() else {
            panic!("{}", schemas["JobView"])
        };
        assert_eq!(spec["$ref"], "#/components/schemas/JobSpec");
        for field in ["id", "status", "origin", "attempts", "created_at"] {
            assert!(job["properties"].get(field).is_some(), "JobView.{field}: {job}");
            assert!(job["required"].as_array().unwrap().contains(&field.into()), "{field}");
        }
        let problem = &schemas["Problem"]["properties"];
        assert!(problem.get("code").is_some() && problem.get("type").is_some(), "{problem}");
        let create = &doc["paths"]["/v1/jobs"]["post"];
        assert_eq!(create["security"][0]["api_key"], serde_json::json!([]));
        assert!(
            create["responses"]["422"]["content"].get("application/problem+json").is_some(),
            "{create}"
        );
    }

    /// What a generated client is made of: a method per operation, named by its id, and a
    /// type per field. Bare ids (`list`, `get`) made methods nobody could tell apart; request
    /// fields typed `string` lost the enums users need most.
    #[test]
    fn operations_have_distinct_telling_ids_and_request_fields_their_enums() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let mut ids: Vec<&str> = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                ids.extend(operation["operationId"].as_str());
            }
        }
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
        for id in &ids {
            assert!(id.contains('_'), "`{id}` names no object: {ids:?}");
        }
        for id in ["create_job", "get_job", "list_jobs", "cancel_job", "stream_job_events"] {
            assert!(ids.contains(&id), "{id}: {ids:?}");
        }
        let request = &doc["components"]["schemas"]["JobRequest"]["properties"];
        for (field, schema) in [
            ("preset", "Preset"),
            ("qualities", "Qualities"),
            ("video_codec", "VideoCodec"),
            ("audio_codec", "AudioCodec"),
            ("hdr", "HdrMode"),
            ("priority", "Priority"),
            ("upload", "UploadMethod"),
        ] {
            let text = request[field].to_string();
            assert!(text.contains(&format!("#/components/schemas/{schema}")), "{field}: {text}");
        }
        let outputs = request["outputs"].to_string();
        assert!(outputs.contains("#/components/schemas/OutputKind"), "{outputs}");
        let presets = doc["components"]["schemas"]["Preset"].to_string();
        assert!(presets.contains("web-optimized") && presets.contains("hls"), "{presets}");
    }
}
