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
    ({"train": {"voices": ["en-US", "en-029"]}},
     "synth.held_out.voices: ['en-029'] also in train.voices"),
    ({"train": {"voices": ["en-US"], "variants": ["", "m2"]}},
     "synth.held_out.variants: ['m2'] also in train.variants"),
    ({"held_out": {"voices": ["x"], "variants": ["m2"], "rate_wpm": [[150, 165]], "pitch": [[50, 59]]}},
     "synth.held_out.rate_wpm: [[150, 165]] overlaps train.rate_wpm [[140, 160], [180, 200]]"),
    ({"held_out": {"voices": ["x"], "variants": ["m2"], "rate_wpm": [[165, 170]], "pitch": [[38, 45]]}},
     "synth.held_out.pitch: [[38, 45]] overlaps train.pitch [[25, 40], [60, 75]]"),
    ({"held_out": {"voices": ["x"], "variants": ["m2"]}},
     "synth.held_out_split: disjoint needs at least 2 voice x variant pairs"),
])
def test_held_out_speakers_are_disjoint_from_training_in_voice_variant_and_ranges(synth, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"synth": synth})
    assert message in str(err.value)


@pytest.mark.parametrize(("condition", "message"), [
    ({"voices": ["de", "en-US"]}, "synth.conditions.c.voices: ['en-US'] already speak train or held_out"),
    ({"voices": ["en-029"]}, "synth.conditions.c.voices: ['en-029'] already speak train or held_out"),
    ({"rate_wpm": [[150, 155]]}, "synth.conditions.c.rate_wpm: [[150, 155]] is not beyond train.rate_wpm"),
    ({"rate_wpm": [[165, 175]]}, "is not beyond train.rate_wpm"),      # between training's bands: not beyond
    ({"rate_wpm": [[120, 141]]}, "is not beyond train.rate_wpm"),      # reaches into the lowest band
    ({"pitch": [[70, 90]]}, "synth.conditions.c.pitch: [[70, 90]] is not beyond train.pitch [[25, 40], [60, 75]]"),
    ({}, "synth.conditions.c.voices/rate_wpm/pitch: all empty; set the factor the condition moves"),
])
def test_a_condition_inside_what_training_heard_is_refused(condition, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"synth": {"conditions": {"c": condition}}, "evaluate": {"conditions": {"spoken": ["c"]}}})
    assert message in str(err.value)
    beyond_both_sides = {"slow": {"rate_wpm": [[100, 139]]}, "fast": {"rate_wpm": [[201, 300]]},
                         "low": {"pitch": [[0, 24]]}, "high": {"pitch": [[76, 99]]}, "lang": {"voices": ["de"]}}
    cfg = config_from_dict({"synth": {"conditions": beyond_both_sides}, "evaluate": {"conditions": {"spoken": []}}})
    assert set(cfg.synth.conditions) == set(beyond_both_sides)


def test_condition_names_and_evaluated_conditions_are_checked():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"synth": {"conditions": {"snr5": {"voices": ["de"]}, "Slow-1": {"rate_wpm": [[100, 110]]}}},
                          "evaluate": {"conditions": {"spoken": []}}})
    msg = str(err.value)
    assert "synth.conditions.snr5: name a condition in lower case" in msg
    assert "synth.conditions.Slow-1: name a condition in lower case" in msg
    with pytest.raises(ConfigError, match=r"evaluate.conditions.spoken: \['fest'\] are not in synth.conditions"):
        config_from_dict({"evaluate": {"conditions": {"spoken": ["slow", "fest"]}}})


@pytest.mark.parametrize("snr", [12, 6, 30, 20, 7.5])
def test_a_test_snr_within_the_training_range_is_refused(snr):
    with pytest.raises(ConfigError, match=r"evaluate.conditions.snr_db: \[.*\] dB lie within "
                                          r"synth.train_noise.snr_db's range \[6, 30\]"):
        config_from_dict({"evaluate": {"conditions": {"snr_db": [3, snr]}}})
    assert config_from_dict({"evaluate": {"conditions": {"snr_db": [5.9, 0, -3, 31]}}}).evaluate.conditions.snr_db == (
        5.9, 0.0, -3.0, 31.0)
    assert config_from_dict({"synth": {"train_noise": {"fraction": 0}},  # no noisy training: any SNR is unseen
                             "evaluate": {"conditions": {"snr_db": [12]}}}).evaluate.conditions.snr_db == (12.0,)


def test_training_noise_and_test_noise_must_be_mixed_at_one_sample_rate():
    with pytest.raises(ConfigError, match=r"synth\.sample_rate: 22050 Hz but prepare\.sample_rate is 16000 Hz"):
        config_from_dict({"synth": {"sample_rate": 22050}})
    quiet = config_from_dict({"synth": {"sample_rate": 22050, "train_noise": {"fraction": 0}}})  # no noise to mix
    assert quiet.synth.sample_rate == 22050


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError, match="seed: expected an integer, got True"):
        config_from_dict({"seed": True})


def test_overrides_parse_yaml_values_and_nested_paths(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    cfg = load_config(params, ["prepare.workers=1", "synth.train_noise.fraction=0.25", "synth.sizes.ast.train=7",
                               "synth.held_out.voices=[en-GB-scotland]"])
    assert cfg.prepare.workers == 1
    assert cfg.synth.train_noise.fraction == 0.25
    assert cfg.synth.sizes.ast.train == 7
    assert cfg.synth.held_out.voices == ("en-GB-scotland",)
    assert cfg.synth.held_out.variants == Config().synth.held_out.variants  # the rest of the section from params


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
