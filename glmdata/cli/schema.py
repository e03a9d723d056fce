"""``glmdata schema``: the JSON Schema of every supported format, written or checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from glmdata.cli import common


def schema(
    output_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for the .schema.json files.")] = Path(
        "schemas"
    ),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the files are stale.")] = False,
) -> None:
    """Write the JSON Schema of every supported format (from the Pydantic models)."""
    common.run(lambda: write_schemas(output_dir, check))


def write_schemas(directory: Path, check: bool) -> int:
    """Write the schema files into ``directory``, or with ``check`` say which are stale (exit 1)."""
    from glmdata.schema import schema_texts, stale_files

    if check:
        stale = stale_files(directory)
        for name in stale:
            common.err.print(f"[red]stale:[/] {escape(str(directory / name))} (run `glmdata schema`)")
        return 1 if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in schema_texts().items():
        with common.output(directory / name) as out:
            out.write(text.encode())
        common.err.print(escape(f"wrote {directory / name}"))
    return 0
