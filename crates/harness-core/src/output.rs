//! Lines of output from a service.

use serde::{Deserialize, Serialize};

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// What harness itself says about the service: exits, restarts, failures
    /// to start (`harness logs` shows them in the service's stream).
    Harness,
}

/// One line of output, without its line terminator.
///
/// Bytes are kept exactly as the process wrote them; use [`OutputLine::text`]
/// for a lossy UTF-8 view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// The stream it came from.
    pub stream: OutputStream,
    /// The raw bytes (at most the configured line limit).
    pub bytes: Vec<u8>,
    /// True if the line was longer than the limit and the rest was dropped.
    pub truncated: bool,
}

impl OutputLine {
    /// The line as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}
