"""The demo's fine-tune data and its probe suite stay in step and never overlap."""

from __future__ import annotations

import json

from monitor.actions.retrain.sft import chat_example
from monitor.demo import task as demo_task
from tests.conftest import PROBES


def test_shipped_sentiment_suite_is_what_the_generator_makes() -> None:
    lines = (PROBES / "sentiment-json" / "items.jsonl").read_text().splitlines()
    shipped = [json.loads(line) for line in lines]
    assert shipped == demo_task.probe_items()


def test_training_reviews_never_appear_in_the_probe_suite() -> None:
    train = {text for text, _ in demo_task.training_pairs()}
    probe = {str(item["question"]) for item in demo_task.probe_items()}
    assert train and probe and not train & probe


def test_training_data_is_balanced_and_in_the_target_format() -> None:
    pairs = demo_task.training_pairs()
    answers = [json.loads(answer)["sentiment"] for _, answer in pairs]
    assert answers.count("positive") == answers.count("negative") == len(pairs) // 2


def test_loss_is_taken_on_the_answer_only(tiny_parts: tuple[object, object]) -> None:
    _, tokenizer = tiny_parts
    ids, labels = chat_example(tokenizer, "The kettle is great.", '{"sentiment": "positive"}', 256)
    answer_tokens = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and 0 < len(answer_tokens) < len(ids)
    decoded = tokenizer.decode(answer_tokens)  # type: ignore[attr-defined]
    assert '{"sentiment": "positive"}' in decoded and "kettle" not in decoded
