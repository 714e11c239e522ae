//! A cgroup v2 of its own for each launched process (ADR 021), so that
//! stopping reaches every process it started, also those that left its
//! process group (`setsid`, `setpgid`).
//!
//! The cgroup v2 hierarchy is found in `/proc/self/mountinfo` (it need not be
//! at `/sys/fs/cgroup`: hybrid hosts mount it at `/sys/fs/cgroup/unified`),
//! this process's own cgroup in `/proc/self/cgroup`. A [`CgroupRoot`] is a
//! directory below the own cgroup; each launch gets a new cgroup below it,
//! which the child joins before `exec` by writing `0` to its `cgroup.procs`
//! (opened by the parent). No controller is enabled anywhere: cgroups are
//! used only to know, signal and kill their members.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness_core::Signal;

use crate::ExecError;
use crate::proc::{self, ProcessIdentity};

/// Why cgroups cannot be used here: no cgroup v2 mount, a cgroup that cannot
/// be read or written, an unusable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CgroupUnavailable(pub String);

/// The cgroup v2 hierarchy as one line of `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub point: PathBuf,
    /// Which cgroup of the hierarchy the mount shows at `point` (`/` unless
    /// a sub-tree is mounted).
    pub root: String,
}

/// Finds the cgroup v2 mount in the text of a `/proc/<pid>/mountinfo`: the
/// first with filesystem type `cgroup2` whose root is `/`, else the first.
pub fn parse_mountinfo(text: &str) -> Option<Cgroup2Mount> {
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if dash < 5 || fields.get(dash + 1) != Some(&"cgroup2") {
            continue;
        }
        found.push(Cgroup2Mount {
            point: PathBuf::from(unescape(fields[4])),
            root: unescape(fields[3]),
        });
    }
    let first = found.first().cloned();
    found.into_iter().find(|m| m.root == "/").or(first)
}

/// Undoes the octal escapes of mountinfo (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path in the text of a `/proc/<pid>/cgroup` (its `0::` line),
/// e.g. `/user.slice/session-2.scope`.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_owned())
        .filter(|p| p.starts_with('/'))
}

fn unavailable(what: impl Into<String>) -> CgroupUnavailable {
    CgroupUnavailable(what.into())
}

/// The cgroup v2 mount of this process's view, read once.
fn mount() -> Result<&'static Cgroup2Mount, CgroupUnavailable> {
    static MOUNT: std::sync::OnceLock<Result<Cgroup2Mount, CgroupUnavailable>> =
        std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let text = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| unavailable(format!("cannot read /proc/self/mountinfo: {e}")))?;
            parse_mountinfo(&text).ok_or_else(|| unavailable("no cgroup v2 hierarchy is mounted"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it) under `mount`.
fn dir_of(mount: &Cgroup2Mount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.point.join(rel))
}

/// The directory of the cgroup `pid` is in, if the cgroup v2 hierarchy is
/// mounted and `/proc` tells.
pub fn cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    dir_of(mount().ok()?, &parse_proc_cgroup(&text)?)
}

/// True if this process is in `dir` or in a cgroup below it: such a cgroup is
/// never signalled or killed.
pub(crate) fn holds_this_process(dir: &Path) -> bool {
    match cgroup_of(std::process::id()) {
        Some(own) => own.starts_with(dir),
        // Where this process is cannot be told: assume the worst.
        None => true,
    }
}

/// A directory of the cgroup v2 hierarchy under which a launcher makes a
/// cgroup for each process it starts, and which says what cgroups are its
/// own when processes are attached again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    path: PathBuf,
    mount: PathBuf,
    kill_file: bool,
}

impl CgroupRoot {
    /// Makes (if needed) and checks the cgroup `name` right below this
    /// process's own cgroup, e.g. `<mount>/user.slice/…/harness-1f2e3d4c`.
    /// `name` should be stable for one program across its restarts (so
    /// cgroups it made before are recognised, see [`CgroupRoot::owns`]) and
    /// differ between programs that run at once.
    pub fn below_own(name: &str) -> Result<CgroupRoot, CgroupUnavailable> {
        CgroupRoot::at(CgroupRoot::locate(name)?)
    }

    /// Where [`CgroupRoot::below_own`] puts the cgroup `name`, without
    /// making or checking it.
    pub fn locate(name: &str) -> Result<PathBuf, CgroupUnavailable> {
        if !is_plain_name(name) {
            return Err(unavailable(format!("`{name}` is not a plain cgroup name")));
        }
        let mount = mount()?;
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| unavailable(format!("cannot read /proc/self/cgroup: {e}")))?;
        let own = parse_proc_cgroup(&text)
            .ok_or_else(|| unavailable("/proc/self/cgroup names no cgroup v2 cgroup"))?;
        let dir = dir_of(mount, &own).ok_or_else(|| {
            unavailable(format!(
                "this process's cgroup {own} is outside the cgroup v2 mount at {} (root {})",
                mount.point.display(),
                mount.root
            ))
        })?;
        Ok(dir.join(name))
    }

    /// Uses `path`, a directory of the cgroup v2 hierarchy (made if missing,
    /// its parent must exist), as the root: checks that cgroups can be made
    /// in it and processes moved into them.
    pub fn at(path: impl Into<PathBuf>) -> Result<CgroupRoot, CgroupUnavailable> {
        let path = path.into();
        let mount = mount()?;
        let plain = path.strip_prefix(&mount.point).is_ok_and(|rel| {
            rel.components().next().is_some()
                && rel.components().all(|c| matches!(c, Component::Normal(_)))
        });
        if !plain {
            return Err(unavailable(format!(
                "{} is not a cgroup below the cgroup v2 mount at {}",
                path.display(),
                mount.point.display()
            )));
        }
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot make cgroup {}: {e}",
                    path.display()
                )));
            }
        }
        // Moving a process needs write access to `cgroup.procs` of both the
        // cgroup it leaves (this process's, at or above the root's parent)
        // and the one it joins.
        let parent = path.parent().unwrap_or(&mount.point);
        for dir in [parent, path.as_path()] {
            let procs = dir.join("cgroup.procs");
            if let Err(e) = rustix::fs::access(&procs, rustix::fs::Access::WRITE_OK) {
                return Err(unavailable(format!(
                    "{} is not writable: {}",
                    procs.display(),
                    io::Error::from(e)
                )));
            }
        }
        let kill_file = path.join("cgroup.kill").exists();
        Ok(CgroupRoot {
            path,
            mount: mount.point.clone(),
            kill_file,
        })
    }

    /// The root's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Kills every process in the root's cgroups and removes them and the
    /// root, waiting up to 10 s for them to empty: for an embedder that is
    /// done with them (a test at its end). A cgroup holding this process is
    /// left alone. It blocks: call it off an async executor's threads.
    pub fn remove_all(&self) {
        remove_tree(&self.path, Instant::now() + Duration::from_secs(10));
    }

    /// True if the kernel empties a cgroup at once through `cgroup.kill`
    /// (Linux 5.14 and later); else its members are killed one by one.
    pub fn has_kill_file(&self) -> bool {
        self.kill_file
    }

    /// True if `cgroup` is one this root (or an earlier one of the same name,
    /// e.g. of this program before a restart from another cgroup) made: a
    /// cgroup strictly below a directory of the root's name, in the cgroup v2
    /// mount, not holding this process.
    pub fn owns(&self, cgroup: &Path) -> bool {
        self.base_of(cgroup).is_some() && !holds_this_process(cgroup)
    }

    /// The directory of the root's name that `cgroup` is below, if any.
    pub(crate) fn base_of(&self, cgroup: &Path) -> Option<PathBuf> {
        let name = self.path.file_name()?;
        let rel = cgroup.strip_prefix(&self.mount).ok()?;
        let parts: Vec<Component<'_>> = rel.components().collect();
        if parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        let at = parts
            .iter()
            .position(|c| c.as_os_str() == name)
            .filter(|&i| i + 1 < parts.len())?;
        Some(
            parts[..=at]
                .iter()
                .fold(self.mount.clone(), |p, c| p.join(c.as_os_str())),
        )
    }

    /// Makes a new cgroup `<root>/<name>/<unique>` (`name` may have several
    /// `/`-separated parts) and opens its `cgroup.procs` for writing.
    pub(crate) fn new_cgroup(&self, name: &str) -> io::Result<(PathBuf, OwnedFd)> {
        if name.is_empty() || !name.split('/').all(is_plain_name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a cgroup name (plain parts separated by `/`)"),
            ));
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = self.path.join(name);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut tries = 0;
        loop {
            tries += 1;
            let dir = parent.join(format!("{ms}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let procs = rustix::fs::open(
                        dir.join("cgroup.procs"),
                        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    );
                    return match procs {
                        Ok(fd) => Ok((dir, fd)),
                        Err(e) => {
                            let _ = std::fs::remove_dir(&dir);
                            Err(e.into())
                        }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => {}
                // The parents are missing (never made, or removed by a stop
                // that found them empty a moment ago): make them, try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 100 => {
                    if let Err(e) = std::fs::create_dir_all(&parent)
                        && !parent.is_dir()
                    {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A single path part that is neither empty, `.` nor `..` and holds no `/`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && Path::new(name).file_name() == Some(OsStr::new(name))
}

/// The processes in cgroup `dir` now (none once it is gone).
pub(crate) fn members(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// True while cgroup `dir` (or one below it) has a live process.
pub(crate) fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("populated "))
            .is_none_or(|v| v.trim() != "0"),
        Err(e) => e.kind() != io::ErrorKind::NotFound && !members(dir).is_empty(),
    }
}

/// Sends `sig` to every process of cgroup `dir`; how many got it.
pub(crate) fn signal_members(dir: &Path, sig: Signal) -> Result<usize, ExecError> {
    if holds_this_process(dir) {
        return Err(refused(dir));
    }
    let mut sent = 0;
    for pid in members(dir) {
        let Ok(id) = ProcessIdentity::of(pid) else {
            continue;
        };
        if proc::signal_identity(id, sig)? {
            sent += 1;
        }
    }
    Ok(sent)
}

fn refused(dir: &Path) -> ExecError {
    ExecError::Cgroup {
        path: dir.to_owned(),
        source: io::Error::other("it holds this process; refusing to signal it"),
    }
}

/// Kills every process of cgroup `dir`: `cgroup.kill` where the kernel has
/// it (and `kill_file`), else SIGKILL to each member.
fn kill_members(dir: &Path, kill_file: bool) -> Result<(), ExecError> {
    if holds_this_process(dir) {
        return Err(refused(dir));
    }
    if !kill_file {
        return signal_members(dir, Signal::KILL).map(drop);
    }
    let file = dir.join("cgroup.kill");
    match std::fs::write(&file, b"1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            signal_members(dir, Signal::KILL).map(drop)
        }
        Err(source) => Err(ExecError::Cgroup { path: file, source }),
    }
}

/// Waits until cgroup `dir` has no live process, or until `deadline`; with
/// `resend`, sends it to the members on every look (new ones may appear).
async fn wait_empty(dir: &Path, deadline: Instant, resend: Option<Signal>) -> bool {
    let mut pause = Duration::from_millis(5);
    loop {
        if !populated(dir) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        if let Some(sig) = resend {
            let _ = signal_members(dir, sig);
        }
        async_io::Timer::after(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Removes cgroup `dir` and then its parents that are left empty, up to
/// (not including) `base`.
fn remove(dir: &Path, base: Option<&Path>) {
    let mut at = Some(dir);
    while let Some(d) = at {
        if std::fs::remove_dir(d).is_err() {
            return;
        }
        at = d
            .parent()
            .filter(|p| base.is_some_and(|b| p.starts_with(b) && *p != b));
    }
}

/// Kills what is in cgroup `dir` and below and removes them, children first,
/// trying until `deadline`.
fn remove_tree(dir: &Path, deadline: Instant) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), deadline);
        }
    }
    let _ = kill_members(dir, dir.join("cgroup.kill").exists());
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long to wait for a cgroup to empty after SIGKILL before reporting it.
const AFTER_KILL: Duration = Duration::from_secs(60);

/// Stops every process of cgroup `dir`: SIGTERM (and SIGCONT) to each, up to
/// `grace` for the cgroup to empty, then `cgroup.kill`; once it is empty,
/// removes it (and its parents left empty below `base`).
pub(crate) async fn stop(
    dir: &Path,
    grace: Duration,
    base: Option<&Path>,
) -> Result<(), ExecError> {
    stop_with(dir, grace, base, dir.join("cgroup.kill").exists()).await
}

/// [`stop`]; without `kill_file`, as on kernels before 5.14: members are
/// sent SIGKILL one by one on every look until none is left.
async fn stop_with(
    dir: &Path,
    grace: Duration,
    base: Option<&Path>,
    kill_file: bool,
) -> Result<(), ExecError> {
    if !grace.is_zero() && populated(dir) {
        signal_members(dir, Signal::TERM)?;
        let _ = signal_members(dir, Signal::CONT);
        if wait_empty(dir, Instant::now() + grace, None).await {
            remove(dir, base);
            return Ok(());
        }
    }
    kill_members(dir, kill_file)?;
    let resend = (!kill_file).then_some(Signal::KILL);
    if !wait_empty(dir, Instant::now() + AFTER_KILL, resend).await {
        return Err(ExecError::StopTimeout {
            what: format!("cgroup {}", dir.display()),
            waited: AFTER_KILL,
        });
    }
    remove(dir, base);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host: cgroup v1 controllers under `/sys/fs/cgroup`, the v2
    /// hierarchy at `/sys/fs/cgroup/unified`.
    const HYBRID: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let m = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(m.point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, "/");
    }

    #[test]
    fn finds_a_unified_mount_and_none_where_there_is_none() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(unified).unwrap().point,
            Path::new("/sys/fs/cgroup")
        );
        let v1_only = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse_mountinfo(&v1_only), None);
        assert_eq!(parse_mountinfo("garbage\n- cgroup2\n"), None);
        assert_eq!(parse_mountinfo(""), None);
    }

    #[test]
    fn mount_points_with_spaces_are_unescaped() {
        let line = "40 31 0:38 /sub /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(line).unwrap();
        assert_eq!(m.point, Path::new("/mnt/cg two"));
        assert_eq!(m.root, "/sub");
        assert_eq!(
            dir_of(&m, "/sub/a/b"),
            Some(PathBuf::from("/mnt/cg two/a/b"))
        );
        assert_eq!(dir_of(&m, "/other"), None);
        assert_eq!(dir_of(&m, "/subway"), None);
    }

    #[test]
    fn the_own_cgroup_is_the_unified_line() {
        let text =
            "12:pids:/user.slice\n1:name=systemd:/user.slice/s.scope\n0::/user.slice/s.scope\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/user.slice/s.scope")
        );
        assert_eq!(parse_proc_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(parse_proc_cgroup("4:memory:/x\n"), None);
        let m = Cgroup2Mount {
            point: PathBuf::from("/sys/fs/cgroup/unified"),
            root: "/".into(),
        };
        assert_eq!(
            dir_of(&m, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(dir_of(&m, "/a/../b"), None);
    }

    #[test]
    fn a_root_owns_only_cgroups_below_a_directory_of_its_name() {
        let root = CgroupRoot {
            path: PathBuf::from("/cg/user.slice/harness-abc"),
            mount: PathBuf::from("/cg"),
            kill_file: true,
        };
        let below = Path::new("/cg/other.slice/harness-abc/shop/api/1");
        assert_eq!(
            root.base_of(below),
            Some(PathBuf::from("/cg/other.slice/harness-abc"))
        );
        assert_eq!(root.base_of(Path::new("/cg/user.slice/harness-abc")), None);
        assert_eq!(
            root.base_of(Path::new("/cg/user.slice/harness-abd/x")),
            None
        );
        assert_eq!(root.base_of(Path::new("/elsewhere/harness-abc/x")), None);
        assert_eq!(root.base_of(Path::new("/cg/harness-abc/../x")), None);
        assert_eq!(root.base_of(Path::new("/cg")), None);
    }

    /// Without `cgroup.kill` (kernels before 5.14), a cgroup whose members
    /// ignore SIGTERM and keep forking is emptied by killing them one by one.
    #[test]
    fn without_cgroup_kill_members_are_killed_one_by_one() {
        let name = format!("harness-unit-{}", std::process::id());
        let root = match CgroupRoot::below_own(&name) {
            Ok(root) => root,
            Err(e) => {
                eprintln!("skipping: cgroup v2 is not usable here: {e}");
                return;
            }
        };
        /// Kills and removes what the test leaves, also when it fails.
        struct Gone(CgroupRoot);
        impl Drop for Gone {
            fn drop(&mut self) {
                self.0.remove_all();
            }
        }
        let _gone = Gone(root.clone());
        futures_lite::future::block_on(async {
            let opts = crate::LaunchOptions {
                cgroup: Some("svc".into()),
                ..crate::LaunchOptions::default()
            };
            let script = "trap '' TERM; setsid sh -c 'trap \"\" TERM; while :; do sleep 100 & sleep 0.01; done' & \
                          while :; do sleep 100 & sleep 0.01; done";
            let (h, _ev) = crate::LocalLauncher::new()
                .with_cgroups(root.clone())
                .spawn(&crate::Command::new("sh").arg("-c").arg(script), opts)
                .unwrap();
            let dir = h.scope().cgroup.clone().unwrap();
            let until = Instant::now() + Duration::from_secs(30);
            while members(&dir).len() < 6 {
                assert!(Instant::now() < until, "members: {:?}", members(&dir));
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
            stop_with(&dir, Duration::from_millis(100), Some(root.path()), false)
                .await
                .unwrap();
            assert!(!populated(&dir));
            assert!(!dir.exists());
            assert_eq!(h.wait().await.unwrap(), harness_core::ExitStatus::Signal(9));
        });
    }

    #[test]
    fn a_root_outside_the_cgroup_v2_mount_is_refused() {
        assert!(CgroupRoot::at("/tmp/not-a-cgroup").is_err());
        if let Ok(m) = mount() {
            assert!(CgroupRoot::at(&m.point).is_err(), "the mount itself");
            assert!(CgroupRoot::at(m.point.join("a/../b")).is_err());
        }
        assert!(CgroupRoot::locate("a/b").is_err());
    }

    #[test]
    fn names_are_plain() {
        for good in ["harness-1", "api", "a.b"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
