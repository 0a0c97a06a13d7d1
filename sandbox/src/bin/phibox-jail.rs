//! `phibox-jail`: the sandbox launcher started by phiboxd (see `sandbox::jail`). Not meant to be
//! run by hand: it expects its plan, control socket and status pipe on descriptors 3 to 5.

fn main() {
    std::process::exit(sandbox::jail::main());
}
