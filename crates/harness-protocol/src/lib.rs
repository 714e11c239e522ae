//! Wire protocol shared by harnessd, the harness CLI and embedders: JSON over WebSocket over mutual TLS.
