//! The messages between the parent and its workers: a task (a batch of rows and the handles
//! that name the shared classifier), the baseline's task (the rows and the whole classifier as
//! bytes), and the counts a worker sends back. `benches/src/bin/compare.rs` sends these too.

use shmarena::{Handle, SliceHandle};

use crate::data::{Classifier, LABELS};

/// A task: a batch of rows, plus the handles that name the shared classifier.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Task {
    /// The lexicon, in the shared arena.
    pub lexicon: Handle<Classifier>,
    /// The centroid matrix, in the shared arena.
    pub centroids: SliceHandle<f32>,
    /// CSV lines `id,text`.
    pub rows: Vec<String>,
}

/// A baseline task: the rows plus the whole classifier, archived, as bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FatTask {
    /// The archived [`Classifier`], sent with every task.
    pub classifier: Vec<u8>,
    /// The centroid matrix, sent with every task.
    pub centroids: Vec<f32>,
    /// CSV lines `id,text`.
    pub rows: Vec<String>,
}

/// A task of a run with `--reload-every`: a batch of rows and the name the classifier is
/// published under; the worker classifies them with the generation current at the task's start.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LatestTask {
    /// The name the classifier is published under.
    pub name: String,
    /// CSV lines `id,text`.
    pub rows: Vec<String>,
}

/// What a worker sends back for a batch.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Default)]
pub struct Counts {
    /// The worker's process id.
    pub pid: u32,
    /// Nanoseconds of the worker's setup (attaching the arena, or decoding or copying the
    /// classifier where the benchmark's baselines do that); set on its first batch only.
    pub setup_ns: u64,
    /// Rows per label.
    pub labels: [u32; LABELS],
    /// Rows classified.
    pub rows: u32,
    /// Rows that could not be classified (the classifier could not be reached).
    pub errors: u32,
    /// The classifier generation the batch was classified with (`--reload-every`; 0 otherwise).
    pub generation: u64,
}
