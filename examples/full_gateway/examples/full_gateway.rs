//! `cargo run --release --example full_gateway`: the same binary as `-p full_gateway`.

fn main() -> std::process::ExitCode {
    full_gateway::main_entry()
}
