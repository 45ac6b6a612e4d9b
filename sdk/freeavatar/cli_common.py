"""What the `freeavatar` commands share, written once: the server connection options (`--server`,
`--api-key`, `--tls-ca` and their FREEAVATAR_* variables), the "JSON or a table" choice
(`--json`), the consoles and the one-line error exit.

A command takes `remote: Remote` and is decorated `@with_server` to get the three connection
options; it takes `printer: Printer` and is decorated `@with_json` to get `--json`:

    @avatars_app.command("list")
    @with_json
    @with_server
    def list_avatars(remote: Remote, printer: Printer) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, RenderableType

from freeavatar.client import DEFAULT_ADDRESS, AsyncClient, Client
from freeavatar.errors import FreeAvatarError, Unavailable

console = Console()
err_console = Console(stderr=True)  # messages that must not mix with JSON on stdout

CONNECTION_PANEL = "Server connection"
ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="FREEAVATAR_SERVER",
        help="Server address, HOST:PORT.",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="FREEAVATAR_API_KEY",
        help="API key, if the server wants one.",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
TlsCaOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        envvar="FREEAVATAR_TLS_CA",
        help="PEM file to verify a TLS server against.",
        rich_help_panel=CONNECTION_PANEL,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON, for scripts, instead of tables and text.")
]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with a one-line message on stderr and this exit code."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class Remote:
    """The server a command talks to, from `--server`, `--api-key` and `--tls-ca`."""

    server: str = DEFAULT_ADDRESS
    api_key: str | None = None
    tls_ca: Path | None = None

    @contextmanager
    def connect(self) -> Iterator[Client]:
        """A client whose failures end the command with a one-line message and exit code 1."""
        try:
            with Client(self.server, api_key=self.api_key, root_certificates=self.tls_ca) as client:
                yield client
        except Unavailable as error:
            fail(f"cannot reach a FreeAvatar server at {self.server} ({error.message})")
        except FreeAvatarError as error:
            fail(str(error))

    def async_client(self) -> AsyncClient:
        return AsyncClient(self.server, api_key=self.api_key, root_certificates=self.tls_ca)


@dataclass(frozen=True)
class Printer:
    """`--json`: print data as JSON, or else a human view of it."""

    as_json: bool = False

    def show(
        self,
        data: object,
        human: RenderableType | Callable[[], RenderableType],
        indent: int | None = 2,
    ) -> None:
        if self.as_json:
            print(json.dumps(data, indent=indent))
        else:
            console.print(human() if callable(human) else human)


F = TypeVar("F", bound=Callable[..., Any])


def _inject(
    command: F, target: str, options: dict[str, tuple[Any, Any]], build: Callable[..., object]
) -> F:
    """`command` with its `target` parameter replaced by `options` ({name: (annotation,
    default)}); the wrapper builds `target` from the options' values."""
    signature = inspect.signature(command, eval_str=True)
    if target not in signature.parameters:
        raise TypeError(f"{command.__name__} takes no {target!r} parameter")
    kept = [p for p in signature.parameters.values() if p.name != target]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in options.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in options}
        return command(*args, **kwargs, **{target: build(**values)})

    parameters = [*kept, *added]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]


def with_server(command: F) -> F:
    """Give a command `--server`, `--api-key` and `--tls-ca`, as its `remote: Remote`."""
    options = {
        "server": (ServerOption, DEFAULT_ADDRESS),
        "api_key": (ApiKeyOption, None),
        "tls_ca": (TlsCaOption, None),
    }
    return _inject(command, "remote", options, Remote)


def with_json(command: F) -> F:
    """Give a command `--json`, as its `printer: Printer`."""
    return _inject(command, "printer", {"as_json": (JsonOption, False)}, Printer)
