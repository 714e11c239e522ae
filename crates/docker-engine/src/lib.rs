//! A runtime-agnostic Docker Engine API client over the unix socket (or ssh dial-stdio).
