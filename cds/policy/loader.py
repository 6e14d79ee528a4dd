"""Load, validate and compile every policy file at start-up. A bad file stops start-up, naming file and field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from cds.policy.engine import CompiledPolicy, compile_policy
from cds.policy.model import Policy

BUILT_IN = Path(__file__).resolve().parent.parent / "policies"
SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024


class PolicyError(ValueError):
    """A policy file the service cannot use; the message names the file and the field."""


def load_policies(extra_dirs: Iterable[str | Path] = (), url_template: str = "") -> tuple[CompiledPolicy, ...]:
    """The built-in policies and those in `extra_dirs`, compiled, in order of policy id."""
    policies: dict[str, tuple[Path, CompiledPolicy]] = {}
    for directory in (BUILT_IN, *map(Path, extra_dirs)):
        if not directory.is_dir():
            raise PolicyError(f"{directory}: policy directory does not exist")
        for path in sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file()):
            spec = read_policy(path)
            if spec.id in policies:
                raise PolicyError(f"{path}: id: policy {spec.id} is already defined in {policies[spec.id][0]}")
            policies[spec.id] = (path, compile_policy(spec, policy_url(spec, url_template)))
    return tuple(compiled for _, compiled in sorted(policies.values(), key=lambda item: item[1].id))


def read_policy(path: Path) -> Policy:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise PolicyError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: must hold a mapping of policy fields")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field(error['loc'])}: {error['msg']}" for error in exc.errors()[:5])
        raise PolicyError(f"{path}: {problems}") from None


def policy_url(spec: Policy, template: str) -> str:
    """The policy page: the file's own link, or the deployment's template ({id}, {effective} as YYYY-MM-DD)."""
    if not template:
        return str(spec.link)
    return template.format(id=spec.id, effective=spec.effective.isoformat())


def _field(location: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".") or "file"
