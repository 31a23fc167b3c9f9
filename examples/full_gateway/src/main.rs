//! The `full_gateway` binary.

fn main() -> std::process::ExitCode {
    full_gateway::main_entry()
}
