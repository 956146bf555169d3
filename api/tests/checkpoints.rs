//! A step's checkpoint pointer through the API: a step pod records it and reads it back, it
//! only moves forward, and no other step or unauthorized reader sees or moves it.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::send_json as send;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use toucan_api::{ApiState, AuthError, Authenticator, Principal, router};
use toucan_core::records::{DocumentKind, Phase, RunRecord};
use toucan_store::metadata::{MetadataStore, SqliteStore};

const RUN: &str = "01JRUN";
const OTHER_RUN: &str = "01JOTHER";
const PATH: &str = "/api/v1/runs/01JRUN/steps/train/checkpoint";

/// Tokens as the cluster's authenticator maps them: `step:RUN:NODE` is a step pod of that
/// node, `reader` a user who may read every run, `stranger` one who may read none.
#[derive(Debug)]
struct Tokens;

#[async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let parts: Vec<&str> = token.split(':').collect();
        match parts.as_slice() {
            ["step", run, node] => Ok(Principal::Step {
                run_id: run.to_string(),
                node: node.to_string(),
            }),
            [name @ ("reader" | "stranger")] => Ok(Principal::Reader {
                name: name.to_string(),
                groups: Vec::new(),
            }),
            _ => Err(AuthError::Rejected("unknown token".into())),
        }
    }

    async fn may_read(&self, principal: &Principal, _pipeline: &str) -> Result<bool, AuthError> {
        Ok(matches!(principal, Principal::Reader { name, .. } if name == "reader"))
    }
}

async fn app(dir: &std::path::Path) -> (axum::Router, Arc<dyn MetadataStore>) {
    let store = SqliteStore::open(&dir.join("toucan.db")).await.unwrap();
    for id in [RUN, OTHER_RUN] {
        store
            .create_run(&RunRecord {
                id: id.to_string(),
                pipeline: "default/fmnist".to_string(),
                phase: Phase::Running,
                params: json!({}),
                spec: json!({"steps": []}),
                created_at: 1_000,
                finished_at: None,
                message: None,
            })
            .await
            .unwrap();
    }
    let store: Arc<dyn MetadataStore> = Arc::new(store);
    let app = router(ApiState {
        store: store.clone(),
        auth: Arc::new(Tokens),
        reports: None,
        gauges: None,
    });
    (app, store)
}

fn pointer(checkpoint: &str, digest: &str, incarnation: u32) -> Value {
    json!({
        "artifact": {"digest": digest, "size": 4096, "kind": "dir"},
        "checkpoint": checkpoint,
        "attempt": 1,
        "incarnation": incarnation,
    })
}

const STEP: &str = "step:01JRUN:train";

#[tokio::test]
async fn a_step_pod_records_its_checkpoint_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path()).await;

    let (status, body) = send(&app, Method::GET, PATH, STEP, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let sent = pointer("ckpt-0000000200", "sha256:aa", 0);
    let (status, body) = send(&app, Method::PUT, PATH, STEP, Some(sent.clone())).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // A retried PUT of the same pointer is accepted as well.
    let (status, _) = send(&app, Method::PUT, PATH, STEP, Some(sent.clone())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    for token in [STEP, "reader"] {
        let (status, got) = send(&app, Method::GET, PATH, token, None).await;
        assert_eq!(status, StatusCode::OK, "{token}: {got}");
        assert_eq!(got["checkpoint"], "ckpt-0000000200");
        assert_eq!(got["artifact"], sent["artifact"]);
        assert_eq!(got["incarnation"], 0);
        assert!(got["updatedAt"].as_i64().unwrap() > 0, "{got}");
    }
    let stored = store
        .get_run_document(RUN, DocumentKind::Checkpoint, "train")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["checkpoint"], "ckpt-0000000200");
}

#[tokio::test]
async fn the_pointer_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = app(dir.path()).await;
    let put = |p: Value| send(&app, Method::PUT, PATH, STEP, Some(p));

    assert_eq!(
        put(pointer("ckpt-0000000200", "sha256:aa", 0)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put(pointer("ckpt-0000000400", "sha256:bb", 1)).await.0,
        StatusCode::NO_CONTENT
    );
    // A stopped incarnation's late upload of an older step is refused and changes nothing.
    let (status, body) = put(pointer("ckpt-0000000300", "sha256:cc", 0)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("ckpt-0000000400"),
        "{body}"
    );
    let (_, got) = send(&app, Method::GET, PATH, STEP, None).await;
    assert_eq!(
        (&got["checkpoint"], &got["artifact"]["digest"]),
        (&json!("ckpt-0000000400"), &json!("sha256:bb"))
    );
    // The same step saved again (an epoch's end right after a periodic save) replaces it.
    assert_eq!(
        put(pointer("ckpt-0000000400", "sha256:dd", 1)).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, got) = send(&app, Method::GET, PATH, STEP, None).await;
    assert_eq!(got["artifact"]["digest"], "sha256:dd");
}

#[tokio::test]
async fn a_body_that_is_not_a_pointer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path()).await;
    for bad in [
        pointer("../../etc", "sha256:aa", 0),
        pointer("ckpt-12x", "sha256:aa", 0),
        pointer("latest", "sha256:aa", 0),
        json!({"checkpoint": "ckpt-1"}),
        json!({"artifact": {"digest": "sha256:aa", "size": 1, "kind": "tree"}, "checkpoint": "ckpt-1"}),
    ] {
        let (status, body) = send(&app, Method::PUT, PATH, STEP, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let request = Request::builder()
        .method(Method::PUT)
        .uri(PATH)
        .header(header::AUTHORIZATION, format!("Bearer {STEP}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        store
            .get_run_document(RUN, DocumentKind::Checkpoint, "train")
            .await
            .unwrap()
            .is_none(),
        "nothing is written"
    );
}

#[tokio::test]
async fn only_the_steps_own_pods_write_it_and_only_they_and_readers_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path()).await;
    let sent = pointer("ckpt-0000000200", "sha256:aa", 0);
    assert_eq!(
        send(&app, Method::PUT, PATH, STEP, Some(sent.clone()))
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    // Another step of the run, the same step of another run, and readers cannot write it.
    for token in [
        "step:01JRUN:eval",
        "step:01JOTHER:train",
        "reader",
        "stranger",
    ] {
        let moved = pointer("ckpt-0000009999", "sha256:ee", 5);
        let (status, body) = send(&app, Method::PUT, PATH, token, Some(moved)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}: {body}");
    }
    // Nor read it: a run the caller may not read is reported as missing.
    for token in ["step:01JRUN:eval", "step:01JOTHER:train", "stranger"] {
        let (status, body) = send(&app, Method::GET, PATH, token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{token}: {body}");
        assert!(!body.to_string().contains("sha256:aa"), "{token}: {body}");
    }
    let (status, _) = send(&app, Method::GET, PATH, "not-a-token", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stored = store
        .get_run_document(RUN, DocumentKind::Checkpoint, "train")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["artifact"]["digest"], "sha256:aa");

    // A pod of the step of a run that does not exist finds nothing.
    let missing = "/api/v1/runs/01JNONE/steps/train/checkpoint";
    let (status, _) = send(&app, Method::GET, missing, "step:01JNONE:train", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, Method::PUT, missing, "step:01JNONE:train", Some(sent)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
