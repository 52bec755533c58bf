//! HTTPS as a client speaks it: a pinned certificate, the contract's error bodies, login
//! throttling, roles.

use hyper::Method;
use serde_json::{Value, json};

use crate::util::*;

#[test]
fn healthz_answers_over_tls_to_a_client_pinning_the_generated_certificate() {
    let dir = Dir::new();
    let s = dir.serve();
    let r = s.get("/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json().unwrap(),
        json!({ "status": "ok", "sealed": false })
    );
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(
        r.headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    // The certificate on disk is the one served, and carries the promised names.
    let pem = std::fs::read_to_string(dir.path().join("tls/cert.pem")).unwrap();
    let der = custos::tls::load_certs(&dir.path().join("tls/cert.pem")).unwrap();
    assert_eq!(custos::tls::fingerprint(der[0].as_ref()), s.fingerprint);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // A client pinning another certificate refuses the connection.
    let other = custos::tls::pinned_client_config([7u8; 32]).unwrap();
    let ep = custos::client::Endpoint::Https {
        addr: s.addr.clone(),
        tls: other,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(ep.request(Method::GET, "/healthz", None, None))
        .unwrap_err();
    assert!(err.to_string().contains("not the pinned one"), "{err}");
}

#[test]
fn only_tls_12_and_13_are_offered() {
    // rustls implements nothing older than TLS 1.2; check that both supported versions
    // negotiate and that a plaintext HTTP request gets no HTTP answer.
    let dir = Dir::new();
    let s = dir.serve();
    let fp = custos::tls::parse_fingerprint(&s.fingerprint).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = custos::tls::pinned_client_config_with(fp, &[version]).unwrap();
        let ep = custos::client::Endpoint::Https {
            addr: s.addr.clone(),
            tls: cfg,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(ep.request(Method::GET, "/healthz", None, None))
            .unwrap();
        assert_eq!(r.status, 200, "{version:?}");
    }
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(&s.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plaintext HTTP must not be served"
    );
}

#[test]
fn login_must_change_password_then_works_and_sets_a_secure_cookie() {
    let dir = Dir::new();
    let s = dir.serve();
    let pw = s.admin_password.clone().unwrap();
    let r = s.post(
        "/api/v1/auth/login",
        None,
        json!({ "name": "admin", "password": pw }),
    );
    assert_eq!(r.status, 200);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    for flag in [
        "custos_session=cst_",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let v = r.json().unwrap();
    assert_eq!(v["password_change_required"], true);
    let t = v["token"].as_str().unwrap();
    let r = s.get("/api/v1/users", Some(t));
    assert_eq!(
        (r.status, r.json().unwrap()["error"]["code"].clone()),
        (403, json!("password_change_required"))
    );
    // Weak or unchanged passwords are refused.
    let r = s.post(
        "/api/v1/auth/password",
        Some(t),
        json!({ "current_password": pw, "new_password": "short" }),
    );
    assert_eq!(r.status, 422);
    let r = s.post(
        "/api/v1/auth/password",
        Some(t),
        json!({ "current_password": "wrong one!!!!", "new_password": "a brand new password" }),
    );
    assert_eq!(r.status, 403);
    let token = s.admin(&pw, "a brand new password");
    assert_eq!(s.get("/api/v1/users", Some(&token)).status, 200);
    // The old token died with the password change; the one-time password no longer works.
    assert_eq!(s.get("/api/v1/me", Some(t)).status, 401);
    assert_eq!(
        s.post(
            "/api/v1/auth/login",
            None,
            json!({ "name": "admin", "password": pw })
        )
        .status,
        401
    );
    let (t2, _) = s.login("admin", "a brand new password");
    assert_eq!(
        s.call(Method::POST, "/api/v1/auth/logout", Some(&t2), None)
            .status,
        204
    );
    assert_eq!(s.get("/api/v1/me", Some(&t2)).status, 401);
}

#[test]
fn bad_requests_get_the_contract_error_body() {
    let dir = Dir::new();
    let s = dir.serve();
    let token = s.admin(s.admin_password.as_deref().unwrap(), "admin password long");
    let check = |r: custos::client::Response, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json().unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    };
    check(s.get("/api/v1/nope", None), 404, "not_found");
    check(s.get("/api/v1/users", None), 401, "unauthorized");
    check(
        s.get("/api/v1/users", Some("cst_forged")),
        401,
        "unauthorized",
    );
    let r = s.call(Method::POST, "/api/v1/auth/login", None, None);
    check(r, 400, "bad_request");
    check(
        s.post("/api/v1/auth/login", None, json!({ "name": "admin" })),
        400,
        "bad_request",
    );
    check(
        s.post(
            "/api/v1/auth/login",
            None,
            json!({ "name": "admin", "password": "x", "extra": 1 }),
        ),
        400,
        "bad_request",
    );
    check(
        s.post(
            "/api/v1/users",
            Some(&token),
            json!({ "name": "x y", "role": "agent" }),
        ),
        400,
        "bad_request",
    );
    check(
        s.post(
            "/api/v1/users",
            Some(&token),
            json!({ "name": "xy", "role": "god" }),
        ),
        400,
        "bad_request",
    );
    check(
        s.post("/api/v1/users/ghost/disable", Some(&token), json!({})),
        404,
        "not_found",
    );
    let r = s.post(
        "/api/v1/users",
        Some(&token),
        json!({ "name": "ann", "role": "agent", "password": "ann's long password" }),
    );
    assert_eq!(r.status, 201);
    check(
        s.post(
            "/api/v1/users",
            Some(&token),
            json!({ "name": "ann", "role": "agent" }),
        ),
        409,
        "conflict",
    );
    // An agent may not manage users or read the audit log.
    let (agent, _) = s.login("ann", "ann's long password");
    check(s.get("/api/v1/users", Some(&agent)), 403, "forbidden");
    check(
        s.get("/api/v1/audit/entries", Some(&agent)),
        403,
        "forbidden",
    );
    // Key custody is not offered over the network.
    check(
        s.post("/api/v1/system/seal", Some(&token), json!({})),
        404,
        "not_found",
    );
    // Nothing above changed the log's integrity.
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn repeated_failed_logins_are_throttled_and_audited() {
    let dir = Dir::new();
    let s = dir.serve();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            s.post(
                "/api/v1/auth/login",
                None,
                json!({ "name": "admin", "password": "guess guess guess" }),
            )
            .status,
        );
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert_eq!(statuses[6], 429, "{statuses:?}");
    let r = s.post(
        "/api/v1/auth/login",
        None,
        json!({ "name": "admin", "password": s.admin_password.as_deref().unwrap() }),
    );
    assert_eq!(r.status, 429, "even the right password waits out the lock");
    assert!(r.headers.contains_key("retry-after"));
    let audit = dir
        .run(&["audit", "show", "--last", "30", "--json"])
        .stdout();
    let denied = audit
        .lines()
        .filter(|l| l.contains("\"auth.login\"") && l.contains("\"denied\""))
        .count();
    // Five wrong passwords, then the first refusal of the lock window; later refusals in the same
    // window are not logged again, so that a flood cannot grow the log.
    assert_eq!(denied, 6, "failed attempts are audited:\n{audit}");
    assert!(audit.contains("\"throttled\""), "{audit}");
    assert!(
        !audit.contains("guess guess"),
        "passwords never reach the log"
    );
}

#[test]
fn audit_api_serves_entries_and_the_signed_checkpoint() {
    let dir = Dir::new();
    let s = dir.serve();
    let token = s.admin(s.admin_password.as_deref().unwrap(), "admin password long");
    let r = s.get("/api/v1/audit/entries?from=0&limit=3", Some(&token));
    let v = r.json().unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["entries"][0]["action"], "appliance.initialized");
    let r = s.get("/api/v1/audit/checkpoint", Some(&token));
    let v = r.json().unwrap();
    let verifier =
        custos::audit::note::NoteVerifier::from_vkey(v["vkey"].as_str().unwrap()).unwrap();
    let cp = verifier
        .open_checkpoint(v["note"].as_str().unwrap())
        .unwrap();
    assert_eq!(cp.size, v["size"].as_u64().unwrap());
    let sys = s.get("/api/v1/system", Some(&token)).json().unwrap();
    assert_eq!(sys["sealed"], false);
    assert_eq!(sys["tls_fingerprint_sha256"], s.fingerprint.as_str());
}

#[test]
fn audit_proofs_verify_against_the_signed_checkpoint() {
    use base64::Engine;
    let b = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let dir = Dir::new();
    let s = dir.serve();
    let token = s.admin(s.admin_password.as_deref().unwrap(), "admin password long");
    std::thread::sleep(std::time::Duration::from_secs(6));
    let cp = s
        .get("/api/v1/audit/checkpoint", Some(&token))
        .json()
        .unwrap();
    let verifier =
        custos::audit::note::NoteVerifier::from_vkey(cp["vkey"].as_str().unwrap()).unwrap();
    let signed = verifier
        .open_checkpoint(cp["note"].as_str().unwrap())
        .unwrap();
    for seq in 0..signed.size {
        let p = s
            .get(
                &format!("/api/v1/audit/proof?seq={seq}&size={}", signed.size),
                Some(&token),
            )
            .json()
            .unwrap();
        let proof: Vec<Vec<u8>> = p["proof"].as_array().unwrap().iter().map(b).collect();
        custos::audit::merkle::verify_inclusion(
            seq,
            signed.size,
            &b(&p["leaf_hash"]),
            &proof,
            &signed.root,
        )
        .unwrap();
    }
    let p = s
        .get(
            &format!("/api/v1/audit/proof?from=1&size={}", signed.size),
            Some(&token),
        )
        .json()
        .unwrap();
    assert!(p["proof"].is_array());
    assert_eq!(
        s.get("/api/v1/audit/proof?seq=99999", Some(&token)).status,
        404
    );
    assert_eq!(s.get("/api/v1/audit/proof", Some(&token)).status, 400);
}

#[test]
fn an_early_refusal_reaches_a_client_still_sending_its_body() {
    let dir = Dir::new();
    dir.init();
    let s = dir.serve();
    for i in 0..20 {
        // Refused before the body is read: a bad token, and a body over the 1 MiB limit.
        let (path, size, status) = if i % 2 == 0 {
            ("/api/v1/auth/password", 200_000, 401)
        } else {
            ("/api/v1/requests", 3 << 20, 413)
        };
        let r = raw(
            &s,
            hyper::Method::POST,
            path,
            "Bearer cst_not_a_token",
            vec![b'x'; size],
        );
        assert_eq!(r.status, status, "try {i}: {}", r.error_message());
        assert!(r.json().is_ok(), "try {i}: the error body arrived");
    }
}

/// Where sslyze is: `$CUSTOS_SSLYZE`, the venv .ci/run makes, or `sslyze` on the PATH.
fn sslyze() -> Option<String> {
    [
        std::env::var("CUSTOS_SSLYZE").unwrap_or_default(),
        "/opt/custos-ci/venv/bin/sslyze".to_string(),
        "sslyze".to_string(),
    ]
    .into_iter()
    .filter(|c| !c.is_empty())
    .find(|c| {
        std::process::Command::new(c)
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A TLS scanner nobody here wrote (sslyze, from PyPI) finds only TLS 1.2 and 1.3, with forward
/// secrecy and AEAD suites only, on strong curves, and none of the classic flaws.
#[test]
fn sslyze_finds_only_tls_1_2_and_1_3_with_strong_suites() {
    let Some(sslyze) = sslyze() else {
        crate::util::tool_present(false, "sslyze (pip install sslyze)");
        return;
    };
    let d = Dir::new();
    let s = d.serve();
    let out = d.path().join("sslyze.json");
    let run = std::process::Command::new(&sslyze)
        .arg(format!("--json_out={}", out.display()))
        .arg(&s.addr)
        .output()
        .expect("run sslyze");
    assert!(
        run.status.success() || out.exists(),
        "sslyze failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let server = &v["server_scan_results"][0];
    assert_eq!(server["connectivity_status"], "COMPLETED", "{server}");
    let r = &server["scan_result"];
    let accepted = |name: &str| -> Vec<String> {
        assert_eq!(r[name]["status"], "COMPLETED", "{name}: {}", r[name]);
        r[name]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(accepted(old), Vec::<String>::new(), "{old} must be refused");
    }
    let tls12 = accepted("tls_1_2_cipher_suites");
    assert!(!tls12.is_empty(), "TLS 1.2 is offered");
    for suite in &tls12 {
        assert!(
            suite.starts_with("TLS_ECDHE_")
                && (suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305")),
            "a TLS 1.2 suite without forward secrecy or AEAD: {suite}"
        );
    }
    assert!(
        !accepted("tls_1_3_cipher_suites").is_empty(),
        "TLS 1.3 is offered"
    );
    assert_eq!(
        r["tls_compression"]["result"]["supports_compression"],
        false
    );
    assert_eq!(
        r["heartbleed"]["result"]["is_vulnerable_to_heartbleed"],
        false
    );
    assert_eq!(
        r["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"],
        false
    );
    assert_eq!(
        r["session_renegotiation"]["result"]["is_vulnerable_to_client_renegotiation_dos"],
        false
    );
    assert_eq!(
        r["tls_fallback_scsv"]["result"]["supports_fallback_scsv"],
        true
    );
    for curve in r["elliptic_curves"]["result"]["supported_curves"]
        .as_array()
        .unwrap()
    {
        let name = curve["name"].as_str().unwrap();
        assert!(
            ["X25519", "prime256v1", "secp256r1", "secp384r1"].contains(&name),
            "curve {name}"
        );
    }
}
