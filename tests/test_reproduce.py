"""The Imagenette-64 reproduction: the tiny budget end to end, resumption, the shipped models."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from titok.errors import ConfigError, DataError
from titok.reproduce import BUDGETS, get_budget, reproduce_imagenette64
from titok.reproduce.parallel import run_parallel, threads_per_worker
from titok.reproduce.pipeline import choose_generator_tokenizer
from titok.reproduce.render import sampling_text
from titok.reproduce.run_folder import Run, default_data
from titok.reproduce.stages import TokenizerKind, TokenizerStage, tokenizer_catalog

SECTIONS = (
    "## Stages",
    "## Reconstruction",
    "## Linear probing of the frozen tokens",
    "## Class-conditional generation",
    "## What these figures can and cannot say",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, imagenette) -> Path:
    out = tmp_path_factory.mktemp("reproduce") / "run"
    lines: list[str] = []
    # two workers: the independent stages train side by side in spawned processes
    reproduce_imagenette64(out, get_budget("tiny"), str(imagenette), echo=lines.append, workers=2)
    (out / "echo.txt").write_text("\n".join(lines))
    return out


def test_tiny_budget_runs_every_stage_and_writes_the_report(tiny_run: Path) -> None:
    state = json.loads((tiny_run / "state.json").read_text())
    budget = get_budget("tiny")
    independent = [
        "vqgan-f8",
        "vqgan-f16",
        *[f"titok-k{k}-single" for k in budget.token_counts],
        "classifier",
    ]
    expected = [
        *independent,
        *[f"titok-k{k}-stage{s}" for k in budget.two_stage_token_counts for s in (1, 2)],
        "eval-reconstruction",
        "eval-probe",
        "tokens-1d",
        "tokens-2d",
        "generator-1d",
        "generator-2d",
        "eval-generation",
    ]
    assert sorted(state["stages"]) == sorted(expected)
    assert all(s["done"] and s["seconds"] > 0 for s in state["stages"].values())
    assert state["wall_seconds"] > 0  # the run's own wall time (stages in workers overlap)
    for name in (*independent, "generator-1d", "generator-2d"):  # trained in the workers
        assert state["stages"][name]["threads"] == threads_per_worker(2), name
    report = (tiny_run / "report.md").read_text()
    for section in SECTIONS:
        assert section in report
    assert f"Wall time {state['wall_seconds'] / 60:.1f} min" in report
    for png in ("reconstruction.png", "probe.png", "generation.png", "originals.png", "samples-1d.png"):
        assert (tiny_run / "results" / png).stat().st_size > 0, png
        assert f"results/{png}" in report
    recon = json.loads((tiny_run / "results" / "reconstruction.json").read_text())
    assert set(recon) == {"vqgan-f8", "vqgan-f16", "titok-k8", "titok-k8-single", "titok-k16-single"}
    # the single-stage runs use the built-in model's recipe and saw the same images as the others
    single = json.loads((tiny_run / "titok-k8-single" / "metrics.jsonl").read_text().splitlines()[-1])
    assert single["step"] == budget.tokenizer_steps
    config = json.loads((tiny_run / "titok-k16-single" / "export" / "config.json").read_text())["config"]
    assert config["latent_centering"] is True and config["dead_code_threshold"] > 0
    assert config["num_latent_tokens"] == 16
    assert "1D TiTok single-stage" in report and "1D TiTok two-stage" in report
    assert "results/curves.png" in report
    for name, metrics in recon.items():
        assert metrics["num_images"] == budget.eval_images
        assert 0 < metrics["PSNR"] < 60 and -1 <= metrics["SSIM"] <= 1
        assert "rFID[imagenette64-resnet]" in metrics
        # every number in the report table comes from the results file
        assert f"{metrics['PSNR']:.3f}" in report, name
    gen = json.loads((tiny_run / "results" / "generation.json").read_text())
    assert gen["2d"]["num_tokens"] == 16 and gen["1d"]["num_tokens"] in budget.token_counts
    assert gen["1d"]["images_per_second"] > 0
    for which in ("1d", "2d"):
        assert 0 <= gen[which]["class_agreement"] <= 1
        assert f"{gen[which]['class_agreement']:.3f}" in report
    # 1D and 2D generators have the same size
    assert gen["1d"]["generator_parameters"] == gen["2d"]["generator_parameters"]
    # the sampling settings behind the figures are recorded (the generators' own) and reported
    recipe = yaml.safe_load((tiny_run / "generator-1d" / "recipe.yaml").read_text())["model"]
    for which in ("1d", "2d"):
        sampling = gen[which]["sampling"]
        assert sampling["guidance_scale"] == recipe["guidance_scale"]
        assert sampling["randomize_temperature"] == recipe["randomize_temperature"]
    assert sampling_text(gen["1d"]["sampling"]) in report


def test_a_second_call_skips_finished_stages(tiny_run: Path, imagenette) -> None:
    before = json.loads((tiny_run / "state.json").read_text())
    lines: list[str] = []
    reproduce_imagenette64(tiny_run, get_budget("tiny"), str(imagenette), echo=lines.append)
    after = json.loads((tiny_run / "state.json").read_text())
    assert before["stages"] == after["stages"] and after["wall_seconds"] > before["wall_seconds"]
    assert sum(line.startswith("[skip]") for line in lines) == len(before["stages"])


def test_an_interrupted_stage_is_resumed_not_restarted(
    tiny_run: Path, imagenette, tmp_path, monkeypatch
) -> None:
    """A training stage that dies at step 3 trains on from its checkpoint 2 on the next call."""
    from titok.training.engine import Engine

    copy = tmp_path / "copy"  # a copy: the module's run stays as the other tests expect it
    shutil.copytree(tiny_run, copy)
    stage = copy / "titok-k8-single"
    for folder in [stage / "export", *stage.glob("checkpoint-*")]:
        shutil.rmtree(folder)
    state = json.loads((copy / "state.json").read_text())
    assert state["stages"]["titok-k8-single"]["start_step"] == 0
    state["stages"]["titok-k8-single"]["done"] = False
    (copy / "state.json").write_text(json.dumps(state))
    kept = {n: (copy / n).stat().st_mtime_ns for n in ("titok-k8-stage1", "classifier")}

    save = Engine._save_checkpoint

    def dies_at_step_3(self: Engine) -> Path:
        if self.step == 3:
            raise RuntimeError("killed")
        return save(self)

    monkeypatch.setattr(Engine, "_save_checkpoint", dies_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        reproduce_imagenette64(copy, get_budget("tiny"), str(imagenette), echo=lambda _: None)
    assert [c.name for c in stage.glob("checkpoint-*")] == ["checkpoint-00000002"]
    assert json.loads((copy / "state.json").read_text())["stages"]["titok-k8-single"]["done"] is False

    monkeypatch.setattr(Engine, "_save_checkpoint", save)
    lines: list[str] = []
    reproduce_imagenette64(copy, get_budget("tiny"), str(imagenette), echo=lines.append)
    assert "[run ] titok-k8-single" in lines and sum(line.startswith("[run ]") for line in lines) == 1
    record = json.loads((copy / "state.json").read_text())["stages"]["titok-k8-single"]
    assert record["done"] is True and record["start_step"] == 2 and record["steps"] == 4
    assert (stage / "export" / "model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    assert {n: (copy / n).stat().st_mtime_ns for n in kept} == kept


def test_another_budget_in_the_same_folder_is_refused(tiny_run: Path, imagenette) -> None:
    with pytest.raises(ConfigError, match="budget"):
        Run(tiny_run, get_budget("quick"), str(imagenette))


def test_a_changed_budget_is_refused_and_redo_reruns_a_stage(tiny_run: Path, imagenette, tmp_path) -> None:
    changed = dataclasses.replace(get_budget("tiny"), generator_steps=5)
    with pytest.raises(ConfigError, match=r"generator_steps: 4 -> 5"):
        Run(tiny_run, changed, str(imagenette))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    run = Run(copy, get_budget("tiny"), str(imagenette), echo=lambda _: None)
    with pytest.raises(ConfigError, match="no such stage"):
        run.redo(["nonsense"])
    assert (copy / "generator-2d").is_dir()
    run.redo(["generator-2d"])
    assert not run.done("generator-2d") and not (copy / "generator-2d").exists()
    assert Run(copy, get_budget("tiny"), str(imagenette)).done("generator-1d")


def test_latent_centering_variant_is_recorded_trained_and_reported(
    tiny_run: Path, imagenette, tmp_path
) -> None:
    with pytest.raises(ConfigError, match="without latent centering, asked with"):
        Run(tiny_run, get_budget("tiny"), str(imagenette), latent_centering=True)
    # A centering run whose k=8 TiTok stages are still to train (the others reused from the copy).
    copy = tmp_path / "centered"
    shutil.copytree(tiny_run, copy)
    state = json.loads((copy / "state.json").read_text())
    state["latent_centering"] = True
    (copy / "state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="with latent centering, asked without"):
        Run(copy, get_budget("tiny"), str(imagenette))
    redo = ["titok-k8-stage1", "titok-k8-stage2"]
    lines: list[str] = []
    report = reproduce_imagenette64(
        copy, get_budget("tiny"), str(imagenette), echo=lines.append, redo=redo, latent_centering=True
    )
    assert sum(line.startswith("[done] titok-k8") for line in lines) == 2
    for stage in ("titok-k8-stage1", "titok-k8-stage2"):
        config = json.loads((copy / stage / "export" / "config.json").read_text())["config"]
        assert config["latent_centering"] is True, stage
    # stage 2 may average: its encoder and running mean are frozen
    assert "use_ema: false" in (copy / "titok-k8-stage1" / "recipe.yaml").read_text()
    without = json.loads((tiny_run / "titok-k8-stage1" / "export" / "config.json").read_text())["config"]
    assert without["latent_centering"] is False
    assert "--latent-centering" in report.read_text()


def test_generator_tokenizer_is_chosen_by_reconstruction_fid() -> None:
    recon = {
        "vqgan-f16": {"rFID[n]": 0.1},
        "titok-k8": {"rFID[n]": 1.0},
        "titok-k16": {"rFID[n]": 5.0},
        "titok-k32": {"rFID[n]": 3.0},
        "titok-k32-single": {"rFID[n]": 2.0},
        "titok-k64": {"rFID[n]": 0.5},
    }
    assert choose_generator_tokenizer(recon) == TokenizerStage.single_stage(32)
    assert choose_generator_tokenizer({"titok-k8": {"rFID[n]": 1.0}}).name == "titok-k8"
    with pytest.raises(ConfigError, match="no TiTok"):
        choose_generator_tokenizer({"vqgan-f16": {"rFID[n]": 0.1}})


def test_the_catalogs_of_the_default_and_tiny_budgets() -> None:
    default = tokenizer_catalog(get_budget("default"))
    assert [t.name for t in default] == [
        "vqgan-f8",
        "vqgan-f16",
        "titok-k16-single",
        "titok-k32-single",
        "titok-k64-single",
    ]
    tiny = tokenizer_catalog(get_budget("tiny"))
    vqgan, two, single = TokenizerKind.VQGAN, TokenizerKind.TITOK_TWO_STAGE, TokenizerKind.TITOK_SINGLE_STAGE
    assert [(t.name, t.kind, t.num_tokens) for t in tiny] == [
        ("vqgan-f8", vqgan, 64),
        ("vqgan-f16", vqgan, 16),
        ("titok-k8", two, 8),
        ("titok-k8-single", single, 8),
        ("titok-k16-single", single, 16),
    ]
    assert [t.is_2d for t in tiny] == [True, True, False, False, False]
    assert [t.label for t in tiny] == [
        "2D VQGAN",
        "2D VQGAN",
        "1D TiTok two-stage",
        "1D TiTok single-stage",
        "1D TiTok single-stage",
    ]
    assert [t.factor for t in tiny] == [8, 16, None, None, None]


def test_tokenizer_names_round_trip_and_others_are_refused() -> None:
    for budget in BUDGETS.values():
        for tokenizer in tokenizer_catalog(budget):
            assert TokenizerStage.from_name(tokenizer.name) == tokenizer
            assert str(tokenizer) == tokenizer.name
    assert TokenizerStage.from_name("titok-k64").num_tokens == 64
    assert TokenizerStage.from_name("titok-k16-single").num_tokens == 16
    assert TokenizerStage.from_name("vqgan-f16") == TokenizerStage.vqgan(16)
    for name in ("titok-k8-stage2", "vqgan-f8-single", "titok-8", "vqgan-f7", "classifier", "titok-k0"):
        with pytest.raises(ConfigError):
            TokenizerStage.from_name(name)
    with pytest.raises(ConfigError):  # a VQGAN's tokens follow from its factor
        TokenizerStage(TokenizerKind.VQGAN, 32, 8)
    with pytest.raises(ConfigError):
        TokenizerStage(TokenizerKind.TITOK_SINGLE_STAGE, 32, 8)


def test_tokenizer_folders_are_the_run_folders_of_before(tmp_path: Path) -> None:
    folders = {
        "vqgan-f8": ("vqgan-f8",),
        "vqgan-f16": ("vqgan-f16",),
        "titok-k8": ("titok-k8-stage1", "titok-k8-stage2"),
        "titok-k8-single": ("titok-k8-single",),
        "titok-k16-single": ("titok-k16-single",),
    }
    tiny = tokenizer_catalog(get_budget("tiny"))
    assert {t.name: t.training_stages for t in tiny} == folders
    for tokenizer in tiny:  # a two-stage TiTok's export is its stage 2's
        assert tokenizer.export_dir(tmp_path) == tmp_path / folders[tokenizer.name][-1] / "export"
        assert tokenizer.folder == folders[tokenizer.name][-1]
    run = Run(tmp_path / "run", get_budget("tiny"), "data")
    assert run.tokenizers() == tiny and run.tokenizer("titok-k8") == TokenizerStage.two_stage(8)
    with pytest.raises(ConfigError, match="titok-k32"):
        run.tokenizer("titok-k32")


def test_the_tiny_run_exports_every_tokenizer_of_its_catalog(tiny_run: Path) -> None:
    state = json.loads((tiny_run / "state.json").read_text())
    catalog = tokenizer_catalog(get_budget("tiny"))
    for tokenizer in catalog:
        assert (tokenizer.export_dir(tiny_run) / "config.json").is_file(), tokenizer
        assert all(state["stages"][stage]["done"] for stage in tokenizer.training_stages)
    recon = json.loads((tiny_run / "results" / "reconstruction.json").read_text())
    assert list(recon) == [t.name for t in catalog]


def test_default_data_is_titok_data_then_shared_beside_the_working_folder(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TITOK_DATA", str(tmp_path / "elsewhere"))
    assert default_data() == str(tmp_path / "elsewhere")
    shards = tmp_path / "shared" / "data" / "imagenette"
    shards.mkdir(parents=True)
    (tmp_path / "titok").mkdir()
    monkeypatch.chdir(tmp_path / "titok")
    monkeypatch.setenv("TITOK_DATA", "")  # empty counts as unset, like ${TITOK_DATA:-...}
    assert default_data() == str(shards)
    monkeypatch.delenv("TITOK_DATA")
    assert default_data() == str(shards)
    shards.rmdir()
    with pytest.raises(DataError, match=r"set \$TITOK_DATA or pass --data"):
        default_data()


def test_reproduce_without_data_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from titok.cli import main

    monkeypatch.delenv("TITOK_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["reproduce", "imagenette64", "-o", str(tmp_path / "run"), "--budget", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "set $TITOK_DATA or pass --data" in err
    assert not (tmp_path / "run").exists()


def test_unknown_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="quick"):
        get_budget("huge")


def test_class_agreement_counts_the_samples_assigned_to_their_class() -> None:
    from titok.reproduce.measure import class_agreement

    class ByBrightness(torch.nn.Module):
        """Class 1 for bright images, 0 for dark ones; returns (features, logits) like the classifier."""

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            bright = images.mean((1, 2, 3))
            return bright[:, None], torch.stack([0.5 - bright, bright - 0.5], dim=1)

    images = torch.cat([torch.zeros(150, 3, 4, 4), torch.ones(50, 3, 4, 4)])
    labels = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    # 100 dark labelled 0 (right), 50 dark labelled 1 (wrong), 50 bright labelled 1 (right).
    assert class_agreement(ByBrightness(), images, labels) == 0.75


def test_a_failing_worker_job_is_raised_after_the_others_are_recorded() -> None:
    recorded: list[tuple[str, dict, int]] = []
    jobs = [("fine", partial(dict, value=1.0)), ("broken", partial(int, "not a number"))]
    with pytest.raises(ValueError, match="not a number"):
        run_parallel(jobs, 2, lambda name, extra, seconds, threads: recorded.append((name, extra, threads)))
    assert recorded == [("fine", {"value": 1.0}, threads_per_worker(2))]


def test_budget_warmup_and_images() -> None:
    budget = get_budget("default")
    assert budget.tokenizer_images == budget.tokenizer_steps * budget.batch_size
    assert budget.warmup_steps(1500) == 300 and budget.warmup_steps(250) == 50 and budget.warmup_steps(3) == 1
    assert not budget.adversarial and get_budget("tiny").adversarial


def test_training_curve_reads_psnr_from_the_l2_loss(tmp_path: Path) -> None:
    from titok.reproduce.plots import training_curve

    class FakeRun:
        budget = get_budget("tiny")
        state: dict = {}

        def path(self, *parts: str) -> Path:
            return tmp_path.joinpath(*parts)

    rows = [{"step": 1, "reconstruction": 0.1}, {"step": 2, "lr": 1.0}, {"step": 3, "reconstruction": 0.001}]
    for folder in ("vqgan-f8", "titok-k8-stage2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    batch = FakeRun.budget.batch_size
    images, psnr = training_curve(FakeRun(), TokenizerStage.vqgan(8), smooth=1)
    assert images == [batch, 3 * batch] and psnr == pytest.approx([10.0, 30.0])
    # a two-stage TiTok's pixel curve is its stage 2's, after the stage-1 images
    images, psnr = training_curve(FakeRun(), TokenizerStage.two_stage(8), smooth=2)
    offset = FakeRun.budget.stage1_steps * batch
    assert images == [offset + batch, offset + 3 * batch] and psnr[1] == pytest.approx(
        -10 * math.log10(0.0505)
    )
    assert training_curve(FakeRun(), TokenizerStage.single_stage(16)) == ([], [])


def test_worker_jobs_are_recorded_as_each_finishes() -> None:
    import time

    order: list[tuple[str, float]] = []
    jobs = [("slow", partial(time.sleep, 3.0)), ("fast", partial(dict, value=2.0))]
    run_parallel(jobs, 2, lambda name, extra, seconds, threads: order.append((name, time.monotonic())))
    assert [name for name, _ in order] == ["fast", "slow"]
    assert order[1][1] - order[0][1] > 1.0  # the fast job was recorded while the slow one ran
