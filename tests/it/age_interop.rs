//! The age files Custos writes decrypt with the standard `age` tool, and files the tool writes
//! decrypt with Custos.

use std::process::Command;

use custos::age::{Identity, Recipient, decrypt, encrypt};

fn tool() -> bool {
    let ok = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the age tool (Debian package age) is required in CI");
        }
        eprintln!("\n*** SKIPPED: the age tool is not installed ***\n");
    }
    ok
}

#[test]
fn custos_age_files_decrypt_with_the_age_tool_and_back() {
    if !tool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::generate();
    let key = dir.path().join("key.txt");
    std::fs::write(
        &key,
        format!("# created by a test\n{}\n", &*id.to_secret_string()),
    )
    .unwrap();
    let data: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
    let file = dir.path().join("data.age");
    std::fs::write(&file, encrypt(&[id.recipient()], &data)).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, data);

    let key2 = dir.path().join("key2.txt");
    assert!(
        Command::new("age-keygen")
            .arg("-o")
            .arg(&key2)
            .output()
            .unwrap()
            .status
            .success()
    );
    let text = std::fs::read_to_string(&key2).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .trim()
        .to_string();
    Recipient::parse(&recipient).unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, &data).unwrap();
    let enc = dir.path().join("by-tool.age");
    assert!(
        Command::new("age")
            .args(["-r", &recipient, "-o"])
            .arg(&enc)
            .arg(&plain)
            .output()
            .unwrap()
            .status
            .success()
    );
    let id2 = Identity::parse(&text).unwrap();
    assert_eq!(
        &decrypt(&id2, &std::fs::read(&enc).unwrap()).unwrap()[..],
        &data[..]
    );
}
