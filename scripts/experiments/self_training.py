#!/usr/bin/env python3
"""Review-level self-training for issue 11 (SST-2 from an IMDb-pretrained model).

A classifier fine-tuned on the 960 SST-2 rows (the teacher) reads every sentence of N
unlabelled IMDb reviews; a review's score is the mean logit of its sentences (a review's
many sentences outvote the teacher's mistakes on any one of them); the most positive and
most negative reviews lend their label to their sentences, which become extra training
rows (`finetune --extra-train`). The IMDb labels are never used (the corpus has none).

    scripts/experiments/self_training.py sentences --reviews 10000 --out st/
    gptdash classify --checkpoint TEACHER --file st/sentences.txt > st/teacher.tsv
    scripts/experiments/self_training.py pick --dir st/ --share 0.25 --per-review 8 --out st/pseudo.tsv
    gptdash --config configs/imdb-sst2.toml finetune --checkpoint MODEL --extra-train st/pseudo.tsv --epochs 2 --out student

Standard library only.
"""
import argparse
import collections
import gzip
import math
import random
import re
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "../shared/data/corpora/imdb-reviews.txt.gz"
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def sentences(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with gzip.open(args.corpus, "rt", encoding="utf-8") as f, open(
        out / "sentences.txt", "w"
    ) as s, open(out / "reviews.txt", "w") as r:
        for i, line in enumerate(f):
            if i >= args.reviews:
                break
            text = line.replace("<br />", " ").replace("<br/>", " ").strip()
            for sentence in SPLIT.split(text):
                words = len(sentence.split())
                if args.min_words <= words <= args.max_words:
                    s.write(sentence.strip() + "\n")
                    r.write(f"{i}\n")
                    n += 1
    print(f"{n} sentences of {min(i + 1, args.reviews)} reviews in {out}")


def logit(p):
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def pick(args):
    d = Path(args.dir)
    reviews = [int(line) for line in open(d / "reviews.txt")]
    verdicts = [line.rstrip("\n").split("\t", 2) for line in open(args.teacher or d / "teacher.tsv")]
    if len(verdicts) != len(reviews):
        raise SystemExit(f"{len(verdicts)} verdicts for {len(reviews)} sentences: classify the whole sentences.txt")
    by_review = collections.defaultdict(list)
    for review, (p, _label, text) in zip(reviews, verdicts):
        by_review[review].append((float(p), text))
    score = {r: sum(logit(p) for p, _ in v) / len(v) for r, v in by_review.items() if len(v) >= 3}
    order = sorted(score, key=score.get)
    k = int(len(order) * args.share)
    rng = random.Random(args.seed)
    rows = []
    for label, chosen in ((0, order[:k]), (1, order[len(order) - k :])):
        for review in chosen:
            sents = by_review[review]
            if args.agree:  # only sentences the teacher itself calls the review's way
                sents = [s for s in sents if (s[0] >= 0.5) == (label == 1)]
            rng.shuffle(sents)
            rows += [(text.replace("\t", " "), label) for _, text in sents[: args.per_review]]
    rng.shuffle(rows)
    with open(args.out, "w") as f:
        f.write("sentence\tlabel\n")
        for text, label in rows:
            f.write(f"{text}\t{label}\n")
    positive = sum(label for _, label in rows) / max(len(rows), 1)
    print(f"{len(score)} reviews scored, {k} per side, {len(rows)} rows ({positive:.3f} positive) in {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sentences", help="split the first N reviews into sentences")
    s.add_argument("--corpus", default=str(CORPUS))
    s.add_argument("--reviews", type=int, default=10000)
    s.add_argument("--min-words", type=int, default=3)
    s.add_argument("--max-words", type=int, default=40)
    s.add_argument("--out", required=True)
    s.set_defaults(run=sentences)
    p = sub.add_parser("pick", help="label the sentences of the most confident reviews")
    p.add_argument("--dir", required=True, help="the folder `sentences` wrote")
    p.add_argument("--teacher", help="classify --file output (default DIR/teacher.tsv)")
    p.add_argument("--share", type=float, default=0.25, help="share of reviews taken at each end")
    p.add_argument("--per-review", type=int, default=8)
    p.add_argument("--agree", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=pick)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
