"""``glmdata install-template``: glmdata's GLM-4 template written into a tokenizer directory."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from glmdata.cli import common


def install_template(
    tokenizer_dir: Annotated[
        str,
        typer.Argument(
            help="Tokenizer directory to write the template into "
            "(chat_template.jinja; tokenizer_config.json's copy is updated if it has one)."
        ),
    ],
    plain: Annotated[
        bool,
        typer.Option(
            "--plain",
            help="Write the plain official template instead of the training variant with {% generation %} markers.",
        ),
    ] = False,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Write this template instead: a packaged name (glm-4-9b-chat-v2, glm-4-0414, glm-4.5, glm-4.6), "
            "a .jinja file, a tokenizer_config.json or a tokenizer directory.",
        ),
    ] = None,
) -> None:
    """Write glmdata's GLM-4 template into a tokenizer, so training and inference render the same bytes.

    The default training variant carries {% generation %} markers, so that
    apply_chat_template(return_assistant_tokens_mask=True) and TRL's assistant_only_loss work for GLM-4.
    """
    common.run(lambda: write_template(tokenizer_dir, plain, template))


def write_template(tokenizer_dir: str, plain: bool, template: str | None) -> int:
    """Install the template (the training variant unless ``plain``) and say where it went."""
    from glmdata.render import TemplateError
    from glmdata.render import install_template as install

    try:
        target = install(tokenizer_dir, training=not plain, template=template)
    except TemplateError as exc:
        raise common.UserError(str(exc)) from None
    common.err.print(escape(f"wrote {target}"))
    return 0
