//! Claiming a protocol grid's cells with lock files, so that several processes (plain `mocoop
//! protocol` runs, or the tasks of a Slurm job array, on one machine or on several sharing the
//! folder) train each cell once.
//!
//! A claim is `OUT/claims/<cell>.lock`, made atomically: the claimer's host, pid and a token are
//! written to a file of its own, which is then hard-linked to the lock's name (`link` fails when
//! the name exists, on local filesystems and on NFS alike, and the lock is never seen half
//! written). While the cell trains, a heartbeat thread touches the lock every quarter of the
//! stale time. A lock whose heartbeat is older than the stale time belongs to a claimer that died
//! (node failure, `scancel`, time limit): it is reclaimed, through `<cell>.reclaim-<token>`,
//! which only one process can create for a given dead claim. Heartbeats compare modification
//! times with this machine's clock: machines sharing a grid need clocks within the stale time.
//!
//! A cell whose training failed gets `<cell>.failed` (the error, the host, the pid and the log);
//! a process retries only the failures older than itself.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What a lock file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claimer {
    /// The claimer's host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Unique to this claim.
    pub token: String,
}

/// A claim held by someone else, and how long ago its heartbeat last beat.
#[derive(Debug, Clone)]
pub struct Held {
    /// Who holds it.
    pub by: Claimer,
    /// Time since its last heartbeat.
    pub age: Duration,
}

/// A recorded training failure of a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Where and by which process it failed.
    pub host: String,
    /// The failed process.
    pub pid: u32,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u128,
    /// The error.
    pub error: String,
    /// The failed process's log, when it had one (a Slurm task's).
    pub log: Option<PathBuf>,
}

/// The outcome of trying to claim a cell.
pub enum Claim {
    /// The cell is ours until the guard is dropped.
    Won(ClaimGuard),
    /// A live process holds it.
    Held(Held),
}

/// The claims folder of one grid.
pub struct Claims {
    dir: PathBuf,
    stale_after: Duration,
    /// When this process started claiming: failures older than that are retried.
    since: SystemTime,
}

/// This machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// A token no other claim has: host, pid, time and a counter.
fn new_claimer() -> Claimer {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let (host, pid) = (host_name(), std::process::id());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let token = format!("{host}-{pid}-{}-{n}", millis(SystemTime::now()));
    Claimer { host, pid, token }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The claimer named in `lock` (`None`: no lock). A lock that cannot be read (written by hand,
/// damaged) names an unknown claimer, so that it too goes stale and is reclaimed.
fn read_claimer(lock: &Path) -> Option<Claimer> {
    let text = std::fs::read_to_string(lock).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|_| Claimer {
        host: "unknown".into(),
        pid: 0,
        token: "unreadable".into(),
    }))
}

impl Claims {
    /// The claims of the grid in `out` (`out/claims/`); a heartbeat older than `stale_after`
    /// means that its claimer died.
    pub fn new(out: &Path, stale_after: Duration) -> Result<Self> {
        let dir = out.join("claims");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            stale_after,
            since: SystemTime::now(),
        })
    }

    fn lock(&self, cell: &str) -> PathBuf {
        self.dir.join(format!("{cell}.lock"))
    }

    fn failed_file(&self, cell: &str) -> PathBuf {
        self.dir.join(format!("{cell}.failed"))
    }

    /// Who holds `cell` now, if anyone, and how old the heartbeat is (`None`: free).
    pub fn holder(&self, cell: &str) -> Option<Held> {
        let lock = self.lock(cell);
        let by = read_claimer(&lock)?;
        let modified = std::fs::metadata(&lock).ok()?.modified().ok()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        Some(Held { by, age })
    }

    /// Whether a holder's heartbeat is too old for it to be alive.
    pub fn is_stale(&self, held: &Held) -> bool {
        held.age > self.stale_after
    }

    /// Claims `cell`, taking it over from a dead claimer; `on_lost` is set if the claim is later
    /// taken from us (our heartbeat was too slow and another process judged us dead).
    pub fn try_claim(&self, cell: &str, on_lost: Arc<AtomicBool>) -> Result<Claim> {
        let lock = self.lock(cell);
        let me = new_claimer();
        let mine = self.dir.join(format!("{cell}.{}.new", me.token));
        std::fs::write(&mine, serde_json::to_string(&me)?)
            .with_context(|| format!("writing {}", mine.display()))?;
        let outcome = self.claim_with(cell, &lock, &mine, &me);
        let _ = std::fs::remove_file(&mine);
        match outcome? {
            Some(held) => Ok(Claim::Held(held)),
            None => Ok(Claim::Won(ClaimGuard::start(
                lock,
                me,
                self.stale_after / 4,
                on_lost,
            ))),
        }
    }

    /// Links `mine` to `lock`, removing a dead claimer's lock first; `Some` when a live process
    /// holds the cell.
    fn claim_with(
        &self,
        cell: &str,
        lock: &Path,
        mine: &Path,
        me: &Claimer,
    ) -> Result<Option<Held>> {
        for _ in 0..4 {
            match std::fs::hard_link(mine, lock) {
                Ok(()) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", lock.display())),
            }
            let Some(held) = self.holder(cell) else {
                continue; // released (or half gone) meanwhile: try again
            };
            if !self.is_stale(&held) || held.by.token == me.token {
                return Ok(Some(held));
            }
            self.remove_dead(cell, lock, &held.by)?;
        }
        anyhow::bail!(
            "could not claim {}: it changed hands on every try",
            lock.display()
        )
    }

    /// Removes the lock of the dead claim `dead`, unless another process is doing it or has done
    /// it: only the creator of `<cell>.reclaim-<token>` may, and only while the lock is still
    /// that claim's.
    fn remove_dead(&self, cell: &str, lock: &Path, dead: &Claimer) -> Result<()> {
        let marker = self.dir.join(format!("{cell}.reclaim-{}", dead.token));
        match File::options().write(true).create_new(true).open(&marker) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", host_name());
                if read_claimer(lock).is_some_and(|c| c.token == dead.token) {
                    std::fs::remove_file(lock)
                        .with_context(|| format!("removing the stale {}", lock.display()))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating {}", marker.display())),
        }
    }

    /// The failure recorded for `cell`, if any.
    pub fn failure(&self, cell: &str) -> Option<Failure> {
        read_json(&self.failed_file(cell))
    }

    /// Whether `failure` happened while this process was running (so it is not retried).
    pub fn failed_since_start(&self, failure: &Failure) -> bool {
        failure.at_ms >= millis(self.since)
    }

    /// Records that `cell` failed with `error`.
    pub fn record_failure(&self, cell: &str, error: &str, log: Option<PathBuf>) -> Result<()> {
        let failure = Failure {
            host: host_name(),
            pid: std::process::id(),
            at_ms: millis(SystemTime::now()),
            error: error.to_string(),
            log,
        };
        mocoop_train::run::write_json(&self.failed_file(cell), &failure)?;
        Ok(())
    }

    /// Forgets `cell`'s failure and reclaim markers (it is finished).
    pub fn clear(&self, cell: &str) -> Result<()> {
        let (reclaim, failed) = (format!("{cell}.reclaim-"), format!("{cell}.failed"));
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&reclaim) || name == failed {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// A cell this process holds: its heartbeat runs until the guard is dropped, which removes the
/// lock (if it is still ours).
pub struct ClaimGuard {
    lock: PathBuf,
    me: Claimer,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

impl ClaimGuard {
    fn start(lock: PathBuf, me: Claimer, every: Duration, on_lost: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (lock, token, stop, lost) =
                (lock.clone(), me.token.clone(), stop.clone(), lost.clone());
            std::thread::spawn(move || beat(&lock, &token, every, &stop, &lost, &on_lost))
        };
        Self {
            lock,
            me,
            stop,
            lost,
            heartbeat: Some(heartbeat),
        }
    }

    /// Whether another process took the claim over (we were judged dead).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Touches `lock` every `every` while it holds `token`; when it does not, sets `lost` and
/// `on_lost` and stops.
fn beat(
    lock: &Path,
    token: &str,
    every: Duration,
    stop: &AtomicBool,
    lost: &AtomicBool,
    on_lost: &AtomicBool,
) {
    let tick = Duration::from_millis(50).min(every);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        waited += tick;
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        let ours = read_json::<Claimer>(lock).is_some_and(|c| c.token == token);
        let touched = ours
            && File::options()
                .write(true)
                .open(lock)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .is_ok();
        if !touched {
            lost.store(true, Ordering::SeqCst);
            on_lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        if read_json::<Claimer>(&self.lock).is_some_and(|c| c.token == self.me.token) {
            let _ = std::fs::remove_file(&self.lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[test]
    fn one_claimer_at_a_time_and_the_lock_goes_with_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path(), Duration::from_secs(60)).unwrap();
        let Claim::Won(guard) = claims.try_claim("a", flag()).unwrap() else {
            panic!("a free cell is claimed");
        };
        let Claim::Held(held) = claims.try_claim("a", flag()).unwrap() else {
            panic!("a held cell is not claimed twice");
        };
        assert_eq!(held.by.pid, std::process::id());
        assert!(!claims.is_stale(&held));
        // Another cell is independent.
        assert!(matches!(
            claims.try_claim("b", flag()).unwrap(),
            Claim::Won(_)
        ));
        drop(guard);
        assert!(claims.holder("a").is_none());
        assert!(matches!(
            claims.try_claim("a", flag()).unwrap(),
            Claim::Won(_)
        ));
        // Only the lock files are left behind while held, none of the claimers' own files.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("claims"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".new")), "{names:?}");
    }

    #[test]
    fn the_heartbeat_keeps_a_claim_fresh_and_a_dead_claimers_lock_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path(), Duration::from_millis(1500)).unwrap();
        let Claim::Won(live) = claims.try_claim("a", flag()).unwrap() else {
            panic!("free");
        };
        std::thread::sleep(Duration::from_millis(2000));
        assert!(matches!(
            claims.try_claim("a", flag()).unwrap(),
            Claim::Held(_)
        ));
        drop(live);
        // A claimer that died: its lock stays, with no heartbeat.
        let dead = Claimer {
            host: "node7".into(),
            pid: 4242,
            token: "node7-4242-1-0".into(),
        };
        let lock = dir.path().join("claims/a.lock");
        std::fs::write(&lock, serde_json::to_string(&dead).unwrap()).unwrap();
        let Claim::Held(held) = claims.try_claim("a", flag()).unwrap() else {
            panic!("a fresh lock is respected");
        };
        assert_eq!(held.by, dead);
        std::thread::sleep(Duration::from_millis(1600));
        assert!(claims.is_stale(&claims.holder("a").unwrap()));
        let lost = flag();
        let Claim::Won(guard) = claims.try_claim("a", lost.clone()).unwrap() else {
            panic!("a stale lock is reclaimed");
        };
        assert_eq!(claims.holder("a").unwrap().by.pid, std::process::id());
        // Taking a claim away from a live holder is noticed by its heartbeat.
        std::fs::write(&lock, serde_json::to_string(&dead).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        assert!(guard.lost() && lost.load(Ordering::SeqCst));
        drop(guard);
        assert_eq!(claims.holder("a").unwrap().by, dead, "not ours to remove");
    }

    #[test]
    fn failures_are_recorded_and_only_older_ones_retried() {
        let dir = tempfile::tempdir().unwrap();
        let before = Claims::new(dir.path(), Duration::from_secs(60)).unwrap();
        before.record_failure("a", "out of memory", None).unwrap();
        let failure = before.failure("a").unwrap();
        assert_eq!(failure.error, "out of memory");
        assert!(before.failed_since_start(&failure));
        std::thread::sleep(Duration::from_millis(5));
        let later = Claims::new(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(!later.failed_since_start(&failure));
        later.clear("a").unwrap();
        assert!(later.failure("a").is_none());
    }
}
