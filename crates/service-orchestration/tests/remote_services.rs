//! Remote services on real sshd nodes (containers on a docker network of
//! their own): start, output, exit codes, stop, surviving a dropped
//! connection, re-attach from a record, an unreachable node.

#[path = "remote_support/mod.rs"]
mod remote_support;

use std::time::Duration;

use harness_core::{ExitStatus, Signal};
use remote_support::*;
use service_orchestration::ServiceExecutor;
use service_orchestration::remote::{RemoteExecutor, RemoteRecord};
use service_orchestration::ssh::Reachability;

/// `lineN` for N = 0, 1, 2, ... every 0.2 s.
const COUNTER: &str = "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done";

fn numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("line").and_then(|n| n.parse().ok()))
        .collect()
}

fn contiguous(nums: &[u64]) -> bool {
    nums.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn remote_service_output_exit_code_and_stop() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(2);
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let exec = RemoteExecutor::new(hosts.clone());
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());

        // Output on both streams, env, and the exit code.
        let spec = remote_sh(
            "job",
            "n1",
            "echo \"hello from $(hostname) in $HARNESS_PROJECT\"; echo oops >&2; exit 3",
        );
        let mut l = exec.start(&spec, &ctx).await.unwrap();
        assert_eq!(l.instance.record().host, "n1");
        let (lines, exit) = read_until(&mut l.events, 30, |_| false).await;
        assert_eq!(exit, Some(ExitStatus::Code(3)), "{lines:?}");
        assert!(
            lines.contains(&format!("hello from n1 in {project}")),
            "{lines:?}"
        );
        assert!(lines.contains(&"oops".to_owned()), "{lines:?}");

        // A `user:` other than the node's ssh user is refused, not ignored.
        let mut as_other = remote_sh("job", "n1", "true");
        as_other.user = Some("nobody".into());
        let err = exec
            .start(&as_other, &ctx)
            .await
            .expect_err("ran as another user");
        assert!(err.to_string().contains("ssh user"), "{err}");

        // The same service on the other node runs there.
        let spec2 = remote_sh("job", "n2", "hostname");
        let mut l2 = exec.start(&spec2, &ctx).await.unwrap();
        let (lines2, exit2) = read_until(&mut l2.events, 30, |_| false).await;
        assert_eq!(exit2, Some(ExitStatus::Code(0)));
        assert_eq!(lines2, ["n2"]);

        // A long-running service stops with its whole group.
        let spec = remote_sh(
            "server",
            "n1",
            "sleep 1000 & echo child $!; echo up; while true; do sleep 1; done",
        );
        let mut l = exec.start(&spec, &ctx).await.unwrap();
        let (lines, _) = read_until(&mut l.events, 30, |ls| ls.iter().any(|x| x == "up")).await;
        let child: u32 = lines
            .iter()
            .find_map(|x| x.strip_prefix("child "))
            .and_then(|p| p.parse().ok())
            .expect("child pid");
        let pid = l.instance.pid().unwrap();

        // Command checks run on the node, with the service's environment.
        let ok = l
            .instance
            .exec(
                "sh",
                &[
                    "-c".into(),
                    "test \"$(hostname)\" = n1 && test -n \"$HARNESS_PROJECT\"".into(),
                ],
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert!(ok.success, "{ok:?}");
        let bad = l
            .instance
            .exec(
                "sh",
                &["-c".into(), "echo nope; exit 2".into()],
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert!(!bad.success);
        assert!(
            bad.detail.contains("exit 2") && bad.detail.contains("nope"),
            "{bad:?}"
        );
        let slow = l
            .instance
            .exec("sleep", &["30".into()], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            !slow.success && slow.detail.contains("timed out"),
            "{slow:?}"
        );
        // ... and does not linger on the node.
        let n1 = hosts.get("n1").unwrap();
        eventually(20, "the timed-out check to end on the node", || {
            let n1 = n1.clone();
            async move {
                n1.run(
                    "ps -o args | grep -c '^sleep 30$' || true",
                    None,
                    Duration::from_secs(10),
                )
                .await
                .map(|o| o.stdout_text() == "0")
                .unwrap_or(false)
            }
        })
        .await;

        l.instance
            .stop(Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();
        let (_, exit) = read_until(&mut l.events, 30, |_| false).await;
        assert_eq!(exit, Some(ExitStatus::Signal(15)));
        let out = n1
            .run(
                &format!("kill -0 {pid} 2>/dev/null && echo leader; kill -0 {child} 2>/dev/null && echo child; true"),
                None,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "", "processes left on the node");
        hosts.close_all().await;
    });
}

#[test]
fn remote_service_survives_a_dropped_connection_and_is_re_attached() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let exec = RemoteExecutor::new(hosts.clone());
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());
        let spec = remote_sh("counter", "n1", COUNTER);
        let mut l = exec.start(&spec, &ctx).await.unwrap();
        let (mut seen, exit) = read_until(&mut l.events, 30, |ls| numbers(ls).len() >= 5).await;
        assert_eq!(exit, None);

        // Kill the master connection: the service lives on, the output resumes
        // with no gap and no duplicate.
        let n1 = hosts.get("n1").unwrap();
        assert!(n1.master_running().await);
        assert!(n1.close_master().await);
        let (more, exit) = read_until(&mut l.events, 60, |ls| numbers(ls).len() >= 10).await;
        assert_eq!(exit, None);
        seen.extend(more);
        let nums = numbers(&seen);
        assert!(contiguous(&nums), "gap or duplicate: {nums:?}");
        assert_eq!(nums[0], 0);

        // A new daemon (new connections) re-adopts it from the record.
        let record = l.instance.record();
        let rec: RemoteRecord = serde_json::from_value(record.data.clone()).unwrap();
        assert_eq!(Some(rec.pid), record.pid);
        drop(l);
        hosts.close_all().await;
        let hosts2 = nodes.hosts(nodes.options());
        let exec2 = RemoteExecutor::new(hosts2.clone());
        let mut l2 = exec2.attach(&spec, &record, &ctx).await.unwrap();
        assert_eq!(l2.instance.pid(), Some(rec.pid));
        let (after, exit) = read_until(&mut l2.events, 30, |ls| numbers(ls).len() >= 5).await;
        assert_eq!(exit, None);
        let mut all = nums.clone();
        all.extend(numbers(&after));
        assert!(
            contiguous(&all),
            "gap or duplicate across re-attach: {all:?}"
        );

        // Starting it again adopts the running instance instead of a second one.
        let l3 = exec2.start(&spec, &ctx).await.unwrap();
        assert_eq!(l3.instance.pid(), Some(rec.pid));

        // A record whose pid now has another start time (pid reuse) is refused.
        let mut reused = record.clone();
        reused.data["start_time"] = serde_json::json!(rec.start_time + 1);
        assert!(
            exec2.attach(&spec, &reused, &ctx).await.is_err(),
            "adopted a process with another start time"
        );

        // A record whose process is gone is refused.
        l2.instance
            .stop(Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();
        let err = exec2.attach(&spec, &record, &ctx).await;
        assert!(err.is_err(), "attached to a stopped service");
        hosts2.close_all().await;
    });
}

#[test]
fn unreachable_node_shows_unknown_and_reconciles() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(2);
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let exec = RemoteExecutor::new(hosts.clone());
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());
        let spec = remote_sh("counter", "n2", COUNTER);
        let other = remote_sh("counter", "n1", COUNTER);
        let mut l = exec.start(&spec, &ctx).await.unwrap();
        let mut lo = exec.start(&other, &ctx).await.unwrap();
        let (mut seen, _) = read_until(&mut l.events, 30, |ls| numbers(ls).len() >= 3).await;
        let pid = l.instance.pid().unwrap();
        assert_eq!(exec.unknown_reason(&spec), None);

        nodes.disconnect("n2");
        // Read on while the node is away; the service must not be reported as exited.
        let mut reason = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while reason.is_none() && std::time::Instant::now() < deadline {
            let (more, exit) = read_until(&mut l.events, 1, |_| false).await;
            assert_eq!(exit, None, "an unreachable service was reported as exited");
            seen.extend(more);
            reason = exec.unknown_reason(&spec);
        }
        let reason = reason.expect("the node was never reported unreachable");
        assert!(reason.contains("n2"), "{reason}");
        // The instance itself says it cannot be seen (what the manager asks when a check fails).
        let seen_from_instance = l.instance.unreachable().await;
        assert!(
            seen_from_instance
                .as_deref()
                .is_some_and(|r| r.contains("`n2`")),
            "{seen_from_instance:?}"
        );
        assert_eq!(lo.instance.unreachable().await, None);
        // The other node is unaffected.
        assert_eq!(exec.unknown_reason(&other), None);
        assert!(matches!(
            hosts.get("n2").unwrap().reachability(),
            Reachability::Unreachable { .. }
        ));
        let start = exec.start(&spec, &ctx).await;
        assert!(start.is_err(), "started on an unreachable node");
        // A new daemon cannot re-attach while the node is away, and says why.
        let record = l.instance.record();
        let exec2 = RemoteExecutor::new(nodes.hosts(nodes.options()));
        let err = exec2
            .attach(&spec, &record, &ctx)
            .await
            .expect_err("attached through an unreachable node");
        assert!(err.to_string().contains("n2"), "{err}");

        nodes.connect("n2");
        let (more, exit) = read_until(&mut l.events, 60, |ls| numbers(ls).len() >= 5).await;
        assert_eq!(exit, None);
        seen.extend(more);
        let nums = numbers(&seen);
        assert!(
            contiguous(&nums),
            "gap or duplicate across the outage: {nums:?}"
        );
        assert_eq!(exec.unknown_reason(&spec), None);
        assert_eq!(l.instance.unreachable().await, None);
        // Still the same process: nothing was started twice.
        let again = exec.start(&spec, &ctx).await.unwrap();
        assert_eq!(again.instance.pid(), Some(pid));
        let (o, _) = read_until(&mut lo.events, 10, |ls| !ls.is_empty()).await;
        assert!(!o.is_empty());
        for i in [&l.instance, &lo.instance] {
            i.stop(Signal::TERM, Duration::from_secs(5)).await.unwrap();
        }
        hosts.close_all().await;
    });
}

#[test]
fn many_services_on_one_node_share_few_connections() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let exec = RemoteExecutor::new(hosts.clone());
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());
        // More followed services than sshd allows sessions on one connection.
        let mut launched = Vec::new();
        for i in 0..8 {
            let spec = remote_sh(
                &format!("s{i}"),
                "n1",
                &format!("echo hello {i}; while true; do sleep 1; done"),
            );
            launched.push(exec.start(&spec, &ctx).await.unwrap());
        }
        for (i, l) in launched.iter_mut().enumerate() {
            let (lines, exit) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
            assert_eq!(exit, None);
            assert_eq!(lines, [format!("hello {i}")]);
        }
        // One master for commands, one per two followed services.
        let sockets = std::fs::read_dir(hosts.control_dir()).unwrap().count();
        assert_eq!(sockets, 1 + 4, "master sockets");
        for l in &mut launched {
            l.instance
                .stop(Signal::TERM, Duration::from_secs(5))
                .await
                .unwrap();
            let (_, exit) = read_until(&mut l.events, 30, |_| false).await;
            assert_eq!(exit, Some(ExitStatus::Signal(15)));
        }
        hosts.close_all().await;
    });
}

/// Through a ServiceManager: the services of a node that is cut off show
/// `unknown` with the reason, their failing checks restart nothing, the other
/// node's services are unaffected, and once the node is back the same process
/// is running and healthy again; one that died during an outage is restarted
/// per its policy once the node is back.
#[test]
fn manager_shows_an_unreachable_node_as_unknown_and_reconciles() {
    if !nodes_available() {
        return;
    }
    smol::block_on(unreachable_node_through_manager(smol_spawner()));
}

/// A service that says `up`, then is silent: its followers have nothing to
/// write, so only what ties them to their session and their service ends them.
const SILENT: &str = "echo up; exec sleep 1000";

#[test]
fn followers_end_with_their_session_their_daemon_and_their_service() {
    if !nodes_available() {
        return;
    }
    let nodes = Nodes::start(1);
    let node = nodes.container("n1");
    smol::block_on(async {
        let hosts = nodes.hosts(nodes.options());
        nodes.wait_ready(&hosts).await;
        let exec = RemoteExecutor::new(hosts.clone());
        let project = project_name();
        let ctx = ctx(&project, smol_spawner());
        let spec = remote_sh("quiet", "n1", SILENT);
        let mut l = exec.start(&spec, &ctx).await.unwrap();
        let (lines, _) = read_until(&mut l.events, 30, |ls| !ls.is_empty()).await;
        assert_eq!(lines, ["up"]);
        let pid = l.instance.pid().unwrap();
        let first = node_until(&node, 30, "no tail per log", |ps| tails(ps).len() == 2);
        let first: Vec<u32> = helpers(&first, &[pid]).iter().map(|p| p.pid).collect();

        // The connection is lost: the follower reconnects, and what followed
        // over the lost connection ends.
        let n1 = hosts.get("n1").unwrap();
        assert!(n1.close_master().await);
        node_until(
            &node,
            30,
            "the followers of the lost connection outlived it",
            |ps| tails(ps).len() == 2 && !ps.iter().any(|p| first.contains(&p.pid)),
        );

        // The instance is dropped (the daemon lets go): nothing but the
        // service is left on the node.
        let record = l.instance.record();
        drop(l);
        node_until(&node, 30, "followers outlived their instance", |ps| {
            helpers(ps, &[pid]).is_empty()
        });

        // A follower of another daemon on a connection the node never saw
        // close (it cannot be cut that way on demand, so one is made as the
        // follower scripts record themselves: the group's leader, its start
        // time and its owner) ends when a new daemon re-attaches.
        let stale = docker(&[
            "exec",
            &node,
            "sh",
            "-c",
            &format!(
                "cd /root/.harness/{project}/quiet && mkdir -p followers && \
                 {{ setsid sleep 1001 < /dev/null > /dev/null 2>&1 & }}; p=$!; \
                 set -- $(sed 's/.*) //' /proc/$p/stat); echo \"${{20}} gone.1\" > followers/$p; echo $p"
            ),
        ])
        .unwrap();
        let stale: u32 = stale.parse().unwrap();
        let hosts2 = nodes.hosts(nodes.options());
        let exec2 = RemoteExecutor::new(hosts2.clone());
        let mut l2 = exec2.attach(&spec, &record, &ctx).await.unwrap();
        assert_eq!(l2.instance.pid(), Some(pid));
        node_until(
            &node,
            30,
            "a follower of an earlier daemon outlived the re-attach",
            |ps| tails(ps).len() == 2 && !ps.iter().any(|p| p.pid == stale),
        );

        // Cut off, the service ends: its followers end too, though the node
        // never learns that their connection is gone.
        nodes.disconnect("n1");
        // (The wrapper outlives SIGTERM and records how its program ended.)
        docker(&["exec", &node, "kill", "-TERM", &format!("-{pid}")]).unwrap();
        node_until(&node, 60, "followers outlived their service", |ps| {
            ps.is_empty()
        });
        nodes.connect("n1");
        let (_, exit) = read_until(&mut l2.events, 60, |_| false).await;
        assert_eq!(exit, Some(ExitStatus::Signal(15)));
        node_until(&node, 30, "processes left on the node", |ps| ps.is_empty());
        hosts2.close_all().await;
        hosts.close_all().await;
    });
}
