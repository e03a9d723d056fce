"""glmtrain.evaluate: the scoring on hand-made predictions, ``glmtrain eval`` end to end on a tiny
model trained for two steps, and the same scores logged by the prediction callback during training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_train_support import (
    CHAT_ROWS,
    EVAL_ROWS,
    TRAIN_ROWS,
    WEATHER,
    glmtrain_cli,
    glmtrain_env,  # noqa: F401 - fixture
    tiny_model_dir,  # noqa: F401 - fixture
    tool_call_row,
    write_jsonl,
)

from glmtrain.evaluate import METRICS, char_f1, lcs_length, log_metrics, rouge_l, score_turn, summarize

QUIET = Console(stderr=True, quiet=True)
CALL = {"role": "assistant", "metadata": "get_weather", "content": '{"city": "Rome"}'}
ANSWER = {"role": "assistant", "content": "It is 20 degrees."}
TOOLS = [WEATHER]


def score(reference, answer, family="glm-4-9b-chat"):
    return score_turn(reference, answer, family, TOOLS)[0]


# --- scoring ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "called", "parseable", "name", "arguments"),
    [
        ('get_weather\n{"city": "Rome"}', True, True, True, True),  # right call
        ('get_weather\n{ "city" : "Rome" }', True, True, True, True),  # JSON values, not bytes
        ('get_time\n{"city": "Rome"}', True, True, False, False),  # wrong tool
        ('get_weather\n{"city": "Oslo"}', True, True, True, False),  # wrong argument
        ('get_weather\n{"city": "Rome", "day": 1}', True, True, True, False),  # an extra argument
        ("get_weather\n{city", True, False, False, False),  # unparseable
        ("get_weather", True, False, False, False),  # cut after the name
        ("\nIt is sunny.", False, False, False, False),  # missed: answered in text
    ],
)
def test_a_call_turn_is_scored_step_by_step(answer, called, parseable, name, arguments):
    s = score(CALL, answer)
    assert s == {
        "kind": "call",
        "called": called,
        "parseable": parseable,
        "name": name,
        "arguments": arguments,
        "missed": not called,
    }


def test_a_glm45_call_is_typed_by_the_schema_before_it_is_compared():
    reference = {"role": "assistant", "metadata": "get_weather", "content": '{"city": "007"}'}
    answer = (
        "\n<think>hm</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>007</arg_value>\n</tool_call>"
    )
    assert score(reference, answer, "glm-4.5")["arguments"]
    numeric = {"role": "assistant", "metadata": "get_weather", "content": '{"city": 7}'}
    assert not score(numeric, answer.replace("007", "7"), "glm-4.5")["arguments"]  # a string parameter: "7"


def test_text_turns_exact_partial_and_unexpected_calls():
    exact = score(ANSWER, "\nIt is 20 degrees.")
    assert exact == {"kind": "text", "unexpected_call": False, "exact": True, "char_f1": 1.0, "rouge_l": 1.0}
    assert score(ANSWER, "\n  It is 20 degrees.\n")["exact"]  # surrounding whitespace does not count
    chinese = score({"role": "assistant", "content": "北京今天晴"}, "\n北京今天多云")
    # 4 characters shared: precision 4/6, recall 4/5
    assert not chinese["exact"] and chinese["char_f1"] == pytest.approx(
        2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5), abs=1e-6
    )
    assert chinese["rouge_l"] == chinese["char_f1"]  # in order: the LCS is the shared characters
    assert char_f1("cba", "abc") == 1.0 and rouge_l("cba", "abc") == pytest.approx(1 / 3)
    assert char_f1("", "abc") == 0.0 and rouge_l("", "") == 1.0
    unexpected = score(ANSWER, 'get_weather\n{"city": "Rome"}')
    assert unexpected == {"kind": "text", "unexpected_call": True, "exact": False, "char_f1": 0.0, "rouge_l": 0.0}


def test_summary_and_trainer_metrics():
    scores = [
        score(CALL, 'get_weather\n{"city": "Rome"}'),
        score(CALL, 'get_weather\n{"city": "Oslo"}'),
        score(CALL, "get_weather\n{city"),
        score(CALL, "\nno call"),
        score(ANSWER, "\nIt is 20 degrees."),
        score(ANSWER, 'get_weather\n{"city": "Rome"}'),
    ]
    summary = summarize(scores)
    assert summary["turns"] == 6
    calls = summary["tool_calls"]
    assert {k: calls[k] for k in ("expected", "called", "parseable", "right_name", "exact_arguments", "missed")} == {
        "expected": 4,
        "called": 3,
        "parseable": 2,
        "right_name": 2,
        "exact_arguments": 1,
        "missed": 1,
    }
    assert calls["unexpected"] == 1
    assert summary["answers"] == {"turns": 2, "exact_match": 0.5, "char_f1": 0.5, "rouge_l": 0.5}
    metrics = log_metrics(summary)
    assert metrics == {
        "eval_tool_call_parseable": 0.5,
        "eval_tool_call_name": 0.5,
        "eval_tool_call_exact": 0.25,
        "eval_tool_call_missed": 0.25,
        "eval_tool_call_unexpected": 0.5,
        "eval_answer_exact_match": 0.5,
        "eval_answer_char_f1": 0.5,
        "eval_answer_rouge_l": 0.5,
    }
    assert {k.removeprefix("eval_") for k in metrics} == set(METRICS)
    # only what there are turns to measure
    assert set(log_metrics(summarize(scores[:1]))) == {
        "eval_tool_call_parseable",
        "eval_tool_call_name",
        "eval_tool_call_exact",
        "eval_tool_call_missed",
    }


def _lcs_table(a: str, b: str) -> int:
    row = [0] * (len(b) + 1)
    for ch in a:
        prev = 0
        for j, other in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if ch == other else max(row[j + 1], row[j])
    return row[-1]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcd北京", max_size=40), st.text(alphabet="abcd北京", max_size=40))
def test_the_bit_parallel_lcs_equals_the_table(a, b):
    assert lcs_length(a, b) == _lcs_table(a, b)


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory, glmtrain_env, tiny_model_dir):
    """A tiny model trained 2 steps on TRAIN_ROWS with 3 rows held out, SwanLab offline; its evaluation at the end
    generates 3 predictions (2 tokens each; the split holds out a tool-call row), scored by the callback."""
    from glmtrain import config as cfgmod
    from glmtrain import train as train_mod

    root = tmp_path_factory.mktemp("eval")
    rows = TRAIN_ROWS + [tool_call_row("Lima", 18)]
    data = write_jsonl(root / "train.jsonl", rows)
    held_out = write_jsonl(root / "held_out.jsonl", EVAL_ROWS + CHAT_ROWS[:1])
    out = root / "out"
    cfg = cfgmod.merge(
        (
            "test",
            dict(
                data=str(data), model="tiny-random", output_dir=str(out), tracker="offline", gradient_checkpointing=False,
                max_steps=2, eval_split=3, eval_rows=0, num_predictions=3, max_new_tokens=2, logging_steps=1,
                gradient_accumulation_steps=1, save_steps=1000, sft={"disable_tqdm": True},
            ),
        )
    )  # fmt: skip
    summary = train_mod.run(cfg, QUIET)
    return {"root": root, "data": data, "held_out": held_out, "out": out, "summary": summary, "cfg": cfg}


def test_the_callback_logs_the_scores_with_the_evaluation(run):
    state = json.loads((run["out"] / "trainer_state.json").read_text(encoding="utf-8"))
    logged = [h for h in state["log_history"] if any(k.startswith("eval_tool_call") for k in h)]
    assert logged and logged[-1]["step"] == 2
    keys = set(logged[-1])
    assert keys >= {"eval_tool_call_parseable", "eval_tool_call_name", "eval_tool_call_exact", "eval_tool_call_missed"}
    predictions = [json.loads(line) for line in (run["out"] / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 and all("score" in p and "parsed" in p for p in predictions)
    # the logged numbers are the summary of the records' scores
    from glmtrain.evaluate import log_metrics, summarize

    expected = log_metrics(summarize([p["score"] for p in predictions]))
    assert {k: logged[-1][k] for k in expected} == expected
    # and SwanLab has them, under the names its integration gives eval_ metrics
    (log,) = (run["out"] / "swanlog").glob("run-*/*.swanlab")
    for key in expected:
        assert b"eval/" + key.removeprefix("eval_").encode() in log.read_bytes(), key


def test_the_callback_scores_what_the_model_wrote(run, tiny_model_dir, monkeypatch):
    """Scripted answers (one right call, one exact answer): the metrics say so."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from glmtrain import callbacks
    from glmtrain.callbacks import PredictionCallback, PredictionSample

    row = EVAL_ROWS[0]["messages"]
    samples = [PredictionSample(0, row[:2], row[2]), PredictionSample(0, row[:4], row[4])]
    answers = ['get_weather\n{"city": "Rome"}', "\n25 degrees in Rome."]
    monkeypatch.setattr(callbacks, "generate_replies", lambda *a, **k: answers)
    cb = PredictionCallback(samples, run["root"] / "scripted.jsonl", max_new_tokens=2)
    state, metrics = TrainerState(global_step=7), {"eval_loss": 1.0}

    class Model:  # generation is scripted; the callback only switches the mode
        training = False

        def eval(self):
            pass

    args = TrainingArguments(output_dir=str(run["root"] / "args"), report_to=[])
    cb.on_evaluate(args, state, TrainerControl(), model=Model(), processing_class=object(), metrics=metrics)
    assert metrics["eval_tool_call_exact"] == 1.0 and metrics["eval_answer_exact_match"] == 1.0
    assert metrics["eval_tool_call_unexpected"] == 0.0 and metrics["eval_loss"] == 1.0
    assert state.log_history[-1]["step"] == 7 and state.log_history[-1]["eval_answer_char_f1"] == 1.0
    (first, second) = [json.loads(line) for line in (run["root"] / "scripted.jsonl").read_text().splitlines()]
    assert first["tool_call"]["call_match"] and first["parsed"]["calls"] == [
        {"name": "get_weather", "arguments": {"city": "Rome"}}
    ]
    assert second["answer"] == "25 degrees in Rome." and second["score"]["exact"]


def test_eval_on_a_held_out_file(run):
    result = glmtrain_cli("eval", run["out"], run["held_out"], "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    # EVAL_ROWS[0]: a call and an answer; CHAT_ROWS[0]: one answer
    assert summary["rows"] == {"evaluated": 2, "available": 2, "from": "all rows of the file"}
    assert summary["turns"] == 3 and summary["family"] == "glm-4-9b-chat"
    calls = summary["tool_calls"]
    assert calls["expected"] == 1 and calls["called"] + calls["missed"] == 1 and summary["answers"]["turns"] == 2
    assert calls["parseable"] >= calls["right_name"] >= calls["exact_arguments"]
    assert set(summary["metrics"]) >= {"eval_tool_call_exact", "eval_answer_char_f1", "eval_answer_rouge_l"}
    path = Path(summary["predictions"])
    assert path == run["out"] / "eval_predictions.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["row"], r["turn"]) for r in records] == [(0, 2), (0, 4), (1, 1)]
    assert records[0]["reference"] == 'get_weather\n{"city": "Rome"}'
    assert records[0]["reference_call"] == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert records[1]["reference"] == "25 degrees in Rome." and records[0]["score"]["kind"] == "call"
    assert all(
        set(r) == {"row", "turn", "reference", "reference_call", "prediction", "parsed", "score"} for r in records
    )
    assert "exact arguments" in result.stderr and "character ROUGE-L" in result.stderr  # the table


def test_eval_on_the_training_file_takes_the_rows_the_run_held_out(run, tmp_path):
    from glmtrain import train as train_mod

    target = tmp_path / "preds.jsonl"
    result = glmtrain_cli("eval", run["out"], run["data"], "--max-new-tokens", "2", "-o", target, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    prep_eval = train_mod.prepare(run["cfg"], QUIET, need_model=False).eval
    assert prep_eval is not None
    assert summary["rows"]["evaluated"] == 3 and "held out" in summary["rows"]["from"]
    rows = sorted({json.loads(line)["row"] for line in target.read_text().splitlines()})
    assert rows == sorted(prep_eval.indices)
    capped = glmtrain_cli(
        "eval", run["out"], run["data"], "--max-new-tokens", "2", "--rows", "1", "-o", target, "--json"
    )
    assert capped.exit_code == 0, capped.stderr
    assert json.loads(capped.stdout)["rows"] == {"evaluated": 1, "available": 3, "from": summary["rows"]["from"]}


def test_eval_errors_say_what_and_how(run, tmp_path):
    missing = glmtrain_cli("eval", tmp_path, run["held_out"])
    assert missing.exit_code == 2 and "no adapter_config.json" in missing.stderr and "Traceback" not in missing.stderr
    family = glmtrain_cli("eval", run["out"], run["held_out"], "--family", "qwen")
    assert family.exit_code == 2 and "known: glm-4-9b-chat" in family.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    no_turns = glmtrain_cli("eval", run["out"], bad)
    assert no_turns.exit_code == 1 and "bad.jsonl" in no_turns.stderr
