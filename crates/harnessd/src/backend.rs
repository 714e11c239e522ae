//! What the daemon serves: the project operations behind a small trait, so
//! the network side (handshake, TLS, routing) does not depend on how
//! services are run.

use async_trait::async_trait;
use harness_core::ProjectName;
use harness_protocol::{
    EnvParams, EnvResult, ErrorBody, ErrorCode, ExecParams, ExecPlan, LogsParams, ProjectStatus,
    ProjectSummary, ServicesParams, StreamItem, UpParams,
};

/// Where a streaming operation sends its items. Sending fails once the
/// client is gone or the request was cancelled; the operation should then end.
#[derive(Debug, Clone)]
pub struct ItemSink {
    tx: async_channel::Sender<StreamItem>,
}

impl ItemSink {
    /// A sink and the receiver of its items.
    pub fn new(capacity: usize) -> (ItemSink, async_channel::Receiver<StreamItem>) {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        (ItemSink { tx }, rx)
    }

    /// Sends one item, waiting while the client is slow. Returns false when
    /// nobody listens any more.
    pub async fn send(&self, item: StreamItem) -> bool {
        self.tx.send(item).await.is_ok()
    }
}

/// The result type of backend operations: errors are sent to the client as they are.
pub type BackendResult<T> = Result<T, ErrorBody>;

/// The project operations of the daemon.
///
/// Operations may run concurrently. A streaming operation returns when it
/// is complete; when a client cancels, its future is dropped.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Loads the project if needed and brings services up; progress goes to `progress`.
    async fn up(&self, params: UpParams, progress: ItemSink) -> BackendResult<ProjectStatus>;
    /// Stops every service of the project and forgets it.
    async fn down(&self, params: ServicesParams) -> BackendResult<ProjectStatus>;
    /// Starts services.
    async fn start(&self, params: ServicesParams) -> BackendResult<ProjectStatus>;
    /// Stops services.
    async fn stop(&self, params: ServicesParams) -> BackendResult<ProjectStatus>;
    /// Restarts services.
    async fn restart(&self, params: ServicesParams) -> BackendResult<ProjectStatus>;
    /// The status of services, of every project when none is named.
    async fn status(&self, params: ServicesParams) -> BackendResult<Vec<ProjectStatus>>;
    /// Output lines; with `follow`, until cancelled.
    async fn logs(&self, params: LogsParams, out: ItemSink) -> BackendResult<()>;
    /// State changes until cancelled.
    async fn events(&self, params: ServicesParams, out: ItemSink) -> BackendResult<()>;
    /// The environment of a service.
    async fn env(&self, params: EnvParams) -> BackendResult<EnvResult>;
    /// How to run a command where a running service runs (`harness exec`). The default:
    /// this backend cannot say.
    async fn exec(&self, params: ExecParams) -> BackendResult<ExecPlan> {
        Err(no_project(&params.project))
    }
    /// The projects the daemon manages.
    fn projects(&self) -> Vec<ProjectName>;
    /// The projects with their files and how many services are in each state
    /// (`harness ls`). The default names them and nothing more.
    async fn project_summaries(&self) -> BackendResult<Vec<ProjectSummary>> {
        Ok(self
            .projects()
            .into_iter()
            .map(|project| ProjectSummary {
                project,
                files: Vec::new(),
                working_dir: None,
                services: 0,
                states: Default::default(),
            })
            .collect())
    }
    /// Writes what must survive the daemon (called on shutdown; a backend
    /// also persists whenever its state changes).
    async fn persist(&self) -> BackendResult<()> {
        Ok(())
    }
    /// Adds the backend's own metrics to the daemon's registry.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Conditions that need attention (e.g. the state cannot be saved), for
    /// `daemon status`.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// How local process services are stopped, for `daemon status`; `None`
    /// for a backend that runs none.
    fn stopping(&self) -> Option<harness_protocol::Stopping> {
        None
    }
}

/// A backend that manages no projects: status is empty, logs and events
/// have nothing to say, and operations that need a project answer
/// [`ErrorCode::NotFound`] or [`ErrorCode::Unavailable`]. The daemon uses it
/// when it runs without service orchestration; tests use it to exercise the
/// network side alone.
#[derive(Debug, Default)]
pub struct EmptyBackend;

fn no_project(project: &harness_protocol::ProjectRef) -> ErrorBody {
    match &project.name {
        Some(n) => ErrorBody::new(ErrorCode::NotFound, format!("no project named {n}")),
        None => ErrorBody::new(ErrorCode::NotFound, "no project is loaded"),
    }
}

#[async_trait]
impl Backend for EmptyBackend {
    async fn up(&self, _params: UpParams, _progress: ItemSink) -> BackendResult<ProjectStatus> {
        Err(ErrorBody::new(
            ErrorCode::Unavailable,
            "this daemon runs without service orchestration: it cannot load projects",
        ))
    }
    async fn down(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        Err(no_project(&p.project))
    }
    async fn start(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        Err(no_project(&p.project))
    }
    async fn stop(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        Err(no_project(&p.project))
    }
    async fn restart(&self, p: ServicesParams) -> BackendResult<ProjectStatus> {
        Err(no_project(&p.project))
    }
    async fn status(&self, p: ServicesParams) -> BackendResult<Vec<ProjectStatus>> {
        if p.project.name.is_some() {
            return Err(no_project(&p.project));
        }
        Ok(Vec::new())
    }
    async fn logs(&self, p: LogsParams, _out: ItemSink) -> BackendResult<()> {
        if p.project.name.is_some() {
            return Err(no_project(&p.project));
        }
        if p.follow {
            // Nothing will ever be written: wait until cancelled.
            futures_lite::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn events(&self, p: ServicesParams, _out: ItemSink) -> BackendResult<()> {
        if p.project.name.is_some() {
            return Err(no_project(&p.project));
        }
        futures_lite::future::pending::<()>().await;
        Ok(())
    }
    async fn env(&self, p: EnvParams) -> BackendResult<EnvResult> {
        Err(no_project(&p.project))
    }
    fn projects(&self) -> Vec<ProjectName> {
        Vec::new()
    }
}
