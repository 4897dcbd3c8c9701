"""08.1, final_answer(text): GSM8K's final number as a string (first after the last ####, else the last number,
commas removed, an all-zero fraction dropped; None without a number). Hidden inputs: texts the public check never
shows; extract_gsm8k_answer (the public check's reference) blocked."""
from otter.test_files import test_case

from hydralib.data.sources import extract_gsm8k_answer
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "08.1"
RULE = "the task is to parse the answer yourself: calling extract_gsm8k_answer is not allowed"
WITH_MARKER = ["Two trips cost 2 * 1,250 = 2,500 dollars.\n#### 2,500", "#### 1 #### -14.50 was lost",
               "a total of 3.000 kg\n####3.000", "10 - 12 = -2\n#### -2 degrees, then 5"]
WITHOUT_MARKER = ["first 4, then 9, finally 16.0", "It costs $1,000,000 in 2024.", "#### none here",
                  "nothing numeric at all", "the answer is 0.50"]


def check(SUBMITTED, texts):
    expected = [extract_gsm8k_answer(text) for text in texts]
    with exercise_run(SUBMITTED.get(name), {}, [extract_gsm8k_answer], RULE) as namespace:
        final_answer = namespace.get("final_answer")
        assert callable(final_answer), "define final_answer(text)"
        for text, want in zip(texts, expected):
            got = final_answer(text)
            assert got == want, f"final_answer returns {got!r} for the text {text[-40:]!r} (a grader's input)"


@test_case(name="08.1 after ####", points=1, hidden=True)
def after_marker(SUBMITTED):
    check(SUBMITTED, WITH_MARKER)


@test_case(name="08.1 without a number after ####", points=1, hidden=True)
def without_marker(SUBMITTED):
    check(SUBMITTED, WITHOUT_MARKER)
