//! The `kontakt` binary: `token` and `serve` share the development key; `schema` prints the SDL; SIGTERM drains.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kontakt");

fn kontakt(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("KONTAKT_") || key == "DATABASE_URL" || key == "REDIS_URL" {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn schema_prints_only_the_sdl() {
    let dir = tempfile::tempdir().expect("dir");
    let output = kontakt(dir.path()).arg("schema").output().expect("run");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), kontakt::graphql::sdl());
}

#[test]
fn every_command_explains_itself() {
    let dir = tempfile::tempdir().expect("dir");
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["token", "--help"],
        vec!["schema", "--help"],
    ] {
        let output = kontakt(dir.path()).args(&command).output().expect("run");
        assert!(output.status.success(), "{command:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage"), "{command:?}: {text}");
    }
    let text = String::from_utf8_lossy(&kontakt(dir.path()).arg("token").arg("--help").output().expect("run").stdout)
        .to_string();
    for flag in ["--tenant", "--scopes", "--purpose"] {
        assert!(text.contains(flag), "token --help names {flag}");
    }
}

#[tokio::test]
async fn a_token_from_the_cli_opens_the_server_started_in_the_same_folder() {
    let dir = tempfile::tempdir().expect("dir");
    let output = kontakt(dir.path())
        .args([
            "token",
            "--tenant",
            "shop-1",
            "--scopes",
            "profiles:read,profiles:write,pii:read",
            "--purpose",
            "analytics",
        ])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout");
    assert_eq!(token.split('.').count(), 3, "a JWT");

    let mut server = kontakt(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KONTAKT_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = server.stdout.take().expect("stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep reading to the end: the server must find its stdout open.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("GraphQL:")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("the server starts within 30 s")
        .expect("the server prints its GraphQL URL");
    assert!(dir.path().join("kontakt.db").exists(), "the SQLite file is created on start");

    let client = reqwest::Client::new();
    let body: Value = client
        .post(&url)
        .bearer_auth(token)
        .json(&json!({ "query": "{ viewer { tenant purpose scopes } }" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["data"]["viewer"],
        json!({ "tenant": "shop-1", "purpose": "analytics", "scopes": ["profiles:read", "profiles:write", "pii:read"] })
    );

    // A profile read queues an access-log entry; the stop comes while the writer is still gathering its batch.
    let upsert = "mutation { upsertCustomer(input: { identities: [{ kind: EMAIL, value: \"cli@example.com\" }] }) \
                  { customer { id } } }";
    let body: Value = client
        .post(&url)
        .bearer_auth(token)
        .json(&json!({ "query": upsert }))
        .send()
        .await
        .expect("upsert")
        .json()
        .await
        .expect("json");
    let id = body["data"]["upsertCustomer"]["customer"]["id"].as_str().expect("customer id").to_owned();
    let read = json!({ "query": "query($id: UUID!) { customer(id: $id) { id } }", "variables": { "id": id } });
    let body: Value =
        client.post(&url).bearer_auth(token).json(&read).send().await.expect("read").json().await.expect("json");
    assert_eq!(body["data"]["customer"]["id"], id.as_str());

    // SIGTERM: a graceful stop with exit code 0, after the queued access log is written.
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.try_wait().expect("wait") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("the server did not stop within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let db = sea_orm::Database::connect(format!("sqlite://{}", dir.path().join("kontakt.db").display()))
        .await
        .expect("open the SQLite file");
    let logged = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT COUNT(*) AS n FROM access_log WHERE categories = 'profile'",
        ))
        .await
        .expect("count")
        .and_then(|row| row.try_get::<i64>("", "n").ok());
    assert_eq!(logged, Some(1), "the read queued just before the stop was written");
}
