"""The harness command: run, list, report, refs."""

from __future__ import annotations

import pytest

from harness.cli import main


def test_list_cases_shows_ids_types_and_sources(capsys):
    assert main(["list", "cases", "--device", "cpu"]) == 0
    output = capsys.readouterr().out
    header, *rows = output.splitlines()

    assert header.split()[:8] == ["id", "model_type", "auto_class", "parameters", "tags", "source", "runs", "opt_in"]
    smollm2 = next(row for row in rows if row.startswith("smollm2-135m "))
    assert "checkpoint" in smollm2
    assert "134,515,008" in smollm2
    full_shape = next(row for row in rows if row.startswith("mellum-full-shape "))
    assert "no (cuda only)" in full_shape


def test_list_backends_says_whether_each_runs_here(capsys):
    assert main(["list", "backends", "--device", "cpu"]) == 0
    output = capsys.readouterr().out
    eager = next(line for line in output.splitlines() if line.startswith("eager "))
    assert " yes " in eager
    assert "eager:bf16:sdpa" in eager


def test_list_suites_names_parity(capsys):
    assert main(["list", "suites"]) == 0
    assert "parity" in capsys.readouterr().out


def test_run_writes_results_and_report(tmp_path, capsys):
    status = main(
        [
            "run",
            "--cases",
            "gpt2-tiny",
            "--backends",
            "eager:fp32",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--run-id",
            "one",
        ]
    )
    output = capsys.readouterr().out

    assert status == 0
    assert (tmp_path / "one" / "results.jsonl").exists()
    assert (tmp_path / "one" / "run.json").exists()
    assert f"report: {tmp_path / 'one' / 'index.html'}" in output.splitlines()


def test_run_with_unknown_backend_is_one_line_and_exit_2(tmp_path, capfd):
    status = main(["run", "--cases", "gpt2-tiny", "--backends", "eagr", "--device", "cpu", "--out", str(tmp_path)])
    error_lines = [line for line in capfd.readouterr().err.splitlines() if "eagr" in line]

    assert status == 2
    assert error_lines == ["ERROR: unknown backend 'eagr'; closest: eager (see 'harness list backends')"]
    assert not any(tmp_path.iterdir())


def test_report_renders_an_existing_run_again(tmp_path, capsys):
    main(
        [
            "run",
            "--cases",
            "gpt2-tiny",
            "--backends",
            "eager:fp32:sdpa",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--run-id",
            "again",
            "--",
            "-k",
            "not golden",
        ]
    )
    (tmp_path / "again" / "index.html").unlink()
    capsys.readouterr()

    assert main(["report", "again", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "again" / "index.html").exists()


def test_report_of_missing_run_is_one_line(tmp_path, capsys):
    assert main(["report", "nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"harness: error: run 'nope' not found: neither a run folder nor a run id under {tmp_path}"
    )


def test_refs_update_writes_one_file_pair_per_variant(tmp_path, capsys):
    status = main(
        [
            "refs",
            "update",
            "--cases",
            "gpt2-tiny",
            "--backends",
            "eager:fp16",
            "--device",
            "cpu",
            "--references",
            str(tmp_path),
        ]
    )

    assert status == 0
    assert sorted(path.name for path in (tmp_path / "gpt2-tiny").iterdir()) == [
        "eager_fp16_eager.json",
        "eager_fp16_eager.safetensors",
        "eager_fp16_sdpa.json",
        "eager_fp16_sdpa.safetensors",
    ]
    assert "wrote 2 golden references" in capsys.readouterr().out


@pytest.mark.parametrize("arguments", [["list", "cases", "--device", "tpu"], ["run", "--device", "tpu"]])
def test_bad_device_choice_is_rejected_by_the_parser(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
