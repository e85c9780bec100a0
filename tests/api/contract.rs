//! The server holds to `openapi.yaml`: every documented operation is
//! routed, every problem type it can answer is documented.

use tokenvault::http::error::ProblemKind;

use crate::helpers::spawn_app;

/// (method, path) pairs from the `paths:` section, read by indentation.
fn operations(spec: &str) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in spec.lines() {
        if line.starts_with("paths:") {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = false;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':').trim_end_matches(' '));
        } else if let Some(m) = line.strip_prefix("    ") {
            let m = m.trim_end_matches(':');
            if ["get", "post", "delete", "put", "patch"].contains(&m) {
                ops.push((m.to_owned(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let ops = operations(&spec);
    assert!(ops.len() >= 8, "{ops:?}");
    let app = spawn_app().await;
    let token = tokenvault::vault::token::Token::random().into_string();
    for (method, path) in &ops {
        let url = format!("{}{}", app.url, path.replace("{token}", &token));
        let req = match method.as_str() {
            "get" => app.client.get(url),
            "post" => app.client.post(url),
            "delete" => app.client.delete(url),
            other => panic!("unexpected method {other}"),
        };
        let res = req.bearer_auth(app.key("admin")).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path} is not routed");
        assert!(
            !body.contains("no such route"),
            "{method} {path} is not routed"
        );
    }
}

#[test]
fn every_problem_type_is_documented() {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    for kind in ProblemKind::ALL {
        assert!(
            spec.contains(kind.slug()),
            "openapi.yaml does not document {}",
            kind.slug()
        );
    }
}
