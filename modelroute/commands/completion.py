"""`modelroute completion bash|zsh`: a completion script generated from the argument parser
(`modelroute.completion`). Load it with `source <(modelroute completion bash)`, or write it
to /etc/bash_completion.d/modelroute (zsh: a file on $fpath, or `source` it in ~/.zshrc)."""

from __future__ import annotations

import argparse

from modelroute.completion import SHELLS, script


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a shell completion script: source <(modelroute completion bash)")
    p.add_argument("shell", choices=sorted(SHELLS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modelroute.cli import build_parser  # every command, imported only to write the script

    print(script(build_parser(), "modelroute", args.shell), end="")
    return 0
