//! phiboxd as child subreaper: orphans reparented to it are reaped, while children their owners
//! wait for are left alone. One test function, because the subreaper role and reaping are
//! process-wide.

use std::process::Command;
use std::time::{Duration, Instant};

use supervisor::reaper;

fn state(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().to_string())
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn orphans_are_reaped_and_owned_children_are_not() {
    reaper::become_subreaper().unwrap();

    // An owned child: exits, stays a zombie for its owner.
    let mut owned = Command::new("true").spawn().unwrap();
    let owned_pid = nix::unistd::Pid::from_raw(owned.id() as i32);
    reaper::register(owned_pid);
    wait_until("the owned child to exit", || {
        state(owned_pid.as_raw()).is_some_and(|s| s.starts_with('Z'))
    });

    // An orphan: the shell exits at once, its background sleep is reparented to us.
    let out = Command::new("sh")
        .args(["-c", "sleep 0.3 & echo $!"])
        .output()
        .unwrap();
    let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let ppid = std::fs::read_to_string(format!("/proc/{orphan}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    assert_eq!(
        ppid,
        std::process::id().to_string(),
        "the orphan was reparented to the subreaper"
    );
    wait_until("the orphan to exit", || {
        state(orphan).is_some_and(|s| s.starts_with('Z'))
    });

    let reaped = reaper::reap_orphans();
    assert!(reaped.contains(&orphan), "{reaped:?}");
    assert!(state(orphan).is_none(), "the orphan is gone");
    assert!(!reaped.contains(&owned_pid.as_raw()));
    // Its owner still gets the exit status.
    assert!(owned.wait().unwrap().success());
    reaper::unregister(owned_pid);
}
