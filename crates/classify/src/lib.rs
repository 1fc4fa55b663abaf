//! The seed scenario's parts, shared by the `classify` example (`examples/classify.rs`, run with
//! `cargo run --release --example classify` from the workspace root) and the side-by-side
//! benchmark (`benches/src/bin/compare.rs`): a large read-only classifier built once, and many
//! CSV rows of text that worker processes label while reading it in place.
//!
//! | module | holds | imports |
//! |---|---|---|
//! | [`data`] | the embedded, deterministic dataset: lexicon, centroids, rows, and the classifying function | — |
//! | [`metrics`] | what a process really uses: `Pss` plus page tables, from `/proc` | — |
//! | [`tasks`] | the messages between the parent and its workers | `data` |
//!
//! ```
//! use shmarena_classify::data;
//!
//! let lexicon = data::lexicon(100);
//! let mut centroids = vec![0f32; data::LABELS * data::DIMS];
//! data::fill_centroids(&mut centroids);
//! for row in data::RowGen::new(3, 100) {
//!     let label = data::classify_text(data::text_of(&row), |w| lexicon.get(w).copied(), &centroids);
//!     assert!(usize::from(label) < data::LABELS);
//! }
//! ```

pub mod data;
pub mod metrics;
pub mod tasks;
