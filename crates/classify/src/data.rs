//! The embedded default dataset, generated deterministically: a lexicon of words mapped to
//! (label, weight), a POD matrix of label centroids, and CSV rows of text to classify.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Number of labels.
pub const LABELS: usize = 16;
/// Dimensions of the feature vectors and centroids.
pub const DIMS: usize = 64;
/// Label names, for the summary.
pub const LABEL_NAMES: [&str; LABELS] = [
    "sports", "politics", "science", "music", "film", "food", "travel", "health", "finance",
    "tech", "art", "history", "nature", "fashion", "games", "law",
];

/// The archived part of the classifier: word -> (label, weight).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Classifier {
    /// Each known word's label and weight.
    pub lexicon: HashMap<String, (u16, f32)>,
}

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`: the same seed gives the same sequence.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qui", "da", "fe", "gu", "hi",
    "jo", "bra", "cle", "dri", "fro", "glu", "pla", "sto", "tri", "an", "el", "is", "on", "ur",
    "ex", "ith", "ow",
];

/// The `i`-th word of the lexicon: distinct for every `i` (a base-32 spelling in syllables).
pub fn word(i: u64) -> String {
    let mut w = String::new();
    let mut n = i + 32; // at least two syllables
    while n > 0 {
        w.push_str(SYLLABLES[(n % 32) as usize]);
        n /= 32;
    }
    w
}

/// The lexicon: `words` distinct words, each with a label and a weight in (0, 1].
pub fn lexicon(words: u64) -> HashMap<String, (u16, f32)> {
    let mut rng = Rng::new(0x1e81c0);
    (0..words)
        .map(|i| {
            let label = rng.below(LABELS as u64) as u16;
            let weight = 0.05 + 0.95 * rng.unit();
            (word(i), (label, weight))
        })
        .collect()
}

/// The lexicon of generation `generation` of a run with `--reload-every`: generation 1 is
/// [`lexicon`]; each later one relabels a different eighth of the words (a refreshed lexicon).
pub fn lexicon_generation(words: u64, generation: u64) -> HashMap<String, (u16, f32)> {
    let mut lex = lexicon(words);
    if generation > 1 {
        for i in 0..words {
            let mut rng = Rng::new(i ^ generation.wrapping_mul(0x9E37_79B9));
            if rng.below(8) == 0 {
                if let Some(v) = lex.get_mut(&word(i)) {
                    v.0 = ((u64::from(v.0) + generation) % LABELS as u64) as u16;
                }
            }
        }
    }
    lex
}

/// The centroid matrix, `LABELS x DIMS`, row-major.
pub fn fill_centroids(dst: &mut [f32]) {
    let mut rng = Rng::new(0xce7701d);
    for x in dst.iter_mut() {
        *x = rng.unit() * 2.0 - 1.0;
    }
}

/// CSV lines `id,text`, generated lazily: each text 6 to 14 words, about 1 in 10 unknown.
pub struct RowGen {
    rng: Rng,
    next: u64,
    rows: u64,
    words: u64,
}

impl RowGen {
    /// `rows` lines whose known words are drawn from the first `words` words of the lexicon.
    pub fn new(rows: u64, words: u64) -> RowGen {
        RowGen {
            rng: Rng::new(0xda7a),
            next: 0,
            rows,
            words: words.max(1),
        }
    }
}

impl Iterator for RowGen {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next >= self.rows {
            return None;
        }
        let id = self.next;
        self.next += 1;
        let mut line = String::with_capacity(96);
        write!(line, "{id},").expect("write to a String");
        for k in 0..6 + self.rng.below(9) {
            if k > 0 {
                line.push(' ');
            }
            if self.rng.below(10) == 0 {
                line.push_str("zzunknown");
            } else {
                line.push_str(&word(self.rng.below(self.words)));
            }
        }
        Some(line)
    }
}

/// A feature vector for a word, hashed into `DIMS` buckets (FNV-1a).
fn feature_bucket(word: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h % DIMS as u64) as usize
}

/// Classifies the text of one CSV row: lexicon votes per label, plus the similarity of the row's
/// hashed bag of words to each label centroid. Returns the label index.
pub fn classify_text<F>(text: &str, lookup: F, centroids: &[f32]) -> u16
where
    F: Fn(&str) -> Option<(u16, f32)>,
{
    let mut votes = [0f32; LABELS];
    let mut features = [0f32; DIMS];
    for w in text.split_ascii_whitespace() {
        if let Some((label, weight)) = lookup(w) {
            votes[usize::from(label) % LABELS] += weight;
        }
        features[feature_bucket(w)] += 1.0;
    }
    let mut best = (0u16, f32::MIN);
    for (label, centroid) in centroids.chunks_exact(DIMS).enumerate().take(LABELS) {
        let sim: f32 = centroid.iter().zip(&features).map(|(c, f)| c * f).sum();
        let score = votes[label] + 0.01 * sim;
        if score > best.1 {
            best = (label as u16, score);
        }
    }
    best.0
}

/// The text part of a CSV row `id,text`.
pub fn text_of(row: &str) -> &str {
    row.split_once(',').map_or(row, |(_, t)| t)
}
