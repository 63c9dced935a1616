"""The runner layer: lifecycle, the registry's model names and labels, predict_logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.cli import main
from bertrt.errors import ConfigError, MissingArtifactError, UnavailableError
from bertrt.modeling import INPUT_NAMES, Batch, load_tokenizer
from bertrt.runners import registry, trt_runner
from bertrt.runners.base import Runner, RunnerStateError
from bertrt.runners.ort_runner import OrtRunner
from bertrt.runners.predict import TokenizedRows, predict_logits
from bertrt.runners.registry import MODEL_NAMES, discover, runner_for_model
from tests.conftest import make_trained_run, synthetic_rows, write_csv


class _RowIdRunner(Runner):
    """Returns, per row, [first token id, number of real tokens]: shows where each row went."""

    framework = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.activations = 0

    def _activate(self) -> None:
        self.activations += 1

    def _deactivate(self) -> None:
        return None

    def _infer(self, prepared: Batch) -> np.ndarray:
        ids, mask = prepared["input_ids"], prepared["attention_mask"]
        return np.stack([ids[:, 1], mask.sum(axis=1)], axis=1).astype(np.float32)


def test_runner_lifecycle_is_guarded() -> None:
    runner = _RowIdRunner()
    batch = {name: np.ones((1, 4), dtype=np.int64) for name in INPUT_NAMES}
    with pytest.raises(RunnerStateError, match="not active"):
        runner(batch)
    with runner:
        assert runner.is_active and runner(batch).shape == (1, 2)
        with pytest.raises(RunnerStateError, match="active runner"):
            runner.activate()
    assert not runner.is_active and runner.activations == 1
    runner.deactivate()  # a second deactivate is a no-op
    with pytest.raises(RunnerStateError):
        runner.infer(runner.prepare(batch))


def test_cpu_sessions_stop_spinning_when_a_run_returns() -> None:
    """Threads left spinning between runs starve a server's other processes (ort_sessions)."""
    from bertrt.ort_sessions import session_options

    options = session_options(2)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 2


def test_predict_logits_returns_rows_in_the_callers_order(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    texts = ["a much longer question about python lists " * 3, "short", "medium sized question"]
    rows = TokenizedRows.build(tokenizer, texts, max_length=64, batch_size=2, labels=[1, 0, 1])
    # Length-sorted batches: the shortest text comes first, so order really is restored.
    assert rows.batches[0][0].tolist() == [1, 2]
    with _RowIdRunner() as runner:
        out = predict_logits(runner, rows)
    expected = [len(tokenizer(t, truncation=True, max_length=64)["input_ids"]) for t in texts]
    assert out[:, 1].tolist() == expected
    first = [tokenizer(t)["input_ids"][1] for t in texts]
    assert out[:, 0].tolist() == first
    sub = rows.every(2)  # batches 0 and 2 of [[1, 2], [0]] -> only the first
    assert sub.rows == 2 and sub.labels is not None and sub.labels.tolist() == [0, 1]
    assert [r.tolist() for r, _ in sub.batches] == [[0, 1]]


def test_model_names_cover_every_runtime() -> None:
    assert MODEL_NAMES == (
        "merged",
        "torch-int8",
        "torch-compile",
        "onnx-fp32",
        "onnx-opt",
        "onnx-fp16",
        "onnx-int8",
        "onnx-cpu",
        "onnx-mtq-int8",
        "onnx-qat",
        "ov-fp32",
        "ov-int8",
        "ov-qdq",
        "ov-mtq-int8",
        "ov-qat",
        "trt-fp16",
        "trt-int8",
        "trt-qat",
        "cpu",
    )


def test_unknown_and_missing_models_are_clear_errors(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match="unknown model 'onnx-bogus'"):
        runner_for_model(run, "onnx-bogus")
    with pytest.raises(MissingArtifactError, match=r"model\.int8\.onnx"):
        runner_for_model(run, "onnx-int8")
    runner = OrtRunner(tmp_path / "nowhere.onnx")
    with pytest.raises(MissingArtifactError, match=r"nowhere\.onnx"):  # exit 4, not "no hardware"
        runner.activate()
    assert not runner.is_active


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("model", ["trt-fp16", "trt-int8"])
def test_tensorrt_models_say_why_they_cannot_run_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, model: str
) -> None:
    if registry.tensorrt_unavailable() is None:
        pytest.skip("TensorRT and a GPU are present: the engines would run")
    data = write_csv(tmp_path / "rows.csv", synthetic_rows(4))
    extra = ["--data", str(data)] if command == "evaluate" else ["--text", "why?"]
    argv = [command, "--run-dir", str(tmp_path / "run"), "--model", model, *extra]
    assert main(argv) == UnavailableError.exit_code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs TensorRT and an NVIDIA GPU" in err[0]


def _fake_engines(run: RunDir, precisions: tuple[str, ...]) -> None:
    """Engine and sidecar files recorded as build-engine outputs (never deserialized here)."""
    run.engines_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for precision in precisions:
        run.engine(precision).write_bytes(b"plan")
        run.engine_meta(precision).write_text("{}")
        outputs += [run.engine(precision), run.engine_meta(precision)]
    run.record("build-engine", inputs=[], outputs=outputs, wall_s=0.0)


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_a_tensorrt_candidate_carries_its_runners_label(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda_graphs: bool
) -> None:
    """The bench files results under the candidate's label and rows under the runner's:
    with CUDA graphs on, the two once disagreed and an engine could never be "best"."""
    run = make_trained_run(tmp_path, tiny_base, rows=40)
    _fake_engines(run, ("int8",))
    monkeypatch.setattr(trt_runner, "tensorrt_unavailable", lambda: None)
    found = discover(run, threads=1, patterns=["tensorrt"], cuda_graphs=cuda_graphs)
    [cand] = found.runners
    runner = cand.build()
    expected = "tensorrt/int8-graphs/cuda" if cuda_graphs else "tensorrt/int8/cuda"
    assert cand.label == runner.label == expected
    assert runner.variant == expected.split("/")[1]
    assert cand.inputs == (run.engine("int8"), run.engine_meta("int8"))
    skipped = {s.backend: s.reason for s in found.skipped}
    fp16 = "tensorrt/fp16-graphs/cuda" if cuda_graphs else "tensorrt/fp16/cuda"
    assert "fp16.plan missing" in skipped[fp16]


def test_a_tensorrt_runner_with_cuda_graphs_can_be_picked_as_best(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench keys logits by candidate label and builds rows from the runner: both must
    agree, or the fastest engine never matches a row within budget."""
    from bertrt.bench.report import choose_best
    from bertrt.bench.results import AccuracyRow, LatencyRow
    from bertrt.bench.stage import _describe
    from bertrt.runners.timing import summarize

    run = make_trained_run(tmp_path, tiny_base, rows=40)
    _fake_engines(run, ("int8",))
    monkeypatch.setattr(trt_runner, "tensorrt_unavailable", lambda: None)
    found = discover(run, threads=1, patterns=["torch/fp32/cpu", "tensorrt"], cuda_graphs=True)
    by_label = {cand.label: cand.build() for cand in found.runners}
    assert set(by_label) == {"torch/fp32/cpu", "tensorrt/int8-graphs/cuda"}
    latency, accuracy = [], []
    for label, ms in (("torch/fp32/cpu", 100.0), ("tensorrt/int8-graphs/cuda", 2.0)):
        who = _describe(by_label[label])  # what the bench's rows carry
        latency.append(LatencyRow.measured(who, 32, 128, summarize([[ms, ms]], 32, "t")))
        score = {"n": 10, "accuracy": 0.8, "f1": 0.8, "closed_precision": 0.8}
        score |= {"closed_recall": 0.8, "agreement": 1.0, "max_abs_diff": 0.0}
        accuracy.append(AccuracyRow.from_score(who, score))
    assert choose_best(latency, accuracy, budget_points=0.5) == "tensorrt/int8-graphs/cuda"


def test_openvino_runs_the_projects_onnx_like_onnxruntime(tiny_base: Path, tmp_path: Path) -> None:
    from bertrt.export.onnx_export import export_onnx, load_torch_model
    from bertrt.runners.openvino_runner import OpenVinoRunner

    path = tmp_path / "model.onnx"
    sample = {name: np.ones((2, 8), dtype=np.int64) for name in INPUT_NAMES}
    export_onnx(load_torch_model(tiny_base), path, sample, 17, INPUT_NAMES)
    rows = TokenizedRows.build(load_tokenizer(tiny_base), ["a b c", "why " * 20], 32, 2)
    with OpenVinoRunner(path, threads=1, inference_precision="f32") as ov:
        assert ov.label == "openvino/fp32/cpu"
        got = predict_logits(ov, rows)
    with OrtRunner(path, threads=1) as ort:
        want = predict_logits(ort, rows)
    assert np.abs(got - want).max() < 1e-4


def test_openvino_gives_its_buffers_back_and_runs_the_same_after(
    tiny_base: Path, tmp_path: Path
) -> None:
    """The bench calls release_memory between rounds: every compiled model (the dynamic one
    and each static shape's) lets its buffers go, and the next run is unchanged."""
    from bertrt.export.onnx_export import export_onnx, load_torch_model
    from bertrt.runners.openvino_runner import OpenVinoRunner

    path = tmp_path / "model.onnx"
    sample = {name: np.ones((2, 8), dtype=np.int64) for name in INPUT_NAMES}
    export_onnx(load_torch_model(tiny_base), path, sample, 17, INPUT_NAMES)
    batch = {name: np.ones((2, 16), dtype=np.int64) for name in INPUT_NAMES}
    for static in (False, True):
        runner = OpenVinoRunner(path, threads=1, inference_precision="f32", static_shapes=static)
        runner.release_memory()  # inactive: nothing to give back
        with runner:
            before = runner(batch)
            runner.release_memory()
            assert np.array_equal(runner(batch), before)
