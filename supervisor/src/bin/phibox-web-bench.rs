//! `phibox-web-bench`: what the web UI costs. N users (default 15) sign in over HTTPS and each
//! sends chats through `POST /api/chat`, reading the streamed answer, while the same requests
//! (same messages, same sampling) are also sent to the same confined worker directly through
//! the inference handle. The two run alternately over several rounds in one process, on one
//! worker. Prints p50/p99 time to first token and aggregate generated tokens per second for
//! both, and the ratios web ÷ direct (goals: throughput ≥ 0.95, time to first token ≤ 1.10).
//! The web path includes everything a browser's request meets: TLS, the access check, the
//! session, the CSRF check, the audit records (written and fsynced before inference and before
//! the final event) and the transcript store.
//!
//! Needs root (the sandbox). `scripts/web-bench.sh` generates the model and runs it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sandbox::protocol::{Message, Phi, Role as MsgRole, Sampling};
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::signin::Accounts;
use supervisor::auth::Role;
use supervisor::chat::Chat;
use supervisor::clock::SystemClock;
use supervisor::config::WorkerSection;
use supervisor::inference::{spawn_manager, InferenceHandle, Status, StreamItem, WorkerLaunch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
struct Args {
    /// The GGUF model.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 15)]
    users: u32,
    /// Rounds; each runs the direct and the web measurement once (alternating which is first).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Chats per user per measurement.
    #[arg(long, default_value_t = 2)]
    chats: u32,
    /// Staggered users start within this many milliseconds…
    #[arg(long, default_value_t = 3000)]
    spread_ms: u64,
    /// …and pause about this long between chats (0.5–1.5 ×).
    #[arg(long, default_value_t = 1500)]
    think_ms: u64,
    /// Answer length limit (tokens).
    #[arg(long, default_value_t = 128)]
    reply_tokens: u32,
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// The worker's nice value (phiboxd's default: 10).
    #[arg(long, default_value_t = 10)]
    nice: i32,
}

const PASSWORD: &str = "bench password";
const TEMPLATE: &str = "clinical_summary";

/// The user's text for chat `i` of user `u` (different for every request).
fn text(u: u32, i: u32) -> String {
    format!(
        "Patient {u}-{i}: 68 years, admitted with chest pain, troponin rising, ECG with ST \
         depression; angiography showed a 90% stenosis of the LAD treated with a drug-eluting \
         stent. Discharged on aspirin, ticagrelor, atorvastatin and bisoprolol; follow-up in 6 weeks."
    )
}

/// What one request measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ttft: Duration,
    tokens: u32,
}

#[derive(Debug, Default)]
struct Phase {
    ttft_ms: Vec<f64>,
    tokens_per_s: Vec<f64>,
}

/// One path's results: a burst (throughput) and staggered users (time to first token).
#[derive(Debug, Default)]
struct Path2 {
    burst: Phase,
    staggered: Phase,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A plain HTTP/1.1 exchange over TLS: the whole response.
struct Client {
    addr: SocketAddr,
    tls: TlsConnector,
    host: String,
}

impl Client {
    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(self
            .tls
            .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
            .await?)
    }

    fn head(&self, method: &str, path: &str, cookie: &str, extra: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: https://{host}\r\nConnection: close\r\nCookie: {cookie}\r\n{extra}",
            host = self.host
        )
    }

    async fn exchange(&self, request: &str) -> Result<String> {
        let mut s = self.connect().await?;
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// Signs `user` in as a browser does; returns (cookie, CSRF token).
    async fn sign_in(&self, user: &str) -> Result<(String, String)> {
        let page = self
            .exchange(&format!("{}\r\n", self.head("GET", "/login", "", "")))
            .await?;
        let token = between(&page, "__Host-phibox-login=", ";").context("no login token")?;
        let form = format!(
            "user={user}&password={}&login_token={token}",
            PASSWORD.replace(' ', "+")
        );
        let reply = self
            .exchange(&format!(
                "{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                self.head("POST", "/login", &format!("__Host-phibox-login={token}"), ""),
                form.len()
            ))
            .await?;
        let session = between(&reply, "__Host-phibox=", ";").context("sign-in refused")?;
        let cookie = format!("__Host-phibox={session}");
        let home = self
            .exchange(&format!("{}\r\n", self.head("GET", "/chat", &cookie, "")))
            .await?;
        let csrf = between(&home, "data-csrf=\"", "\"").context("no CSRF token")?;
        Ok((cookie, csrf.to_owned()))
    }

    /// A kept-alive connection for one signed-in user, as a browser holds one open.
    async fn keep_alive(&self, cookie: &str) -> Result<Conn> {
        let mut conn = Conn {
            stream: self.connect().await?,
            buf: Vec::new(),
        };
        // One request first, so the connection is fully set up before anything is timed.
        let req = self
            .head("GET", "/api/session", cookie, "")
            .replace("Connection: close", "Connection: keep-alive");
        conn.stream
            .write_all(format!("{req}\r\n").as_bytes())
            .await?;
        conn.read_response(|_| {}).await?;
        Ok(conn)
    }

    /// One chat through the web UI on a kept-alive connection, reading the event stream as it
    /// arrives.
    async fn chat(&self, conn: &mut Conn, cookie: &str, csrf: &str, text: &str) -> Result<Sample> {
        let body = serde_json::json!({ "template": TEMPLATE, "text": text }).to_string();
        let req = format!(
            "{}Content-Type: application/json\r\nX-CSRF-Token: {csrf}\r\nContent-Length: {}\r\n\r\n{body}",
            self.head("POST", "/api/chat", cookie, "")
                .replace("Connection: close", "Connection: keep-alive"),
            body.len()
        );
        let started = Instant::now();
        conn.stream.write_all(req.as_bytes()).await?;
        let mut first = None;
        let raw = conn
            .read_response(|seen| {
                if first.is_none() && contains(seen, b"event: token") {
                    first = Some(started.elapsed());
                }
            })
            .await?;
        let text = String::from_utf8_lossy(&raw);
        if !text.starts_with("HTTP/1.1 200") {
            bail!("chat refused: {}", text.lines().next().unwrap_or(""));
        }
        let done = text
            .split("event: done")
            .nth(1)
            .context("the stream ended without a done event")?;
        let tokens = between(done, "\"tokens\":", "}")
            .and_then(|n| n.trim().parse().ok())
            .context("no token count")?;
        Ok(Sample {
            ttft: first.context("no token event")?,
            tokens,
        })
    }
}

/// An open HTTP/1.1 connection.
struct Conn {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    /// Bytes read past the previous response.
    buf: Vec<u8>,
}

impl Conn {
    /// Reads one whole response (Content-Length or chunked), calling `progress` with what
    /// has arrived after every read.
    async fn read_response(&mut self, mut progress: impl FnMut(&[u8])) -> Result<Vec<u8>> {
        let mut raw = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = response_end(&raw) {
                self.buf = raw.split_off(end);
                return Ok(raw);
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the connection closed mid-response");
            }
            raw.extend_from_slice(&chunk[..n]);
            progress(&raw);
        }
    }
}

/// Where a complete response in `raw` ends, if it is complete.
fn response_end(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if let Some(len) = between(&head, "content-length:", "\r\n") {
        let len: usize = len.trim().parse().ok()?;
        return (raw.len() >= head_end + len).then_some(head_end + len);
    }
    // Chunked: walk the chunks to the last (zero-length) one.
    let mut at = head_end;
    loop {
        let line_end = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = String::from_utf8_lossy(&raw[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        let next = line_end + 2 + size + 2;
        if raw.len() < next {
            return None;
        }
        if size == 0 {
            return Some(next);
        }
        at = next;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let a = s.find(start)? + start.len();
    let b = s[a..].find(end)? + a;
    Some(&s[a..b])
}

/// One chat straight through the inference handle, with the message the web UI would send.
async fn direct(h: &InferenceHandle, instruction: &str, text: &str, reply: u32) -> Result<Sample> {
    let started = Instant::now();
    let mut s = h
        .generate(
            vec![Message {
                role: MsgRole::User,
                content: Phi(format!("{instruction}\n\n{text}")),
            }],
            Sampling {
                max_tokens: reply,
                ..Sampling::default()
            },
        )
        .await?;
    let mut first = None;
    loop {
        match s.next().await {
            Some(StreamItem::Token(_)) => {
                first.get_or_insert_with(|| started.elapsed());
            }
            Some(StreamItem::Done { usage, .. }) => {
                return Ok(Sample {
                    ttft: first.unwrap_or_else(|| started.elapsed()),
                    tokens: usage.generated_tokens,
                })
            }
            Some(StreamItem::Failed(e)) => bail!("generation failed: {e}"),
            None => bail!("stream ended early"),
        }
    }
}

/// When users act: all at once (a burst: the worker saturated, for throughput), or as people
/// do (staggered: each user starts at a fixed pseudo-random moment within `spread` and pauses
/// around `think` between chats; the same moments for both paths).
#[derive(Debug, Clone, Copy)]
enum Arrivals {
    Burst,
    Staggered { spread: Duration, think: Duration },
}

/// A fixed pseudo-random fraction in [0, 1) for (user, chat): the same schedule every run.
fn fraction(u: u32, i: u32) -> f64 {
    let mut x = u64::from(u).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(i) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Arrivals {
    /// The pause before chat `i` of user `u`.
    fn pause(self, u: u32, i: u32) -> Duration {
        match self {
            Arrivals::Burst => Duration::ZERO,
            Arrivals::Staggered { spread, .. } if i == 0 => spread.mul_f64(fraction(u, 0)),
            Arrivals::Staggered { think, .. } => think.mul_f64(0.5 + fraction(u, i)),
        }
    }
}

/// Runs every user's chats concurrently; returns the samples and the wall time.
async fn measure<F, Fut>(
    users: u32,
    chats: u32,
    arrivals: Arrivals,
    one: F,
) -> Result<(Vec<Sample>, Duration)>
where
    F: Fn(u32, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Sample>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let calls: Vec<(Duration, Fut)> = (0..chats)
                .map(|i| (arrivals.pause(u, i), one(u, i)))
                .collect();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for (pause, c) in calls {
                    tokio::time::sleep(pause).await;
                    out.push(c.await?);
                }
                Ok::<_, anyhow::Error>(out)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok((samples, started.elapsed()))
}

fn record(phase: &mut Phase, samples: &[Sample], wall: Duration) {
    phase
        .ttft_ms
        .extend(samples.iter().map(|s| s.ttft.as_secs_f64() * 1000.0));
    let tokens: u64 = samples.iter().map(|s| u64::from(s.tokens)).sum();
    phase.tokens_per_s.push(tokens as f64 / wall.as_secs_f64());
}

fn sibling(name: &str) -> Result<PathBuf> {
    Ok(std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(name))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let data = tempfile::tempdir()?;
    let data = data.path();
    let settings = WorkerSection {
        slots: args.users.max(1),
        context: 1024,
        threads: args.threads,
        nice: args.nice,
        ..WorkerSection::default()
    };
    let h = spawn_manager(WorkerLaunch {
        jail: sibling("phibox-jail")?,
        program: sibling("phibox-worker")?,
        model: args.model.clone(),
        extra_args: vec![],
        settings,
        allow_partial_landlock: false,
        audit: None,
    });
    let status = tokio::time::timeout(
        Duration::from_secs(300),
        h.wait_for(|s| matches!(s, Status::Ready { .. } | Status::Failed(_))),
    )
    .await?;
    if !matches!(status, Status::Ready { .. }) {
        bail!("worker did not start: {status:?}");
    }

    // The web UI as phiboxd serves it, on loopback.
    let mut audit_opts = supervisor::audit::Options::new(data, Arc::new(SystemClock));
    audit_opts.provision = true;
    let (audit, _) = supervisor::audit::AuditLog::open(audit_opts)?;
    let store = supervisor::store::Store::open(&data.join(supervisor::store::FILE))?;
    let hash = hash_password(PASSWORD)?;
    let users: Vec<LocalUser> = (0..args.users)
        .map(|u| LocalUser {
            id: format!("user{u:02}"),
            name: format!("User {u}"),
            department: Some("cardiology".into()),
            role: Role::Clinician,
            password_hash: hash.clone(),
        })
        .collect();
    let state = supervisor::web::WebState {
        dev: true,
        chat: Some(Chat::new(h.clone(), audit.clone(), "bench").with_transcripts(store.clone())),
        prompt_cap: supervisor::web::DEFAULT_PROMPT_CAP,
        reply_tokens: args.reply_tokens,
        store,
        audit_dir: data.join("audit"),
        config: Arc::new(supervisor::config::Config::default()),
        installer: None,
        auth: Arc::new(supervisor::web::Auth {
            accounts: Accounts {
                local: Some(LocalUsers::new(users, false)?),
                ..Default::default()
            },
            sessions: supervisor::auth::session::Sessions::new(
                Arc::new(SystemClock),
                supervisor::auth::session::DEFAULT_IDLE,
            ),
            throttle: supervisor::auth::throttle::Throttle::new(Arc::new(SystemClock)),
            audit: audit.clone(),
        }),
    };
    let (tls, _) = supervisor::web::tls::for_data_dir(data, true)?;
    let web = supervisor::web::server::start(
        "127.0.0.1:0".parse()?,
        None,
        tls,
        supervisor::web::app(state),
    )
    .await?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(data.join("tls").join("chain.pem"))? {
        roots.add(c?)?;
    }
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = Arc::new(Client {
        addr: web.https,
        tls: TlsConnector::from(Arc::new(client_config)),
        host: format!("localhost:{}", web.https.port()),
    });

    // Sign everyone in and open each one's connection (not timed); warm both paths once.
    let mut sessions = Vec::new();
    for u in 0..args.users {
        let (cookie, csrf) = client.sign_in(&format!("user{u:02}")).await?;
        let conn = client.keep_alive(&cookie).await?;
        sessions.push(Arc::new(tokio::sync::Mutex::new((cookie, csrf, conn))));
    }
    let sessions = Arc::new(sessions);
    let instruction = supervisor::web::templates::find(TEMPLATE, Role::Clinician)
        .context("the template")?
        .instruction;
    direct(&h, instruction, &text(99, 99), args.reply_tokens).await?;
    {
        let mut s = sessions[0].lock().await;
        let (cookie, csrf, conn) = &mut *s;
        client.chat(conn, cookie, csrf, &text(98, 98)).await?;
    }

    let staggered = Arrivals::Staggered {
        spread: Duration::from_millis(args.spread_ms),
        think: Duration::from_millis(args.think_ms),
    };
    let (mut d, mut w) = (Path2::default(), Path2::default());
    for round in 0..args.rounds {
        for arrivals in [Arrivals::Burst, staggered] {
            for web_first in [round % 2 == 1, round % 2 == 0] {
                let (samples, wall) = if web_first {
                    let (c, s) = (client.clone(), sessions.clone());
                    measure(args.users, args.chats, arrivals, move |u, i| {
                        let (c, s) = (c.clone(), s.clone());
                        async move {
                            let mut guard = s[u as usize].lock().await;
                            let (cookie, csrf, conn) = &mut *guard;
                            c.chat(conn, cookie, csrf, &text(u, i)).await
                        }
                    })
                    .await?
                } else {
                    let reply = args.reply_tokens;
                    let hh = h.clone();
                    measure(args.users, args.chats, arrivals, move |u, i| {
                        let h = hh.clone();
                        async move { direct(&h, instruction, &text(u, i), reply).await }
                    })
                    .await?
                };
                let path = if web_first { &mut w } else { &mut d };
                let phase = match arrivals {
                    Arrivals::Burst => &mut path.burst,
                    Arrivals::Staggered { .. } => &mut path.staggered,
                };
                record(phase, &samples, wall);
            }
        }
        eprintln!(
            "round {}: burst direct {:.1} tok/s, web {:.1} tok/s",
            round + 1,
            d.burst.tokens_per_s.last().copied().unwrap_or(f64::NAN),
            w.burst.tokens_per_s.last().copied().unwrap_or(f64::NAN)
        );
    }
    web.stop(Duration::from_secs(5)).await;
    h.shutdown().await;
    audit.close().await?;

    #[allow(clippy::print_stdout)]
    {
        println!(
            "web UI vs worker direct: {} users × {} chats × {} rounds, {} reply tokens, {} threads, worker nice {}, model {}",
            args.users,
            args.chats,
            args.rounds,
            args.reply_tokens,
            args.threads,
            args.nice,
            args.model.display()
        );
        println!(
            "staggered users start within {} ms and pause {}–{} ms between chats",
            args.spread_ms,
            args.think_ms / 2,
            args.think_ms * 3 / 2
        );
        println!("                                 direct        web   web ÷ direct   goal");
        let row = |name: &str, a: f64, b: f64, goal: &str| {
            println!("{name:<30} {a:>9.1} {b:>10.1} {:>14.3}   {goal}", b / a);
        };
        let (ds, ws) = (&d.staggered.ttft_ms, &w.staggered.ttft_ms);
        row("TTFT p50 (ms), staggered", median(ds), median(ws), "≤ 1.10");
        row(
            "TTFT p99 (ms), staggered",
            percentile(ds, 99.0),
            percentile(ws, 99.0),
            "≤ 1.10",
        );
        row(
            "tokens/s (median), burst",
            median(&d.burst.tokens_per_s),
            median(&w.burst.tokens_per_s),
            "≥ 0.95",
        );
        let (db, wb) = (&d.burst.ttft_ms, &w.burst.ttft_ms);
        row("TTFT p50 (ms), burst", median(db), median(wb), "(see docs)");
        row(
            "TTFT p99 (ms), burst",
            percentile(db, 99.0),
            percentile(wb, 99.0),
            "(see docs)",
        );
    }
    Ok(())
}
