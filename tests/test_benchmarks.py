"""Benchmark prompt files: each format on the hand-written fixtures in tests/fixtures/benchmarks/, malformed input, and the
shapes-world filter. Every malformed line is skipped with its line number and a reason, never a crash, never silently."""

import json
from pathlib import Path

import numpy as np
import pytest

from image_poser.benchmarks import (
    PromptSet,
    drawable_in_shapes,
    geneval_task,
    load_dpg,
    load_geneval,
    load_longbench,
    load_prompts,
    load_t2i_compbench,
    parse_prompt_spec,
    record_task,
    t2i_category,
)
from image_poser.core import Task

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
GENEVAL = FIX / "geneval" / "evaluation_metadata.jsonl"
DPG = FIX / "dpg" / "dpg_bench.csv"
LONGBENCH = FIX / "longbench" / "instruction.jsonl"
T2I = FIX / "t2i_compbench"
DPG_HEADER = "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language\n"


def _records_are_sound(ps: PromptSet):
    "Every record has the common keys, is JSON-serialisable, and its task (if any) validates."
    ids = [r["id"] for r in ps]
    assert len(ids) == len(set(ids)), ids
    for r in ps:
        assert {"id", "prompt", "tier", "benchmark", "source"} <= set(r), r
        assert isinstance(r["prompt"], str) and r["prompt"].strip()
        json.dumps(r)
        t = record_task(r)
        if t is not None:
            assert isinstance(t, Task) and t.prompt == r["prompt"] and t.requirements


# ---------------------------------------------------------------- GenEval


def test_geneval_fixture():
    ps = load_geneval(GENEVAL)
    _records_are_sound(ps)
    assert [r["id"] for r in ps][:3] == ["geneval-00000", "geneval-00001", "geneval-00002"]
    assert ps.summary()["by_tier"] == {"single_object": 2, "two_object": 1, "counting": 2, "colors": 2, "position": 2, "color_attr": 1}
    assert [(s["where"], s["reason"]) for s in ps.skipped] == [
        ("evaluation_metadata.jsonl:11", "empty line"),
        ("evaluation_metadata.jsonl:12", "include[0] needs an integer 'count' >= 1, got None"),
        ("evaluation_metadata.jsonl:13", "include[0] has position target 3, not the index of an earlier include item"),
        ("evaluation_metadata.jsonl:14", "not JSON: Unterminated string starting at (column 91)"),
    ]


def test_geneval_tasks_by_tag():
    ps = load_geneval(GENEVAL)
    by_id = {r["id"]: record_task(r) for r in ps}
    counting = by_id["geneval-00003"]  # three triangles, exclude 4
    assert [(q.kind, q.text) for q in counting.requirements] == [
        ("presence", "there are at least 3 triangles"),
        ("count", "there are exactly 3 triangles"),
    ]
    assert counting.requirements[1].spec == {
        "group": "g0",
        "class": "triangle",
        "count": 3,
        "shape": "triangle",
        "check": "count",
        "min": 3,
        "max": 3,
    }
    position = by_id["geneval-00005"]  # circle left of square: include [square, circle(position left of 0)]
    rel = position.requirements[-1]
    assert (rel.kind, rel.text, rel.objects) == ("relation", "the circle is left of the square", ["g1", "g0"])
    assert rel.spec == {"check": "relation", "subject": "g1", "rel": "left of", "object": "g0"}
    attr = by_id["geneval-00006"]  # red diamond and blue cross
    assert [q.text for q in attr.requirements] == ["there is a diamond", "the diamond is red", "there is a cross", "the cross is blue"]
    assert attr.kinds() == {"presence": 2, "color": 2}
    assert attr.meta == {"benchmark": "geneval", "tag": "color_attr"}
    assert [c.requirements for c in attr.commands] == [["r0", "r1", "r2", "r3"]]


@pytest.mark.parametrize(
    "meta, problem",
    [
        ({"tag": "x", "include": [], "prompt": "p"}, "'include' must be a non-empty list"),
        ({"tag": "x", "include": [{"class": "cat", "count": True}], "prompt": "p"}, "integer 'count'"),
        ({"tag": "x", "include": [{"class": "", "count": 1}], "prompt": "p"}, "has no 'class'"),
        ({"tag": "x", "include": [{"class": "cat", "count": 1}], "prompt": "  "}, "no 'prompt'"),
        ({"include": [{"class": "cat", "count": 1}], "prompt": "p"}, "no 'tag'"),
        ({"tag": "x", "include": [{"class": "cat", "count": 1, "position": ["above", 0]}], "prompt": "p"}, "earlier include item"),
        ({"tag": "x", "include": [{"class": "cat", "count": 1}], "exclude": [{"class": "cat", "count": 1}], "prompt": "p"}, "contradicts"),
        ({"tag": "x", "include": [{"class": "cat", "count": 1}], "exclude": {"class": "dog"}, "prompt": "p"}, "'exclude' must be a list"),
    ],
)
def test_geneval_malformed_metadata_is_a_clear_error(meta, problem):
    with pytest.raises(ValueError, match="not a GenEval line"):
        geneval_task(meta)
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        geneval_task(meta)


def test_geneval_survives_garbage(tmp_path):
    good = GENEVAL.read_text().splitlines()[:10]
    bad = ["[1, 2, 3]", "null", '"a string"', "{}", '{"tag": "x", "include": [1], "prompt": "p"}', "\ufeff" + good[0]]
    p = tmp_path / "meta.jsonl"
    p.write_bytes(("\n".join(bad + good) + "\n").encode() + b"\xff\xfe not utf-8\n")
    ps = load_geneval(p)
    assert len(ps) == 10  # the BOM line is read only at the start of a file: line 6 is not valid JSON
    assert [s["where"].split(":")[1] for s in ps.skipped] == ["1", "2", "3", "4", "5", "6", "17"]
    assert ps.skipped[-1]["reason"].startswith("not UTF-8")
    assert ps.skipped[0]["reason"] == "not a JSON object but list"


def test_geneval_random_damage_never_crashes(tmp_path):
    "Randomly damaged copies of the fixture load without an exception, and every record they keep is sound."
    rng = np.random.default_rng(0)
    lines = GENEVAL.read_text().splitlines()
    for k in range(60):
        out = []
        for ln in lines:
            if ln and rng.random() < 0.5:
                i = int(rng.integers(len(ln)))
                ln = (
                    ln[:i] + ln[i + int(rng.integers(1, 6)) :]
                    if rng.random() < 0.5
                    else ln[:i] + str(rng.choice(list('{}[],:"0-1a '))) + ln[i:]
                )
            out.append(ln)
        p = tmp_path / f"m{k}.jsonl"
        p.write_text("\n".join(out))
        ps = load_geneval(p)
        _records_are_sound(ps)
        assert len(ps) + len(ps.skipped) == len(out)


# ---------------------------------------------------------------- T2I-CompBench


def test_t2i_compbench_folder_reads_the_val_files():
    ps = load_t2i_compbench(T2I)
    _records_are_sound(ps)
    assert [Path(f).name for f in ps.meta["files"]] == ["color_val.txt", "spatial_val.txt"]
    assert [(r["id"], r["tier"], r["split"]) for r in ps][:2] == [("color_val-00000", "color", "val"), ("color_val-00001", "color", "val")]
    assert ps[0]["prompt"] == "a red circle and a blue square"
    assert ps.skipped == [{"where": "color_val.txt:4", "reason": "empty line", "kind": "malformed"}]
    assert "task" not in ps[0]  # no checklist in the format: the decomposer makes it


def test_t2i_compbench_file_and_names(tmp_path):
    assert [r["tier"] for r in load_t2i_compbench(T2I / "color_train.txt")] == ["color"]
    assert t2i_category("non_spatial_val") == ("non_spatial", "val")
    assert t2i_category("color_val_unseen") == ("color", "val_unseen")
    assert t2i_category("numeracy") == ("numeracy", None)
    (tmp_path / "complex.txt").write_text("a dog chasing a ball\n")
    assert [r["tier"] for r in load_t2i_compbench(tmp_path)] == ["complex"]  # no *_val.txt: every .txt
    with pytest.raises(FileNotFoundError, match="no T2I-CompBench"):
        load_t2i_compbench(tmp_path / "empty_dir_that_is_missing")


# ---------------------------------------------------------------- DPG-Bench


def test_dpg_fixture():
    ps = load_dpg(DPG)
    _records_are_sound(ps)
    assert [r["id"] for r in ps] == ["shapes01", "lighthouse02"]
    assert [(s["where"], s["reason"]) for s in ps.skipped] == [
        ("dpg_bench.csv:14", "proposition_id 'x' / dependency '0' are not integers"),
        ("dpg_bench.csv:18 (item broken03)", "questions depend on propositions [9], which the item does not have"),
    ]
    t = record_task(ps[0])
    assert [q.id for q in t.requirements] == [f"r{i}" for i in range(1, 9)]
    q7 = t.requirement("r7")
    assert (q7.kind, q7.text) == ("relation", "Is the circle to the left of the squares?")
    assert q7.spec["parents"] == ["r1", "r2"] and q7.spec["question"] == q7.text
    assert q7.spec["tuple"] == "relation - spatial (circle, squares, left of)"
    assert t.requirement("r1").spec["parents"] == []
    assert [q.kind for q in t.requirements] == ["presence", "presence", "color", "size", "color", "count", "relation", "style"]
    light = record_task(ps[1])
    assert [q.id for q in light.requirements] == ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]  # the malformed row alone is gone


def _dpg(tmp_path, rows: str) -> PromptSet:
    p = tmp_path / "dpg_bench.csv"
    p.write_text(DPG_HEADER + rows)
    return load_dpg(p)


def test_dpg_broken_items_are_skipped_whole(tmp_path):
    ps = _dpg(
        tmp_path,
        "a,A cat.,,1,2,entity,whole,entity - whole (cat),Is there a cat?\n"
        "a,A cat.,,2,1,attribute,color,\"attribute - color (cat, black)\",Is the cat black?\n"
        "b,A dog.,,1,0,entity,whole,entity - whole (dog),Is there a dog?\n"
        "b,A dog.,,1,0,entity,whole,entity - whole (dog),Is there a dog?\n"
        "c,A fox.,,1,0,entity,whole,entity - whole (fox),Is there a fox?\n"
        "c,A red fox.,,2,1,attribute,color,\"attribute - color (fox, red)\",Is the fox red?\n"
        "d,,,1,0,entity,whole,entity - whole (x),Is there x?\n"
        "e,An owl.,,1,0,entity,whole,entity - whole (owl),\n",
    )
    assert [r["id"] for r in ps] == ["c"]
    reasons = [s["reason"] for s in ps.skipped]
    assert "item 'c': text differs from its first row" in reasons
    assert "empty 'text'" in reasons and "empty 'question_natural_language'" in reasons
    assert any("cycle" in r for r in reasons) and "proposition ids repeated: [1]" in reasons


def test_dpg_wrong_file_is_a_clear_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not a DPG-Bench CSV, missing columns"):
        load_dpg(p)
    p.write_bytes(DPG_HEADER.encode() + b"a,\xff\xfe,,1,0,entity,whole,t,q\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_dpg(p)


# ---------------------------------------------------------------- LongBench-T2I


def test_longbench_fixture():
    ps = load_longbench(LONGBENCH)
    _records_are_sound(ps)
    assert [(r["id"], r["tier"], r["source"]) for r in ps] == [
        ("longbench-00000", "long", "instruction.jsonl:1"),
        ("longbench-00001", "long", "instruction.jsonl:2"),
    ]
    assert list(ps[1]["labels"])[:3] == ["Object", "Background and Environment", "Color and Tone"]
    assert [s["reason"] for s in ps.skipped] == ["no 'instruction'", "not JSON: Expecting value (column 1)"]


# ---------------------------------------------------------------- the entry point and the shapes world


def test_load_prompts_specs_and_n():
    assert parse_prompt_spec("dpg: tests/x.csv") == ("dpg", "tests/x.csv")
    for bad in ("", "geneval", "geneval:", "coco:file.json", "GENEVAL:x"):
        with pytest.raises(ValueError, match="accepted: geneval:PATH"):
            load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="not shipped"):
        load_prompts("longbench:data/longbench/instruction.jsonl")
    ps = load_prompts(f"geneval:{GENEVAL}", n=2)
    assert [r["id"] for r in ps] == ["geneval-00000", "geneval-00001"] and ps.spec == f"geneval:{GENEVAL}"
    assert len(load_prompts("geneval:tests/fixtures/benchmarks/geneval/evaluation_metadata.jsonl", n=0)) == 0  # relative to the checkout
    split = load_prompts("split:val", n=3)
    assert [r["id"] for r in split] == ["val-00000", "val-00001", "val-00002"] and split[0]["benchmark"] == "shapes"


def test_shapes_filter_counts_and_reasons():
    ps = load_prompts(f"geneval:{GENEVAL}", shapes_only=True)
    assert [r["id"] for r in ps] == ["geneval-00000", "geneval-00002", "geneval-00003", "geneval-00004", "geneval-00005", "geneval-00006"]
    assert ps.summary()["skipped_by_kind"] == {"malformed": 4, "not drawable": 4}
    why = {s["where"]: s["reason"] for s in ps.skipped if s["kind"] == "not drawable"}
    assert why["evaluation_metadata.jsonl:2 (geneval-00001)"].startswith(
        "class 'umbrella' is not a shape the shapes world draws (circle, square"
    )
    assert why["evaluation_metadata.jsonl:10 (geneval-00009)"].startswith("color 'gold' is not a shapes-world color")
    assert [r["id"] for r in load_prompts(f"dpg:{DPG}", shapes_only=True)] == ["shapes01"]
    assert [r["id"] for r in load_prompts(f"longbench:{LONGBENCH}", shapes_only=True)] == ["longbench-00000"]
    kept = load_prompts(f"t2i-compbench:{T2I}", shapes_only=True, n=2)
    assert [r["prompt"] for r in kept] == ["a red circle and a blue square", "a pink heart and an orange star"]
    assert drawable_in_shapes({"prompt": "a green lamp and a red circle"}) == (False, "the shapes grammar cannot read 'lamp'")
    assert drawable_in_shapes({"benchmark": "shapes", "prompt": "anything"})[0]


def test_drawable_geneval_task_is_judged_by_the_shapes_world():
    "A drawable GenEval checklist carries the shapes world's keys, so its critic and evaluator judge it as it stands."
    from image_poser.shapes.critic import ErrorModel, ShapesCritic
    from image_poser.shapes.evaluator import ShapesEvaluator
    from image_poser.shapes.parse import parse
    from image_poser.shapes.scene import render_spec

    for rec in load_prompts(f"geneval:{GENEVAL}", shapes_only=True):
        img, _ = render_spec(parse(rec["prompt"]).spec, seed=1)
        task = record_task(rec)
        ev = ShapesEvaluator().evaluate(img, task)
        assert ev.alignment == 1.0, (rec["prompt"], [(v.requirement, v.reason) for v in ev.verdicts])
        fb = ShapesCritic(ErrorModel.off()).critique(img, task)
        assert fb.alignment == 1.0, (rec["prompt"], fb.issues)
