//! Watches the live objects that templateResourceRefs read (DESIGN §3 "Templates": a pending
//! pair is re-rendered when the object changes), so the daemon passes again within moments of
//! a change instead of at the next poll. One watcher per object the last pass read; each wakes
//! the daemon when the object appears, disappears or its resourceVersion differs from what the
//! pass read. `sync --once` starts none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch_stream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Fleet;
use crate::cluster::Target;
use crate::cluster::objects::{self, ObjectKey, Observed};

/// The state of an object as last known: its resourceVersion, or `None` when absent.
type State = Option<String>;

/// One watched object: the task, and the state the task compares events with (updated by each
/// pass to what it read).
struct Watch {
    target: Arc<Target>,
    expected: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watchers of the objects the last pass read, owned by the daemon.
#[derive(Default)]
pub struct RefWatchers {
    watches: BTreeMap<ObjectKey, Watch>,
}

impl RefWatchers {
    /// Makes the set match what a pass read: starts watchers for new objects, stops those of
    /// objects no longer read, and records the state each object was read in.
    pub fn update(&mut self, observed: Vec<Observed>, fleet: &Arc<Fleet>) {
        let mut next: BTreeMap<ObjectKey, Watch> = BTreeMap::new();
        for o in observed {
            let state = o.resource_version.clone();
            match self.watches.remove(&o.key) {
                // The same client: keep the watcher, compare with the new read from now on.
                Some(w) if Arc::ptr_eq(&w.target, &o.target) && !w.task.is_finished() => {
                    if let Ok(mut expected) = w.expected.lock() {
                        *expected = state;
                    }
                    next.insert(o.key, w);
                }
                _ => {
                    debug!(object = %o.key, "watching templateResourceRef object");
                    let expected = Arc::new(Mutex::new(state));
                    let task = tokio::spawn(watch(
                        Arc::clone(fleet),
                        Arc::clone(&o.target),
                        o.key.clone(),
                        Arc::clone(&expected),
                    ));
                    next.insert(
                        o.key,
                        Watch {
                            target: o.target,
                            expected,
                            task,
                        },
                    );
                }
            }
        }
        // What is left was not read by this pass: dropping aborts its task.
        for key in self.watches.keys() {
            debug!(object = %key, "no longer read; watcher stopped");
        }
        self.watches = next;
        debug!(watched = self.watches.len(), "templateResourceRef watchers");
    }
}

/// Watches one object until aborted: waits (with backoff) for its kind to be served, then
/// follows it with a name field selector, restarting on errors with the watcher's backoff.
async fn watch(
    fleet: Arc<Fleet>,
    target: Arc<Target>,
    key: ObjectKey,
    expected: Arc<Mutex<State>>,
) {
    let mut delay = Duration::from_secs(1);
    let served = loop {
        match objects::served(&target, &key).await {
            Ok(Some(served)) => break served,
            Ok(None) => debug!(object = %key, "kind not served yet; asking again later"),
            Err(e) => debug!(object = %key, error = %e, "discovery failed; asking again later"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    let api = objects::api(&target, &served, &key);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut stream = watch_stream(api, config).default_backoff().boxed();
    // While a (re)list is in progress: what it found so far.
    let mut listing: Option<State> = None;
    // A failing watch (e.g. no list/watch permission) is logged once per failure streak.
    let mut failing = false;
    while let Some(event) = stream.next().await {
        if event.is_ok() && failing {
            info!(object = %key, "watch works again");
            failing = false;
        }
        let seen = match event {
            Ok(Event::Init) => {
                listing = Some(None);
                continue;
            }
            Ok(Event::InitApply(object)) => {
                listing = Some(Some(version_of(&object)));
                continue;
            }
            Ok(Event::InitDone) => match listing.take() {
                Some(state) => state,
                None => continue,
            },
            Ok(Event::Apply(object)) => Some(version_of(&object)),
            Ok(Event::Delete(_)) => None,
            Err(e) => {
                if failing {
                    debug!(object = %key, error = %e, "watch failed; retrying with backoff");
                } else {
                    warn!(object = %key, error = %e, "watch failed (changes are seen at the next poll until it works); retrying with backoff");
                    failing = true;
                }
                continue;
            }
        };
        let changed = match expected.lock() {
            Ok(mut last) if *last != seen => {
                *last = seen.clone();
                true
            }
            _ => false,
        };
        if changed {
            info!(object = %key, present = seen.is_some(), "templateResourceRef object changed; passing again");
            fleet.wake();
        }
    }
}

fn version_of(object: &kube::api::DynamicObject) -> String {
    object.metadata.resource_version.clone().unwrap_or_default()
}
