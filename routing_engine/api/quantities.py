"""Kubernetes resource quantities (the `Quantity` field type) and the API server's rules
for a container's resources.

A ModelInfer's (and a Model runtime's) `resources` become the model container's
`resources` in a Deployment, so whatever the API server would refuse there is refused
when the manifest is validated, naming the field, instead of surfacing later as a
Deployment the controller cannot create. The rules are those of Kubernetes'
`ValidateResourceRequirements` (pkg/apis/core/validation), as documented for GPUs
("Schedule GPUs": limits only, or requests equal to limits, whole numbers):

- a quantity is `<number><suffix>`: suffix a binary (Ki ... Ei) or decimal (n, u, m, k,
  M ... E) multiplier or an integer exponent (`e3`); values are not negative;
- a name is `cpu`, `memory`, `ephemeral-storage` or `hugepages-<size>`, or a qualified
  `<domain>/<name>`; a name outside `kubernetes.io` is an extended resource
  (`nvidia.com/gpu`): whole numbers only, never overcommitted: a request equals its
  limit (a limit alone is also the request; a request alone, which a Pod may not have,
  is accepted here and becomes the limit too in the Deployment, as before these rules);
- hugepages are not overcommitted either: a request needs an equal limit; they need cpu
  or memory beside them;
- a request is at most its limit.
Values compare as the API server compares them: exactly, after rounding up to 1n.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from routing_engine.api.types import DNS1123_SUBDOMAIN, show

# Kubernetes resource.Quantity, as controller-gen writes it into CRDs (a little wider than
# the parser below: it lets a fractional exponent through).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# An exponent beyond this is no resource amount anyone means (and 10**exponent must stay
# cheap to compute): refused, though the API server would take it.
MAX_EXPONENT = 100
MAX_QUANTITY_CHARS = 100
_NANO = 10**9

_STANDARD = frozenset({"cpu", "memory", "ephemeral-storage"})
_HUGEPAGES = "hugepages-"
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)

FieldPath = tuple[str | int, ...]


def parse_quantity(value: str | int) -> Fraction | str:
    """The amount a quantity stands for (rounded up to 1n, as the API server stores it),
    or why the API server would refuse it."""
    if isinstance(value, int):
        return Fraction(value)
    if len(value) > MAX_QUANTITY_CHARS:
        return f"is longer than {MAX_QUANTITY_CHARS} characters"
    found = _QUANTITY.match(value)
    if found is None:
        return 'is not a quantity like 1, "500m" or "2Gi"'
    sign, number, suffix = found.groups()
    whole, _, fraction = number.partition(".")
    amount = Fraction(int(whole or "0") * 10 ** len(fraction) + int(fraction or "0"), 10 ** len(fraction))
    if suffix in _BINARY:
        amount *= 2 ** _BINARY[suffix]
    elif suffix:
        exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
        if abs(exponent) > MAX_EXPONENT:
            return f"has an exponent beyond ±{MAX_EXPONENT}"
        amount *= Fraction(10) ** exponent
    amount = Fraction(math.ceil(amount * _NANO), _NANO)  # 0.1n is stored as 1n
    return -amount if sign == "-" else amount


def _check_quantity(value: Any) -> Any:
    """Kubernetes quantities are integers or strings like "2Gi", "500m"; a YAML float such
    as 0.5 is not accepted by the API server's CRD validation either, so say how to quote it."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        hint = f' (quote it: "{show(value)}")' if isinstance(value, float) and math.isfinite(value) else ""
        raise ValueError(f"{show(value)} is not a quantity like 1, \"500m\" or \"2Gi\"{hint}")
    if isinstance(value, str):
        parsed = parse_quantity(value)
        if isinstance(parsed, str):
            raise ValueError(f"{show(value)} {parsed}")
    return value


Quantity = Annotated[
    str | int,
    BeforeValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


def resource_name_problem(name: str) -> str | None:
    """Why a container may not ask for resource `name` (validateContainerResourceName)."""
    prefix, slash, rest = name.rpartition("/")
    if not _qualified(prefix, rest):
        return f"{name} is not a resource name (cpu, memory, ephemeral-storage, hugepages-<size>, or domain/name)"
    if not slash:
        if name not in _STANDARD and not name.startswith(_HUGEPAGES):
            return (f"{name} is not a container resource (cpu, memory, ephemeral-storage, hugepages-<size>, or an "
                    "extended resource such as nvidia.com/gpu)")
    elif is_extended(name) is None:
        return f"{name} is not an extended resource name (domain/name, the domain not starting with requests.)"
    return None


def is_extended(name: str) -> bool | None:
    """Whether `name` (a qualified name) is an extended resource; None for a prefixed name
    that is neither native (`kubernetes.io/`) nor a valid extended one."""
    if "/" not in name or "kubernetes.io/" in name:
        return False
    prefix, _, rest = ("requests." + name).rpartition("/")
    if name.startswith("requests.") or not _qualified(prefix, rest):
        return None
    return True


def _qualified(prefix: str, name: str) -> bool:
    """Kubernetes' IsQualifiedName, split at the last "/" (prefix "" when there is none)."""
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return False
    return not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix)))


def requirements_problem(requests: Mapping[str, str | int], limits: Mapping[str, str | int]) -> tuple[FieldPath, str] | None:
    """(field path below `resources`, rule) of the first rule the API server would refuse
    these requests and limits by, or None."""
    amounts: dict[tuple[str, str], Fraction] = {}
    for side, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            where: FieldPath = (side, name)
            problem = resource_name_problem(name)
            if problem is not None:
                return where, problem
            amount = parse_quantity(value)
            if isinstance(amount, str):
                return where, f"{show(value)} {amount}"
            if amount < 0:
                return where, f"{show(value)} must not be negative"
            if is_extended(name) and amount.denominator != 1:
                return where, f"{show(value)} must be a whole number ({name} is an extended resource)"
            amounts[side, name] = amount
    for name, value in requests.items():
        request, limit = amounts["requests", name], amounts.get(("limits", name))
        overcommits = not is_extended(name) and not name.startswith(_HUGEPAGES)
        if limit is None and name.startswith(_HUGEPAGES):
            return ("requests", name), (f"{name} needs a limit equal to its request: Kubernetes does not "
                                        "overcommit it (write it under limits; the request defaults to the limit)")
        if limit is not None and not overcommits and request != limit:
            return ("requests", name), (f"{show(value)} must equal the limit ({show(limits[name])}): "
                                        f"Kubernetes does not overcommit {name}")
        if limit is not None and request > limit:
            return ("requests", name), f"{show(value)} must not exceed the limit ({show(limits[name])})"
    names = set(requests) | set(limits)
    if any(n.startswith(_HUGEPAGES) for n in names) and not names & {"cpu", "memory"}:
        return (), "hugepages need cpu or memory beside them"
    return None
