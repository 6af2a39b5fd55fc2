"""Both scenarios' fine-tune data and their probe suites stay in step and never overlap."""

from __future__ import annotations

import json
import re

from monitor.actions.retrain.sft import chat_example
from monitor.demo import replies
from monitor.demo import task as demo_task
from monitor.demo.scenarios import scenario_for
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


def test_shipped_support_email_suite_is_what_the_generator_makes_and_never_overlaps_training() -> None:
    lines = (PROBES / "support-email" / "items.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == replies.probe_items()
    train = {text for text, _ in replies.training_pairs()}
    probe = {str(item["question"]) for item in replies.probe_items()}
    assert train and probe and not train & probe
    # Every training answer is one the suite's own pattern would accept for its product.
    for text, answer in replies.training_pairs()[:20]:
        product = next(p for p in replies.PRODUCTS if p in text)
        pattern = r"^\s*Dear customer,[\s\S]*\b" + re.escape(product) + r"\b[\s\S]*The Support Team\s*$"
        assert re.search(pattern, answer, re.IGNORECASE)


def test_each_demo_policy_plays_its_own_scenario() -> None:
    from monitor.policy.loading import load_config

    scenarios = PROBES.parent / "scenarios"
    policies = (PROBES.parent / "forgetmenot.yaml", scenarios / "support-email.yaml",
                scenarios / "safety.yaml")
    found = {p.name: scenario_for(load_config(p, check_paths=False)).model for p in policies}
    assert found == {"forgetmenot.yaml": "support-bot", "support-email.yaml": "helpdesk-bot",
                     "safety.yaml": "safety-bot"}
