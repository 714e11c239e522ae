//! Turning WebSocket messages into protocol messages and back, with the
//! frame size limit and errors precise enough to answer a bad client.

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use serde::Serialize;

use crate::wire::{ClientMessage, ErrorBody, ErrorCode, Hello, Method, Request, RequestId};

/// The largest message, in bytes, either side accepts (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The WebSocket settings both sides use: messages and frames are limited
/// to [`MAX_FRAME_BYTES`].
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Serializes a message to its JSON text.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serializing our own wire types cannot fail: they have string keys only.
    serde_json::to_string(msg).expect("wire types always serialize to JSON")
}

/// Why a client's message could not be decoded, with the id to answer to
/// when the message had a readable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, if it could be read.
    pub id: Option<RequestId>,
    /// The error to send back.
    pub error: ErrorBody,
}

impl DecodeError {
    fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            error: ErrorBody::new(code, message),
        }
    }
}

/// Decodes a client's message: a [`Hello`] or a [`Request`].
///
/// Malformed JSON and messages without a known `type` are
/// [`ErrorCode::BadRequest`]; a request whose `method` is not one of
/// [`Method::NAMES`] is [`ErrorCode::UnknownMethod`]; a known method with
/// bad parameters is [`ErrorCode::BadRequest`] naming the problem.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        DecodeError::new(None, ErrorCode::BadRequest, format!("malformed JSON: {e}"))
    })?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::new(
            None,
            ErrorCode::BadRequest,
            "a message must be a JSON object",
        ));
    };
    let id = obj.get("id").and_then(serde_json::Value::as_u64);
    match obj.get("type").and_then(serde_json::Value::as_str) {
        Some("hello") => serde_json::from_value::<ClientMessage>(value.clone())
            .map_err(|e| DecodeError::new(None, ErrorCode::BadRequest, format!("bad hello: {e}"))),
        Some("request") => {
            let Some(id) = id else {
                return Err(DecodeError::new(
                    None,
                    ErrorCode::BadRequest,
                    "a request needs a numeric \"id\"",
                ));
            };
            let Some(method) = obj.get("method").and_then(serde_json::Value::as_str) else {
                return Err(DecodeError::new(
                    Some(id),
                    ErrorCode::BadRequest,
                    "a request needs a string \"method\"",
                ));
            };
            if !Method::NAMES.contains(&method) {
                return Err(DecodeError::new(
                    Some(id),
                    ErrorCode::UnknownMethod,
                    format!("unknown method {method:?}"),
                ));
            }
            serde_json::from_value::<Request>(value.clone())
                .map(ClientMessage::Request)
                .map_err(|e| {
                    DecodeError::new(
                        Some(id),
                        ErrorCode::BadRequest,
                        format!("bad parameters for {method}: {e}"),
                    )
                })
        }
        Some(other) => Err(DecodeError::new(
            id,
            ErrorCode::BadRequest,
            format!("unknown message type {other:?}"),
        )),
        None => Err(DecodeError::new(
            id,
            ErrorCode::BadRequest,
            "a message needs a string \"type\"",
        )),
    }
}

/// Builds the client's [`Hello`] for this protocol version.
pub fn hello(client: impl Into<String>) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol: crate::PROTOCOL_VERSION,
        client: client.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_and_hello() {
        let m = decode_client_message(r#"{"type":"request","id":5,"method":"ping"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Request(Request {
                id: 5,
                method: Method::Ping
            })
        );
        let h = decode_client_message(&encode(&hello("t"))).unwrap();
        assert!(matches!(h, ClientMessage::Hello(_)));
    }

    #[test]
    fn classifies_bad_input() {
        let e = decode_client_message("{nope").unwrap_err();
        assert_eq!((e.id, e.error.code), (None, ErrorCode::BadRequest));
        let e = decode_client_message("[1,2]").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = decode_client_message(r#"{"type":"request","id":9,"method":"fly"}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(9), ErrorCode::UnknownMethod));
        let e = decode_client_message(
            r#"{"type":"request","id":10,"method":"cancel","params":{"id":"x"}}"#,
        )
        .unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(10), ErrorCode::BadRequest));
        let e = decode_client_message(r#"{"type":"request","method":"ping"}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = decode_client_message(r#"{"type":"what","id":1}"#).unwrap_err();
        assert_eq!((e.id, e.error.code), (Some(1), ErrorCode::BadRequest));
    }
}
