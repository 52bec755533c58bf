//! The OpenAPI document at /api/v1/openapi.json: it names every route the router serves (with its
//! methods), and a client nobody here wrote, schemathesis, finds no disagreement between it and
//! the running server.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// Every (path, method) routed in src/web/*.rs, read from the `.route(...)` calls.
fn routed() -> BTreeSet<(String, String)> {
    web_sources()
        .iter()
        .flat_map(|(_, src)| route_calls(src))
        .map(|(method, path, _)| (path, method))
        .collect()
}

#[test]
fn the_document_describes_every_route_and_is_served() {
    let dir = Dir::new();
    dir.init();
    let s = dir.serve();
    let r = s.get("/api/v1/openapi.json", None);
    assert_eq!(r.status, 200);
    let spec: Value = r.json().unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (path, method) in routed() {
        let html = !(path.starts_with("/api/") || path == "/healthz" || path == "/metrics");
        // Key custody stays on the Unix socket and is documented in docs/security.md.
        let local = path.starts_with("/api/v1/system/") && path != "/api/v1/system";
        if html || local {
            continue;
        }
        if paths.get(&path).and_then(|p| p.get(&method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from src/web/openapi.json: {missing:#?}"
    );
    // Every operation is named and tagged, and every error it lists uses the shared body.
    let mut ids = HashMap::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete"].contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                ids.insert(id.to_string(), path.clone()).is_none(),
                "operationId {id} twice"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path} has no tag"
            );
            for (code, res) in op["responses"].as_object().unwrap() {
                // /healthz answers 503 with its own health body while sealed, by design.
                if (code.starts_with('4') || code.starts_with('5')) && path != "/healthz" {
                    // A shared response is looked up in components.responses.
                    let res = match res["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/responses/"))
                    {
                        Some(name) => &spec["components"]["responses"][name],
                        None => res,
                    };
                    let text = res.to_string();
                    assert!(
                        text.contains("Error"),
                        "{method} {path} {code} does not use the Error schema: {text}"
                    );
                }
            }
        }
    }
}

/// Where schemathesis is: `$CUSTOS_SCHEMATHESIS`, the venv .ci/run makes, or `st` on the PATH.
fn schemathesis() -> Option<String> {
    let candidates = [
        std::env::var("CUSTOS_SCHEMATHESIS").unwrap_or_default(),
        "/opt/custos-ci/venv/bin/st".to_string(),
        "st".to_string(),
    ];
    candidates.into_iter().filter(|c| !c.is_empty()).find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn schemathesis_finds_the_server_true_to_its_document() {
    let st = schemathesis();
    if !tool_present(
        st.is_some(),
        "schemathesis (pip install schemathesis; .ci/run puts it in /opt/custos-ci/venv)",
    ) {
        return;
    }
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(st.unwrap())
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("https://{}/api/v1/openapi.json", s.addr),
            "--tls-verify",
            "false",
            "--header",
            &format!("Authorization: Bearer {admin}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "10",
            // One worker: with two, Hypothesis inside schemathesis sometimes crashes on its own.
            "--workers",
            "1",
            "--max-time",
            "240",
            // Logging out would revoke the token the run uses; the event streams never end
            // (they are checked elsewhere); a fuzzed webhook would make the appliance connect to
            // arbitrary hosts, and tests reach loopback only.
            "--exclude-operation-id-regex",
            "^(logout|monitorStream|queueStream|createWebhook|retryDelivery)$",
            "--request-timeout",
            "30",
            "--no-color",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    // The server is still whole after the fuzzing.
    assert_eq!(s.get("/healthz", None).status, 200);
    dir.run(&["audit", "verify"]).ok();
}
