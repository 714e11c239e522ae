//! Cost of writing the output of containers and node services to the log
//! files (`ToLogFiles`), against the bare baseline in the same run: the same
//! instance event stream consumed as the manager consumes it, without the
//! wrapper.
//!
//! An executor yields `LINES` output lines of 80 bytes from memory (so the
//! source costs next to nothing); each case consumes the whole stream, and
//! the wrapped case also waits until every byte is in `stdout.log`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use harness_config::ServiceSpec;
use harness_core::{BoxTask, OutputLine, OutputStream, ProjectName, ServiceKind, ServiceName};
use harnessd::targets::ToLogFiles;
use service_orchestration::{
    ExecOutcome, ExecutorError, InstanceEvent, InstanceRecord, Launched, ServiceExecutor,
    ServiceInstance, StartContext,
};

const LINES: usize = 200_000;
const LINE_LEN: usize = 80;
const ROUNDS: usize = 5;

struct Inert;

#[async_trait::async_trait]
impl ServiceInstance for Inert {
    fn pid(&self) -> Option<u32> {
        None
    }
    fn record(&self) -> InstanceRecord {
        InstanceRecord {
            kind: ServiceKind::Docker,
            pid: None,
            container_id: None,
            host: "bench".into(),
            data: serde_json::Value::Null,
        }
    }
    async fn stop(
        &self,
        _signal: harness_core::Signal,
        _grace: Duration,
    ) -> Result<(), ExecutorError> {
        Ok(())
    }
    async fn exec(
        &self,
        _command: &str,
        _args: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, ExecutorError> {
        Ok(ExecOutcome {
            success: true,
            detail: String::new(),
        })
    }
}

/// Yields `LINES` lines from memory, then ends.
struct Lines;

#[async_trait::async_trait]
impl ServiceExecutor for Lines {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Docker
    }
    async fn start(&self, _: &ServiceSpec, _: &StartContext) -> Result<Launched, ExecutorError> {
        let line = OutputLine {
            stream: OutputStream::Stdout,
            bytes: vec![b'x'; LINE_LEN],
            truncated: false,
        };
        let events =
            futures_lite::stream::iter(std::iter::repeat_n(line, LINES).map(InstanceEvent::Output));
        Ok(Launched {
            instance: Arc::new(Inert),
            events: Box::pin(events),
        })
    }
    async fn attach(
        &self,
        spec: &ServiceSpec,
        _: &InstanceRecord,
        ctx: &StartContext,
    ) -> Result<Launched, ExecutorError> {
        self.start(spec, ctx).await
    }
}

fn ctx(log_dir: Option<std::path::PathBuf>) -> StartContext {
    StartContext {
        project: ProjectName::new("bench").unwrap(),
        env: Default::default(),
        log_dir,
        generation: 1,
        spawner: Arc::new(|t: BoxTask| smol::spawn(t).detach()),
        address: None,
    }
}

fn run(executor: &dyn ServiceExecutor, log_dir: Option<std::path::PathBuf>) -> Duration {
    let spec = ServiceSpec::process(ServiceName::new("svc").unwrap(), "unused", Vec::new());
    smol::block_on(async {
        let t0 = Instant::now();
        let mut launched = executor.start(&spec, &ctx(log_dir.clone())).await.unwrap();
        let mut n = 0;
        while let Some(ev) = launched.events.next().await {
            if matches!(ev, InstanceEvent::Output(_)) {
                n += 1;
            }
        }
        assert_eq!(n, LINES);
        drop(launched);
        if let Some(dir) = log_dir {
            let want = (LINES * (LINE_LEN + 1)) as u64;
            let file = dir.join("stdout.log");
            while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < want {
                async_io::Timer::after(Duration::from_micros(200)).await;
            }
        }
        t0.elapsed()
    })
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "{name:<28} median {:>9.1?}  ({:>6.0} ns/line, {:>6.1} MB/s)  min {:>9.1?}  max {:>9.1?}",
        median,
        median.as_nanos() as f64 / LINES as f64,
        (LINES * LINE_LEN) as f64 / median.as_secs_f64() / 1e6,
        samples[0],
        samples[samples.len() - 1]
    );
    median
}

fn main() {
    let bare = Lines;
    let wrapped = ToLogFiles::wrap(Lines);
    let mut base = Vec::new();
    let mut tee = Vec::new();
    for _ in 0..ROUNDS {
        base.push(run(&bare, None));
        let dir = tempfile::tempdir().unwrap();
        tee.push(run(wrapped.as_ref(), Some(dir.path().join("svc"))));
    }
    println!("{LINES} lines of {LINE_LEN} bytes, {ROUNDS} rounds each");
    let b = report("bare event stream", base);
    let t = report("through ToLogFiles (+files)", tee);
    println!(
        "overhead: {:.2}x the bare stream",
        t.as_secs_f64() / b.as_secs_f64()
    );
}
