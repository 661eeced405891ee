//! `iscsi-bench`: see the crate docs of `bench`.

fn main() {
    eprintln!("iscsi-bench: not wired yet");
    std::process::exit(2);
}
