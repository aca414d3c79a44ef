"""Every `vne-inline` command in the documentation's shell blocks names a command and options that exist
(a renamed option or command shows here, not on a user's machine)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from vne_inline.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "docker" / "README.md", REPO / "trt_build" / "README.md",
               REPO / "benchmarks" / "README.md", *(REPO / "docs").glob("*.md")])
BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`(vne-inline [^`\n]+)`(?!`)")


def doc_commands() -> list[tuple[str, list[str]]]:
    """(file name, argv after `vne-inline`) for every vne-inline command in a shell block."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in BLOCK.findall(text) + INLINE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:  # prose in an inline span (an apostrophe): not a command
                    continue
                command: list[str] = []
                split = [t for token in tokens for t in ((token[:-1], ";") if len(token) > 1 and token.endswith(";")
                                                          else (token,))]
                for token in [*split, ";"]:
                    if token in ("&&", "||", ";", "|"):
                        starts = [i for i, t in enumerate(command) if t == "vne-inline" or t.endswith("/bin/vne-inline")]
                        if starts and command[starts[0] + 1:]:  # a bare `vne-inline` is a docker image name
                            i = starts[0] + 1
                            if command[starts[0] - 1] == "--entrypoint":  # docker run --entrypoint X IMAGE ARGS
                                i += 1
                            found.append((str(path.relative_to(REPO)), command[i:]))
                        command = []
                    else:
                        command.append(token)
    return found


COMMANDS = doc_commands()


def test_the_docs_hold_commands():
    assert len(COMMANDS) > 20 and {argv[0] for _, argv in COMMANDS if argv} >= {"demo", "serve", "send", "synth", "replay", "check"}


@pytest.mark.parametrize(("doc", "argv"), COMMANDS, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in COMMANDS])
def test_documented_command_and_options_exist(doc, argv):
    group = typer.main.get_command(app)
    if argv[0].startswith("--"):  # vne-inline --help / --version
        assert argv[0] in ("--help", "--version")
        return
    assert argv[0] in group.commands, f"{doc}: no command {argv[0]!r}"
    command = group.commands[argv[0]]
    options = {name for param in command.params for name in (*param.opts, *param.secondary_opts)} | {"--help"}
    for token in argv[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in options, f"{doc}: {argv[0]} has no option {token}"


def test_documented_exam_paths_follow_the_synth_layout():
    """`synth --out X` writes X/patient_NNN/<scan>.h5: a documented file under a synth folder must be there."""
    from vne_inline.synth.exam import FILES

    folders = {"exam"} | {argv[argv.index("--out") + 1] for _, argv in COMMANDS if argv[0] == "synth" and "--out" in argv}
    layout = re.compile(rf"^({'|'.join(map(re.escape, folders))})/patient_\d{{3}}/({'|'.join(map(re.escape, FILES))})$")
    for doc, argv in COMMANDS:
        for token in argv[1:]:
            if token.endswith(".h5") and token.split("/")[0] in folders:
                assert layout.match(token), f"{doc}: {' '.join(argv)}: {token} is not where synth writes"


def test_docs_do_not_install_from_a_registry():
    """vne-inline is installed from its source checkout or a wheel built from it, not by name."""
    for path in DOCS:
        text = "\n".join(BLOCK.findall(path.read_text(encoding="utf-8")))
        assert not re.search(r"pip install\s+(-\S+\s+)*[\"']?vne-inline(\[|[\"']|\s|$)", text), path.name
