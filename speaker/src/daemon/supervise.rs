//! Supervision of the daemon's long-lived tasks.
//!
//! Every task the daemon depends on runs in one [`Supervisor`] (a tokio
//! `JoinSet`). When one ends — returns, fails or panics — [`verdict`] decides
//! between restarting it after a backoff (the Kubernetes watches: an API
//! server that went away comes back) and ending the process with a non-zero
//! status and one line, so that Kubernetes restarts the pod. Either way the
//! daemon never runs on half-alive, answering from maps nobody keeps.

use std::{collections::HashMap, future::Future, pin::Pin, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::error::Error;

/// The long-lived tasks of `speaker run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// The Kubernetes watches (Nodes, Services, EndpointSlices, pools,
    /// advertisements).
    KubeWatches,
    /// The speaker-pod lister that finds gossip peers.
    SpeakerPods,
    /// The ServiceL2Status reconciler (`kube::status`): restarted when its
    /// watch ends, catching up from a fresh list.
    StatusWriter,
    /// The cluster-state file watcher.
    FileSource,
    /// `/metrics`, `/healthz`, `/readyz`.
    MetricsServer,
    /// Forwards gossip's member set to the election.
    Membership,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::KubeWatches => "the Kubernetes watches",
            Task::SpeakerPods => "the speaker pod listing",
            Task::StatusWriter => "the status writer",
            Task::FileSource => "the cluster state file watch",
            Task::MetricsServer => "the metrics server",
            Task::Membership => "the gossip membership",
        }
    }
}

/// How a task ended.
#[derive(Debug)]
pub enum Ended {
    Returned(Result<(), Error>),
    Panicked(String),
}

impl Ended {
    /// The error to log, count and, for a fatal end, exit with: the task's
    /// own error (its kind kept), or that it ended or panicked.
    pub fn into_error(self, task: Task) -> Error {
        let how = match self {
            Ended::Returned(Err(e)) => return e,
            Ended::Returned(Ok(())) => "ended".to_owned(),
            // A panic message may span lines; the exit line may not.
            Ended::Panicked(message) => format!(
                "panicked: {}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        };
        Error::TaskEnded {
            task: task.name(),
            how,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start the task again after this long.
    Restart { after: Duration },
    /// End the process (non-zero, with the task's error as its last line).
    Exit,
}

/// First wait before restarting; doubled per failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before ending starts its backoff afresh.
pub const HEALTHY_RUN: Duration = Duration::from_secs(120);

/// What to do about `task` having ended, its `failures` restarts in a row
/// before this one. The Kubernetes side is restarted: watches end when the
/// API server or the network goes away, and come back with them. The rest
/// are part of this process (a panic there is a bug, a file watch or a bound
/// port that fails will not mend by retrying here): the process ends, and
/// Kubernetes restarts the pod.
pub fn verdict(task: Task, ended: &Ended, failures: u32) -> Verdict {
    match (task, ended) {
        (Task::KubeWatches | Task::SpeakerPods | Task::StatusWriter, Ended::Returned(_)) => {
            Verdict::Restart {
                after: backoff(failures),
            }
        }
        _ => Verdict::Exit,
    }
}

/// Exponential backoff: 1 s, 2 s, 4 s, … up to a minute.
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(MAX_BACKOFF)
}

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
type Start = Box<dyn Fn() -> TaskFuture + Send>;

/// The running tasks and how to start each again.
#[derive(Default)]
pub struct Supervisor {
    running: JoinSet<(Task, Result<(), Error>)>,
    /// Ids of the running tasks, to name one that panicked.
    ids: HashMap<tokio::task::Id, Task>,
    starts: HashMap<Task, Start>,
    /// Restarts in a row, and when the current run began.
    history: HashMap<Task, (u32, Instant)>,
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor::default()
    }

    /// Runs `start()` now, and again whenever [`verdict`] says so.
    pub fn spawn<F>(&mut self, task: Task, start: impl Fn() -> F + Send + 'static)
    where
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.starts
            .insert(task, Box::new(move || Box::pin(start()) as TaskFuture));
        self.history.insert(task, (0, Instant::now()));
        self.launch(task, Duration::ZERO);
    }

    fn launch(&mut self, task: Task, after: Duration) {
        let Some(start) = self.starts.get(&task) else {
            return;
        };
        let run = start();
        let handle = self.running.spawn(async move {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            (task, run.await)
        });
        self.ids.insert(handle.id(), task);
    }

    /// The next task to end; never resolves while none is running.
    pub async fn next_ended(&mut self) -> (Task, Ended) {
        loop {
            match self.running.join_next_with_id().await {
                None => std::future::pending::<()>().await,
                Some(Ok((id, (task, result)))) => {
                    self.ids.remove(&id);
                    return (task, Ended::Returned(result));
                }
                Some(Err(e)) => {
                    let Some(task) = self.ids.remove(&e.id()) else {
                        continue;
                    };
                    let message = match e.try_into_panic() {
                        Ok(payload) => panic_message(payload.as_ref()),
                        Err(e) => e.to_string(),
                    };
                    return (task, Ended::Panicked(message));
                }
            }
        }
    }

    /// Applies the policy to a task that ended: restarts it, or returns the
    /// line to end the process with.
    pub fn handle(&mut self, task: Task, ended: &Ended) -> Verdict {
        let now = Instant::now();
        let (failures, started) = self.history.get(&task).copied().unwrap_or((0, now));
        let failures = if now.duration_since(started) >= HEALTHY_RUN {
            0
        } else {
            failures
        };
        let verdict = verdict(task, ended, failures);
        if let Verdict::Restart { after } = verdict {
            self.history.insert(task, (failures + 1, now + after));
            self.launch(task, after);
        }
        verdict
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn kubernetes_tasks_restart_with_growing_backoff() {
        let failed = Ended::Returned(Err(Error::Config("the API server went away".into())));
        let waits: Vec<Duration> = (0..8)
            .map(
                |failures| match verdict(Task::KubeWatches, &failed, failures) {
                    Verdict::Restart { after } => after,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        let seconds: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 60, 60]);
        for task in [Task::SpeakerPods, Task::StatusWriter] {
            assert_eq!(
                verdict(task, &Ended::Returned(Ok(())), 0),
                Verdict::Restart {
                    after: FIRST_BACKOFF
                }
            );
        }
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_rest_end_the_process_with_one_line() {
        let cases = [
            (
                Task::MetricsServer,
                Ended::Returned(Ok(())),
                ErrorKind::Task,
            ),
            (
                Task::FileSource,
                Ended::Returned(Err(Error::Config("inotify limit".into()))),
                ErrorKind::Config,
            ),
            (Task::Membership, Ended::Returned(Ok(())), ErrorKind::Task),
            (
                Task::KubeWatches,
                Ended::Panicked("index out of bounds:\n  the len is 0".into()),
                ErrorKind::Task,
            ),
        ];
        for (task, ended, kind) in cases {
            assert_eq!(
                verdict(task, &ended, 0),
                Verdict::Exit,
                "{task:?} {ended:?}"
            );
            let error = ended.into_error(task);
            assert_eq!(error.kind(), kind, "{error}");
            assert!(!error.to_string().contains('\n'), "{error:?}");
        }
        assert_eq!(
            Ended::Panicked("boom".into())
                .into_error(Task::KubeWatches)
                .to_string(),
            "the Kubernetes watches panicked: boom"
        );
        assert_eq!(
            Ended::Returned(Ok(()))
                .into_error(Task::MetricsServer)
                .to_string(),
            "the metrics server ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_task_runs_again_after_its_backoff() {
        let runs = Arc::new(AtomicU32::new(0));
        let mut supervisor = Supervisor::new();
        let counter = runs.clone();
        supervisor.spawn(Task::KubeWatches, move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err(Error::Config("refused".into()))
            }
        });
        let started = Instant::now();
        for round in 0..3u32 {
            let (task, ended) = supervisor.next_ended().await;
            assert_eq!(task, Task::KubeWatches);
            assert_eq!(runs.load(Ordering::SeqCst), round + 1);
            assert_eq!(
                supervisor.handle(task, &ended),
                Verdict::Restart {
                    after: backoff(round)
                }
            );
        }
        supervisor.next_ended().await;
        // 1 s + 2 s + 4 s of backoff before the fourth run.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_healthy_run_resets_the_backoff() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn(Task::KubeWatches, || async {
            tokio::time::sleep(HEALTHY_RUN).await;
            Ok(())
        });
        for _ in 0..3 {
            let (task, ended) = supervisor.next_ended().await;
            assert_eq!(
                supervisor.handle(task, &ended),
                Verdict::Restart {
                    after: FIRST_BACKOFF
                }
            );
        }
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_its_task_and_message() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn(Task::MetricsServer, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        supervisor.spawn(Task::Membership, || async {
            if true {
                panic!("members channel poisoned");
            }
            Ok(())
        });
        let (task, ended) = supervisor.next_ended().await;
        assert_eq!(task, Task::Membership);
        assert_eq!(supervisor.handle(task, &ended), Verdict::Exit);
        assert_eq!(
            ended.into_error(task).to_string(),
            "the gossip membership panicked: members channel poisoned"
        );
    }
}
