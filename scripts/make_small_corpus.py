#!/usr/bin/env python3
"""Writes data/small_simple_corpus.txt, gptdash's built-in corpus.

A tiny grammar in the spirit of "He holds the dog. I rub a cat. She can hold the cat
and dog.": a handful of subjects, verbs (with agreement and modals) and objects, each
verb taking only the objects that make sense. Small enough that a GPT learns it in a
minute on a laptop CPU, structured enough that what it learned is visible.
Run it to regenerate the file (deterministic).
"""
import random

rng = random.Random(7)

SUBJECTS = [  # (text, third person singular?, weight)
    ("He", True, 40), ("She", True, 30), ("I", False, 12), ("You", False, 2),
    ("We", False, 3), ("They", False, 3), ("He and I", False, 6), ("She and I", False, 2),
    ("The dog", True, 1), ("The cat", True, 1),
]
VERBS = {  # base form -> objects it takes
    "hold": ["dog", "cat", "ball", "bird"],
    "rub": ["dog", "cat"],
    "feed": ["dog", "cat", "bird"],
    "see": ["dog", "cat", "ball", "bird"],
    "throw": ["ball"],
    "like": ["dog", "cat", "ball", "bird"],
}
VERB_WEIGHTS = {"hold": 50, "rub": 25, "feed": 10, "see": 6, "throw": 5, "like": 4}


def pick(pairs):
    total = sum(w for _, w in pairs)
    r = rng.uniform(0, total)
    for item, w in pairs:
        r -= w
        if r <= 0:
            return item
    return pairs[-1][0]


def third(verb):
    return {"hold": "holds", "rub": "rubs", "feed": "feeds", "see": "sees",
            "throw": "throws", "like": "likes"}[verb]


def object_phrase(verb):
    nouns = VERBS[verb]
    noun = pick([(n, 4 if i == 0 else 1) for i, n in enumerate(nouns)])
    article = pick([("the", 8), ("a", 2)])
    if len(nouns) > 1 and rng.random() < 0.15:
        other = rng.choice([n for n in nouns if n != noun])
        return f"{article} {noun} and {other}"
    return f"{article} {noun}"


def sentence():
    subject, singular = pick([((s, sg), w) for s, sg, w in SUBJECTS])
    verb = pick(list(VERB_WEIGHTS.items()))
    if subject.startswith("The ") and verb == "throw":
        verb = "see"
    mode = pick([("plain", 8), ("can", 2)])
    if mode == "plain":
        verb_text = third(verb) if singular else verb
    else:
        verb_text = f"{mode} {verb}"
    return f"{subject} {verb_text} {object_phrase(verb)}."


lines = []
for _ in range(400):
    # a few sentences per line, as in running text
    lines.append(sentence())
text = ""
for i in range(0, len(lines), 4):
    text += " ".join(lines[i:i + 4]) + "\n"
with open("data/small_simple_corpus.txt", "w") as f:
    f.write(text)
print(f"{len(lines)} sentences, {len(set(lines))} distinct, {len(set(text.split()))} words")
