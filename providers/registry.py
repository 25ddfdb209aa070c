"""Choose which provider serves each backend: `--provider BACKEND=KIND`, then `volplan.yml`,
then the built-in local provider."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UsageError
from providers.base import Provider
from providers.local import LocalProvider

PROVIDER_KINDS = ("local", "aws")

ProviderFactory = Callable[[str, Mapping[str, Any]], Provider]


def default_factory(kind: str, options: Mapping[str, Any]) -> Provider:
    if kind == "local":
        return LocalProvider()
    if kind == "aws":
        # Imported here so that commands served by the local provider never load boto3.
        from providers.aws import AwsProvider, AwsSettings

        return AwsProvider(AwsSettings.from_options(options))
    raise UsageError("Unknown provider kind", f"{kind!r} is not a provider; use one of: {', '.join(PROVIDER_KINDS)}.")


@dataclass
class ProviderSet:
    """The provider for each backend, made on first use and shared by every resource of a kind."""

    kinds: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    factory: ProviderFactory = default_factory
    _instances: dict[str, Provider] = field(default_factory=dict)

    def kind_for(self, backend: str) -> str:
        return self.kinds.get(backend, "local")

    def configured(self, backend: str) -> bool:
        return backend in self.kinds

    def for_backend(self, backend: str) -> Provider:
        return self.by_kind(self.kind_for(backend), backend)

    def by_kind(self, kind: str, backend: str | None = None) -> Provider:
        if kind not in self._instances:
            options = self.options.get(backend or "", {}) if backend else {}
            self._instances[kind] = self.factory(kind, options)
        return self._instances[kind]


def parse_provider_flag(value: str) -> tuple[str, str]:
    backend, sep, kind = value.partition("=")
    if not sep or not backend or kind not in PROVIDER_KINDS:
        raise UsageError(
            "Invalid value for --provider",
            f"{value!r} is not BACKEND=KIND. Write, for example, --provider aws=aws or --provider aws=local "
            f"(kinds: {', '.join(PROVIDER_KINDS)}).",
        )
    return backend, kind
