"""The `vidgraph` command.

vidgraph serve GRAPH [-f CONFIG] [--etcd HOST:PORT] [--namespace NS] [--Section.key=value ...]
vidgraph make-tiny-model DIR [--family FAMILY]  (llava-next-video, llava-next, llava-next-vicuna,
                                            qwen3-vl, wan, wan-i2v)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from runtime.config import ConfigError, load_config, parse_overrides
from runtime.etcd_server import EtcdServer
from runtime.graph import GraphError, load_graph
from runtime.secret import SECRET_FILE_ENV, GraphSecret
from runtime.supervisor import Supervisor, say


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidgraph", description="Serve a vidgraph graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run every component of a graph",
        epilog="Any --Section.key=value overrides that key of the config "
        "(--Section.workers=N sets its ServiceArgs.workers).",
    )
    serve.add_argument("graph", help="graph module importable from here, e.g. graphs.agg")
    serve.add_argument("-f", "--config", type=Path, help="YAML config (defaults if omitted)")
    serve.add_argument("--etcd", metavar="HOST:PORT", help="use this etcd instead of starting one")
    serve.add_argument("--namespace", default="default", help="etcd namespace of this graph")
    serve.add_argument(
        "--secret-file",
        type=Path,
        help=f"the graph's shared secret: only processes given it get in (sets {SECRET_FILE_ENV})",
    )
    tiny = commands.add_parser("make-tiny-model", help="write the tiny test checkpoint to DIR")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument(
        "--family",
        default="llava-next-video",
        help="llava-next-video (default), llava-next, llava-next-vicuna, qwen3-vl, wan, wan-i2v",
    )
    return parser


def serve(args: argparse.Namespace, overrides: list[str]) -> int:
    # The console script's sys.path starts at its bin/ directory; graphs are
    # named relative to where the user runs `vidgraph`, as with `python -m`.
    sys.path.insert(0, os.getcwd())
    graph = load_graph(args.graph)
    components = {component.name: component.Config for component in graph.components}
    settings = load_config(args.config, components, parse_overrides(overrides))
    worker_args = [*(["-f", str(args.config)] if args.config else []), *overrides]
    if args.secret_file is not None:  # the workers inherit it through the environment
        os.environ[SECRET_FILE_ENV] = str(args.secret_file.resolve())
    try:
        secret = GraphSecret.from_env()
    except ValueError as error:
        sys.exit(f"vidgraph: {error}")
    etcd = None
    if args.etcd is None:
        etcd = EtcdServer(secret=secret)
        etcd.start()
        say(f"started etcd on {etcd.address}")
    try:
        supervisor = Supervisor(
            args.graph, graph, settings, worker_args, args.etcd or etcd.address, args.namespace
        )
        return asyncio.run(supervisor.run())
    finally:
        if etcd is not None:
            etcd.stop()


def make_tiny_model(directory: Path, family: str) -> None:
    # The one import of `engine` in runtime, and lazy on purpose: it pulls in
    # torch and transformers (~15 s), which `vidgraph serve` must not pay for
    # in the supervisor; only this subcommand needs them.
    from engine.tiny_model import TINY_FAMILIES

    if family not in TINY_FAMILIES:
        sys.exit(f"vidgraph: no tiny model of family {family!r}; known: {', '.join(TINY_FAMILIES)}")
    TINY_FAMILIES[family].build(directory)
    say(f"wrote the tiny {family} model to {directory}")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s vidgraph %(levelname)s: %(message)s"
    )
    if args.command == "make-tiny-model":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        make_tiny_model(args.dir, args.family)
        return
    try:
        sys.exit(serve(args, extra))
    except (ConfigError, GraphError, ConnectionError) as error:
        sys.exit(f"vidgraph: {error}")
