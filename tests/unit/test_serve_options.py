"""The serving commands' options: one copy of each default, the config's ``serve`` section,
and the serve/ modules' boundaries (each job its module, no private helper borrowed)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from bertrt.cli import build_parser
from bertrt.config import DEFAULT_CONFIG, Config, ServeConfig, load_config
from bertrt.errors import ConfigError
from bertrt.serve.commands import repo_options, serve_options
from bertrt.serve.options import LoadtestOptions, RepoOptions, ServeOptions, defaults

SERVE_DIR = Path(__file__).resolve().parents[2] / "src" / "bertrt" / "serve"


def _parse(*argv: str) -> tuple[object, Config]:
    args = build_parser().parse_args(list(argv))
    return args, load_config(None, args.overrides)


def test_serve_options_take_every_config_default_and_nothing_else() -> None:
    """ServeOptions = the config's serve section + the per-invocation model and stub env."""
    options = {f.name: f.default for f in dataclasses.fields(ServeOptions)}
    for name, default in defaults(ServeConfig).items():
        assert options.pop(name) == default, name
    assert options == {"model": None, "stub_env": None}


def test_serve_flags_left_out_give_the_default_options() -> None:
    args, config = _parse("serve")
    assert serve_options(args, config) == ServeOptions()  # type: ignore[arg-type]


def test_every_serve_setting_has_a_flag_that_overrides_the_config() -> None:
    flags = {
        "host": "0.0.0.0",
        "http_port": 9100,
        "grpc_port": 9101,
        "metrics_port": 9102,
        "max_batch": 4,
        "max_queue_delay_us": 50,
        "instances": 3,
        "parallel_instances": True,
        "dynamic_batching": False,
        "preferred_batch": 2,
        "max_queue_size": 9,
        "drain_s": 5,
        "max_request_bytes": 100,
        "open_admin": True,
    }
    assert set(flags) == set(defaults(ServeConfig))
    argv = ["serve", "--set", "serve.instances=7", "--set", "serve.host=10.0.0.1"]
    for name, value in flags.items():
        if name == "dynamic_batching":
            argv.append("--no-dynamic-batching")
        elif name == "open_admin":
            argv.append("--open-admin-api")
        elif value is True:
            argv.append("--" + name.replace("_", "-"))
        else:
            argv += ["--" + name.replace("_", "-"), str(value)]
    args, config = _parse(*argv)
    assert config.serve.instances == 7
    assert serve_options(args, config) == ServeOptions(**flags)  # type: ignore[arg-type]


def test_the_config_serve_section_is_what_serve_runs_without_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("serve:\n  http_port: 9000\n  instances: 1\n  preferred_batch: 0\n")
    args = build_parser().parse_args(["serve", "--config", str(path), "--set", "serve.drain_s=3"])
    config = load_config(path, args.overrides)
    options = serve_options(args, config)
    assert (options.http_port, options.instances, options.drain_s) == (9000, 1, 3)
    assert options.preferred_batch == 0 and options.grpc_port == ServeConfig.grpc_port


@pytest.mark.parametrize(
    "item, message",
    [
        ("serve.nope=1", "unknown config key 'serve.nope'"),
        ("serve.http_port=many", "serve.http_port='many': expected int"),
        ("serve=1", "serve is a section, not a value"),
    ],
)
def test_a_bad_serve_setting_is_one_line(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_the_shipped_config_serve_section_matches_the_dataclass() -> None:
    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text())["serve"]
    assert shipped == {k: v for k, v in dataclasses.asdict(ServeConfig()).items() if k in shipped}


def test_triton_repo_and_loadtest_defaults_are_their_dataclasses() -> None:
    args, _ = _parse("triton-repo", "--out", "x")
    assert repo_options(args) == RepoOptions()  # type: ignore[arg-type]
    args, _ = _parse("loadtest")
    assert {k: getattr(args, k) for k in defaults(LoadtestOptions)} == defaults(LoadtestOptions)
    assert LoadtestOptions().levels == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ConfigError, match="--concurrency '1,x'"):
        _ = LoadtestOptions(concurrency="1,x").levels


def test_the_two_repository_writers_have_names_that_say_which() -> None:
    from bertrt.serve import model_config, repo

    assert not hasattr(repo, "write_repository") and not hasattr(model_config, "write_repository")
    assert callable(repo.write_standalone_repository)
    assert callable(model_config.write_serving_repository)


def test_no_serve_module_imports_anothers_private_names() -> None:
    borrowed = []
    for path in sorted(SERVE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertrt"):
                names = [a.name for a in node.names if a.name.startswith("_")]
                borrowed += [f"{path.name}: {node.module}.{n}" for n in names]
    assert borrowed == []
