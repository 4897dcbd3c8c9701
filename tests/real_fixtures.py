"""Rows for the real-data tests: a few GSM8K records, and the data spec over the small folder of conftest.small_data."""
GSM8K = [{"question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
         for i in range(12)]


def spec(**data):
    return {"kind": "real", "sources": ["gsm8k", "mmlu", "humaneval"], "n_train": 4, "n_test": 2, "seed": 0, **data}
