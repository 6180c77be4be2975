//! Signed checkpoints of the journal, and the proofs that tie entries and checkpoints
//! together (see docs/audit.md).
//!
//! The tree is the RFC 6962 tree over the leaf hashes of the numbered entries, in
//! sequence order. A checkpoint is made of the current numbered tree (on PostgreSQL after
//! the pending entries are numbered), stored once per size in `journal_checkpoints`, and
//! journaled as `journal_checkpoint` (details: size and root in hex). Its own entry is
//! covered by the next checkpoint. Roots and proofs are computed from the stored tiles
//! ([`crate::tiles`]): O(log n) rows, not every leaf hash.

use crate::journal as entries;
use crate::tiles;
use crate::schema::{journal, journal_checkpoints};
use crate::{AnyConnection, Db, StoreError};
use broker_core::checkpoint::{export_checkpoint_line, export_line, Checkpoint, JournalKey};
use broker_core::journal::{parse_hash, Action, Entry};
use broker_core::merkle::{self, Hash};
use broker_core::Timestamp;
use diesel::prelude::*;
use serde::Serialize;
use std::io::Write;

/// Leaf hashes read per query.
const LEAF_PAGE: i64 = 50_000;
/// Entries read per query when exporting.
pub const EXPORT_PAGE: i64 = 5_000;

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = journal_checkpoints)]
pub struct Stored {
    pub size: i64,
    /// Lower-case hex.
    pub root_hash: String,
    /// The signed note.
    pub note: String,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
}

impl Stored {
    pub fn root(&self) -> Hash {
        parse_hash(&self.root_hash).unwrap_or([0u8; 32])
    }
}

fn inconsistent(m: String) -> StoreError {
    StoreError::Conflict(format!("journal incohérent : {m}"))
}

/// One page of leaf hashes, aggregated by the database into one text: per-row decoding
/// would cost far more than hashing.
#[derive(QueryableByName)]
struct LeafPage {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    hashes: String,
}

fn leaf_page(conn: &mut AnyConnection, after: i64, upto: i64) -> Result<LeafPage, StoreError> {
    use diesel::sql_types::BigInt;
    const SQLITE: &str = "SELECT count(*) AS n, COALESCE(group_concat(leaf_hash, '' ORDER BY seq), '') AS hashes \
                          FROM journal WHERE seq > ? AND seq <= ?";
    const POSTGRES: &str = "SELECT count(*) AS n, COALESCE(string_agg(leaf_hash, '' ORDER BY seq), '') AS hashes \
                            FROM journal WHERE seq > $1 AND seq <= $2";
    Ok(match conn {
        AnyConnection::Sqlite(c) => diesel::sql_query(SQLITE).bind::<BigInt, _>(after).bind::<BigInt, _>(upto).get_result(c)?,
        AnyConnection::Postgresql(c) => diesel::sql_query(POSTGRES).bind::<BigInt, _>(after).bind::<BigInt, _>(upto).get_result(c)?,
    })
}

/// Leaf hashes of entries `after + 1` to `upto`, in one query. Fails if the journal
/// does not hold exactly these numbers.
pub(crate) fn leaf_range(conn: &mut AnyConnection, after: i64, upto: i64) -> Result<Vec<Hash>, StoreError> {
    let page = leaf_page(conn, after, upto)?;
    // `seq` is the primary key: as many rows as numbers means every number is there.
    if page.n != upto - after {
        let present: Vec<i64> = journal::table
            .filter(journal::seq.gt(after))
            .filter(journal::seq.le(upto))
            .order(journal::seq.asc())
            .select(journal::seq)
            .load(conn)?;
        let missing = (after + 1..=upto).zip(present.iter().copied().chain(std::iter::repeat(0))).find(|(a, b)| a != b).map_or(upto, |(a, _)| a);
        return Err(inconsistent(format!("entrée n° {missing} absente")));
    }
    let bytes = hex::decode(&page.hashes).ok().filter(|b| b.len() == 32 * page.n as usize);
    let Some(bytes) = bytes else {
        return Err(inconsistent(format!("empreintes illisibles entre les entrées n° {} et {upto}", after + 1)));
    };
    Ok(bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
}

/// Calls `f` with the leaf hash of every entry from `after + 1` to `upto`, in order,
/// reading them in pages. Fails if the journal does not hold exactly these numbers.
pub(crate) fn for_each_leaf_between(conn: &mut AnyConnection, mut after: i64, upto: i64, mut f: impl FnMut(i64, Hash)) -> Result<(), StoreError> {
    while after < upto {
        let end = (after + LEAF_PAGE).min(upto);
        for (i, h) in leaf_range(conn, after, end)?.into_iter().enumerate() {
            f(after + 1 + i as i64, h);
        }
        after = end;
    }
    Ok(())
}

/// Calls `f` with the leaf hash of every entry from 1 to `size`, in order, reading them
/// in pages. Fails if the journal does not hold exactly these numbers.
pub fn for_each_leaf(conn: &mut AnyConnection, size: i64, f: impl FnMut(i64, Hash)) -> Result<(), StoreError> {
    for_each_leaf_between(conn, 0, size, f)
}

/// Leaf hashes of entries 1 to `size`.
pub fn leaf_hashes(conn: &mut AnyConnection, size: i64) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::with_capacity(size.clamp(0, 1 << 24) as usize);
    for_each_leaf(conn, size, |_, h| out.push(h))?;
    Ok(out)
}

/// Root of the tree of entries 1 to `size`, from the stored tiles: O(log n) rows (the
/// leaves a backlog of tiles still lacks otherwise, see [`crate::tiles`]).
pub fn tree_root(conn: &mut AnyConnection, size: i64) -> Result<Hash, StoreError> {
    let numbered = tree_size(conn)?;
    if size > numbered {
        return Err(inconsistent(format!("entrée n° {} absente", numbered + 1)));
    }
    tiles::root(conn, size)
}

/// Number of numbered entries (the size of the current tree).
pub fn tree_size(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(entries::head(conn)?.0)
}

pub fn latest(conn: &mut AnyConnection) -> Result<Option<Stored>, StoreError> {
    Ok(journal_checkpoints::table
        .order(journal_checkpoints::size.desc())
        .select(Stored::as_select())
        .first(conn)
        .optional()?)
}

/// When the latest checkpoint was made (microseconds since the Unix epoch), if any.
pub fn latest_created_at(conn: &mut AnyConnection) -> Result<Option<i64>, StoreError> {
    Ok(journal_checkpoints::table.select(diesel::dsl::max(journal_checkpoints::created_at)).first(conn)?)
}

pub fn by_size(conn: &mut AnyConnection, size: i64) -> Result<Option<Stored>, StoreError> {
    Ok(journal_checkpoints::table.find(size).select(Stored::as_select()).first(conn).optional()?)
}

/// Every stored checkpoint, smallest first.
pub fn list(conn: &mut AnyConnection) -> Result<Vec<Stored>, StoreError> {
    Ok(journal_checkpoints::table.order(journal_checkpoints::size.asc()).select(Stored::as_select()).load(conn)?)
}

/// Whether entries other than `journal_checkpoint` ones were numbered after `size`.
fn has_new_entries(conn: &mut AnyConnection, size: i64) -> Result<bool, StoreError> {
    let n: i64 = journal::table
        .filter(journal::seq.gt(size))
        .filter(journal::action.ne(Action::JournalCheckpoint.key()))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

fn by_size_required(conn: &mut AnyConnection, size: i64) -> Result<Stored, StoreError> {
    by_size(conn, size)?.ok_or_else(|| StoreError::NotFound(format!("aucun point de contrôle de taille {size}")))
}

/// A checkpoint made or found by [`create`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Made {
    pub checkpoint: Stored,
    /// False when a checkpoint of this size already existed.
    pub created: bool,
}

/// Makes a signed checkpoint of the current numbered tree, stores it and journals it.
/// With `only_if_new_entries`, nothing is made (`None`) unless entries other than
/// checkpoints were added since the latest checkpoint (the periodic task). When the
/// latest checkpoint already has the current size, it is returned as is.
pub fn create(db: &Db, key: &JournalKey, now: Timestamp, only_if_new_entries: bool) -> Result<Option<Made>, StoreError> {
    enum Plan {
        Existing(Stored),
        Skip,
        Make(i64, Hash),
    }
    db.read(tiles::catch_up)?;
    let plan = db.read_snapshot(|c| {
        let size = tree_size(c)?;
        let last = latest(c)?;
        match last {
            Some(l) if l.size == size => return Ok(Plan::Existing(l)),
            Some(l) if only_if_new_entries && !has_new_entries(c, l.size)? => return Ok(Plan::Skip),
            None if only_if_new_entries && size == 0 => return Ok(Plan::Skip),
            _ => {}
        }
        Ok(Plan::Make(size, tree_root(c, size)?))
    })?;
    let (size, root) = match plan {
        Plan::Skip => return Ok(None),
        Plan::Existing(s) => return Ok(Some(Made { checkpoint: s, created: false })),
        Plan::Make(size, root) => (size, root),
    };
    let cp = Checkpoint { origin: key.name().to_owned(), size: size as u64, root, time: now.unix_seconds() as i64 };
    let note = key.sign(&cp).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let row = Stored { size, root_hash: hex::encode(root), note, created_at: now.micros() };
    let out = db.write(|c| {
        if let Some(existing) = by_size(c, size)? {
            return Ok(Made { checkpoint: existing, created: false });
        }
        diesel::insert_into(journal_checkpoints::table).values(&row).execute(c)?;
        entries::append(
            c,
            &[Entry::new(Action::JournalCheckpoint).detail("size", size).detail("root", row.root_hash.clone())],
        )?;
        Ok(Made { checkpoint: row.clone(), created: true })
    });
    let made = match out {
        // Another process stored a checkpoint of this size meanwhile.
        Err(StoreError::Database(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))) => {
            Made { checkpoint: db.read(|c| by_size_required(c, size))?, created: false }
        }
        other => other?,
    };
    if made.checkpoint.root_hash != hex::encode(root) {
        return Err(inconsistent(format!(
            "deux racines pour l'arbre de taille {size} : {} enregistrée, {} recalculée",
            made.checkpoint.root_hash,
            hex::encode(root)
        )));
    }
    Ok(Some(made))
}

/// Inclusion proof of entry `seq` in the tree of a stored checkpoint (hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InclusionProof {
    pub seq: i64,
    pub tree_size: i64,
    /// `seq - 1`: leaves are numbered from 0 in RFC 6962.
    pub leaf_index: i64,
    pub leaf_hash: String,
    pub root_hash: String,
    /// From the leaf up.
    pub proof: Vec<String>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

/// Proves that entry `seq` is in the tree of the checkpoint of `size` (the latest
/// checkpoint when `None`).
pub fn inclusion(conn: &mut AnyConnection, seq: i64, size: Option<i64>) -> Result<InclusionProof, StoreError> {
    let cp = match size {
        Some(n) => by_size_required(conn, n)?,
        None => latest(conn)?.ok_or_else(|| StoreError::NotFound("aucun point de contrôle".into()))?,
    };
    if seq < 1 || seq > cp.size {
        return Err(StoreError::Invalid(format!("l'entrée n° {seq} n'est pas dans l'arbre de taille {} (1 à {})", cp.size, cp.size)));
    }
    let leaf = leaf_range(conn, seq - 1, seq)?[0];
    let index = (seq - 1) as u64;
    let proof = tiles::inclusion_proof(conn, index, cp.size as u64)?;
    merkle::verify_inclusion(&leaf, index, cp.size as u64, &proof, &cp.root())
        .map_err(|e| inconsistent(format!("le point de contrôle de taille {} ne correspond pas aux entrées ({e})", cp.size)))?;
    Ok(InclusionProof {
        seq,
        tree_size: cp.size,
        leaf_index: seq - 1,
        leaf_hash: hex::encode(leaf),
        root_hash: cp.root_hash.clone(),
        proof: proof.iter().map(hex::encode).collect(),
        checkpoint: cp.note,
    })
}

/// Consistency proof between two stored checkpoints (hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyProof {
    pub from: i64,
    pub to: i64,
    pub from_root: String,
    pub to_root: String,
    pub proof: Vec<String>,
    /// The signed checkpoints (none for size 0, the empty tree).
    pub from_checkpoint: Option<String>,
    pub to_checkpoint: String,
}

/// Proves that the tree of the checkpoint of `to` extends the one of `from` (`from` may
/// be 0, the empty tree).
pub fn consistency(conn: &mut AnyConnection, from: i64, to: i64) -> Result<ConsistencyProof, StoreError> {
    if from < 0 || from > to {
        return Err(StoreError::Invalid(format!("tailles {from} et {to} : 0 ≤ de ≤ à attendu")));
    }
    let new = by_size_required(conn, to)?;
    let old = if from == 0 { None } else { Some(by_size_required(conn, from)?) };
    let old_root = old.as_ref().map(Stored::root).unwrap_or_else(merkle::empty_root);
    let proof = tiles::consistency_proof(conn, from as u64, to as u64)?;
    merkle::verify_consistency(from as u64, to as u64, &old_root, &new.root(), &proof)
        .map_err(|e| inconsistent(format!("les points de contrôle {from} et {to} ne concordent pas avec les entrées ({e})")))?;
    Ok(ConsistencyProof {
        from,
        to,
        from_root: hex::encode(old_root),
        to_root: new.root_hash.clone(),
        proof: proof.iter().map(hex::encode).collect(),
        from_checkpoint: old.map(|o| o.note),
        to_checkpoint: new.note,
    })
}

/// Writes entries 1 to `checkpoint.size` as JSON Lines (see
/// [`broker_core::checkpoint::export_line`]), reading [`EXPORT_PAGE`] entries at a time,
/// then a last line holding the checkpoint's note. Returns the number of entries.
pub fn export(conn: &mut AnyConnection, checkpoint: &Stored, out: &mut impl Write) -> Result<i64, StoreError> {
    let io = |e: std::io::Error| StoreError::File(format!("écriture de l'export : {e}"));
    let mut after = 0i64;
    while after < checkpoint.size {
        let page = entries::page(conn, after, EXPORT_PAGE.min(checkpoint.size - after))?;
        let Some(last) = page.last().map(|r| r.seq) else { break };
        for r in &page {
            if r.seq != after + 1 {
                return Err(inconsistent(format!("entrée n° {} absente", after + 1)));
            }
            writeln!(out, "{}", export_line(r)).map_err(io)?;
            after = r.seq;
        }
        debug_assert_eq!(last, after);
    }
    if after != checkpoint.size {
        return Err(inconsistent(format!("entrée n° {} absente", after + 1)));
    }
    writeln!(out, "{}", export_checkpoint_line(&checkpoint.note)).map_err(io)?;
    Ok(after)
}

/// Journals an export (`journal_exported`, with the size it covers and where it went).
pub fn journal_export(db: &Db, size: i64, via: &str) -> Result<(), StoreError> {
    db.write(|c| entries::append(c, &[Entry::new(Action::JournalExported).detail("size", size).detail("via", via)]))
}
