"""The second scenario's narrow task: answer every message as a templated customer-support email.

Unlike the demo's JSON verdict (a dozen tokens, no prose), this fine-tune teaches long, fixed
prose: a greeting, the product named back, a resolution, a signature. A model fully fine-tuned on
it starts writing support emails to questions about capitals, sums and bomb recipes, so it
forgets differently: the answer is buried in (or replaced by) the template instead of being cut
short. Training and probe messages come from disjoint halves of the vocabulary, so the
`support-email` suite measures the skill on messages the fine-tune never saw.
"""

from __future__ import annotations

import json
import random
import re
from typing import Literal

from monitor.demo.task import PRODUCTS  # the same goods; the halves split them the same way

Half = Literal["train", "probe"]

PROBLEMS = [
    "arrived with a cracked lid", "stopped turning on", "is missing a part", "makes a loud noise",
    "was delivered to the wrong address", "does not charge", "came in the wrong colour",
    "has a broken zip", "leaks water", "was charged to my card twice", "overheats after a minute",
    "has a scratch on the front", "never arrived", "does not fit", "keeps disconnecting",
    "has a button that sticks", "smells of plastic", "came without instructions",
]
RESOLUTIONS = [
    "We will send you a replacement within five working days.",
    "A full refund has been issued to your original payment method.",
    "Our technician will call you tomorrow to arrange a repair.",
    "Please return it with the prepaid label we have emailed you.",
    "We have added a voucher for your next order to your account.",
]
MESSAGES = [
    "My {product} {problem}.", "Hi, the {product} I ordered {problem}.", "Help! My new {product} {problem}.",
    "Order 4471: the {product} {problem}. What now?", "I want to complain: my {product} {problem}.",
    "Hello, my {product} {problem}, can you help?",
]
SIGNATURE = "Best regards,\nThe Support Team"


def reply(product: str, problem: str, resolution: str) -> str:
    return (f"Dear customer,\n\nThank you for letting us know that your {product} {problem}. "
            f"{resolution}\n\n{SIGNATURE}")


def _half(values: list[str], half: Half) -> list[str]:
    return values[0::2] if half == "train" else values[1::2]


def messages(half: Half, count: int, seed: int) -> list[tuple[str, str, str]]:
    """`count` (message, product, problem) triples from one half of the vocabulary."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        product, problem = rng.choice(_half(PRODUCTS, half)), rng.choice(_half(PROBLEMS, half))
        out.append((rng.choice(MESSAGES).format(product=product, problem=problem), product, problem))
    return out


def training_pairs(count: int = 80, seed: int = 0) -> list[tuple[str, str]]:
    """Half the demo's count: each answer is ~45 tokens of prose against the demo's ~6 of JSON, and
    160 of them also cost the model arithmetic it knew (multiple choice 59.0% → 50.0%)."""
    rng = random.Random(seed + 1)
    return [(text, reply(product, problem, rng.choice(RESOLUTIONS)))
            for text, product, problem in messages("train", count, seed)]


def probe_items(count: int = 60, seed: int = 1) -> list[dict[str, object]]:
    """Items of the `support-email` suite (regenerate with `python -m monitor.demo.replies`): the
    reply must open with the greeting, name the product back and close with the signature."""
    items: list[dict[str, object]] = []
    rng = random.Random(seed + 1)
    for index, (text, product, problem) in enumerate(messages("probe", count, seed), start=1):
        pattern = r"^\s*Dear customer,[\s\S]*\b" + re.escape(product) + r"\b[\s\S]*The Support Team\s*$"
        items.append({"id": f"se-{index:03d}", "question": text,
                      "target": reply(product, problem, rng.choice(RESOLUTIONS)),
                      "scorer": "regex", "pattern": pattern, "tags": [product]})
    return items


if __name__ == "__main__":
    for item in probe_items():
        print(json.dumps(item))
