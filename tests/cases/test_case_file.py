"""Case files and checkpoint folders: valid entries become cases, malformed ones one error line."""

from __future__ import annotations

import json

import pytest

from harness.cases import CaseFileError, checkpoint_case, load_case_file


def write(tmp_path, text):
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return path


def test_tiny_case_entry(tmp_path):
    path = write(
        tmp_path,
        """
[[case]]
id = "my-llama"
model_type = "llama"
seed = 3
[case.config]
hidden_size = 32
num_hidden_layers = 1
""",
    )
    (case,) = load_case_file(path)

    assert case.id == "my-llama"
    assert case.source == "tiny"
    assert case.auto_class == "AutoModelForCausalLM"
    assert case.tags == frozenset({"decoder"})
    assert case.inputs == "text"
    assert case.seed == 3
    assert case.config_overrides == {"hidden_size": 32, "num_hidden_layers": 1}
    assert case.trust_remote_code is False


def test_nested_sub_config_overrides(tmp_path):
    path = write(
        tmp_path,
        """
[[case]]
id = "my-t5"
model_type = "t5"
[case.config]
d_model = 32
""",
    )
    (case,) = load_case_file(path)
    assert case.auto_class == "AutoModelForSeq2SeqLM"
    assert case.inputs == "seq2seq-text"
    assert "seq2seq" in case.tags


def test_checkpoint_entry_reads_model_type_and_architecture(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    path = write(tmp_path, f'[[case]]\nid = "mine"\ncheckpoint = "{folder}"\n')
    (case,) = load_case_file(path)

    assert case.source == "checkpoint"
    assert case.model_type == "bert"
    assert case.auto_class == "AutoModelForMaskedLM"


def test_checkpoint_option_makes_a_case(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    case = checkpoint_case(folder)

    assert case.id == "checkpoint-my-model"
    assert case.auto_class == "AutoModelForCausalLM"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[case]]\nmodel_type = 'llama'\n", "case[0]: field 'id' is missing"),
        ("[[case]]\nid = 'a'\n", "case[0] 'a': field 'model_type' is missing"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\ntags = 'decoder'\n", "field 'tags' must be a list of strings"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\ntags = ['decodr']\n", "contains unknown tag 'decodr'"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\nseed = 'x'\n", "field 'seed' must be an integer"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\ncolour = 1\n", "field 'colour' is not a case field"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\ninputs = 'smell'\n", "field 'inputs' is 'smell'"),
        ("[[case]]\nid = 'a'\nmodel_type = 'no_such_type'\n", "field 'model_type' model_type 'no_such_type'"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\ntrust_remote_code = 'yes'\n", "field 'trust_remote_code'"),
        ("[[case]]\nid = 'a'\ncheckpoint = '/no/such/folder'\n", "field 'checkpoint' points to '/no/such/folder'"),
        ("[[case]]\nid = 'a'\nmodel_type = 'llama'\n[[case]]\nid = 'a'\nmodel_type = 'gpt2'\n", "repeats an earlier"),
        ("id = 'a'\n", "declares no [[case]] tables"),
        ("[[case]\nid = 'a'\n", "is not valid TOML"),
    ],
)
def test_malformed_entry_is_one_line_naming_the_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(CaseFileError) as error:
        load_case_file(path)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message
    assert str(path) in message


def test_missing_case_file_names_the_path(tmp_path):
    with pytest.raises(CaseFileError, match="case file '.*nope.toml' not found"):
        load_case_file(tmp_path / "nope.toml")
