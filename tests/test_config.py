import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.core.config import Config, ConfigError, apply_override, config_from_dict, load_config, to_dict
from tests.conftest import REPO


def test_repo_params_yaml_is_valid():
    cfg = load_config(REPO / "params.yaml")
    assert isinstance(cfg, Config)
    assert set(cfg.prepare.tasks) == {"sqa", "ast", "pretrain"}


def test_all_problems_reported_at_once_with_key_paths_and_fixes():
    raw = {
        "sed": 3,                                    # typo of a top-level key
        "synth": {"voises": ["en"], "train": {"rate_wpm": [[200, 100]], "voices": ["en"]}},
        "prepare": {"sample_rate": "16k", "max_bad_fraction": 1.5,
                    "tasks": {"ast": {"source": {"kind": "covost", "path": "x"},
                                      "prompts": {"ast": ["no placeholder here"]}}}},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="params.yaml")
    msg = str(info.value)
    problems = info.value.problems
    assert len(problems) == 7, msg
    assert "sed: unknown key. Did you mean 'seed'?" in msg
    assert "synth.voises: unknown key." in msg
    assert "synth.train.rate_wpm: needs 80 <= min <= max <= 450" in msg
    assert "prepare.sample_rate: expected an integer, got '16k'" in msg
    assert "prepare.max_bad_fraction: must be within [0, 1]" in msg
    assert "prepare.tasks.ast.source.kind" in msg and "Did you mean 'covost2'?" in msg
    assert "prepare.tasks.ast.prompts.ast[0]: must contain '<|audio|>' exactly once" in msg


def test_a_report_why_key_naming_no_params_key_stops_loading_with_a_hint(tmp_path: Path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["report"]["why"] |= {"grpo.lrr": "typo", "prepare.tasks.sqa.sorce": "typo", "grpo.lr.value": "too deep"}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(params)
    assert sorted(info.value.problems) == [
        "report.why.grpo.lr.value: grpo.lr is a setting, not a section; name the setting itself",
        "report.why.grpo.lrr: 'lrr' is not a key of grpo. Did you mean 'lr'?",
        "report.why.prepare.tasks.sqa.sorce: 'sorce' is not a key of prepare.tasks.sqa. Did you mean 'source'?",
    ]
    # A key whose value is null (a switched-off option) still names a params key.
    why = {"grpo.advantage_std_floor": "off"}
    assert config_from_dict({"grpo": {"advantage_std_floor": None}, "report": {"why": why}}).report.why == why


@pytest.mark.parametrize(("synth", "message"), [
    ({"train": {"voices": ["en-US", "en"]}, "test": {"voices": ["en"]}},
     "synth.test.voices: ['en'] also in train.voices"),
    ({"train": {"voices": ["en-US"], "variants": ["", "m1"]}, "validation": {"voices": ["x"], "variants": ["m1"]}},
     "synth.validation.variants: ['m1'] also in train.variants"),
    ({"validation": {"voices": ["en-US-nyc"], "variants": ["m4"], "rate_wpm": [[161, 169]], "pitch": [[41, 49]]}},
     "synth.test.voices: ['en-US-nyc'] also in validation.voices"),
    ({"test": {"voices": ["x"], "variants": ["m2"], "rate_wpm": [[150, 155]], "pitch": [[50, 59]]}},
     "synth.test.rate_wpm: [[150, 155]] overlaps train.rate_wpm [[140, 160], [180, 200]]"),
    ({"validation": {"voices": ["x"], "variants": ["m4"], "rate_wpm": [[161, 169]], "pitch": [[45, 52]]}},
     "synth.test.pitch: [[50, 59]] overlaps validation.pitch [[45, 52]]"),
])
def test_split_speakers_are_disjoint_in_voice_variant_and_ranges(synth, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"synth": synth})
    assert message in str(err.value)


def test_a_test_snr_that_training_used_is_refused():
    with pytest.raises(ConfigError, match=r"evaluate.conditions.snr_db: \[12.0\] dB also in synth.train_noise"):
        config_from_dict({"evaluate": {"conditions": {"snr_db": [20, 12]}}})
    assert config_from_dict({"synth": {"train_noise": {"fraction": 0}},  # no noisy training: any SNR is unseen
                             "evaluate": {"conditions": {"snr_db": [12]}}}).evaluate.conditions.snr_db == (12.0,)


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError, match="seed: expected an integer, got True"):
        config_from_dict({"seed": True})


def test_overrides_parse_yaml_values_and_nested_paths(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    cfg = load_config(params, ["prepare.workers=1", "synth.train_noise.fraction=0.25", "synth.sizes.ast.train=7",
                               "synth.test.voices=[en-US-nyc]"])
    assert cfg.prepare.workers == 1
    assert cfg.synth.train_noise.fraction == 0.25
    assert cfg.synth.sizes.ast.train == 7
    assert cfg.synth.test.voices == ("en-US-nyc",)
    assert cfg.synth.test.variants == Config().synth.test.variants  # the rest of the section from params.yaml


def test_exponent_numbers_are_numbers_though_yaml_1_1_reads_them_as_text(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("grpo:\n  lr: 1e-6\n")  # PyYAML: the string '1e-6'
    cfg = load_config(params, ["sft.lr=5e-4", "grpo.beta=2E-2"])
    assert (cfg.grpo.lr, cfg.sft.lr, cfg.grpo.beta) == (1e-6, 5e-4, 0.02)
    with pytest.raises(ConfigError, match=r"grpo.lr: expected a number, got '1e-6x'"):
        load_config(params, ["grpo.lr=1e-6x"])
    with pytest.raises(ConfigError, match=r"seed: expected an integer, got '1e3'"):
        load_config(params, ["seed=1e3"])  # an integer key takes no exponent


def test_override_of_unknown_key_is_reported(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"prepare.sample_rat: unknown key. Did you mean 'sample_rate'\?"):
        load_config(params, ["prepare.sample_rat=8000"])
    with pytest.raises(ConfigError) as info:  # mpgrpo inherits grpo's keys, but not its typos: reported once
        load_config(params, ["grpo.lrr=1e-5"])
    assert [p.split(":")[0] for p in info.value.problems if "grpo" in p] == ["grpo.lrr"]


def test_a_stage_command_with_a_bad_params_file_lists_the_problems_without_a_traceback(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  exampels: 5\n")
    run = subprocess.run([sys.executable, "-m", "steps.report", "--params", str(params)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "report.exampels: unknown key. Did you mean 'examples'?" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "reports").exists()  # nothing was run


def test_an_override_of_a_report_why_entry_keeps_the_dotted_params_key_whole():
    raw: dict = {}
    apply_override(raw, "report.why.grpo.lr=the tiny model learns faster")
    assert raw == {"report": {"why": {"grpo.lr": "the tiny model learns faster"}}}
    assert config_from_dict(raw).report.why == {"grpo.lr": "the tiny model learns faster"}


def test_override_needs_equals():
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        apply_override({}, "seed")


def test_missing_and_invalid_yaml_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips():
    cfg = load_config(REPO / "params.yaml")
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


# params.yaml sections that only params.yaml fills: the data sources with their prompt templates (no default corpus
# or prompt set fits every user) and the report's reasons (prose about this configuration's choices).
PARAMS_ONLY = ("prepare.tasks", "report.why")


def test_the_dataclass_defaults_are_params_yaml_values():
    """A config built in code (tests, notebooks) is the default pipeline's, not a third set of values."""
    def leaves(data, prefix=""):
        if isinstance(data, dict) and not prefix.startswith(PARAMS_ONLY):
            for key, value in data.items():
                yield from leaves(value, f"{prefix}.{key}" if prefix else key)
        elif not prefix.startswith(PARAMS_ONLY):
            yield prefix, data

    defaults, params = dict(leaves(to_dict(Config()))), dict(leaves(to_dict(load_config(REPO / "params.yaml"))))
    assert defaults.keys() == params.keys()
    assert {k: (v, params[k]) for k, v in defaults.items() if v != params[k]} == {}
