//! The engine's event stream (`GET /events`), filtered by labels.

use std::collections::HashMap;

use http::Method;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Docker, JsonLines, empty_body, query};
use crate::error::Result;

/// The actor of an event: the container (or network, image) it is about.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Actor {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its attributes: labels, `name`, `image`, `exitCode`, `signal`, ...
    pub attributes: HashMap<String, String>,
}

/// One engine event.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Event {
    /// `container`, `network`, `image`, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, `kill`, `stop`, `destroy`, `oom`, `health_status: healthy`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// What it is about.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Unix time in nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// The exit code of a `die` event.
    pub fn exit_code(&self) -> Option<i64> {
        self.actor.attributes.get("exitCode")?.parse().ok()
    }

    /// An attribute (labels are attributes too).
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.actor.attributes.get(key).map(String::as_str)
    }
}

/// Which events to receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these object types (`container`, `network`); all when empty.
    pub types: Vec<String>,
    /// Only objects with all these labels (`(key, value)`, empty value = any).
    pub labels: Vec<(String, String)>,
    /// Only these actions (`start`, `die`, ...); all when empty.
    pub actions: Vec<String>,
    /// Replay events since this Unix time (seconds), then keep streaming.
    pub since: Option<i64>,
}

/// A live stream of events. Dropping it closes the connection.
pub struct EventStream {
    lines: JsonLines,
}

impl EventStream {
    /// The next event; `None` if the engine closed the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.lines.next::<Event>().await
    }
}

impl Docker {
    /// Subscribes to engine events. The subscription is in place when this returns,
    /// so events of actions taken afterwards are not missed.
    pub async fn events(&self, filter: &EventFilter) -> Result<EventStream> {
        let mut f = serde_json::Map::new();
        if !filter.types.is_empty() {
            f.insert("type".into(), json!(filter.types));
        }
        if !filter.actions.is_empty() {
            f.insert("event".into(), json!(filter.actions));
        }
        if !filter.labels.is_empty() {
            let l: Vec<String> = filter
                .labels
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            f.insert("label".into(), json!(l));
        }
        let mut q = Vec::new();
        if !f.is_empty() {
            q.push(("filters", serde_json::Value::Object(f).to_string()));
        }
        if let Some(s) = filter.since {
            q.push(("since", s.to_string()));
        }
        let path = format!("/events{}", query(&q));
        let body = self
            .call(Method::GET, &path, empty_body(), "events")
            .await?;
        Ok(EventStream {
            lines: body.json_lines(),
        })
    }
}
