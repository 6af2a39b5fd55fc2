"""Regenerate items.jsonl for the arithmetic probe suite.

Deterministic: running it again writes byte-identical output.
    python probes/arithmetic/make_items.py
"""
import json
import random
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen", "twenty"]
OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def pattern(n):
    p = f"(?<![0-9]){n}(?![0-9])"
    if n <= 20:
        p += f"|\\b{WORDS[n]}\\b"
    return p


def distractors(a, op, b, ans):
    """Three wrong answers: off-by-one neighbours plus one 'wrong operation' or +/-10 value."""
    cands = [ans + 1, ans - 1]
    other = {"plus": a * b, "minus": a + b, "times": a + b}[op]
    cands += [other, ans + 10, ans + 2, ans - 2]
    out = []
    for c in cands:
        if c >= 0 and c != ans and c not in out:
            out.append(c)
    return out[:3]


def problems(rng):
    seen = set()
    plan = [  # (op, a-range, b-range, count, tag)
        ("plus", (2, 9), (2, 9), 20, "add-1digit"),
        ("plus", (11, 49), (2, 40), 20, "add-2digit"),
        ("minus", (6, 20), (2, 9), 20, "sub-small"),
        ("minus", (21, 99), (2, 50), 15, "sub-2digit"),
        ("times", (2, 9), (2, 9), 20, "mul"),
    ]
    for op, ra, rb, count, tag in plan:
        made = 0
        while made < count:
            a, b = rng.randint(*ra), rng.randint(*rb)
            ans = OPS[op](a, b)
            # keep answers positive and different from both operands, so an answer
            # that only echoes the question cannot match the pattern by accident
            if ans <= 0 or ans in (a, b) or (op, a, b) in seen:
                continue
            seen.add((op, a, b))
            made += 1
            yield op, a, b, ans, tag


def main():
    rng = random.Random(0)
    rows = list(problems(rng))
    golds = [i % 4 for i in range(len(rows))]
    rng.shuffle(golds)
    lines = []
    for i, ((op, a, b, ans, tag), g) in enumerate(zip(rows, golds), 1):
        dis = [str(d) for d in distractors(a, op, b, ans)]
        choices = dis[:g] + [str(ans)] + dis[g:]
        target = [str(ans)] + ([WORDS[ans]] if ans <= 20 else [])
        item = {
            "id": f"ar-{i:03d}",
            "question": f"What is {a} {op} {b}?",
            "choices": choices,
            "gold": g,
            "target": target,
            "pattern": pattern(ans),
            "tags": [tag],
        }
        lines.append(json.dumps(item))
    out = Path(__file__).with_name("items.jsonl")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} items to {out}")


if __name__ == "__main__":
    main()
