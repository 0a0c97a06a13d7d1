//! `phibox`: the admin and auditor command line. `phibox audit verify DIR` checks a trail.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(supervisor::cli::main());
}
