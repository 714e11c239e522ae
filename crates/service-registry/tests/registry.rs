//! The registry under smol: entries, events, allocation, persistence, environment.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use harness_core::{ProjectName, ServiceKind, ServiceName, ServiceState};
use service_registry::{
    AllocError, EnvError, HostAddress, HostNetwork, IpPool, LoadSource, Location, NetworkTopology,
    PublishedPort, Registry, RegistryError, RegistryEvent, ServiceEntry, registry::EVENT_BUFFER,
};

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn local(n: &str, port: u16) -> ServiceEntry {
    ServiceEntry::new(name(n), ServiceKind::Process, Location::LocalHost).with_ports([port])
}

/// Runs `fut` under smol, failing the test if it does not finish within 30 s.
fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(async {
        futures_lite::future::or(async { Some(fut.await) }, async {
            smol::Timer::after(Duration::from_secs(30)).await;
            None
        })
        .await
        .expect("the test did not finish within 30 s")
    })
}

#[test]
fn upsert_get_list_remove_keep_timestamps() {
    run(async {
        let r = Registry::in_memory();
        r.upsert(local("web", 80)).await.unwrap();
        r.upsert(local("db", 5432)).await.unwrap();
        let first = r.get("web").unwrap();
        let names: Vec<String> = r.list().iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["db", "web"]);

        let mut changed = local("web", 8080);
        changed.registered_at_ms = 0;
        r.upsert(changed).await.unwrap();
        let now = r.get("web").unwrap();
        assert_eq!(now.ports, [8080]);
        assert_eq!(now.registered_at_ms, first.registered_at_ms);
        assert!(now.updated_at_ms >= first.updated_at_ms);

        let e = r.set_state("web", ServiceState::Healthy).await.unwrap();
        assert_eq!(e.state, ServiceState::Healthy);
        assert!(matches!(
            r.set_state("nope", ServiceState::Healthy).await,
            Err(RegistryError::NotFound(n)) if n == "nope"
        ));

        assert_eq!(r.remove("web").await.unwrap().unwrap().name.as_str(), "web");
        assert!(r.remove("web").await.unwrap().is_none());
        assert!(r.get("web").is_none());
    });
}

#[test]
fn every_subscriber_sees_every_change_in_order() {
    run(async {
        let r = Registry::in_memory();
        let mut a = r.subscribe();
        let mut b = r.subscribe();
        r.define_pool(IpPool::new("app", "10.5.0.0/24".parse().unwrap(), None).unwrap())
            .await
            .unwrap();
        r.upsert(local("web", 80)).await.unwrap();
        let ip = r.allocate("app", &name("web")).await.unwrap();
        r.set_state("web", ServiceState::Running).await.unwrap();
        r.remove("web").await.unwrap();
        for sub in [&mut a, &mut b] {
            assert!(matches!(
                sub.recv().await.unwrap(),
                RegistryEvent::PoolDefined { pool, gateway: Some(_), .. } if pool == "app"
            ));
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(sub.recv().await.unwrap());
            }
            assert!(
                matches!(&got[0], RegistryEvent::Upserted { previous: None, entry } if entry.name.as_str() == "web")
            );
            assert!(
                matches!(&got[1], RegistryEvent::Allocated { pool, ip: i, .. } if pool == "app" && *i == ip)
            );
            assert!(
                matches!(&got[2], RegistryEvent::Upserted { previous: Some(p), entry } if p.state == ServiceState::Pending && entry.state == ServiceState::Running)
            );
            assert!(
                matches!(&got[3], RegistryEvent::Removed { released, .. } if released == &[("app".to_owned(), ip)])
            );
            assert!(sub.try_recv().is_none());
        }
    });
}

#[test]
fn a_slow_subscriber_never_blocks_writers() {
    run(async {
        let r = Registry::in_memory();
        let mut slow = r.subscribe();
        let mut fast = r.subscribe();
        let total = EVENT_BUFFER + 100;
        let reader = async {
            let mut n = 0;
            while n < total {
                match fast.recv().await.unwrap() {
                    RegistryEvent::Upserted { .. } => n += 1,
                    other => panic!("fast subscriber got {other:?}"),
                }
            }
            n
        };
        let writer = async {
            for i in 0..total {
                r.upsert(local(&format!("s{i}"), 1)).await.unwrap();
                if i % 64 == 0 {
                    futures_lite::future::yield_now().await;
                }
            }
        };
        let (read, ()) = futures_lite::future::zip(reader, writer).await;
        assert_eq!(read, total);
        // The slow one learns it missed the oldest 100, then gets the rest in order
        // (read as a stream, which reports the gap the same way).
        use futures_lite::StreamExt;
        assert_eq!(
            slow.next().await,
            Some(RegistryEvent::Lagged { missed: 100 })
        );
        match slow.next().await.unwrap() {
            RegistryEvent::Upserted { entry, .. } => assert_eq!(entry.name.as_str(), "s100"),
            other => panic!("{other:?}"),
        }
        // Once the registry is gone, the stream ends after the remaining events.
        drop(r);
        assert_eq!(slow.count().await, total - 101);
    });
}

#[test]
fn a_whole_slash_24_through_the_registry() {
    run(async {
        let r = Registry::in_memory();
        r.define_pool(IpPool::new("net", "10.77.1.0/24".parse().unwrap(), None).unwrap())
            .await
            .unwrap();
        let mut seen = HashSet::new();
        for i in 0..253 {
            let ip = r.allocate("net", &name(&format!("svc{i}"))).await.unwrap();
            assert!(seen.insert(ip), "duplicate {ip}");
        }
        for bad in ["10.77.1.0", "10.77.1.1", "10.77.1.255"] {
            assert!(
                !seen.contains(&bad.parse::<IpAddr>().unwrap()),
                "{bad} handed out"
            );
        }
        let err = r.allocate("net", &name("extra")).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::Alloc(AllocError::Full { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("full"), "{err}");
        assert!(matches!(
            r.allocate("nope", &name("x")).await,
            Err(RegistryError::UnknownPool(_))
        ));
    });
}

#[test]
fn state_and_addresses_survive_a_restart_and_removal_releases() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let pool = || IpPool::new("app", "172.30.0.0/24".parse().unwrap(), None).unwrap();
        let (ip_web, ip_db);
        {
            let (r, report) = Registry::open(&path).await.unwrap();
            assert_eq!(report.source, LoadSource::Fresh);
            r.define_pool(pool()).await.unwrap();
            r.upsert(local("web", 80)).await.unwrap();
            r.upsert(local("db", 5432).with_state(ServiceState::Healthy))
                .await
                .unwrap();
            ip_web = r.allocate("app", &name("web")).await.unwrap();
            ip_db = r.allocate("app", &name("db")).await.unwrap();
        }
        {
            let (r, report) = Registry::open(&path).await.unwrap();
            assert_eq!(report.source, LoadSource::Primary);
            assert_eq!(r.get("db").unwrap().state, ServiceState::Healthy);
            // Redefining the pool as the configuration does on every start keeps assignments.
            r.define_pool(pool()).await.unwrap();
            assert_eq!(r.allocate("app", &name("db")).await.unwrap(), ip_db);
            assert_eq!(r.allocate("app", &name("web")).await.unwrap(), ip_web);
            let other = IpPool::new("app", "172.31.0.0/24".parse().unwrap(), None).unwrap();
            assert!(matches!(
                r.define_pool(other).await,
                Err(RegistryError::PoolConflict { .. })
            ));
            r.remove("web").await.unwrap();
        }
        let (r, _) = Registry::open(&path).await.unwrap();
        assert!(r.get("web").is_none());
        assert_eq!(r.pool("app").unwrap().get("web"), None);
        assert_eq!(r.pool("app").unwrap().get("db"), Some(ip_db));
        // The freed address is the next one handed out.
        assert_eq!(r.allocate("app", &name("new")).await.unwrap(), ip_web);
    });
}

#[test]
fn a_failed_write_changes_nothing() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        std::fs::create_dir(&sub).unwrap();
        let (r, _) = Registry::open(sub.join("registry.json")).await.unwrap();
        r.upsert(local("web", 80)).await.unwrap();
        let mut events = r.subscribe();
        std::fs::remove_dir_all(&sub).unwrap();
        let err = r.upsert(local("db", 5432)).await.unwrap_err();
        assert!(matches!(err, RegistryError::Persist(_)), "{err}");
        assert!(err.to_string().contains("state"), "{err}");
        assert!(r.get("db").is_none());
        assert_eq!(r.list().len(), 1);
        assert!(events.try_recv().is_none());
    });
}

#[test]
fn a_corrupt_file_is_reported_and_the_previous_state_kept() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        {
            let (r, _) = Registry::open(&path).await.unwrap();
            r.upsert(local("web", 80)).await.unwrap();
            r.upsert(local("db", 5432)).await.unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        let (r, report) = Registry::open(&path).await.unwrap();
        assert_eq!(report.source, LoadSource::Backup);
        assert!(
            report.problems[0].contains("corrupt"),
            "{:?}",
            report.problems
        );
        // The previous good state: the write before the torn one.
        assert!(r.get("web").is_some());
        assert!(r.get("db").is_none());
        // It was put back in place, so the next start reads the primary file.
        drop(r);
        let (r, report) = Registry::open(&path).await.unwrap();
        assert_eq!(report.source, LoadSource::Primary);
        assert!(r.get("web").is_some());
    });
}

#[test]
fn environment_resolved_from_where_the_service_runs() {
    run(async {
        let r = Registry::in_memory();
        let db = ServiceEntry::new(
            name("db"),
            ServiceKind::Docker,
            Location::DockerNetwork {
                network: "app".into(),
                container_ip: "172.20.0.5".parse().unwrap(),
                published: vec![PublishedPort {
                    host: 15432,
                    container: 5432,
                }],
            },
        )
        .with_ports([5432])
        .with_hostname("proj-db");
        r.upsert(db).await.unwrap();
        r.upsert(local("web", 8080)).await.unwrap();
        let worker = ServiceEntry::new(
            name("worker"),
            ServiceKind::Docker,
            Location::DockerNetwork {
                network: "app".into(),
                container_ip: "172.20.0.6".parse().unwrap(),
                published: vec![],
            },
        );
        r.upsert(worker).await.unwrap();
        let topology = NetworkTopology::new(HostNetwork {
            hostname: "ctl".into(),
            addresses: vec![HostAddress {
                interface: "br-app".into(),
                ip: "172.20.0.1".parse().unwrap(),
                prefix: 16,
            }],
        });
        let project = ProjectName::new("demo").unwrap();
        let declared: BTreeMap<String, String> = [
            ("DATABASE_URL", "postgres://${db.host}:${db.port}/app"),
            ("API", "http://${web.ip}:${web.port}"),
            ("LITERAL", "$${db.ip} costs $$5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

        let web_env = r
            .environment(&topology, &project, "web", &declared)
            .unwrap();
        assert_eq!(web_env["HARNESS_PROJECT"], "demo");
        assert_eq!(web_env["HARNESS_SERVICE"], "web");
        assert_eq!(web_env["DB_IP"], "127.0.0.1");
        assert_eq!(web_env["DB_PORT"], "15432");
        assert_eq!(web_env["DATABASE_URL"], "postgres://localhost:15432/app");
        assert_eq!(web_env["API"], "http://127.0.0.1:8080");
        assert_eq!(web_env["LITERAL"], "${db.ip} costs $5");
        assert!(!web_env.contains_key("WEB_IP"));

        let worker_env = r
            .environment(&topology, &project, "worker", &declared)
            .unwrap();
        assert_eq!(worker_env["DATABASE_URL"], "postgres://proj-db:5432/app");
        assert_eq!(worker_env["DB_IP"], "172.20.0.5");
        assert_eq!(worker_env["API"], "http://172.20.0.1:8080");
        assert_eq!(worker_env["WEB_HOST"], "172.20.0.1");

        let bad: BTreeMap<String, String> = [("X".to_owned(), "${ghost.ip}".to_owned())].into();
        let err = r.environment(&topology, &project, "web", &bad).unwrap_err();
        assert!(matches!(err, EnvError::UnknownService { .. }), "{err}");
        assert!(
            err.to_string().contains("`X`") && err.to_string().contains("ghost"),
            "{err}"
        );
        let noport: BTreeMap<String, String> =
            [("X".to_owned(), "${worker.port}".to_owned())].into();
        assert!(matches!(
            r.environment(&topology, &project, "web", &noport),
            Err(EnvError::NoPort { .. })
        ));
        assert!(
            r.environment(&topology, &project, "ghost", &BTreeMap::new())
                .is_err()
        );
    });
}

#[test]
fn concurrent_writers_from_many_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    let (r, _) = run(Registry::open(&path)).unwrap();
    run(r.define_pool(IpPool::new("app", "10.60.0.0/24".parse().unwrap(), None).unwrap())).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                run(async {
                    for i in 0..15 {
                        let n = format!("t{t}-s{i}");
                        r.upsert(local(&n, 80)).await.unwrap();
                        r.allocate("app", &name(&n)).await.unwrap();
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(r);
    let (r, report) = run(Registry::open(&path)).unwrap();
    assert_eq!(report.source, LoadSource::Primary);
    assert_eq!(r.list().len(), 60);
    let pool = r.pool("app").unwrap();
    let ips: HashSet<IpAddr> = pool.assignments().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), 60, "every service holds its own address");
}

#[test]
fn one_writer_per_state_file() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let (r, _) = Registry::open(&path).await.unwrap();
        r.upsert(local("web", 80)).await.unwrap();
        let err = Registry::open(&path).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Persist(service_registry::PersistError::Locked { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("in use"), "{err}");
        // Readers can still look at the state.
        let (snap, _) = service_registry::StateFile::new(&path)
            .load::<service_registry::RegistrySnapshot>()
            .unwrap();
        assert!(snap.unwrap().entries.contains_key("web"));
        drop(r);
        let (r, _) = Registry::open(&path).await.unwrap();
        assert!(r.get("web").is_some());
    });
}

#[test]
fn a_group_commit_answers_each_change_on_its_own() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        std::fs::create_dir(&sub).unwrap();
        let (r, _) = Registry::open(sub.join("registry.json")).await.unwrap();
        // Many concurrent writers, one of them invalid: only that one fails.
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let r = r.clone();
                smol::spawn(async move {
                    if i == 5 {
                        r.set_state("ghost", ServiceState::Running)
                            .await
                            .map(|_| ())
                    } else {
                        r.upsert(local(&format!("s{i}"), 80)).await
                    }
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let res = t.await;
            if i == 5 {
                assert!(matches!(res, Err(RegistryError::NotFound(_))), "{res:?}");
            } else {
                res.unwrap();
            }
        }
        assert_eq!(r.list().len(), 11);

        // When the write itself fails, every change of the batch fails and none is applied.
        std::fs::remove_dir_all(&sub).unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let r = r.clone();
                smol::spawn(async move { r.upsert(local(&format!("late{i}"), 80)).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await, Err(RegistryError::Persist(_))));
        }
        assert_eq!(r.list().len(), 11);
    });
}

#[test]
fn a_write_dropped_half_way_changes_nothing_and_later_writes_work() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = Registry::open(dir.path().join("registry.json"))
            .await
            .unwrap();
        let first = futures_lite::future::poll_once(r.upsert(local("dropped", 80))).await;
        match first {
            // The write is on a blocking thread: dropping the future abandons it.
            None => assert!(r.get("dropped").is_none()),
            // It finished at the first poll after all: then it is simply there.
            Some(res) => {
                res.unwrap();
                assert!(r.get("dropped").is_some());
            }
        }
        r.upsert(local("next", 80)).await.unwrap();
        assert!(r.get("next").is_some());
    });
}

#[test]
fn replacing_a_pool_with_another_subnet_gives_its_addresses_back() {
    run(async {
        let r = Registry::in_memory();
        let old = || IpPool::new("net", "10.5.0.0/24".parse().unwrap(), None).unwrap();
        r.define_pool(old()).await.unwrap();
        let ip = r.allocate("net", &name("db")).await.unwrap();
        // The same subnet again keeps the address.
        r.replace_pool(old()).await.unwrap();
        assert_eq!(r.allocate("net", &name("db")).await.unwrap(), ip);
        // define_pool refuses another subnet while addresses are held ...
        let new = || IpPool::new("net", "10.6.0.0/24".parse().unwrap(), None).unwrap();
        assert!(r.define_pool(new()).await.is_err());
        // ... replace_pool takes it, and tells what was given back.
        let mut sub = r.subscribe();
        r.replace_pool(new()).await.unwrap();
        assert!(matches!(
            sub.recv().await.unwrap(),
            RegistryEvent::Released { pool, owner, ip: i } if pool == "net" && owner.as_str() == "db" && i == ip
        ));
        assert!(matches!(
            sub.recv().await.unwrap(),
            RegistryEvent::PoolDefined { .. }
        ));
        let again = r.allocate("net", &name("db")).await.unwrap();
        assert!(
            "10.6.0.0/24"
                .parse::<service_registry::IpNet>()
                .unwrap()
                .contains(again)
        );
    });
}
