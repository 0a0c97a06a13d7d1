//! phiboxd in dev mode, run as a real process: it starts the confined worker, proves the
//! confinement from outside, says what it did, and stops cleanly on SIGTERM. Needs root.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PHIBOXD: &str = env!("CARGO_BIN_EXE_phiboxd");

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "phiboxd's dev-mode tests need root (the worker sandbox): run them as root"
    );
}

fn model(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tiny.gguf");
    models::testmodel::write_llama(&models::testmodel::LlamaConfig::tiny(), &p).unwrap();
    p
}

/// Cargo builds the sandbox binaries phiboxd runs into the same directory only when they are
/// part of the build; make sure they are there.
fn ensure_helpers() {
    let dir = std::path::Path::new(PHIBOXD).parent().unwrap();
    for name in ["phibox-jail", "phibox-worker"] {
        assert!(
            dir.join(name).is_file(),
            "{name} is missing beside phiboxd: build the whole workspace (cargo test --workspace)"
        );
    }
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// A running phiboxd --dev, its remaining output, the worker's pid from its report and the
/// web UI's HTTPS port.
struct Running {
    child: std::process::Child,
    lines: Lines,
    worker_pid: String,
    https_port: u16,
}

/// Starts phiboxd --dev (web UI on free loopback ports) and reads its output until it runs.
fn start_running(dir: &std::path::Path) -> Running {
    let mut child = Command::new(PHIBOXD)
        .args([
            "--dev",
            "--https",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--model")
        .arg(model(dir))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut worker_pid = None;
    let mut https_port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("worker pid ").nth(1) {
            worker_pid = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.split("web UI: https://localhost:").nth(1) {
            https_port = rest.split('/').next().and_then(|p| p.parse().ok());
        }
        if line.contains("phibox is running") {
            break;
        }
    }
    Running {
        child,
        lines,
        worker_pid: worker_pid.expect("the report names the worker pid"),
        https_port: https_port.expect("the web UI's address is printed"),
    }
}

/// GET `path` over TLS from the dev server, trusting only its generated certificate.
fn https_get(data: &std::path::Path, port: u16, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(data.join("tls/chain.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn check_mode_reports_a_verified_confinement() {
    require_root();
    ensure_helpers();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let out = Command::new(PHIBOXD)
        .args(["--dev", "--check", "--data-dir"])
        .arg(&data)
        .arg("--model")
        .arg(model(t.path()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "data directory is NOT encrypted",
        "inference worker ready: llama (with its own chat template",
        "Q8_0, trained context 512), 8 slots",
        "confinement verified from outside",
        "Seccomp 2 (filter), NoNewPrivs 1, every capability set empty",
        "only a loopback that is down",
        "landlock ABI 6 fully enforced",
        "self-test: asked \"A hospital discharge letter is a document that\"; the model answered:",
        "check complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The run is in the audit trail, sealed at shutdown, and the trail verifies with the seed.
    assert!(stdout.contains("audit trail provisioned"), "{stdout}");
    let phibox = std::path::Path::new(PHIBOXD).with_file_name("phibox");
    let out = Command::new(&phibox)
        .args(["audit", "verify"])
        .arg(data.join("audit"))
        .arg("--seal-key")
        .arg(data.join("secrets/audit-seal-seed"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("1 MAC(s) verified") && report.contains("INTACT"),
        "{report}"
    );
    let trail = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    let actions: Vec<&str> = trail
        .lines()
        .map(|l| {
            let at = l.find("\"action\":\"").unwrap() + 10;
            &l[at..at + l[at..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        actions,
        [
            "startup",
            "chat_request",
            "chat_response_completed",
            "shutdown",
            "seal"
        ],
        "{trail}"
    );
    assert!(!trail.contains("discharge"), "no prompt text in the trail");
}

#[test]
fn it_runs_until_sigterm_and_then_stops_the_worker() {
    require_root();
    ensure_helpers();
    let t = tempfile::tempdir().unwrap();
    let Running {
        mut child,
        lines,
        worker_pid: pid,
        https_port,
    } = start_running(t.path());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The web UI answers over TLS with the certificate dev mode generated, banner included.
    let page = https_get(&t.path().join("data"), https_port, "/login");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Development mode"), "{page}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "phiboxd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped on SIGTERM")),
        "{rest:?}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}/status")).exists());
}

#[test]
fn bad_input_gets_a_clear_error() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(PHIBOXD)
        .args(["--dev", "--check", "--data-dir"])
        .arg(t.path().join("data"))
        .args(["--model", "/nonexistent/model.gguf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model file /nonexistent/model.gguf is not readable"),
        "{err}"
    );

    let out = Command::new(PHIBOXD)
        .args(["--model", "/x"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "appliance mode is refused until it exists"
    );
}

#[test]
fn the_worker_dies_with_a_killed_supervisor() {
    require_root();
    ensure_helpers();
    let t = tempfile::tempdir().unwrap();
    let Running {
        mut child,
        worker_pid: pid,
        ..
    } = start_running(t.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}/status")).exists() {
        assert!(
            Instant::now() < deadline,
            "the worker outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_installed_bundle_is_what_phiboxd_serves() {
    require_root();
    ensure_helpers();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A key in dev mode's trusted-keys directory and a bundle installed into the store.
    let keys = data.join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let pw = models::bundle::keys::Password::Unencrypted;
    let id = models::bundle::keys::keygen(&t.path().join("clinic"), pw.clone()).unwrap();
    std::fs::copy(t.path().join("clinic.pub"), keys.join("clinic.pub")).unwrap();
    let (_, sk) = models::bundle::keys::read_secret_key(&t.path().join("clinic.key"), pw).unwrap();
    let bundle = t.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    model(&bundle);
    let opts = models::bundle::CreateOptions {
        name: "tiny".into(),
        version: "1.0".into(),
        sequence: 1,
        signer: id,
        files: vec![],
    };
    models::bundle::create(&bundle, &opts).unwrap();
    models::bundle::sign(&bundle, &sk, id).unwrap();
    let (store, _) = models::bundle::Store::open(&data.join("models")).unwrap();
    let trusted = models::bundle::TrustedKeys::load_dir(&keys).unwrap();
    match models::bundle::prepare(&store, &trusted, &bundle, &mut models::bundle::Quiet).unwrap() {
        models::bundle::Prepared::Staged(s) => {
            s.activate(&store, &mut models::bundle::Quiet).unwrap();
        }
        other => panic!("{other:?}"),
    }
    // What a power cut in the middle of the next install would leave.
    std::fs::create_dir_all(data.join("models/staging/install-stale")).unwrap();
    let out = Command::new(PHIBOXD)
        .args(["--dev", "--check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "model store: removed what an interrupted install left (install-stale)".to_owned(),
        format!("model bundles: trusted key(s) {id} from {}", keys.display()),
        format!(
            "model {}",
            data.join("models/versions/tiny@1/tiny.gguf").display()
        ),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let trail = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(trail.contains("\"model\":\"tiny@1\""), "{trail}");
}
