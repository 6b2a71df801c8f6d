"""The CRDs of the APIs a serving rollout uses, vendored from their projects' releases (see each file's
header): Gateway API's HTTPRoute and GRPCRoute (v1.6.1, standard channel) and KEDA's ScaledObject
(v2.20.1).

Tests install them in the emulator (`install`) to play a cluster that has Gateway API or KEDA; the
emulator then serves the kinds (discovery included) and admits their objects by the CRDs' own
openAPIV3Schema and CEL rules, as an API server would. `validate` checks one object against them
without an emulator (the builders' tests).

Taken from the projects' repositories at a release tag (`config/crd/standard/...httproutes.yaml`,
`...grpcroutes.yaml`, `config/crd/bases/keda.sh_scaledobjects.yaml`); only the versions we create are
kept and the `description` fields are dropped (size), then dumped with PyYAML (`sort_keys=False,
width=120`): to refresh, take the files of a newer tag the same way.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

GATEWAY_API = "gateway-api-v1.6.1-httproutes.yaml"
GATEWAY_API_GRPC = "gateway-api-v1.6.1-grpcroutes.yaml"
KEDA = "keda-v2.20.1-scaledobjects.yaml"


@functools.cache
def _load(name: str) -> str:
    return resources.files("kubeforge.testing").joinpath("crds", name).read_text()


def crd(name: str) -> dict[str, Any]:
    """A vendored CRD (a fresh copy)."""
    return yaml.safe_load(_load(name))


def install(emulator: Any, *names: str) -> None:
    """Create the CRDs in the emulator (it serves their kinds from then on)."""
    for name in names:
        emulator.create(crd(name))


@functools.cache
def _schema(name: str) -> Any:
    from kubeforge.testing.crd_schema import CrdSchema

    body = crd(name)
    version = body["spec"]["versions"][0]
    return CrdSchema(body["spec"]["names"]["kind"], body["spec"]["group"], version["name"],
                     version["schema"]["openAPIV3Schema"])


def validate(name: str, obj: dict[str, Any]) -> list[str]:
    """The API server's errors for creating `obj` of the vendored CRD `name` (unknown fields included)."""
    schema = _schema(name)
    unknown: list[str] = []
    admitted = schema.admit(obj, None, None, unknown)
    return [f"unknown field {u}" for u in unknown] + [str(e) for e in schema.errors(admitted, None, None)]
