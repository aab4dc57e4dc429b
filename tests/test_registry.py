"""Registry files are input from outside: every bad one is exactly one clear ValueError, and none can run code unless the caller allows it.

The sweep writes each bad file, loads it, and asserts a plain `ValueError` (not a pydantic `ValidationError`, a
`RecursionError` or a `UnicodeDecodeError`) whose message names the file and, for a bad entry, the expert and the field.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

from image_poser.experts import Cost, Prob, load_registry

D = 'name = "x"\nclass = "diffusers"\nmodel = "some/model"\n'  # a valid diffusers entry to spoil
S = 'name = "x"\nclass = "shapes.t2i"\n'  # a valid shapes entry to spoil


def one(body: str, prefix: str = "") -> str:
    return f"{prefix}[[experts]]\n{body}"


@dataclass
class ProbeExpert:
    "An expert class outside image_poser whose fields carry the registry's annotated types."

    name: str
    kind: str = "t2i"
    cost: Cost = 1.0
    max_tokens: int = 77
    good_at: str = ""
    skill: Prob = 0.5
    scale: Cost = 1.0

    def __call__(self, command, image=None, *, seed=0):
        return None


P = f'name = "x"\nclass = "{__name__}.ProbeExpert"\n'

# (id, file text, text the message must hold)
CASES = [
    # costs: finite, >= 0, a number
    *[
        (f"cost={v}", one(S + f"cost = {v}\n"), "field 'cost'")
        for v in ["-5", "nan", "inf", "-inf", '"cheap"', '"3"', "true", "[1]", "{a = 1}", "-0.001"]
    ],
    # token limits: an integer >= 1
    *[(f"max_tokens={v}", one(S + f"max_tokens = {v}\n"), "field 'max_tokens'") for v in ["0", "-1", "1.5", '"77"', "true", "nan"]],
    *[(f"good_at={v[:8]}", one(S + f"good_at = {v}\n"), "field 'good_at'") for v in ["5", '"' + "x" * 501 + '"', '["a"]']],
    # names: safe in a markdown table and a file name
    *[
        (f"name={v!r}", one(f'name = {v}\nclass = "shapes.t2i"\n'), "field 'name'")
        for v in [
            '"a|b"',
            '"a\\nb"',
            '"a\\tb"',
            '"a\\u0000b"',
            '"a\\u001bb"',
            '""',
            '" x"',
            '"' + "x" * 65 + '"',
            '"../etc"',
            '"a/b"',
            '"a b"',
            "5",
            "true",
            '"café"',
        ]
    ],
    # missing or bad class
    ("no-name", one('class = "shapes.t2i"\n'), "field 'name'"),
    ("no-class", one('name = "x"\n'), "field 'class'"),
    ("class-empty", one('name = "x"\nclass = ""\n'), "field 'class'"),
    ("class-int", one('name = "x"\nclass = 5\n'), "field 'class'"),
    ("class-unknown-alias", one('name = "x"\nclass = "nope"\n'), "unknown expert class"),
    ("class-missing-module", one('name = "x"\nclass = "image_poser.nope.Nope"\n'), "cannot load"),
    ("class-is-a-function", one('name = "x"\nclass = "image_poser.experts.count_tokens"\n'), "not a class"),
    ("class-not-an-expert", one('name = "x"\nclass = "image_poser.experts.Registry"\n'), "unknown field 'name'"),
    ("class-os-system", one('name = "x"\nclass = "os.system"\n'), "outside image_poser"),
    ("class-builtins", one('name = "x"\nclass = "builtins.dict"\n'), "outside image_poser"),
    ("class-subprocess", one('name = "x"\nclass = "subprocess.Popen"\n'), "outside image_poser"),
    # unknown or mistyped fields of the class
    ("unknown-field", one(S + "wings = 2\n"), "unknown field 'wings'"),
    ("unknown-field-case", one(S + "Cost = 1\n"), "unknown field 'Cost'"),
    ("shapes-kind", one(S + 'kind = "x2y"\n'), "field 'kind'"),
    ("shapes-ops", one('name = "x"\nclass = "shapes.editor"\nops = ["teleport"]\n'), "teleport"),
    ("shapes-max-objects", one(S + 'max_objects = "many"\n'), "field 'max_objects'"),
    ("shapes-noise", one(S + "noise = [1]\n"), "field 'noise'"),
    # diffusers parameters, validated by DiffusersExpert's own annotations
    ("diffusers-no-model", one('name = "x"\nclass = "diffusers"\n'), "field 'model'"),
    *[
        (f"diffusers-{k}={v}", one(D + f"{k} = {v}\n"), f"field '{k}'")
        for k, v in [
            ("strength", "5"),
            ("strength", "-0.1"),
            ("strength", "nan"),
            ("steps", "0"),
            ("steps", "1.5"),
            ("steps", "100000"),
            ("height", "33"),
            ("width", "0"),
            ("guidance_scale", "-1"),
            ("guidance_scale", "inf"),
            ("image_guidance_scale", "nan"),
            ("pipeline", '"video"'),
            ("dtype", '"int8"'),
            ("offload", '"gpu"'),
            ("cache_max_bytes", "-1"),
            ("share_weights", '"sometimes"'),
        ]
    ],
    # a class's own annotated types, whatever module it lives in (loaded with allow_external: validation still applies)
    *[
        (f"probe-{k}={v}", one(P + f"{k} = {v}\n"), f"field '{k}'")
        for k, v in [("skill", "5"), ("skill", "-1"), ("skill", "nan"), ("skill", '"high"'), ("scale", "-2")]
    ],
    # duplicates
    ("duplicate", one(S) + one(S), "duplicate name"),
    ("duplicate-case", one(S) + one('name = "X"\nclass = "shapes.t2i"\n'), "duplicate name"),
    # the file's shape
    ("empty-file", "", "non-empty list"),
    ("no-experts", "experts = []\n", "non-empty list"),
    ("experts-ints", "experts = [1, 2]\n", "not a table"),
    ("experts-string", 'experts = "x"\n', "non-empty list"),
    ("experts-table", '[experts]\nname = "x"\n', "non-empty list"),
    ("unknown-top-key", "foo = 1\n" + one(S), "unknown top-level key 'foo'"),
    ("allow-external-not-bool", 'allow_external = "yes"\n' + one(S), "allow_external must be true or false"),
    ("too-many-experts", "".join(one(f'name = "x{i}"\nclass = "shapes.t2i"\n') for i in range(300)), "at most 256"),
    ("too-big", "# " + "x" * (1 << 20) + "\n" + one(S), "at most 1048576"),
    ("not-utf8", b"# \xff\xfe caf\xe9\n".decode("latin-1") + one(S), "not UTF-8"),
    ("toml-unclosed", "experts = [", "not valid TOML"),
    ("toml-duplicate-key", one(S + 'name = "y"\n'), "not valid TOML"),
    ("toml-no-value", one('name = \nclass = "shapes.t2i"\n'), "not valid TOML"),
    ("toml-binary", "\x00\x01\x02", "not valid TOML"),
    # nesting bombs
    ("nested-arrays-5000", "x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("nested-tables-5000", "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "nested too deeply"),
    ("nested-dotted-100", one(D + "call_kwargs." + ".".join(["a"] * 100) + " = 1\n"), "nested more than 16"),
    ("nested-arrays-20", one(D + "call_kwargs = {a = " + "[" * 20 + "]" * 20 + "}\n"), "nested more than 16"),
    # anything that can load code, without the caller's allow_external
    ("trust-remote-code", one(D + "trust_remote_code = true\n"), "trust_remote_code"),
    ("trust-remote-code-truthy", one(D + 'trust_remote_code = "yes"\n'), "trust_remote_code"),
    ("custom-pipeline", one(D + 'load_kwargs = {custom_pipeline = "/tmp/evil"}\n'), "custom_pipeline"),
    ("custom-pipeline-and-trust", one(D + 'trust_remote_code = true\nload_kwargs = {custom_pipeline = "/tmp/evil"}\n'), "refused"),
    ("load-kwargs-device-map", one(D + 'load_kwargs = {device_map = "balanced"}\n'), "allow-list"),
    ("load-kwargs-trust", one(D + "load_kwargs = {trust_remote_code = true}\n"), "allow-list"),
    ("locator-os", one(D + 'pipeline = "inpaint"\nlocator = "os.system"\n'), "locator 'os.system'"),
    ("locator-subprocess", one(D + 'pipeline = "inpaint"\nlocator = "subprocess.run"\n'), "outside image_poser"),
    ("locator-not-a-string", one(D + 'pipeline = "inpaint"\nlocator = 5\n'), "locator 5"),
    ("file-allows-itself-trust", "allow_external = true\n" + one(D + "trust_remote_code = true\n"), "only the caller can allow it"),
    ("file-allows-itself-class", "allow_external = true\n" + one('name = "x"\nclass = "os.system"\n'), "only the caller can allow it"),
    ("custom-pipeline-top-level", one(D + 'custom_pipeline = "/tmp/evil"\n'), "unknown field 'custom_pipeline'"),
]


def test_the_sweep_is_large():
    assert len(CASES) >= 70, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("text,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_registry_is_one_clear_value_error(tmp_path, text, want):
    p = tmp_path / "bad.toml"
    p.write_bytes(text.encode("latin-1") if "not UTF-8" == want else text.encode())
    allow = f"{__name__}.ProbeExpert" in text  # the probe class lives outside image_poser: trusted, and still validated
    with pytest.raises(ValueError) as e:
        load_registry(p, allow_external=allow)
    assert type(e.value) is ValueError, type(e.value)  # not a ValidationError, RecursionError or UnicodeDecodeError
    msg = str(e.value)
    assert msg.startswith(f"{p}: "), msg  # names the file
    assert want in msg, msg
    if "field '" in want:  # an entry's error names the expert too
        assert "expert #" in msg, msg


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_registry(tmp_path / "nope.toml")


def test_the_shipped_registries_are_valid():
    shapes = load_registry()
    gpu = load_registry("configs/experts/diffusers-gpu.toml")
    assert len(shapes) >= 9 and len(gpu) == 8


def test_a_valid_external_class_loads_only_when_the_caller_allows(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text(one(P + "skill = 0.25\n"))
    with pytest.raises(ValueError, match="outside image_poser"):
        load_registry(p)
    reg = load_registry(p, allow_external=True)
    assert isinstance(reg[0], ProbeExpert) and reg[0].skill == 0.25


def test_markdown_table_survives_what_a_description_may_hold(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text(one(S + 'good_at = "fast | cheap\\nand cheerful"\n'))
    rows = load_registry(p).markdown().splitlines()
    assert len(rows) == 3 and rows[2].count(" | ") == 5 and "fast \\| cheap and cheerful" in rows[2]


SHAPES_PROBABILITIES = [("count_error", "5"), ("leak", "-0.5"), ("relation_skill", "nan"), ("texture_skill", "2")]


@pytest.mark.parametrize("field,value", SHAPES_PROBABILITIES)
def test_shapes_probabilities_are_validated(tmp_path, field, value):
    p = tmp_path / "bad.toml"
    p.write_text(one(S + f"{field} = {value}\n"))
    with pytest.raises(ValueError, match=f"field '{field}'"):
        load_registry(p)


# ---------------------------------------------------------------- custom_pipeline: code in a folder


MARKER_PIPELINE = """
from pathlib import Path
Path({marker!r}).write_text("pipeline.py was executed")  # diffusers runs a copy from its modules cache: an absolute path
from diffusers import DiffusionPipeline


class EvilPipeline(DiffusionPipeline):
    pass
"""


@pytest.fixture
def evil(tmp_path):
    from image_poser.backends.diffusers import make_tiny_pipeline

    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "RAN"
    (folder / "pipeline.py").write_text(MARKER_PIPELINE.format(marker=str(marker)))
    model = make_tiny_pipeline(tmp_path / "model")
    reg = tmp_path / "reg.toml"
    reg.write_text(
        "allow_external = true\n"
        + one(
            f'name = "x"\nclass = "diffusers"\nmodel = "{model}"\nsteps = 1\ntrust_remote_code = true\nload_kwargs = {{custom_pipeline = "{folder}"}}\n'
        )
    )
    return reg, marker


def test_custom_pipeline_in_a_registry_file_never_runs(evil):
    from image_poser.experts import call_expert

    reg, marker = evil
    with pytest.raises(ValueError, match="only the caller can allow it"):
        load_registry(reg)  # the file's own allow_external = true is not enough
    assert not marker.exists()
    # the positive control: a caller who trusts the file does run its pipeline.py (so the marker can tell)
    trusted = load_registry(reg, allow_external=True)
    call_expert(trusted[0], "a red circle", seed=0)
    assert marker.exists()


def test_custom_pipeline_needs_trust_in_python_too():
    from image_poser.backends.diffusers import DiffusersExpert

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusersExpert(name="x", model="m", load_kwargs={"custom_pipeline": "/tmp/evil"})
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusersExpert(name="x", model="m", pipeline="inpaint", locator="os.system")


def test_placement_keys_load_locally_and_are_validated(tmp_path):
    "num_cpus / num_gpus / replicas place an expert on a Ray cluster; a local load ignores them, bad values are refused."
    src = Path("configs/experts/shapes.toml").read_text()
    p = tmp_path / "r.toml"
    p.write_text(src.replace('name = "frontier"\n', 'name = "frontier"\nnum_gpus = 1\nnum_cpus = 2\nreplicas = 2\n', 1))
    assert "frontier" in load_registry(p).names
    for bad in ("replicas = 0", "num_gpus = -1", 'num_cpus = "two"'):
        p.write_text(src.replace('name = "frontier"\n', f'name = "frontier"\n{bad}\n', 1))
        with pytest.raises(ValueError, match="frontier"):
            load_registry(p)
