//! Enrolment group commits in the coordinator: when a gallery's snapshot is
//! written.
//!
//! An enrol task's ingest stages its batch ([`osprey_index::stage_into`]:
//! template file written put-if-absent, vectors added to the index in
//! memory) and writes the batch's marker
//! ([`osprey_index::mark_uncommitted`]) *before* the task is recorded done.
//! The gallery's snapshot, which holds the whole index, is written
//! ([`osprey_index::commit`], which then deletes the markers it covers):
//!
//! * when `enrol_commit_templates` templates were staged since the last one,
//! * when the oldest staged batch is `enrol_commit_seconds` old (checked by
//!   the reaper every half second, so it also fires between tasks),
//! * when an enrol job ends (with its calibration), when the gallery is
//!   created (so it exists in the store), and before an erasure (which
//!   works on the stored snapshot).
//!
//! A coordinator killed between commits loses nothing and duplicates
//! nothing: loading a gallery ([`Coordinator::lock_gallery`], and at start
//! for every gallery with markers) replays the marked batches into the
//! committed snapshot, adding only templates the index lacks (by template
//! id), then commits. See `osprey_index`'s `commit` module for the argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osprey_core::Result;
use osprey_index::{EnrollOptions, Gallery, load_with_uncommitted};

use crate::config::Config;
use crate::service::Coordinator;

/// A gallery's batches staged since its last snapshot.
struct Pending {
    /// Their markers (deleted by the next commit).
    markers: Vec<String>,
    /// Templates they added to the index.
    templates: usize,
    /// When the first of them was staged.
    since: Instant,
    /// A timed commit has been started for it.
    committing: bool,
}

/// Every gallery's staged batches, by gallery (index) name. Changed only
/// while that gallery's lock is held, except the `committing` flag.
#[derive(Default)]
pub struct Uncommitted(Mutex<HashMap<String, Pending>>);

impl Uncommitted {
    /// Notes a staged batch of `gallery` (its marker and the templates it
    /// added); whether the count or the age now calls for a commit.
    fn staged(&self, gallery: &str, marker: String, added: usize, config: &Config) -> bool {
        let mut map = self.0.lock().expect("uncommitted lock");
        let p = map.entry(gallery.to_string()).or_insert_with(|| Pending {
            markers: Vec::new(),
            templates: 0,
            since: Instant::now(),
            committing: false,
        });
        if !p.markers.contains(&marker) {
            p.markers.push(marker);
        }
        p.templates += added;
        p.templates >= config.enrol_commit_templates.max(1) || overdue(p, config)
    }

    /// The markers of `gallery`'s staged batches.
    fn markers(&self, gallery: &str) -> Vec<String> {
        self.0.lock().expect("uncommitted lock").get(gallery).map(|p| p.markers.clone()).unwrap_or_default()
    }

    /// Replaces `gallery`'s staged batches by those replayed at its load.
    fn replayed(&self, gallery: &str, markers: Vec<String>, templates: usize) {
        let p = Pending { markers, templates, since: Instant::now(), committing: false };
        self.0.lock().expect("uncommitted lock").insert(gallery.to_string(), p);
    }

    /// Forgets `gallery`'s staged batches: a snapshot holds them now.
    fn committed(&self, gallery: &str) {
        self.0.lock().expect("uncommitted lock").remove(gallery);
    }

    /// The galleries whose oldest staged batch is older than the time
    /// limit and that no timed commit is under way for (marked so now).
    fn take_overdue(&self, config: &Config) -> Vec<String> {
        let mut map = self.0.lock().expect("uncommitted lock");
        let mut out = Vec::new();
        for (name, p) in map.iter_mut() {
            if !p.committing && overdue(p, config) {
                p.committing = true;
                out.push(name.clone());
            }
        }
        out
    }

    /// A timed commit of `gallery` ended; after a failure the next try
    /// waits another interval.
    fn clear_committing(&self, gallery: &str, failed: bool) {
        if let Some(p) = self.0.lock().expect("uncommitted lock").get_mut(gallery) {
            p.committing = false;
            if failed {
                p.since = Instant::now();
            }
        }
    }

    /// Templates staged into `gallery` since its last snapshot.
    pub fn templates(&self, gallery: &str) -> usize {
        self.0.lock().expect("uncommitted lock").get(gallery).map_or(0, |p| p.templates)
    }
}

fn overdue(p: &Pending, config: &Config) -> bool {
    config.enrol_commit_seconds > 0 && p.since.elapsed() >= Duration::from_secs(config.enrol_commit_seconds)
}

impl Coordinator {
    /// Gallery `name` as committed plus its batches staged since (replayed
    /// and committed at once); `None` when it does not exist.
    pub(crate) async fn load_gallery(&self, name: &str) -> Result<Option<Gallery>> {
        let (gallery, markers, added) = load_with_uncommitted(&self.root, name, &EnrollOptions::default()).await?;
        if markers.is_empty() {
            return Ok(gallery);
        }
        tracing::info!("gallery `{name}`: {added} templates of {} batches not in its snapshot replayed", markers.len());
        let Some(mut g) = gallery else {
            // No snapshot and nothing left to replay (the files were erased).
            for key in &markers {
                self.root.delete(key).await?;
            }
            return Ok(None);
        };
        self.uncommitted.replayed(name, markers, added);
        if let Err(e) = self.commit_locked(name, &mut g, false).await {
            // Still marked: the next commit (or start) tries again.
            tracing::warn!("gallery `{name}`: replayed batches not committed: {}", e.message());
        }
        Ok(Some(g))
    }

    /// Notes a batch staged into gallery `name` (whose lock the caller
    /// holds, with `gallery` its index) and commits it if the count or the
    /// age calls for it, or `always`. A failed commit is only logged: the
    /// batch is marked, so nothing is lost, and the next commit covers it.
    pub(crate) async fn staged(&self, name: &str, gallery: &mut Gallery, marker: String, added: usize, always: bool) {
        let due = self.uncommitted.staged(name, marker, added, &self.config);
        if (due || always)
            && let Err(e) = self.commit_locked(name, gallery, false).await
        {
            tracing::warn!("gallery `{name}`: snapshot not written (retried later): {}", e.message());
        }
    }

    /// Writes gallery `name`'s snapshot (its lock held by the caller, with
    /// `gallery` its index) if batches were staged into it since the last
    /// one, or if `force` (the gallery changed otherwise, e.g. calibrated),
    /// and deletes their markers.
    pub(crate) async fn commit_locked(&self, name: &str, gallery: &mut Gallery, force: bool) -> Result<()> {
        let markers = self.uncommitted.markers(name);
        if markers.is_empty() && !force {
            return Ok(());
        }
        let (templates, t0) = (self.uncommitted.templates(name), Instant::now());
        osprey_index::commit(&self.root, gallery, &markers).await?;
        self.uncommitted.committed(name);
        tracing::info!(
            "gallery `{name}`: snapshot of {} templates written with {templates} new templates of {} batches in {:.2} s",
            gallery.len(),
            markers.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Commits gallery `name` if batches were staged into it.
    pub(crate) async fn commit_gallery(&self, name: &str) -> Result<()> {
        let mut guard = self.lock_gallery(name).await?;
        match guard.as_mut() {
            Some(g) => self.commit_locked(name, g, false).await,
            None => Ok(()),
        }
    }

    /// Starts a commit of every gallery whose oldest staged batch is older
    /// than `enrol_commit_seconds` (called by the reaper).
    pub(crate) fn commit_overdue(self: &Arc<Self>) {
        for name in self.uncommitted.take_overdue(&self.config) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let done = me.commit_gallery(&name).await;
                if let Err(e) = &done {
                    tracing::warn!("gallery `{name}`: timed snapshot failed (retried): {}", e.message());
                }
                me.uncommitted.clear_committing(&name, done.is_err());
            });
        }
    }

    /// At start: loads (so replays and commits) every gallery with batches
    /// staged but not committed when the last coordinator stopped.
    pub(crate) async fn recover_uncommitted(&self) -> Result<()> {
        for name in osprey_index::galleries_with_uncommitted(&self.root).await? {
            if let Err(e) = self.lock_gallery(&name).await {
                tracing::error!("gallery `{name}`: staged batches not replayed: {}", e.message());
            }
        }
        Ok(())
    }
}
