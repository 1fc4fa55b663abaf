"""The seeds' `classify(classifier_spec, data_file)`, written with shmarena: no globals, any
start method.

The Stack Overflow question in ../../../shared/seeds wanted to write

    def classify(classifier_spec, data_file):
        classifier = Classifier(classifier_spec)
        with open(data_file, "rt") as fp, multiprocessing.Pool() as pool:
            rd = csv.DictReader(fp)
            yield from pool.imap_unordered(classifier.classify, rd)

but the classifier could not be pickled, and would have been copied per task if it could. Here
the classifier's data lives in an arena: the `Classifier` object only holds views of it, so
pickling `classifier.classify` sends a few small handles, and each worker maps the same pages
once. It runs unchanged under fork, forkserver (Python 3.14's default) and spawn.

Run: python examples/python/classify.py [data.csv] [--method fork|forkserver|spawn]
(without a file it writes a sample one to a temporary directory).
"""

from __future__ import annotations

import argparse
import collections
import csv
import multiprocessing
import os
import pickle
import tempfile

import numpy as np

import shmarena

DIM = 16


class Classifier:
    """Labels a row by its word (a lexicon lookup) or else by its nearest centroid.

    Its attributes are shmarena views, so it pickles to their handles, not to its data.
    """

    def __init__(self, lexicon, centroids, labels):
        self.lexicon = lexicon  # MapView: word -> (label, confidence)
        self.centroids = centroids  # read-only numpy array, (n_labels, DIM)
        self.labels = labels  # ListView of label names

    def classify(self, row: dict[str, str]) -> tuple[str, str, str]:
        hit = self.lexicon.get(row["word"])
        if hit is not None:
            label, _confidence = hit
            return row["id"], label, "lexicon"
        vec = np.array([float(row[f"f{i}"]) for i in range(DIM)], dtype=np.float32)
        nearest = int(np.argmin(((self.centroids - vec) ** 2).sum(axis=1)))
        return row["id"], self.labels[nearest], "centroid"


def build_classifier(spec: dict) -> Classifier:
    """Builds the model once, straight into a sealed memfd arena."""
    rng = np.random.default_rng(spec["seed"])
    labels = [f"class-{i}" for i in range(spec["n_labels"])]
    lexicon = {
        f"word{i}": (labels[int(rng.integers(len(labels)))], float(rng.random()))
        for i in range(spec["n_words"])
    }
    with shmarena.build() as b:
        b.put("lexicon", lexicon)
        b.put_array("centroids", rng.random((len(labels), DIM), dtype=np.float32))
        b.put("labels", labels)
    arena = b.arena
    return Classifier(arena["lexicon"], arena["centroids"], arena["labels"])


def classify(classifier_spec: dict, data_file: str, method: str | None = None):
    """What the seed asked for: a plain function, no globals."""
    classifier = build_classifier(classifier_spec)
    with open(data_file, "rt", newline="") as fp, multiprocessing.get_context(method).Pool() as pool:
        rd = csv.DictReader(fp)
        yield from pool.imap_unordered(classifier.classify, rd, chunksize=256)


def write_sample(path: str, rows: int, n_words: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fp:
        w = csv.writer(fp)
        w.writerow(["id", "word", *[f"f{i}" for i in range(DIM)]])
        for i in range(rows):
            # Half the rows name a lexicon word; the others fall back to the centroids.
            word = f"word{int(rng.integers(n_words * 2))}"
            w.writerow([i, word, *np.round(rng.random(DIM), 4)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_file", nargs="?")
    ap.add_argument("--method", choices=["fork", "forkserver", "spawn"], default=None)
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    spec = {"seed": 0, "n_labels": 32, "n_words": 50_000}

    with tempfile.TemporaryDirectory() as tmp:
        data_file = args.data_file
        if data_file is None:
            data_file = os.path.join(tmp, "data.csv")
            write_sample(data_file, args.rows, spec["n_words"])
        methods = [args.method] if args.method else ["fork", "forkserver", "spawn"]
        for method in methods:
            by: collections.Counter[str] = collections.Counter()
            labels: collections.Counter[str] = collections.Counter()
            for _id, label, how in classify(spec, data_file, method):
                by[how] += 1
                labels[label] += 1
            print(
                f"{method:>10}: {sum(by.values())} rows, {by['lexicon']} by lexicon, "
                f"{by['centroid']} by centroid, {len(labels)} labels"
            )
        classifier = build_classifier(spec)
        print(f"pickled classifier.classify: {len(pickle.dumps(classifier.classify))} bytes")


if __name__ == "__main__":
    main()
