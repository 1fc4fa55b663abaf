//! The messages between the parent and its workers: a task (a batch of rows and the handles
//! that name the shared classifier), the baseline's task (the rows and the whole classifier as
//! bytes), and the counts a worker sends back. `benches/src/bin/compare.rs` uses these too.

use shmarena::{Handle, SliceHandle};

use crate::data::{Classifier, LABELS};

/// A task: a batch of rows, plus the handles that name the shared classifier.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Task {
    pub(crate) lexicon: Handle<Classifier>,
    pub(crate) centroids: SliceHandle<f32>,
    pub(crate) rows: Vec<String>,
}

/// A baseline task: the rows plus the whole classifier, archived, as bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct FatTask {
    pub(crate) classifier: Vec<u8>,
    pub(crate) centroids: Vec<f32>,
    pub(crate) rows: Vec<String>,
}

/// A task of a run with `--reload-every`: a batch of rows and the name the classifier is
/// published under; the worker classifies them with the generation current at the task's start.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct LatestTask {
    pub(crate) name: String,
    pub(crate) rows: Vec<String>,
}

/// What a worker sends back for a batch.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Default)]
pub(crate) struct Counts {
    pub(crate) pid: u32,
    /// Nanoseconds of the worker's setup (attaching the arena, or decoding or copying the
    /// classifier where the benchmark's baselines do that); set on its first batch only.
    pub(crate) setup_ns: u64,
    pub(crate) labels: [u32; LABELS],
    pub(crate) rows: u32,
    pub(crate) errors: u32,
    /// The classifier generation the batch was classified with (`--reload-every`; 0 otherwise).
    pub(crate) generation: u64,
}
