//! Setup errors: what a server could not do before it started serving (bind a busy port, say).
//! They go up with `?` to `main`, which prints one line on stderr and exits 1
//! (`docs/contract.md` §2). Errors of a *connection* never come here: they close that
//! connection only.

use std::fmt;
use std::process::ExitCode;

/// What was attempted, and the OS error that stopped it.
#[derive(Debug)]
pub struct SetupError {
    what: String,
    cause: std::io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // io::Error's Display reads "Address already in use (os error 98)": the words a user
        // can search for, and the number a man page lists.
        write!(f, "{}: {}", self.what, self.cause)
    }
}

impl std::error::Error for SetupError {}

/// `.context("cannot bind 127.0.0.1:80")` on any result whose error is an OS error.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, SetupError>;
}

impl<T, E: Into<std::io::Error>> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, SetupError> {
        self.map_err(|e| SetupError {
            what: what.to_string(),
            cause: e.into(),
        })
    }
}

/// The end of every lesson's `main`: success is exit 0; a setup error is one line on stderr,
/// prefixed with the crate's name, and exit 1.
pub fn exit_with(crate_name: &str, result: Result<(), SetupError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{crate_name}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_attempt_and_the_os_error() {
        let r: Result<(), _> = Err(nix::errno::Errno::EADDRINUSE);
        let e = r.context("cannot bind 127.0.0.1:8080").unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("cannot bind 127.0.0.1:8080: Address already in use"),
            "{line}"
        );
        assert!(line.contains("os error 98"), "{line}");
    }
}
