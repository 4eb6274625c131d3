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
    // A blank token is refused, even on loopback: not an open dashboard.
    let err = refused(&[], &[("PGOUTBOX_DASHBOARD__TOKEN", " ")]);
    assert!(err.contains("is set but blank"), "{err}");
    // Issue 23: a short token is refused at start, with the options' error.
    let err = refused(&[], &[("PGOUTBOX_DASHBOARD__TOKEN", "short-token")]);
    assert!(
        err.contains("the dashboard token of `dashboard` has only 11 character(s): a token needs at least 16 characters"),
        "{err}"
    );
    let err = refused(
        &[],
        &[("PGOUTBOX_DASHBOARD__OPERATORS__ALICE", "alice-short")],
    );
    assert!(err.contains("the dashboard token of `alice`"), "{err}");
    // Issue 23: listening on every address answers to any `Host`: the
    // names must be listed.
    let err = refused(
        &["--listen", "0.0.0.0:7480"],
        &[("PGOUTBOX_DASHBOARD__TOKEN", "a-long-enough-token")],
    );
    assert!(err.contains("dashboard.allowed_hosts"), "{err}");
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
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    http(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
        ),
    )
}

/// Sends `request` as it is (as curl would) and reads the whole answer.
fn http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A sign-in form posted from the dashboard's own page.
fn sign_in(port: u16, token: &str) -> String {
    let body = format!("token={token}");
    http(
        port,
        &format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
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
        .env("PGOUTBOX_DASHBOARD__TOKEN", "cli-token-0123456789")
        .env(
            "PGOUTBOX_DASHBOARD__OPERATORS__CAROL",
            "carol-token-0123456789",
        )
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
    let signed = http_get(port, "/", Some("cli-token-0123456789"));
    assert!(signed.starts_with("HTTP/1.1 200"), "{signed}");
    assert!(signed.contains("<h1>Overview</h1>"));
    assert!(
        signed
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
    // Issue 23: a named operator signs in with their own token.
    let carol = http_get(port, "/", Some("carol-token-0123456789"));
    assert!(carol.starts_with("HTTP/1.1 200"), "{carol}");
    // Issue 23: another name for this address (DNS rebinding) is refused;
    // `localhost` with the port is this address too.
    let rebound = http(
        port,
        "GET / HTTP/1.1\r\nHost: attacker.example\r\nAuthorization: Bearer cli-token-0123456789\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let local = http(
        port,
        &format!(
            "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer cli-token-0123456789\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    // Issue 23: failed sign-ins from this client are limited.
    // `pgoutbox::dashboard::SIGN_IN_FAILURES_PER_CLIENT`.
    for i in 0..10 {
        let wrong = sign_in(port, "a-wrong-guess-0000");
        assert!(wrong.starts_with("HTTP/1.1 401"), "attempt {i}: {wrong}");
    }
    let limited = sign_in(port, "cli-token-0123456789");
    assert!(limited.starts_with("HTTP/1.1 429"), "{limited}");
    assert!(
        limited.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{limited}"
    );
}
