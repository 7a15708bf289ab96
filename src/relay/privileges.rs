//! Who the relay runs as and who may write its spool. `--user` is resolved before anything
//! starts and applied after every listener and the admin port are bound (port 25 needs root
//! or `CAP_NET_BIND_SERVICE`); the spool's folders must belong to the user the relay ends up
//! as and be closed to everyone else, since whoever can write the journal can inject mail.
//!
//! The relay never changes the owner or mode of an existing folder: a mistyped `--spool`
//! would hand a system folder to the service user. It refuses and names the command that
//! fixes it, as Postfix does; under systemd, `StateDirectory=` does the chown.

use nix::unistd::{self, Gid, Group, Uid, User};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why the relay will not run as asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `--user` could not be resolved or is not allowed.
    #[error("--user `{spec}`: {why}")]
    User {
        /// What was given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// Switching user failed, or left something privileged.
    #[error("dropping privileges to `{user}`: {why}")]
    Drop {
        /// The user.
        user: String,
        /// What failed.
        why: String,
    },
    /// A spool folder is owned by someone else or open to others.
    #[error("spool folder {} {why}\n  help: {fix}", path.display())]
    Spool {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// The command that fixes it.
        fix: String,
    },
    /// A spool folder could not be read or created.
    #[error("spool folder {}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The user (and groups) `--user USER[:GROUP]` names, looked up once before anything is bound.
#[derive(Debug, Clone)]
pub struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    /// Supplementary groups: the user's own with `USER`, none but GROUP with `USER:GROUP`.
    groups: Vec<Gid>,
    /// False when the relay already runs as this user (not root): nothing to switch.
    switch: bool,
}

impl RunAs {
    /// Resolves `USER[:GROUP]` (names or numeric ids). Refuses root (nothing would be
    /// dropped) and, when not started as root, any user but the current one.
    pub fn resolve(spec: &str) -> Result<RunAs, ServiceError> {
        let err = |why: String| ServiceError::User {
            spec: spec.to_string(),
            why,
        };
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let user = lookup_user(user_part)
            .map_err(err)?
            .ok_or_else(|| err(format!("no user `{user_part}` on this system")))?;
        let (gid, groups) = match group_part {
            Some(g) => {
                let group = lookup_group(g)
                    .map_err(err)?
                    .ok_or_else(|| err(format!("no group `{g}` on this system")))?;
                (group.gid, vec![group.gid])
            }
            None => {
                let name = std::ffi::CString::new(user.name.as_bytes())
                    .map_err(|_| err("the user name holds a NUL byte".into()))?;
                let groups = unistd::getgrouplist(&name, user.gid)
                    .map_err(|e| err(format!("reading the user's groups: {e}")))?;
                (user.gid, groups)
            }
        };
        if user.uid.is_root() || gid.as_raw() == 0 || groups.iter().any(|g| g.as_raw() == 0) {
            return Err(err(
                "names root (user or group): nothing would be dropped; name an unprivileged user such as `mailflow`".into(),
            ));
        }
        let me = unistd::geteuid();
        let switch = me.is_root();
        if !switch && me != user.uid {
            return Err(err(format!(
                "only root can switch users, and the relay runs as uid {me}; start it as root (it drops to `{}` after binding) or without --user",
                user.name
            )));
        }
        Ok(RunAs {
            name: user.name,
            uid: user.uid,
            gid,
            groups,
            switch,
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The numeric user id.
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }
}

fn lookup_user(s: &str) -> Result<Option<User>, String> {
    let found = match s.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(s),
    };
    found.map_err(|e| format!("looking up the user: {e}"))
}

fn lookup_group(s: &str) -> Result<Option<Group>, String> {
    let found = match s.parse::<u32>() {
        Ok(n) => Group::from_gid(Gid::from_raw(n)),
        Err(_) => Group::from_name(s),
    };
    found.map_err(|e| format!("looking up the group: {e}"))
}

/// The uid the spool must belong to: the `--user`'s, else the one the relay runs as.
pub fn owner(run_as: Option<&RunAs>) -> u32 {
    run_as.map_or_else(|| unistd::geteuid().as_raw(), RunAs::uid)
}

/// Switches the whole process to `run_as`: supplementary groups, then group, then user (the
/// other order would leave no right to change groups). libc applies each to every thread,
/// tokio's included. Then reads everything back, and refuses to go on if any id of any
/// thread is not the one asked for, or if root can be taken back.
pub fn drop_to(run_as: &RunAs) -> Result<(), ServiceError> {
    let err = |why: String| ServiceError::Drop {
        user: run_as.name.clone(),
        why,
    };
    if run_as.switch {
        unistd::setgroups(&run_as.groups).map_err(|e| err(format!("setgroups: {e}")))?;
        unistd::setgid(run_as.gid).map_err(|e| err(format!("setgid: {e}")))?;
        unistd::setuid(run_as.uid).map_err(|e| err(format!("setuid: {e}")))?;
    }
    verify(run_as).map_err(err)?;
    if run_as.switch {
        tracing::info!(
            "running as `{}` (uid {}, gid {})",
            run_as.name,
            run_as.uid,
            run_as.gid
        );
    }
    Ok(())
}

fn verify(run_as: &RunAs) -> Result<(), String> {
    let uids = unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let gids = unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    for (what, id) in [
        ("real uid", uids.real),
        ("effective uid", uids.effective),
        ("saved uid", uids.saved),
    ] {
        if id != run_as.uid {
            return Err(format!("the {what} is {id}, not {}", run_as.uid));
        }
    }
    for (what, id) in [
        ("real gid", gids.real),
        ("effective gid", gids.effective),
        ("saved gid", gids.saved),
    ] {
        if id != run_as.gid {
            return Err(format!("the {what} is {id}, not {}", run_as.gid));
        }
    }
    if run_as.switch {
        let mut have = unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?;
        let mut want = run_as.groups.clone();
        have.sort_unstable_by_key(|g| g.as_raw());
        have.dedup();
        want.sort_unstable_by_key(|g| g.as_raw());
        want.dedup();
        if have != want {
            return Err(format!(
                "the supplementary groups are {have:?}, not {want:?}"
            ));
        }
        // The saved uid is checked above; this is the proof that nothing can take root back.
        if unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err("setuid(0) succeeded afterwards".into());
        }
    }
    every_thread(run_as)
}

/// Every thread's ids as the kernel reports them: a C library that changed only the
/// calling thread would leave the runtime's other threads root. After a switch from root the
/// kernel has also cleared the capabilities; a thread that kept any is refused too.
fn every_thread(run_as: &RunAs) -> Result<(), String> {
    let tasks = fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    for task in tasks.flatten() {
        let path = task.path().join("status");
        let Ok(status) = fs::read_to_string(&path) else {
            // A thread that ended between the listing and the read.
            continue;
        };
        let line = |key: &'static str| status.lines().find(|l| l.starts_with(key)).unwrap_or(key);
        for (key, want) in [("Uid:", run_as.uid.as_raw()), ("Gid:", run_as.gid.as_raw())] {
            // Real, effective, saved and file-system ids.
            let ids: Vec<&str> = line(key).split_whitespace().skip(1).collect();
            if ids.len() != 4 || !ids.iter().all(|v| v.parse::<u32>() == Ok(want)) {
                return Err(format!("{}: `{}`", path.display(), line(key)));
            }
        }
        if run_as.switch {
            for key in ["CapPrm:", "CapEff:", "CapAmb:"] {
                let caps = line(key).split_whitespace().nth(1);
                if caps.is_none_or(|c| !c.trim_start_matches('0').is_empty()) {
                    return Err(format!("{}: `{}`", path.display(), line(key)));
                }
            }
        }
    }
    Ok(())
}

/// The folders whose owner and mode are checked: the spool, the queue and its journal, the
/// tracking log and the captured traffic.
fn folders(spool: &Path) -> [PathBuf; 5] {
    let queue = spool.join("queue");
    [
        spool.to_path_buf(),
        queue.join("journal"),
        queue,
        spool.join("tracking"),
        spool.join(super::capture::STEM),
    ]
}

/// Checks the spool's folders that exist: each must be a folder owned by `owner` and not
/// writable by group or others. Runs before anything is bound, so a refusal listens nowhere.
pub fn check_spool(spool: &Path, owner: u32) -> Result<(), ServiceError> {
    for path in folders(spool) {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ServiceError::Io { path, source }),
        };
        let shown = path.display().to_string();
        if !meta.is_dir() {
            return Err(ServiceError::Spool {
                why: "is not a folder".into(),
                fix: format!(
                    "move it away, or give --spool another folder (`mv {shown} {shown}.old`)"
                ),
                path,
            });
        }
        if meta.uid() != owner {
            let user = user_name(owner);
            return Err(ServiceError::Spool {
                why: format!(
                    "is owned by {}, not by {user} that the relay runs as: its owner could inject mail",
                    user_name(meta.uid())
                ),
                fix: format!("chown -R {} {shown}", chown_name(owner)),
                path,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                _ => "others",
            };
            return Err(ServiceError::Spool {
                why: format!(
                    "is writable by {who} (mode {mode:04o}): anyone able to write the journal could inject mail"
                ),
                fix: format!("chmod go-w {shown}"),
                path,
            });
        }
    }
    Ok(())
}

/// Creates the spool's missing folders, closed to everyone else (0700, whatever the umask),
/// as the user the relay now runs as, then checks them all.
pub fn prepare_spool(spool: &Path, owner: u32) -> Result<(), ServiceError> {
    for path in folders(spool) {
        if !path.exists() {
            let made = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path);
            match made {
                Ok(()) => {}
                // The usual cause after --user: the spool, or a folder above it, is root's.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    let shown = spool.display();
                    return Err(ServiceError::Spool {
                        why: format!(
                            "cannot be created by {} that the relay runs as ({e})",
                            user_name(owner)
                        ),
                        fix: format!(
                            "install -d -o {} -m 0700 {shown} (as root), and let the user through the folders above it",
                            chown_name(owner)
                        ),
                        path,
                    });
                }
                Err(source) => return Err(ServiceError::Io { path, source }),
            }
        }
    }
    check_spool(spool, owner)
}

/// What `chown` takes for `uid`: its name, else the number.
fn chown_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// `name (uid N)`, or `uid N` for an id without a name.
fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("`{}` (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_open_to_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let me = unistd::geteuid().as_raw();
        prepare_spool(&spool, me).unwrap();
        let queue = spool.join("queue");
        assert_eq!(fs::metadata(&queue).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&queue, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_spool(&spool, me).unwrap_err().to_string();
        assert!(e.contains(&queue.display().to_string()), "{e}");
        assert!(
            e.contains("writable by group and others (mode 0777)"),
            "{e}"
        );
        assert!(
            e.contains(&format!("help: chmod go-w {}", queue.display())),
            "{e}"
        );
        fs::set_permissions(&queue, fs::Permissions::from_mode(0o750)).unwrap();
        check_spool(&spool, me).unwrap();
    }

    #[test]
    fn a_spool_of_another_user_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let me = unistd::geteuid().as_raw();
        prepare_spool(&spool, me).unwrap();
        let other = me.wrapping_add(4242);
        let e = check_spool(&spool, other).unwrap_err().to_string();
        assert!(e.contains(&format!("is owned by {}", user_name(me))), "{e}");
        assert!(
            e.contains(&format!("chown -R {other} {}", spool.display())),
            "{e}"
        );
    }

    #[test]
    fn root_is_not_a_user_to_drop_to() {
        let e = RunAs::resolve("root").unwrap_err().to_string();
        assert!(e.contains("names root"), "{e}");
        let e = RunAs::resolve("no-such-user-here").unwrap_err().to_string();
        assert!(e.contains("no user `no-such-user-here`"), "{e}");
    }
}
