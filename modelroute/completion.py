"""Shell completion generated from an argparse parser, so it never drifts from the CLI.

`tree(parser)` reads what the parser accepts at each level — subcommands, options, the
choices of options and positionals, and which options take a file — into `Node`s. From
that, `bash_script` writes a self-contained bash completion function (zsh loads the same
through `bashcompinit`): completing a word costs a `case` in the shell, never a Python
start-up. `candidates` answers the same question in Python, for kubectl's plugin
completion (`kubectl_complete-<plugin>`, kubectl ≥ 1.26), which calls an executable with
the words typed so far and reads the candidates back in cobra's format.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FILE = "<file>"  # the value of an option naming a file or directory
_FILE_DESTS = frozenset({"paths", "directory", "dir", "kubeconfig", "filename"})
# cobra's ShellCompDirective: 0 = default (the shell may complete files), 4 = no files.
DIRECTIVE_DEFAULT = 0
DIRECTIVE_NO_FILES = 4


@dataclass(frozen=True)
class Node:
    """One command level: what may follow it."""

    words: tuple[str, ...]  # subcommands, options and positional choices, in help order
    values: Mapping[str, tuple[str, ...]]  # option → its choices ((FILE,) for a path, () free text)
    children: Mapping[str, Node] = field(default_factory=dict)
    files: bool = False  # a positional names a file or directory


def _takes_file(action: argparse.Action) -> bool:
    return action.type is Path or action.dest in _FILE_DESTS or str(action.metavar or "").upper() in ("PATH", "DIR")


def tree(parser: argparse.ArgumentParser) -> Node:
    words: list[str] = []
    values: dict[str, tuple[str, ...]] = {}
    children: dict[str, Node] = {}
    files = False
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to read them
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                words.append(name)
                children[name] = tree(sub)
        elif action.option_strings:
            words.extend(action.option_strings)
            if action.nargs != 0:
                choices = tuple(str(c) for c in action.choices) if action.choices else ()
                kind = choices or ((FILE,) if _takes_file(action) else ())
                values.update({option: kind for option in action.option_strings})
        elif action.choices:
            words.extend(str(c) for c in action.choices)
        elif _takes_file(action):
            files = True
    return Node(tuple(words), values, children, files)


def _walk(node: Node, typed: Sequence[str]) -> Node:
    """The level the typed words lead to (option values and other words skipped)."""
    for word in typed:
        if word in node.children:
            node = node.children[word]
    return node


def candidates(root: Node, words: Sequence[str]) -> tuple[list[str], int]:
    """What may come as the last of `words` (the word being typed, "" for a new one), and
    cobra's directive: files may be completed, or not."""
    *typed, current = list(words) or [""]
    node = _walk(root, typed)
    if typed and typed[-1] in node.values:
        choices = node.values[typed[-1]]
        if choices == (FILE,):
            return [], DIRECTIVE_DEFAULT
        return [c for c in choices if c.startswith(current)], DIRECTIVE_NO_FILES
    if node.files and not current.startswith("-"):
        return [], DIRECTIVE_DEFAULT
    return [w for w in node.words if w.startswith(current)], DIRECTIVE_NO_FILES


def _levels(node: Node, path: str = "") -> list[tuple[str, Node]]:
    out = [(path, node)]
    for name, child in node.children.items():
        out += _levels(child, f"{path}/{name}")
    return out


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash_script(root: Node, prog: str) -> str:
    """A bash completion function for `prog` (`source <(prog completion bash)`)."""
    func = "_" + "".join(c if c.isalnum() else "_" for c in prog)
    levels = _levels(root)
    transitions = [path for path, _ in levels if path]
    lines = [
        f"# bash completion for {prog}; generated from its argument parser by `{prog} completion bash`",
        f"{func}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" node="" w i',
        '    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    for ((i = 1; i < COMP_CWORD; i++)); do',
        '        w="${COMP_WORDS[i]}"',
        '        case "$node/$w" in',
    ]
    if transitions:
        lines.append(f"            {'|'.join(_quote(t) for t in transitions)}) node=\"$node/$w\" ;;")
    lines += ['        esac', '    done', '    case "$node $prev" in']
    for path, node in levels:
        by_choices: dict[tuple[str, ...], list[str]] = {}
        for option, choices in node.values.items():
            by_choices.setdefault(choices, []).append(option)
        for choices, options in by_choices.items():
            pattern = "|".join(_quote(f"{path} {o}") for o in options)
            if choices == (FILE,):
                action = 'COMPREPLY=($(compgen -f -- "$cur")); return ;;'
            elif choices:
                action = f'COMPREPLY=($(compgen -W {_quote(" ".join(choices))} -- "$cur")); return ;;'
            else:
                action = "COMPREPLY=(); return ;;"
            lines.append(f"        {pattern}) {action}")
    lines += ['    esac', '    local words="" files=""', '    case "$node" in']
    for path, node in levels:
        files = " files=1" if node.files else ""
        lines.append(f"        {_quote(path)}) words={_quote(' '.join(node.words))}{files} ;;")
    lines += ['    esac',
              '    if [ -n "$files" ] && [[ "$cur" != -* ]]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi',
              '    COMPREPLY=($(compgen -W "$words" -- "$cur"))', "}",
              f"complete -o default -F {func} {prog}", ""]
    return "\n".join(lines)


def zsh_script(root: Node, prog: str) -> str:
    """zsh runs the bash function through bashcompinit (`source <(prog completion zsh)`)."""
    return ("autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"
            + bash_script(root, prog))


SHELLS = {"bash": bash_script, "zsh": zsh_script}


def script(parser: argparse.ArgumentParser, prog: str, shell: str) -> str:
    return SHELLS[shell](tree(parser), prog)
