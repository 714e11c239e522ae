//! Errors of the Docker Engine client, each naming what and where.

use std::io;

/// What went wrong talking to a Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// `DOCKER_HOST` (or a given host string) is not understood.
    #[error("cannot use Docker host `{host}`: {reason}")]
    BadHost {
        /// The host string.
        host: String,
        /// Why it is rejected.
        reason: String,
    },
    /// No connection could be opened to the engine.
    #[error(
        "Docker engine not reachable at {endpoint}: {source} (is the daemon running, and is DOCKER_HOST right?)"
    )]
    Unreachable {
        /// The socket, address or command tried.
        endpoint: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The image is not present on the engine, and nothing can be pulled.
    #[error(
        "image `{image}` is not present on the Docker engine and no registry is reachable here: build it (docker-test-env/build.sh, or a `build:` section) or load it with `docker load`"
    )]
    ImageNotFound {
        /// The image reference.
        image: String,
    },
    /// A container (or network) with this name already exists.
    #[error("name `{name}` is already in use on the Docker engine: {message}")]
    NameConflict {
        /// The requested name.
        name: String,
        /// The engine's message.
        message: String,
    },
    /// A host port to publish is already taken.
    #[error(
        "cannot publish a port of container `{container}`: the host port is already in use ({message})"
    )]
    PortInUse {
        /// The container.
        container: String,
        /// The engine's message, naming the port.
        message: String,
    },
    /// The OCI runtime asked for is not configured on the engine.
    #[error(
        "the container runtime `{runtime}` is not installed or not configured on the Docker engine (no fallback is used): {message}"
    )]
    UnknownRuntime {
        /// The runtime name, e.g. `runsc`.
        runtime: String,
        /// The engine's message.
        message: String,
    },
    /// A container, exec, network or image does not exist.
    #[error("{what} not found on the Docker engine: {message}")]
    NotFound {
        /// What was looked for, e.g. `container abc123`.
        what: String,
        /// The engine's message.
        message: String,
    },
    /// Any other error response of the engine.
    #[error("Docker engine: {method} {path} failed with HTTP {status}: {message}")]
    Api {
        /// The request method.
        method: String,
        /// The request path (without the version prefix).
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// An image build failed.
    #[error("building image `{tag}` failed: {message}")]
    Build {
        /// The tag being built.
        tag: String,
        /// The builder's error message.
        message: String,
    },
    /// The HTTP exchange failed (connection reset, malformed response).
    #[error("Docker engine at {endpoint}: HTTP error on {path}: {}", chain(.source))]
    Http {
        /// The engine endpoint.
        endpoint: String,
        /// The request path.
        path: String,
        /// The underlying error.
        source: hyper::Error,
    },
    /// A response could not be decoded.
    #[error("Docker engine: cannot decode the response of {path}: {source}")]
    Decode {
        /// The request path.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A local I/O error (e.g. reading a build context).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A bad argument given to the client (e.g. an invalid name).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An operation did not complete in time.
    #[error("timed out after {seconds:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: f64,
    },
}

/// An error and its causes, joined with `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl DockerError {
    /// True if the error says something does not exist (container, image, network, exec).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::NotFound { .. } | DockerError::ImageNotFound { .. }
        )
    }
}

/// A result with a [`DockerError`].
pub type Result<T, E = DockerError> = std::result::Result<T, E>;
