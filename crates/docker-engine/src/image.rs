//! Images: inspect, and build from a local context directory (no registry needed).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Docker, Failure, ReqBody, enc, query};
use crate::error::{DockerError, Result};

/// What `GET /images/{name}/json` reports (the parts harness uses).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInspect {
    /// The image id (`sha256:...`).
    pub id: String,
    /// Tags.
    pub repo_tags: Option<Vec<String>>,
    /// Size in bytes.
    pub size: i64,
}

/// A local image build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// The context directory, sent as a tar stream.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// The tag to give the image, e.g. `myapp:dev`.
    pub tag: String,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Labels for the image.
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BuildMessage {
    stream: Option<String>,
    status: Option<String>,
    error: Option<String>,
    aux: Option<BuildAux>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct BuildAux {
    #[serde(rename = "ID")]
    id: Option<String>,
}

/// A `Write` that sends what is written as body chunks through a channel.
struct ChannelWriter {
    tx: async_channel::Sender<io::Result<Frame<Bytes>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send_blocking(Ok(Frame::data(chunk))).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Streams `dir` as a tar archive into a request body, built on a blocking thread.
fn tar_stream(dir: &Path, dockerfile: &str) -> ReqBody {
    let (tx, rx) = async_channel::bounded::<io::Result<Frame<Bytes>>>(8);
    let dir = dir.to_owned();
    let dockerfile = dockerfile.to_owned();
    let err_tx = tx.clone();
    blocking::unblock(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::new(),
        };
        let res = (|| -> io::Result<()> {
            crate::context::write_context(&dir, &dockerfile, &mut w).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading build context {}: {e}", dir.display()),
                )
            })?;
            w.flush()
        })();
        if let Err(e) = res {
            let _ = err_tx.send_blocking(Err(e));
        }
    })
    .detach();
    StreamBody::new(rx).boxed()
}

impl Docker {
    /// Inspects a local image; [`DockerError::ImageNotFound`] when it is absent.
    pub async fn inspect_image(&self, image: &str) -> Result<ImageInspect> {
        let path = format!("/images/{}/json", enc(image));
        match self
            .request(Method::GET, &path, crate::client::empty_body(), None)
            .await
        {
            Ok(b) => b.json().await,
            Err(Failure::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                Err(DockerError::ImageNotFound {
                    image: image.to_owned(),
                })
            }
            Err(f) => Err(f.into_error(&Method::GET, &path, &format!("image {image}"))),
        }
    }

    /// Removes a local image (`force` also untags it from running containers).
    /// An image that does not exist is not an error.
    pub async fn remove_image(&self, image: &str, force: bool) -> Result<()> {
        let path = format!("/images/{}?force={force}", enc(image));
        match self
            .call(
                Method::DELETE,
                &path,
                crate::client::empty_body(),
                &format!("image {image}"),
            )
            .await
        {
            Ok(b) => {
                b.bytes().await?;
                Ok(())
            }
            Err(DockerError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Builds an image from a context directory (streamed as tar to `POST /build`,
    /// without what its `.dockerignore` excludes),
    /// calling `progress` with each line of builder output; returns the image id.
    /// Base images must be present locally: nothing is pulled.
    pub async fn build_image(
        &self,
        spec: &BuildSpec,
        mut progress: impl FnMut(&str),
    ) -> Result<String> {
        let meta = std::fs::metadata(&spec.context).map_err(|source| DockerError::Io {
            what: format!("build context {}", spec.context.display()),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DockerError::Invalid(format!(
                "build context {} is not a directory",
                spec.context.display()
            )));
        }
        let dockerfile = spec
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        if !spec.context.join(&dockerfile).is_file() {
            return Err(DockerError::Io {
                what: format!("dockerfile {}", spec.context.join(&dockerfile).display()),
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            });
        }
        let body = tar_stream(&spec.context, &dockerfile);
        let mut q = vec![
            ("t", spec.tag.clone()),
            ("dockerfile", dockerfile),
            ("rm", "true".into()),
            ("forcerm", "true".into()),
        ];
        if !spec.build_args.is_empty() {
            q.push(("buildargs", json!(spec.build_args).to_string()));
        }
        if !spec.labels.is_empty() {
            q.push(("labels", json!(spec.labels).to_string()));
        }
        let path = format!("/build{}", query(&q));
        let body = self
            .request(Method::POST, &path, body, Some("application/x-tar"))
            .await
            .map_err(|f| match f {
                Failure::Status { message, .. } => DockerError::Build {
                    tag: spec.tag.clone(),
                    message,
                },
                Failure::Transport(e) => e,
            })?;
        let mut lines = body.json_lines();
        let mut id = None;
        while let Some(msg) = lines.next::<BuildMessage>().await {
            let msg = msg?;
            if let Some(e) = msg.error {
                return Err(DockerError::Build {
                    tag: spec.tag.clone(),
                    message: e.trim().to_owned(),
                });
            }
            for text in [msg.stream, msg.status].into_iter().flatten() {
                for l in text.lines() {
                    if !l.trim().is_empty() {
                        progress(l);
                    }
                }
            }
            if let Some(aux) = msg.aux
                && aux.id.is_some()
            {
                id = aux.id;
            }
        }
        match id {
            Some(id) => Ok(id),
            None => Ok(self.inspect_image(&spec.tag).await?.id),
        }
    }
}
