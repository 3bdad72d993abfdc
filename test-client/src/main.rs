use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Output piped into `head` ends quietly when the reader goes, as a shell tool's does,
    // instead of panicking on the next write (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default action before any thread writes output.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match test_client::run(test_client::Opts::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
