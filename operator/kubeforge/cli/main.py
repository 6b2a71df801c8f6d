"""The `kubeforge` command line."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Kubeforge: from a labeled image dataset to a served model.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
