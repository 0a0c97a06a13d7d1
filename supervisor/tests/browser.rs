//! A clinician's session in a real browser: headless Chromium (Debian's chromium and
//! chromium-driver, driven through WebDriver with fantoccini) signs in against a real slapd,
//! sends a prompt, watches the answer stream in from the real confined worker, then leaves
//! the page alone until a shortened idle timeout has passed and finds itself signed out with
//! no conversation text left in the page. Screenshots are saved under
//! `target/tmp/browser-artifacts/`. Needs root (the worker's sandbox).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use supervisor::audit::Action;
use supervisor::auth::directory::Directory;
use supervisor::auth::signin::Accounts;
use supervisor::chat::Chat;
use supervisor::clock::SystemClock;
use supervisor::inference::{spawn_manager, Status};
use support::slapd::{person, Slapd};
use support::web::*;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The prompt's text: looked for in the page after the lock.
const CANARY: &str = "Canary-4471 71yo with NSTEMI, PCI to LAD, on DAPT";
const IDLE_SECS: i64 = 20;

/// chromedriver on a free port, killed (with its browsers) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for p in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: the browser test needs Debian's chromium and chromium-driver \
                 (./scripts/test.sh installs them)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole process group: chromedriver and the Chromium it started.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

use std::os::unix::process::CommandExt;

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A model big enough that its answer takes about a second (decoding is greedy, so the answer
/// is fixed: with this seed it runs to the 512-token limit rather than stopping at once, as
/// seeds 1 and 5 do for this prompt): the stream is visible.
fn streaming_model(dir: &Path) -> PathBuf {
    let mut c = models::testmodel::LlamaConfig::small();
    c.seed = 2;
    let p = dir.join("stream.gguf");
    models::testmodel::write_llama(&c, &p).unwrap();
    p
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits, hands off, until the page has locked itself and gone to the sign-in page.
async fn wait_for_lock(browser: &fantoccini::Client) {
    wait_until(
        "the idle lock",
        Duration::from_secs(IDLE_SECS as u64 + 30),
        || async {
            browser
                .current_url()
                .await
                .unwrap()
                .as_str()
                .contains("/login?expired=1")
        },
    )
    .await;
}

/// Fills and submits the sign-in form as alice; returns once her page shows.
async fn sign_in(browser: &fantoccini::Client, base: &str) {
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser
        .find(Locator::Css("input[name=user]"))
        .await
        .expect("the sign-in form (a certificate error page has none)")
        .send_keys("alice")
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(person("alice").password)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.signin button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = browser.source().await.unwrap();
        if page.contains("Dr Alice Adams") {
            break;
        }
        assert!(Instant::now() < deadline, "not signed in; the page: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_chat_stream_and_idle_lock_in_chromium() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let ldap_dir = t.path().join("ldap");
    let data = t.path().join("data");
    std::fs::create_dir_all(&ldap_dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let slapd = Slapd::start(&ldap_dir).await;

    let mut settings = settings();
    settings.context = 1024;
    let h = spawn_manager(launch("phibox-worker", &streaming_model(&data), settings));
    tokio::time::timeout(
        Duration::from_secs(120),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .unwrap();
    let mut st = state_idle(
        &data,
        Accounts {
            directory: Some(Directory::new(slapd.config(), false).unwrap()),
            ..Default::default()
        },
        Arc::new(SystemClock),
        jiff::SignedDuration::from_secs(IDLE_SECS),
    );
    st.chat = Some(
        Chat::new(h.clone(), st.auth.audit.clone(), "stream.gguf")
            .with_transcripts(st.store.clone()),
    );
    let audit = st.auth.audit.clone();
    let server = serve_app(&data, st).await;
    let base = format!("https://localhost:{}", server.https.port());

    let driver = Driver::start();
    let profile = t.path().join("chromium-profile");
    let caps = serde_json::json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    let browser = builder
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap();

    // Sign in with the directory account.
    sign_in(&browser, &base).await;

    // Send a prompt, recording what the page shows as it changes.
    browser.goto(&format!("{base}/chat")).await.unwrap();
    browser
        .find(Locator::Css("textarea[name=text]"))
        .await
        .unwrap()
        .send_keys(CANARY)
        .await
        .unwrap();
    browser
        .execute(
            r#"window.__seen = [];
               const reply = document.getElementById("reply");
               const status = document.getElementById("status");
               new MutationObserver(() => window.__seen.push([status.textContent, reply.textContent.length]))
                 .observe(reply, { childList: true, subtree: true, characterData: true });"#,
            vec![],
        )
        .await
        .unwrap();
    browser
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the answer to finish", Duration::from_secs(90), || async {
        browser
            .find(Locator::Id("status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .starts_with("Done")
    })
    .await;
    let reply = browser
        .find(Locator::Id("reply"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!reply.trim().is_empty(), "an answer was shown");
    let seen = browser
        .execute("return window.__seen", vec![])
        .await
        .unwrap();
    let while_working: Vec<u64> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0].as_str().is_some_and(|s| s.starts_with("Working")))
        .filter_map(|e| e[1].as_u64())
        .filter(|&n| n > 0)
        .collect();
    let mut distinct = while_working.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the answer grew in several steps before it was done (streamed): {seen}"
    );
    std::fs::write(
        artifacts().join("chat-streamed.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // Hands off: once the idle time has passed, the page locks itself and leaves.
    wait_for_lock(&browser).await;
    let snippet: String = reply
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(24)
        .collect();
    let page = browser.source().await.unwrap();
    assert!(!page.contains("Canary-4471"), "the prompt is gone");
    assert!(
        !page
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .contains(&snippet),
        "the answer is gone"
    );
    assert!(page.contains("Your session ended after a period without activity"));
    std::fs::write(
        artifacts().join("idle-locked.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    // Going back does not bring the conversation back: the session is over server-side.
    browser.back().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.current_url().await.unwrap();
        if url.path().starts_with("/login") {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "after going back: {url}: {}",
                browser.source().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!browser.source().await.unwrap().contains("Canary-4471"));

    // Again, from a page left behind: sign in, open the conversation, go to the home page and
    // let the lock happen there; going back must not show the conversation from the browser's
    // back/forward cache.
    sign_in(&browser, &base).await;
    browser
        .goto(&format!("{base}/conversations"))
        .await
        .unwrap();
    browser
        .find(Locator::Css("ul.conversations a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        "the stored conversation",
        Duration::from_secs(10),
        || async { browser.source().await.unwrap().contains("Canary-4471") },
    )
    .await;
    browser
        .find(Locator::Css(r#"header nav a[href="/"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_lock(&browser).await;
    browser.back().await.unwrap();
    wait_until("the sign-in page", Duration::from_secs(10), || async {
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/login")
    })
    .await;
    let page = browser.source().await.unwrap();
    assert!(!page.contains("Canary-4471"), "{page}");
    browser.close().await.unwrap();
    drop(driver);

    server.stop(Duration::from_secs(2)).await;
    h.shutdown().await;
    audit.close().await.unwrap();
    let rs = audit_records(&data);
    let alice = |a: Action| {
        rs.iter()
            .filter(|r| r.action == a && r.user_id.as_deref() == Some("alice"))
            .count()
    };
    assert_eq!(alice(Action::LoginSuccess), 2);
    assert_eq!(alice(Action::ChatRequest), 1);
    assert_eq!(alice(Action::ChatResponseCompleted), 1);
    assert_eq!(alice(Action::IdleLogout), 2);
    assert!(!audit_bytes(&data).contains("Canary-4471"));
    drop(slapd);
}
