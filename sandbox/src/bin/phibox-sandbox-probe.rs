//! `phibox-sandbox-probe`: a stand-in for the worker used to prove the sandbox. Run confined by
//! the tests (and by `phiboxd --dev` until the real worker exists), it enters the confinement
//! exactly as the worker does and then either does what inference needs (`serve MODEL`) or
//! tries one escape (`escape NAME [ARG]`) and reports the errno it got on the control socket.
//! A denied-by-seccomp attempt never reports: the kernel kills the process with SIGSYS.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, MsgFlags};

fn reply(control: &OwnedFd, msg: &str) {
    let _ = send(control.as_raw_fd(), msg.as_bytes(), MsgFlags::empty());
}

/// Speaks the worker protocol correctly up to the first request, then breaks it (a token for a
/// request that does not exist), so the supervisor's fault handling can be tested.
fn misbehave(control: &OwnedFd) -> i32 {
    use sandbox::protocol::{Event, ModelFacts, Phi, Request, VERSION};
    let send_event = |e: Event| {
        let _ = send(
            control.as_raw_fd(),
            &e.encode().unwrap_or_default(),
            MsgFlags::empty(),
        );
    };
    send_event(Event::Hello {
        version: VERSION,
        worker: "phibox-sandbox-probe (misbehaving)".into(),
    });
    send_event(Event::Ready {
        facts: ModelFacts {
            architecture: "none".into(),
            parameters: 0,
            quantization: "none".into(),
            context_length: 1,
            vocab_size: 1,
            chat_template: "none".into(),
        },
        slots: 1,
    });
    let mut buf = vec![0u8; sandbox::protocol::MAX_FRAME];
    loop {
        let n = match recv(control.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => n,
        };
        match Request::decode(&buf[..n]) {
            Ok(Request::Generate { id, .. }) => send_event(Event::Token {
                id: id + 1000,
                text: Phi("unasked".into()),
            }),
            Ok(Request::Shutdown) => return 0,
            _ => {}
        }
    }
}

/// Reads the model, allocates, runs threads, answers on the control socket, waits for `quit`.
fn serve(control: &OwnedFd, model: &str) -> i32 {
    let mut f = match std::fs::File::open(model) {
        Ok(f) => f,
        Err(e) => {
            reply(control, &format!("error open model: {e}"));
            return 2;
        }
    };
    let mut sum: u64 = 0;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                sum = buf[..n]
                    .iter()
                    .fold(sum, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
            }
            Err(e) => {
                reply(control, &format!("error read model: {e}"));
                return 2;
            }
        }
    }
    drop(f);
    // As the worker does once its model is loaded: no more file access from here on.
    if let Err(e) = sandbox::confine::serve() {
        reply(control, &format!("error serve filter: {e}"));
        return 2;
    }
    let mut big = vec![0u8; 64 << 20];
    for i in (0..big.len()).step_by(4096) {
        big[i] = 1;
    }
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("probe-{i}"))
                .spawn(move || (0..1_000_000u64).fold(i, |a, x| a.wrapping_add(x * x)))
                .expect("thread")
        })
        .collect();
    let work: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    // Keep a few threads alive while the supervisor inspects us.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let idle: Vec<_> = (0..2)
        .map(|_| {
            let rx_ok = tx.clone();
            std::thread::spawn(move || {
                let _keep = rx_ok;
                std::thread::park();
            })
        })
        .collect();
    drop(rx);
    reply(
        control,
        &format!(
            "ready bytes={total} sum={sum:x} mem={} work={work:x}",
            big.iter().filter(|&&b| b == 1).count()
        ),
    );
    let mut msg = [0u8; 64];
    loop {
        match recv(control.as_raw_fd(), &mut msg, MsgFlags::empty()) {
            Ok(0) => return 0,
            Ok(n) if &msg[..n] == b"quit" => {
                for t in &idle {
                    t.thread().unpark();
                }
                return 0;
            }
            Ok(_) => reply(control, "unknown"),
            Err(_) => return 3,
        }
    }
}

fn main() {
    let control = match sandbox::confine::enter() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("phibox-sandbox-probe: {}", sandbox::error_chain::chain(&e));
            std::process::exit(4);
        }
    };
    let args: Vec<String> = std::env::args().collect();
    // Started as a worker stand-in, the probe gets the worker's flags too: `misbehave` may
    // come after them.
    if args.iter().any(|a| a == "misbehave") {
        std::process::exit(misbehave(&control));
    }
    // `stall`: a loader that never finishes (never says it is ready, never exits).
    if args.iter().any(|a| a == "stall") {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let code = match args.get(1).map(String::as_str) {
        Some("serve") => serve(
            &control,
            args.get(2).map_or("/model/model.gguf", String::as_str),
        ),
        Some("escape") => {
            let name = args.get(2).map_or("", String::as_str);
            // Proves the probe got this far: a SIGSYS after this line is the escape's.
            reply(&control, &format!("trying {name}"));
            let out = sandbox::escape::attempt(name, args.get(3).map_or("", String::as_str));
            reply(&control, &out);
            0
        }
        _ => {
            eprintln!(
                "usage: phibox-sandbox-probe serve [MODEL] | misbehave | stall | escape NAME [ARG]"
            );
            5
        }
    };
    std::process::exit(code);
}
