//! Group commits: many enrolled batches, one gallery snapshot.
//!
//! A snapshot holds the whole index, so writing one per enrolled batch costs
//! O(gallery) per batch. Instead a batch is *staged*
//! ([`crate::stage_into`]: its template file written put-if-absent, its
//! vectors added to the index in memory) and *marked uncommitted*
//! ([`mark_uncommitted`]: a small object under the gallery,
//! `galleries/<name>/uncommitted/<batch>.json`, naming the template file).
//! A later [`commit`] writes one snapshot holding every staged batch and
//! then deletes their markers.
//!
//! Why nothing is lost or duplicated when the process dies at any point:
//!
//! * Invariant: every template of a batch whose marker has been written is
//!   in its template file, and every staged batch not in the committed
//!   snapshot has a marker. A caller writes the marker before it reports the
//!   batch as done, and [`commit`] deletes markers only after the snapshot
//!   holding their batches is in place (the manifest is written last).
//! * [`load_with_uncommitted`] reads the snapshot and replays every marked
//!   batch: it adds the templates the index lacks, by template id. A batch
//!   that is already in the snapshot (died between the snapshot and the
//!   marker deletion) adds nothing; a batch that is not adds all of its
//!   templates. A batch whose caller died before its marker was written was
//!   not reported done, so it is retried, and the retry skips the templates
//!   already present the same way.

use bytes::Bytes;
use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{Root, layout, read_templates};
use serde::{Deserialize, Serialize};

use crate::enroll::{EnrollTimes, add_missing, check_fits, check_rows};
use crate::{EnrollOptions, Gallery, SnapshotWrite};

/// The folder of gallery `gallery`'s markers.
fn markers_dir(gallery: &str) -> String {
    format!("{}/uncommitted/", layout::gallery_dir(gallery))
}

/// The key of the marker of batch `batch` staged into gallery `gallery`.
pub fn uncommitted_key(gallery: &str, batch: &str) -> String {
    format!("{}{batch}.json", markers_dir(gallery))
}

/// What a marker says: the template file of the staged batch.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    templates: String,
}

/// Records that batch `batch` (template file `template_key`) was staged into
/// gallery `gallery` but is not in its snapshot yet; returns the marker's
/// key, to hand to [`commit`].
pub async fn mark_uncommitted(root: &Root, gallery: &str, batch: &str, template_key: &str) -> Result<String> {
    layout::check_name("gallery", gallery)?;
    layout::check_name("batch", batch)?;
    let key = uncommitted_key(gallery, batch);
    let marker = serde_json::to_vec(&Marker { templates: template_key.to_string() })
        .map_err(|e| Error::internal(format!("marker `{key}`: {e}")))?;
    root.put(&key, Bytes::from(marker)).await?;
    Ok(key)
}

/// The markers of gallery `gallery` (keys, sorted).
pub async fn uncommitted_markers(root: &Root, gallery: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> =
        root.list(&markers_dir(gallery)).await?.into_iter().map(|o| o.key).filter(|k| k.ends_with(".json")).collect();
    keys.sort();
    Ok(keys)
}

/// The galleries that have markers, by name.
pub async fn galleries_with_uncommitted(root: &Root) -> Result<Vec<String>> {
    let mut names: Vec<String> = root
        .glob(&format!("{}/*/uncommitted/*.json", layout::GALLERIES))
        .await?
        .into_iter()
        .filter_map(|o| o.key.split('/').nth(1).map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Adds to `gallery` (`None`: builds gallery `name`, its index chosen by
/// `opts`) the templates of the batches the `markers` name that it lacks;
/// returns it (`None` if there was none and nothing to add) with the number
/// added. A marked file that is gone (every row erased) adds nothing.
pub async fn replay_uncommitted(
    root: &Root,
    mut gallery: Option<Gallery>,
    name: &str,
    markers: &[String],
    opts: &EnrollOptions,
) -> Result<(Option<Gallery>, usize)> {
    let mut added = 0;
    for key in markers {
        let bytes = match root.get(key).await {
            Ok(b) => b,
            // Committed and deleted meanwhile.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("marker `{}`: {e}", root.url_of(key))))?;
        let templates = match read_templates(root, &marker.templates).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let templates: Vec<_> = templates.into_iter().filter(|t| t.gallery.as_deref() == Some(name)).collect();
        if templates.is_empty() {
            continue;
        }
        let rows = check_rows(name, &templates).map_err(|e| e.context(format!("replaying `{}`", marker.templates)))?;
        check_fits(gallery.as_ref(), name, &rows)?;
        let (g, n) = add_missing(gallery.take(), name, &rows, opts, &mut EnrollTimes::default())?;
        gallery = Some(g);
        added += n;
    }
    Ok((gallery, added))
}

/// Gallery `name` as committed plus every batch staged since
/// ([`replay_uncommitted`]); `None` when it has neither. Also returns the
/// markers replayed (to [`commit`] once the caller wants them in a snapshot)
/// and how many templates replaying added.
pub async fn load_with_uncommitted(
    root: &Root,
    name: &str,
    opts: &EnrollOptions,
) -> Result<(Option<Gallery>, Vec<String>, usize)> {
    let committed = match Gallery::load(root, name).await {
        Ok(g) => Some(g),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let markers = uncommitted_markers(root, name).await?;
    if markers.is_empty() {
        return Ok((committed, markers, 0));
    }
    let (gallery, added) = replay_uncommitted(root, committed, name, &markers, opts).await?;
    Ok((gallery, markers, added))
}

/// Writes `gallery`'s snapshot, then deletes the `markers` of the batches
/// staged into it (they are in the snapshot now).
pub async fn commit(root: &Root, gallery: &mut Gallery, markers: &[String]) -> Result<()> {
    commit_prepared(root, gallery.prepare_save(root).await?, markers).await
}

/// [`commit`] of a snapshot already taken ([`Gallery::prepare_save`]), so
/// that the gallery need not be held while it is written: `markers` name
/// the batches staged before it was taken.
pub async fn commit_prepared(root: &Root, snapshot: SnapshotWrite, markers: &[String]) -> Result<()> {
    snapshot.write(root).await?;
    for key in markers {
        root.delete(key).await?;
    }
    Ok(())
}
