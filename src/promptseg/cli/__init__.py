"""The `promptseg` command: one small module per command, over the library's functions."""

from __future__ import annotations

import typer

from . import annotate, convert, download, embed, evaluate, everything, export, segment, serve, synth, text, train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Segment Anything on your machine: prompts to masks, official checkpoints, tools.",
)
app.command("segment")(segment.segment)
app.command("everything")(everything.everything)
app.command("serve")(serve.serve)
app.command("install-web-runtime")(serve.install_web_runtime)
app.command("export")(export.export)
app.command("download")(download.download)
app.command("synth")(synth.synth)
app.command("train")(train.train)
app.command("engine")(annotate.engine)
app.command("embed")(embed.embed)
app.command("label")(text.label)
app.command("convert")(convert.convert)
app.command("eval")(evaluate.evaluate)


def main() -> None:
    app()
