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
//! The first two run in the background ([`Coordinator::commit_gallery`]):
//! the gallery's lock is held only while the snapshot is taken (the index
//! serialised to a local file, the id map copied), not while it is
//! uploaded, so searches of a large gallery wait a fraction of the commit
//! (the rest, the uploads, goes on beside them). A per-gallery write lock
//! keeps the snapshots in order; a commit's markers are deleted only once
//! its manifest is written, and batches staged during the upload stay
//! marked for the next commit. The others commit in place, under the
//! gallery's lock, after any background upload has finished.
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

/// A batch staged into a gallery and not in its snapshot yet.
struct Staged {
    /// Its marker (deleted by the commit that covers it).
    marker: String,
    /// Templates it added to the index.
    templates: usize,
    /// When it was staged.
    at: Instant,
}

/// A gallery's batches staged since its last snapshot, oldest first.
#[derive(Default)]
struct Pending {
    batches: Vec<Staged>,
    /// A background commit has been started for it.
    committing: bool,
}

impl Pending {
    fn templates(&self) -> usize {
        self.batches.iter().map(|b| b.templates).sum()
    }
}

/// Every gallery's staged batches, by gallery (index) name, and the locks
/// that put one gallery's snapshot writes in order.
#[derive(Default)]
pub struct Uncommitted {
    pending: Mutex<HashMap<String, Pending>>,
    /// Held from preparing a snapshot until its manifest is written, so
    /// that one gallery's snapshots are written in the order they were
    /// taken. Taken while the gallery's lock is held, never the other way
    /// round (a background commit releases the gallery first, then writes).
    writes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Uncommitted {
    /// Notes a staged batch of `gallery` (its marker and the templates it
    /// added); whether the count or the age now calls for a commit and none
    /// is under way (marked under way then).
    fn staged(&self, gallery: &str, marker: String, added: usize, config: &Config) -> bool {
        let mut map = self.pending.lock().expect("uncommitted lock");
        let p = map.entry(gallery.to_string()).or_default();
        match p.batches.iter_mut().find(|b| b.marker == marker) {
            Some(b) => b.templates += added,
            None => p.batches.push(Staged { marker, templates: added, at: Instant::now() }),
        }
        let due = !p.committing && (p.templates() >= config.enrol_commit_templates.max(1) || overdue(p, config));
        p.committing |= due;
        due
    }

    /// The markers of `gallery`'s staged batches.
    fn markers(&self, gallery: &str) -> Vec<String> {
        let map = self.pending.lock().expect("uncommitted lock");
        map.get(gallery).map(|p| p.batches.iter().map(|b| b.marker.clone()).collect()).unwrap_or_default()
    }

    /// Replaces `gallery`'s staged batches by those replayed at its load.
    fn replayed(&self, gallery: &str, markers: Vec<String>, templates: usize) {
        let now = Instant::now();
        let mut batches: Vec<Staged> =
            markers.into_iter().map(|marker| Staged { marker, templates: 0, at: now }).collect();
        if let Some(first) = batches.first_mut() {
            first.templates = templates;
        }
        self.pending
            .lock()
            .expect("uncommitted lock")
            .insert(gallery.to_string(), Pending { batches, committing: false });
    }

    /// Forgets the batches of `gallery` that `markers` name: a snapshot
    /// holds them now. Batches staged meanwhile stay.
    fn committed(&self, gallery: &str, markers: &[String]) {
        let mut map = self.pending.lock().expect("uncommitted lock");
        if let Some(p) = map.get_mut(gallery) {
            p.batches.retain(|b| !markers.contains(&b.marker));
            if p.batches.is_empty() && !p.committing {
                map.remove(gallery);
            }
        }
    }

    /// The galleries whose oldest staged batch is older than the time
    /// limit and that no background commit is under way for (marked so now).
    fn take_overdue(&self, config: &Config) -> Vec<String> {
        let mut map = self.pending.lock().expect("uncommitted lock");
        let mut out = Vec::new();
        for (name, p) in map.iter_mut() {
            if !p.committing && overdue(p, config) {
                p.committing = true;
                out.push(name.clone());
            }
        }
        out
    }

    /// A background commit of `gallery` ended; after a failure the next
    /// timed try waits another interval.
    fn clear_committing(&self, gallery: &str, failed: bool) {
        let mut map = self.pending.lock().expect("uncommitted lock");
        if let Some(p) = map.get_mut(gallery) {
            p.committing = false;
            if failed {
                let now = Instant::now();
                p.batches.iter_mut().for_each(|b| b.at = now);
            }
            if p.batches.is_empty() {
                map.remove(gallery);
            }
        }
    }

    /// Templates staged into `gallery` since its last snapshot.
    pub fn templates(&self, gallery: &str) -> usize {
        self.pending.lock().expect("uncommitted lock").get(gallery).map_or(0, Pending::templates)
    }

    /// The lock that orders `gallery`'s snapshot writes.
    fn write_lock(&self, gallery: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.writes.lock().expect("write locks").entry(gallery.to_string()).or_default())
    }
}

fn overdue(p: &Pending, config: &Config) -> bool {
    config.enrol_commit_seconds > 0
        && p.batches.first().is_some_and(|b| b.at.elapsed() >= Duration::from_secs(config.enrol_commit_seconds))
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
    /// holds, with `gallery` its index). If `always`, commits it at once;
    /// else, if the count or the age calls for it, starts a background
    /// commit ([`Coordinator::commit_gallery`]), so that neither this task
    /// nor the searches of the gallery wait for the snapshot's uploads. A
    /// failed commit is only logged: the batch is marked, so nothing is
    /// lost, and the next commit covers it.
    pub(crate) async fn staged(
        self: &Arc<Self>,
        name: &str,
        gallery: &mut Gallery,
        marker: String,
        added: usize,
        always: bool,
    ) {
        let due = self.uncommitted.staged(name, marker, added, &self.config);
        if always {
            if let Err(e) = self.commit_locked(name, gallery, false).await {
                tracing::warn!("gallery `{name}`: snapshot not written (retried later): {}", e.message());
            }
            if due {
                self.uncommitted.clear_committing(name, false);
            }
        } else if due {
            self.spawn_commit(name.to_string());
        }
    }

    /// Writes gallery `name`'s snapshot (its lock held by the caller, with
    /// `gallery` its index) if batches were staged into it since the last
    /// one, or if `force` (the gallery changed otherwise, e.g. calibrated),
    /// and deletes their markers. Waits for a background commit's uploads
    /// first.
    pub(crate) async fn commit_locked(&self, name: &str, gallery: &mut Gallery, force: bool) -> Result<()> {
        let lock = self.uncommitted.write_lock(name);
        let _writing = lock.lock().await;
        let markers = self.uncommitted.markers(name);
        if markers.is_empty() && !force {
            return Ok(());
        }
        let (templates, t0) = (self.uncommitted.templates(name), Instant::now());
        osprey_index::commit(&self.root, gallery, &markers).await?;
        self.uncommitted.committed(name, &markers);
        tracing::info!(
            "gallery `{name}`: snapshot of {} templates written with {templates} new templates of {} batches in {:.2} s",
            gallery.len(),
            markers.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Commits gallery `name` if batches were staged into it, holding the
    /// gallery's lock only while the snapshot is taken (the index
    /// serialised to a local file, the id map copied): searches and
    /// enrolments of the gallery go on while it is uploaded.
    pub(crate) async fn commit_gallery(&self, name: &str) -> Result<()> {
        let mut guard = self.lock_gallery(name).await?;
        let Some(gallery) = guard.as_mut() else { return Ok(()) };
        let lock = self.uncommitted.write_lock(name);
        let _writing = lock.lock().await;
        let markers = self.uncommitted.markers(name);
        if markers.is_empty() {
            return Ok(());
        }
        let (templates, t0) = (self.uncommitted.templates(name), Instant::now());
        let snapshot = gallery.prepare_save(&self.root).await?;
        let size = gallery.len();
        drop(guard);
        let held = t0.elapsed().as_secs_f64();
        osprey_index::commit_prepared(&self.root, snapshot, &markers).await?;
        self.uncommitted.committed(name, &markers);
        tracing::info!(
            "gallery `{name}`: snapshot of {size} templates written with {templates} new templates of {} batches in {:.2} s (the gallery locked for {held:.2} s of it)",
            markers.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Commits gallery `name` in the background ([`Coordinator::commit_gallery`]);
    /// its `committing` flag is set by the caller and cleared at the end.
    fn spawn_commit(self: &Arc<Self>, name: String) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let done = me.commit_gallery(&name).await;
            if let Err(e) = &done {
                tracing::warn!("gallery `{name}`: snapshot failed (retried): {}", e.message());
            }
            me.uncommitted.clear_committing(&name, done.is_err());
        });
    }

    /// Starts a commit of every gallery whose oldest staged batch is older
    /// than `enrol_commit_seconds` (called by the reaper).
    pub(crate) fn commit_overdue(self: &Arc<Self>) {
        for name in self.uncommitted.take_overdue(&self.config) {
            self.spawn_commit(name);
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
