//! `pgoutbox dashboard`: refuses what is unsafe before it starts, and
//! serves the dashboard, asking for the token when one is set.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use pgoutbox::testing::TestDatabase;

fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = assert_cmd::Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("DATABASE_URL")
        .env_remove("PGOUTBOX_SCHEMA")
        .env_remove("PGOUTBOX_DASHBOARD__TOKEN")
        .args([
            "dashboard",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn refuses_to_listen_beyond_loopback_or_act_without_a_token() {
    let err = refused(&["--listen", "0.0.0.0:7480"], &[]);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:7480 without an access token")
            && err.contains("PGOUTBOX_DASHBOARD__TOKEN"),
        "{err}"
    );
    let err = refused(&["--allow-actions"], &[]);
    assert!(
        err.contains("`--allow-actions` needs an access token"),
        "{err}"
    );
    // A blank token is no token.
    let err = refused(
        &["--listen", "[::]:7480"],
        &[("PGOUTBOX_DASHBOARD__TOKEN", " ")],
    );
    assert!(err.contains("without an access token"), "{err}");
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str, bearer: Option<&str>) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test]
async fn serves_the_dashboard_behind_its_token() {
    let db = TestDatabase::new().await.unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::cargo_bin("pgoutbox")
        .unwrap()
        .env_remove("PGOUTBOX_SCHEMA")
        .env("DATABASE_URL", db.url())
        .env("PGOUTBOX_DASHBOARD__TOKEN", "cli-token")
        .args([
            "dashboard",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-actions",
            "--actor",
            "bob",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the dashboard did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let anonymous = http_get(port, "/", None);
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(anonymous.contains("name=\"token\""));
    let signed = http_get(port, "/", Some("cli-token"));
    assert!(signed.starts_with("HTTP/1.1 200"), "{signed}");
    assert!(signed.contains("<h1>Overview</h1>"));
    assert!(
        signed
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
}
