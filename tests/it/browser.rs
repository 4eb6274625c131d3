//! The dashboard in a real browser: headless Chromium driven over the W3C
//! `WebDriver` protocol (`chromedriver`), as an operator uses it. Open the
//! overview, follow a stalled operation, resolve it with a reason and see
//! its state and the operator trail change; watch the overview update by
//! itself while a worker finishes operations. Each page is photographed
//! under `target/dashboard-screenshots/`; with `PGOUTBOX_UPDATE_SNAPSHOTS=1`
//! the overview's picture also replaces `docs/dashboard.png`, the README's.
//!
//! Chromium and chromedriver are Debian packages (`chromium`,
//! `chromium-driver`; `.ci/run` installs them when missing), so the test is
//! behind a switch: it runs when `PGOUTBOX_TEST_BROWSER=1` and then fails,
//! never skips, without them; without the switch it says on stderr that it
//! did not run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use pgoutbox::admin::Admin;
use pgoutbox::dashboard::{self, DashboardOptions};
use pgoutbox::prelude::*;
use pgoutbox::testing::{Harness, TestDatabase};
use pgoutbox::{Identifier, Status};

use crate::dashboard::{DashEvil, DashSms, seed};
use crate::support::test_db;

/// The switch that turns the browser test on.
const SWITCH: &str = "PGOUTBOX_TEST_BROWSER";

fn wanted(test: &str) -> bool {
    match std::env::var(SWITCH).as_deref() {
        Ok("1") => true,
        Ok("0") | Err(std::env::VarError::NotPresent) => {
            eprintln!(
                "{test}: not run: set {SWITCH}=1 to run the browser tests (needs `chromium` \
                 and `chromium-driver`)"
            );
            false
        }
        Ok(other) => panic!("{SWITCH} must be `1` or `0`, not {other:?}"),
        Err(std::env::VarError::NotUnicode(_)) => {
            panic!("{SWITCH} must be `1` or `0`, not a value that is not UTF-8")
        }
    }
}

fn program(name: &str, debian: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed, but {SWITCH}=1 asks for the browser tests: \
                 `apt-get install {debian}` (`.ci/run` does it), or unset the switch"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = program("chromedriver", "chromium-driver");
        program("chromium", "chromium");
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("pgoutbox-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            port,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": program("chromium", "chromium"),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that panicked never closed its session: the Chromium that
        // chromedriver started outlives chromedriver. Its command line
        // names the profile directory, which is this driver's own.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The operator's token (16 characters at least).
const BROWSER_TOKEN: &str = "browser-token-0123456789";

/// The dashboard of `db`, served on a free loopback port.
async fn serve(db: &TestDatabase, options: DashboardOptions) -> String {
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = dashboard::mount(
        axum::Router::new(),
        "/admin/outbox",
        dashboard::router(admin, options),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    format!("http://{address}/admin/outbox")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn photograph(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), &png).unwrap();
    if name == "overview" && std::env::var("PGOUTBOX_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png"),
            &png,
        )
        .unwrap();
    }
}

/// The text of the element `css` names. An element found on a page that
/// is being replaced (a form's submission, a live update) goes stale
/// before its text is read: it is then found again on the new page.
async fn text(browser: &Client, css: &str) -> String {
    for _ in 0..50 {
        let element = browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(e) if e.is_stale_element_reference() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("`{css}`: {e}"),
        }
    }
    panic!("`{css}` went stale 50 times in a row")
}

/// Some history for the pictures: successes, retries, dead ones.
async fn activity(db: &TestDatabase) {
    let mut tx = db.pool().begin().await.unwrap();
    for i in 0..40 {
        pgoutbox::publish(
            &mut tx,
            DashSms {
                to: format!("+49{i:04}"),
            },
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        pgoutbox::publish(
            &mut tx,
            DashEvil {
                note: format!("card {i} declined"),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    Harness::new(db)
        .operation::<DashSms>()
        .operation::<DashEvil>()
        .run_until_idle()
        .await
        .unwrap();
    // Few finished operations: the overview counts them exactly (a larger
    // table would be estimated from the statistics that ANALYZE keeps).
    sqlx::query("ANALYZE pgoutbox.operations")
        .execute(db.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resolves_a_stalled_operation_and_watches_the_overview_update() {
    if !wanted("browser::an_operator_resolves_a_stalled_operation_and_watches_the_overview_update")
    {
        return;
    }
    let driver = Driver::start();
    let db = test_db().await;
    let (stalled, dead) = seed(&db).await;
    activity(&db).await;
    let base = serve(
        &db,
        DashboardOptions::with_token(BROWSER_TOKEN, "alice")
            .unwrap()
            .allow_actions(true)
            .refresh(Duration::from_secs(1)),
    )
    .await;
    // A worker, live on the overview, that finishes what is published.
    let system = WorkflowSystem::builder(crate::support::settings(&db))
        .router(WorkflowRouter::new().operation::<DashSms>())
        .start()
        .await
        .unwrap();
    let browser = driver.browser().await;
    let result = scenario(&browser, &db, &base, stalled, dead).await;
    browser.close().await.unwrap();
    drop(driver);
    system.stop().await.unwrap();
    result.unwrap();
}

#[allow(clippy::too_many_lines)] // One operator's session, start to end.
async fn scenario(
    browser: &Client,
    db: &TestDatabase,
    base: &str,
    stalled: pgoutbox::OperationId,
    dead: pgoutbox::OperationId,
) -> Result<(), fantoccini::error::CmdError> {
    browser.set_window_size(1280, 900).await?;
    // Signed out: the sign-in form; sign in with the token.
    browser.goto(base).await?;
    browser
        .find(Locator::Css("input[name=token]"))
        .await?
        .send_keys(BROWSER_TOKEN)
        .await?;
    browser
        .find(Locator::Css("form button"))
        .await?
        .click()
        .await?;

    // The overview: one stalled, and the way to it.
    browser.wait().for_element(Locator::Css("#live")).await?;
    assert_eq!(text(browser, "a[data-state=stalled] .n").await, "1");
    let workers = text(browser, "#live").await;
    assert!(workers.contains("Live workers (1)"), "{workers}");
    photograph(browser, "overview").await;
    browser
        .find(Locator::Css("a[href$='/stalled']"))
        .await?
        .click()
        .await?;
    assert!(text(browser, "h1").await.contains("1 in doubt"));
    assert!(text(browser, "#stalled").await.contains("lost"));
    photograph(browser, "stalled").await;

    // Follow it, resolve it with a reason.
    browser
        .find(Locator::Css(&format!(
            "#stalled a[href$='/operations/{stalled}']"
        )))
        .await?
        .click()
        .await?;
    assert_eq!(text(browser, "#state").await, "stalled");
    photograph(browser, "operation-stalled").await;
    browser
        .find(Locator::Css("#action"))
        .await?
        .select_by_value("resolve-succeeded")
        .await?;
    browser
        .find(Locator::Css("#reason"))
        .await?
        .send_keys("SMS found in the provider's log")
        .await?;
    browser.find(Locator::Css("#act")).await?.click().await?;
    // The action redirects to the operation's page with a notice.
    browser.wait().for_element(Locator::Css("#notice")).await?;
    assert_eq!(text(browser, "#state").await, "succeeded");
    assert!(
        text(browser, "#notice")
            .await
            .contains("stalled → succeeded")
    );
    let trail = text(browser, "#actions").await;
    assert!(
        trail.contains("resolve") && trail.contains("alice"),
        "{trail}"
    );
    assert!(trail.contains("SMS found in the provider's log"), "{trail}");
    photograph(browser, "operation-resolved").await;
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let detail = admin.show(stalled).await.unwrap().unwrap();
    assert_eq!(detail.operation.status, Status::Succeeded);
    assert_eq!(detail.actions[0].actor, "alice");

    // The dead one, whose payload and error hold markup.
    browser.goto(&format!("{base}/operations/{dead}")).await?;
    // Markup in the payload and the error is shown as text, not run.
    let payload = text(browser, "#payload").await;
    assert!(
        payload.contains(r#"<script>alert(\"x\")</script> it's"#),
        "{payload}"
    );
    let attempts = text(browser, "#attempts").await;
    assert!(
        attempts.contains(r#"<script>alert("x")</script> it's \0 after-nul"#),
        "{attempts}"
    );
    let alerted = browser
        .execute(
            "return document.querySelectorAll('main script').length;",
            vec![],
        )
        .await?;
    assert_eq!(alerted, serde_json::json!(0));
    photograph(browser, "operation-dead").await;

    // The other pages.
    browser
        .goto(&format!("{base}/operations?status=succeeded"))
        .await?;
    photograph(browser, "operations").await;
    browser.goto(&format!("{base}/schemas")).await?;
    photograph(browser, "schemas").await;
    browser.goto(&format!("{base}/schemas/dash.sms")).await?;
    photograph(browser, "schema").await;

    // The live overview: a worker finishes operations; the page, not
    // reloaded, shows them.
    browser.goto(base).await?;
    let succeeded = async || -> i64 {
        let legend = text(browser, "#succeeded-last-hour").await;
        legend.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = succeeded().await;
    browser
        .execute("window.__notReloaded = true; return true;", vec![])
        .await?;
    let mut tx = db.pool().begin().await.unwrap();
    for i in 0..5 {
        pgoutbox::publish(
            &mut tx,
            DashSms {
                to: format!("+1{i}"),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = succeeded().await;
        if now == before + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overview still shows {now} succeeded, expected {}",
            before + 5
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let same_page = browser
        .execute("return window.__notReloaded === true;", vec![])
        .await?;
    assert_eq!(
        same_page,
        serde_json::Value::Bool(true),
        "updated without a reload"
    );

    // A phone's width.
    browser.set_window_size(390, 844).await?;
    photograph(browser, "overview-phone").await;

    // Sign out: the sign-in form again, and the session is over.
    browser.set_window_size(1280, 900).await?;
    assert!(text(browser, "#operator").await.contains("alice"));
    browser
        .find(Locator::Css("#sign-out"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("input[name=token]"))
        .await?;
    browser.goto(&format!("{base}/operations")).await?;
    browser
        .wait()
        .for_element(Locator::Css("input[name=token]"))
        .await?;
    assert!(browser.find(Locator::Css("#sign-out")).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_a_workflows_graph() {
    if !wanted("browser::an_operator_reads_a_workflows_graph") {
        return;
    }
    let driver = Driver::start();
    let db = test_db().await;
    // Real step states, from a worker: a diamond that succeeds, and one
    // whose left branch dies, which cancels the join that needs it (the
    // right branch, a `Settled` dependency, succeeds).
    let system = WorkflowSystem::builder(crate::support::settings(&db))
        .router(crate::dashboard::workflow_router())
        .start()
        .await
        .unwrap();
    let ok = crate::dashboard::publish_diamond(&db, "order.fulfil", false).await;
    let failed = crate::dashboard::publish_diamond(&db, "order.fulfil", true).await;
    crate::dashboard::settled_state(&db, ok.id).await;
    crate::dashboard::settled_state(&db, failed.id).await;
    system.stop().await.unwrap();
    // And one with no worker left: its first step pending, the rest waiting.
    let running = crate::dashboard::publish_diamond(&db, "order.refund", false).await;
    let base = serve(
        &db,
        DashboardOptions::with_token(BROWSER_TOKEN, "alice")
            .unwrap()
            .allow_actions(true),
    )
    .await;
    let browser = driver.browser().await;
    let result = workflow_scenario(&browser, &base, failed, running.id).await;
    browser.close().await.unwrap();
    drop(driver);
    result.unwrap();
}

#[allow(clippy::too_many_lines)] // One operator's visit, list to graph to step.
async fn workflow_scenario(
    browser: &Client,
    base: &str,
    failed: pgoutbox::workflow::PublishedWorkflow,
    running: pgoutbox::workflow::WorkflowId,
) -> Result<(), fantoccini::error::CmdError> {
    browser.set_window_size(1280, 900).await?;
    browser.goto(&format!("{base}/workflows")).await?;
    browser
        .find(Locator::Css("input[name=token]"))
        .await?
        .send_keys(BROWSER_TOKEN)
        .await?;
    browser
        .find(Locator::Css("form button"))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Css("#live")).await?;

    // The Workflows page, from the navigation: three, newest first.
    browser
        .find(Locator::Css("nav a[href$='/workflows']"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("#workflows"))
        .await?;
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#workflows tbody tr')].map(r => r.dataset.state);",
            vec![],
        )
        .await?;
    assert_eq!(rows, serde_json::json!(["running", "failed", "succeeded"]));
    let list = text(browser, "#workflows").await;
    assert!(
        list.contains("3 waiting") && list.contains("1 dead"),
        "{list}"
    );
    photograph(browser, "workflows").await;

    // The failed diamond's graph: drawn, four steps, four edges, sized.
    browser
        .find(Locator::Css(&format!(
            "#workflows a[href$='/workflows/{}']",
            failed.id
        )))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Css("#graph")).await?;
    assert_eq!(text(browser, "#state").await, "failed");
    let drawn = browser
        .execute(
            r"const svg = document.getElementById('graph');
              const box = svg.getBoundingClientRect();
              const nodes = [...svg.querySelectorAll('.node')];
              const edges = [...svg.querySelectorAll('.edge')];
              return {
                width: box.width, height: box.height,
                nodes: nodes.length, edges: edges.length,
                dashed: edges.filter(e => getComputedStyle(e).strokeDasharray !== 'none').length,
                sized: nodes.every(n => { const b = n.getBBox(); return b.width > 0 && b.height > 0; }),
                edgesSized: edges.every(e => e.getTotalLength() > 0),
                colours: [...new Set(nodes.map(n => getComputedStyle(n.querySelector('rect')).stroke))].length,
                states: nodes.map(n => n.dataset.state),
              };",
            vec![],
        )
        .await?;
    assert!(drawn["width"].as_f64().unwrap() > 100.0, "{drawn}");
    assert!(drawn["height"].as_f64().unwrap() > 100.0, "{drawn}");
    assert_eq!(drawn["nodes"], 4, "{drawn}");
    assert_eq!(drawn["edges"], 4, "{drawn}");
    assert_eq!(drawn["dashed"], 1, "the settled edge: {drawn}");
    assert_eq!(drawn["sized"], true, "{drawn}");
    assert_eq!(drawn["edgesSized"], true, "{drawn}");
    assert_eq!(
        drawn["states"],
        serde_json::json!(["succeeded", "dead", "succeeded", "cancelled"])
    );
    assert_eq!(drawn["colours"], 3, "succeeded, dead, cancelled: {drawn}");
    photograph(browser, "workflow").await;

    // A step is a link to its operation, which links back.
    let dead = failed.steps[1];
    browser
        .find(Locator::Css(&format!("#graph .node[data-id='{dead}']")))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("#workflow"))
        .await?;
    assert_eq!(text(browser, "#state").await, "dead");
    assert!(text(browser, "#workflow").await.contains("order.fulfil"));

    // The running one: pending and waiting in their own colours.
    browser.goto(&format!("{base}/workflows/{running}")).await?;
    browser.wait().for_element(Locator::Css("#graph")).await?;
    let colours = browser
        .execute(
            r"const rect = s => getComputedStyle(document.querySelector(`#graph .node[data-state=${s}] rect`)).stroke;
              return [rect('pending'), rect('waiting')];",
            vec![],
        )
        .await?;
    assert_ne!(colours[0], colours[1], "{colours}");
    photograph(browser, "workflow-running").await;

    // Cancel it: the compensation is a choice the form will not send
    // without; the confirmation lists what will change; confirmed, the
    // page says what changed and the trail names the operator.
    browser
        .find(Locator::Css("#cancel-workflow input[name=reason]"))
        .await?
        .send_keys("order withdrawn")
        .await?;
    let valid = browser
        .execute(
            "return document.getElementById('cancel-workflow').checkValidity();",
            vec![],
        )
        .await?;
    assert_eq!(valid, false, "no compensation chosen yet");
    browser
        .find(Locator::Css(
            "#cancel-workflow input[name=compensate][value=no]",
        ))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Css("#cancel-workflow button"))
        .await?
        .click()
        .await?;
    browser
        .wait()
        .for_element(Locator::Css("#plan-cancel"))
        .await?;
    let planned = browser
        .execute(
            "return [...document.querySelectorAll('#plan-cancel tbody tr')].length;",
            vec![],
        )
        .await?;
    assert_eq!(planned, 4, "the pending step and the three waiting");
    photograph(browser, "workflow-confirm").await;
    browser
        .find(Locator::Css("#confirm button"))
        .await?
        .click()
        .await?;
    browser.wait().for_element(Locator::Css("#notice")).await?;
    assert!(text(browser, "#notice").await.contains(&format!(
        "cancel of workflow {running} applied: running → cancelled"
    )),);
    assert_eq!(text(browser, "#state").await, "cancelled");
    assert!(
        text(browser, "#failure")
            .await
            .contains("cancelled by alice: order withdrawn")
    );
    assert!(text(browser, "#workflow-actions").await.contains("alice"));
    photograph(browser, "workflow-cancelled").await;
    Ok(())
}
