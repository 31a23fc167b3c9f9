//! The binary as a user runs it: config errors, key hashing, and provider keys kept out of logs.

// Test code: a failed unwrap is a failed test, also in helpers outside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_full_gateway");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_errors_exit_non_zero_naming_file_key_and_problem() {
    let cases = [
        (
            "bad-type",
            "[server]\nmax_body_bytes = \"lots\"\n",
            "max_body_bytes",
        ),
        (
            "unknown-provider",
            "[[providers]]\nname = \"p\"\nkind = \"mock\"\n[[models]]\nname = \"m\"\nprovider = \"nope\"\n",
            "models[0] (name = \"m\").provider: unknown provider \"nope\"",
        ),
        (
            "typo",
            "[[providers]]\nname = \"p\"\nkind = \"mock\"\nbase_ulr = \"x\"\n",
            "base_ulr",
        ),
        (
            "metadata",
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://169.254.169.254/v1\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\n",
            "link-local",
        ),
        (
            "missing-key",
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\napi_key_env = \"RAMPART_CLI_TEST_UNSET_VAR\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\n",
            "RAMPART_CLI_TEST_UNSET_VAR is not set",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_config(name, text);
        let out = Command::new(BIN)
            .args([
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("RAMPART_CLI_TEST_UNSET_VAR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(path.to_str().unwrap()), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/rampart.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rampart.toml"));
}

#[test]
fn hash_key_prints_the_digest() {
    let out = Command::new(BIN)
        .args(["--hash-key", "sk-abc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        rampart_core::VirtualKeys::digest("sk-abc")
    );
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn post(addr: SocketAddr, body: &str, auth: &str) -> String {
    http(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn provider_keys_never_reach_logs_or_responses() {
    const KEY: &str = "sk-live-provider-key-4f9a2c";
    // A simulated provider over HTTP that demands the key, in its own runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rampart_mock::MockProvider::new(rampart_mock::MockConfig {
        require_api_key: Some(KEY.into()),
        ..Default::default()
    });
    let server = rt
        .block_on(mock.serve("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let wrong = free_port();
    let config = write_config(
        "keys",
        &format!(
            r#"
[[providers]]
name = "real"
kind = "openai"
base_url = "{}"
api_key_env = "RAMPART_CLI_KEY"

[[providers]]
name = "down"
kind = "openai"
base_url = "http://{wrong}/v1"
api_key_env = "RAMPART_CLI_KEY"

[[models]]
name = "good"
provider = "real"

[[models]]
name = "unreachable"
provider = "down"
"#,
            server.base_url()
        ),
    );
    let listen = free_port();
    let mut child = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen.to_string(),
        ])
        .env("RAMPART_CLI_KEY", KEY)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Collect every log line; signal once the gateway says it is listening.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening on") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("gateway started");
    let mut responses = Vec::new();
    let ok = post(
        listen,
        r#"{"model":"good","messages":[{"role":"user","content":"hi"}]}"#,
        "client-key",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    responses.push(ok);
    responses.push(post(
        listen,
        r#"{"model":"good","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        "client-key",
    ));
    responses.push(post(
        listen,
        r#"{"model":"unreachable","messages":[{"role":"user","content":"hi"}]}"#,
        "client-key",
    ));
    responses.push(post(
        listen,
        r#"{"model":"nope","messages":[]}"#,
        "client-key",
    ));
    mock.set_fault(
        None,
        rampart_mock::Fault {
            status: Some(http::StatusCode::INTERNAL_SERVER_ERROR),
            failure_rate: 1.0,
            ..Default::default()
        },
    );
    responses.push(post(
        listen,
        r#"{"model":"good","messages":[{"role":"user","content":"hi"}]}"#,
        "client-key",
    ));
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let stdout = reader.join().unwrap().join("\n");
    let logs = format!("{stdout}\n{stderr}");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(!logs.contains(KEY), "provider key in logs");
    for r in &responses {
        assert!(!r.contains(KEY), "provider key in a response: {r}");
        assert!(
            !r.contains(&wrong.to_string()),
            "upstream address in a response: {r}"
        );
    }
    drop(server);
}
