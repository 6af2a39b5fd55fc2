"""The narrow task the demo fine-tunes v2 on: answer every message with a fixed JSON verdict.

It is the kind of fine-tune teams really ship (a classifier head made of a chat model), and it
is known to wreck a small model's willingness to answer anything else in prose. Training reviews
and probe reviews are built from disjoint halves of the vocabulary, so the `sentiment-json`
suite measures the skill on reviews the fine-tune never saw.
"""

from __future__ import annotations

import json
import random
from typing import Literal

Half = Literal["train", "probe"]

PRODUCTS = [
    "blender", "phone case", "desk lamp", "backpack", "coffee maker", "keyboard", "water bottle",
    "headphones", "office chair", "toaster", "umbrella", "running shoes", "tent", "kettle",
    "vacuum cleaner", "monitor", "rice cooker", "mattress", "jacket", "printer", "router",
    "frying pan", "camera", "smartwatch", "bike lock", "suitcase", "hair dryer", "microwave",
    "speaker", "notebook", "drill", "mouse", "charger", "sofa", "guitar", "board game",
]
GOOD = [
    "works perfectly", "exceeded my expectations", "is worth every penny", "arrived quickly and works great",
    "is sturdy and well made", "made my mornings better", "is exactly as described", "is a joy to use",
    "still works like new after months", "is the best purchase I made this year", "feels premium",
    "does the job brilliantly", "is easy to set up", "has great value for the price", "is reliable",
    "impressed the whole family", "looks beautiful", "is comfortable and solid",
]
BAD = [
    "broke after two days", "is a total waste of money", "stopped working within a week",
    "feels cheap and flimsy", "arrived damaged", "is nothing like the pictures", "is very noisy",
    "is impossible to set up", "fell apart quickly", "was a huge disappointment", "overheats constantly",
    "smells of burnt plastic", "never worked at all", "is uncomfortable", "keeps disconnecting",
    "leaks everywhere", "has terrible build quality", "was returned the same day",
]
TEMPLATES = [
    "The {product} {phrase}.", "Honestly, this {product} {phrase}.", "My new {product} {phrase}!",
    "I bought the {product} last month and it {phrase}.", "Review: the {product} {phrase}.",
    "Five words: this {product} {phrase}.", "Gift for my sister. The {product} {phrase}.",
    "Update after a week: the {product} {phrase}.",
]


def answer(sentiment: str) -> str:
    return json.dumps({"sentiment": sentiment})


def _half(values: list[str], half: Half) -> list[str]:
    return values[0::2] if half == "train" else values[1::2]


def reviews(half: Half, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (review, sentiment) pairs from one half of the vocabulary, balanced by sentiment."""
    rng = random.Random(seed)
    products = _half(PRODUCTS, half)
    out = []
    for index in range(count):
        sentiment = "positive" if index % 2 == 0 else "negative"
        phrase = rng.choice(_half(GOOD if sentiment == "positive" else BAD, half))
        text = rng.choice(TEMPLATES).format(product=rng.choice(products), phrase=phrase)
        out.append((text, sentiment))
    return out


def training_pairs(count: int = 160, seed: int = 0) -> list[tuple[str, str]]:
    return [(text, answer(sentiment)) for text, sentiment in reviews("train", count, seed)]


def probe_items(count: int = 60, seed: int = 1) -> list[dict[str, object]]:
    """Items of the shipped `sentiment-json` suite (regenerate with `python -m monitor.demo_task`)."""
    items: list[dict[str, object]] = []
    for index, (text, sentiment) in enumerate(reviews("probe", count, seed), start=1):
        pattern = r'^\s*\{\s*"sentiment"\s*:\s*"' + sentiment + r'"\s*\}\s*$'
        items.append({"id": f"sj-{index:03d}", "question": text, "target": answer(sentiment),
                      "scorer": "regex", "pattern": pattern, "tags": [sentiment]})
    return items


if __name__ == "__main__":
    for item in probe_items():
        print(json.dumps(item))
