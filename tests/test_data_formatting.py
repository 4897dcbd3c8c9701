"""The one formatting path: templates, response-only labels, truncation, padding, routing fields."""
import pytest

from hydralib.data.formatting import (IGNORE_INDEX, collate, encode_prompt, encode_row, format_prompt, prompt_mask,
                                      routing_fields)
from hydralib.models import build_byte_tokenizer

TOKENIZER = build_byte_tokenizer()
ROW = {"instruction": "?A", "input": "abc", "output": "bca", "component": 2}


def test_templates_and_an_unknown_one():
    assert format_prompt(ROW) == "?A abc="
    assert format_prompt({"instruction": "Sum", "input": ""}, "alpaca") == "### Instruction:\nSum\n\n### Response:\n"
    assert "### Input:\nabc" in format_prompt(ROW, "alpaca")
    with pytest.raises(ValueError, match="unknown template 'chat'; allowed: compact, alpaca"):
        format_prompt(ROW, "chat")


def test_labels_cover_the_response_and_eos_only():
    encoded = encode_row(ROW, TOKENIZER)
    prompt = TOKENIZER.encode("?A abc=", add_special_tokens=False)
    response = TOKENIZER.encode("bca", add_special_tokens=False) + [TOKENIZER.eos_token_id]
    assert encoded["input_ids"] == [TOKENIZER.bos_token_id] + prompt + response
    assert encoded["labels"] == [IGNORE_INDEX] * (1 + len(prompt)) + response
    assert (encoded["component"], encoded["route"]) == (2, 2)


def test_truncation_cuts_the_prompt_from_the_left_before_the_response():
    encoded = encode_row(ROW, TOKENIZER, max_length=6)  # bos + 1 prompt byte + 3 response bytes + eos
    assert len(encoded["input_ids"]) == 6
    assert TOKENIZER.decode(encoded["input_ids"][1:2]) == "="  # the end of the prompt is kept
    assert encoded["labels"][2:] == TOKENIZER.encode("bca", add_special_tokens=False) + [TOKENIZER.eos_token_id]
    assert encode_prompt(ROW, TOKENIZER, max_length=4) == [TOKENIZER.bos_token_id] + TOKENIZER.encode(
        "bc=", add_special_tokens=False)


def test_a_row_routes_to_its_component_unless_it_carries_a_route():
    assert routing_fields({"component": 3}) == {"component": 3, "route": 3}
    assert routing_fields({"component": 3, "route": 1}) == {"component": 3, "route": 1}
    assert routing_fields({}) == {"component": 0, "route": 0}


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_masks_and_keeps_routes(side):
    short, long = encode_row(ROW, TOKENIZER), encode_row({**ROW, "input": "abcdef", "route": 5}, TOKENIZER)
    batch = collate([short, long], TOKENIZER.pad_token_id, padding_side=side)
    width, pad = len(long["input_ids"]), len(long["input_ids"]) - len(short["input_ids"])
    assert batch["input_ids"].shape == (2, width) and batch["route"].tolist() == [2, 5]
    assert batch["attention_mask"][0].sum() == width - pad
    padded = batch["input_ids"][0, -pad:] if side == "right" else batch["input_ids"][0, :pad]
    assert (padded == TOKENIZER.pad_token_id).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_prompt_mask_marks_real_tokens_before_the_response():
    batch = collate([encode_row(ROW, TOKENIZER)], TOKENIZER.pad_token_id)
    n_prompt = 1 + len("?A abc=")
    assert prompt_mask(batch)[0].tolist() == [1] * n_prompt + [0] * (batch["input_ids"].shape[1] - n_prompt)
