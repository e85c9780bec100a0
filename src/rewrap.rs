//! `tokenvault rewrap`: moves the wrapped key items (epoch data keys and
//! service-held secrets) under one KMS key (`--from-key`) and/or of one
//! classification to another KMS key with KMS ReEncrypt, so no key is ever
//! unwrapped in the service. Point `[keys.kms]` at the new key first, so
//! keys made during the run are made under it. Records are untouched: they are sealed
//! under data keys, and only the data keys' wrapping changes.
//!
//! Each item is replaced conditionally (only if it still holds the blob we
//! re-encrypted), so a running service and a second rewrap are safe beside
//! it; every token keeps detokenizing throughout, as the old wrapping and
//! the new one both open until the old KMS key is retired. Progress goes to
//! a checkpoint file after each item, and a rerun resumes after it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::keyring::context_for;
use crate::crypto::kms::KmsKeyProvider;
use crate::crypto::{KeyError, WrappedKey};
use crate::store::{KeyItem, StoreError, TokenStore};

/// Key items fetched per page.
const PAGE: usize = 100;

/// What to re-wrap.
#[derive(Debug, Clone)]
pub struct RewrapOptions {
    /// The KMS key to move to (id, ARN or alias).
    pub to_key: String,
    /// Only items wrapped under this KMS key (id, ARN or alias): the key
    /// being retired.
    pub from_key: Option<String>,
    /// Only items of this classification (secrets count as `pan`).
    pub classification: Option<String>,
    /// Count what would change, change nothing.
    pub dry_run: bool,
    /// Re-wrap at most this many items in this run (to go in stages); the
    /// checkpoint stays for the next run.
    pub limit: Option<u64>,
    /// Where progress is kept between runs.
    pub checkpoint: PathBuf,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The ARN `to_key` names.
    pub target: String,
    /// Items re-wrapped (or, in a dry run, that would be).
    pub rewrapped: u64,
    /// Items already under the target key.
    pub already: u64,
    /// Items of another classification, or under another key than
    /// `from_key`: left as they are.
    pub other_classification: u64,
    /// Items another writer changed while we worked (left as they are; a
    /// rerun picks them up).
    pub changed_meanwhile: u64,
    /// Items skipped because an earlier, interrupted run handled them.
    pub resumed_past: u64,
    /// Whether every item was seen (false when `limit` stopped the run).
    pub complete: bool,
}

/// Rewrap failures. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("key item {0}: not a data key or service secret id")]
    UnknownItem(String),
    #[error("checkpoint {path}: {why}", path = .0.display(), why = .1)]
    Checkpoint(PathBuf, String),
    #[error(
        "name the key to retire (--from-key) or a classification: moving every item under one key would merge the per-classification keys"
    )]
    Unbounded,
}

/// The checkpoint file: which run it belongs to and the last item done.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    target: String,
    from: Option<String>,
    classification: Option<String>,
    last_id: String,
    summary: Summary,
}

/// Re-wraps every matching key item under `opts.to_key`. `progress` is
/// called with (items done, items in all) after each item.
pub async fn run(
    store: &dyn TokenStore,
    kms: &KmsKeyProvider,
    environment: &str,
    opts: &RewrapOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Summary, RewrapError> {
    if opts.from_key.is_none() && opts.classification.is_none() {
        return Err(RewrapError::Unbounded);
    }
    let target = kms.arn_of(&opts.to_key).await?;
    let from = match &opts.from_key {
        Some(k) => Some(kms.arn_of(k).await?),
        None => None,
    };
    let items = all_key_items(store).await?;
    let total = items.len() as u64;

    let resume = if opts.dry_run {
        None
    } else {
        read_checkpoint(&opts.checkpoint)?.filter(|c| {
            c.target == target && c.from == from && c.classification == opts.classification
        })
    };
    let mut summary = resume
        .as_ref()
        .map(|c| c.summary.clone())
        .unwrap_or_default();
    summary.target = target.clone();
    let last_done = resume.map(|c| c.last_id);
    // Counts from the checkpoint are the earlier runs'; the limit is this
    // run's.
    summary.resumed_past = 0;
    let budget_start = summary.rewrapped;

    for (i, item) in items.iter().enumerate() {
        if opts
            .limit
            .is_some_and(|l| summary.rewrapped - budget_start >= l)
        {
            summary.complete = false;
            return Ok(summary);
        }
        if last_done
            .as_deref()
            .is_some_and(|last| item.id.as_str() <= last)
        {
            summary.resumed_past += 1;
        } else {
            let wanted = from.as_deref().is_none_or(|f| item.wrapping_key_id == f)
                && opts
                    .classification
                    .as_deref()
                    .is_none_or(|c| c == item.classification);
            if wanted {
                rewrap_one(store, kms, environment, opts, &target, item, &mut summary).await?;
            } else {
                summary.other_classification += 1;
            }
            if !opts.dry_run {
                write_checkpoint(
                    &opts.checkpoint,
                    &Checkpoint {
                        target: target.clone(),
                        from: from.clone(),
                        classification: opts.classification.clone(),
                        last_id: item.id.clone(),
                        summary: summary.clone(),
                    },
                )?;
            }
        }
        progress(i as u64 + 1, total);
    }
    summary.complete = true;
    if !opts.dry_run {
        match std::fs::remove_file(&opts.checkpoint) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RewrapError::Checkpoint(
                    opts.checkpoint.clone(),
                    e.to_string(),
                ));
            }
        }
    }
    Ok(summary)
}

async fn rewrap_one(
    store: &dyn TokenStore,
    kms: &KmsKeyProvider,
    environment: &str,
    opts: &RewrapOptions,
    target: &str,
    item: &KeyItem,
    summary: &mut Summary,
) -> Result<(), RewrapError> {
    if item.wrapping_key_id == target {
        summary.already += 1;
        return Ok(());
    }
    let ctx = context_for(environment, &item.id)
        .ok_or_else(|| RewrapError::UnknownItem(item.id.clone()))?;
    if opts.dry_run {
        summary.rewrapped += 1;
        return Ok(());
    }
    let old = WrappedKey {
        key_id: item.wrapping_key_id.clone(),
        blob: item.wrapped.clone(),
    };
    let new = kms.reencrypt(&old, &ctx, target).await?;
    if store
        .rewrap_key_item(&item.id, &item.wrapped, &new.key_id, &new.blob)
        .await?
    {
        summary.rewrapped += 1;
    } else {
        summary.changed_meanwhile += 1;
    }
    Ok(())
}

async fn all_key_items(store: &dyn TokenStore) -> Result<Vec<KeyItem>, StoreError> {
    let mut all: Vec<KeyItem> = Vec::new();
    loop {
        let after = all.last().map(|k| k.id.clone());
        let page = store.key_items_after(after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, RewrapError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RewrapError::Checkpoint(path.to_owned(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RewrapError::Checkpoint(path.to_owned(), e.to_string())),
    }
}

/// Writes the checkpoint atomically (a temporary file, fsynced, renamed).
fn write_checkpoint(path: &Path, c: &Checkpoint) -> Result<(), RewrapError> {
    let err = |e: std::io::Error| RewrapError::Checkpoint(path.to_owned(), e.to_string());
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(c).expect("a checkpoint serializes");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}
