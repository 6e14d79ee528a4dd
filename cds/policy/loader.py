"""Load, validate and compile every policy file, and the state mandates they reference, at start-up. A bad file
stops start-up, naming file and field."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from cds.policy.diagnoses import DiagnosisGroups
from cds.policy.engine import CompiledPolicy, compile_policy
from cds.policy.mandate import DEFAULT_CHILD_AGE_LIMIT, CompiledMandate
from cds.policy.model import DiagnosisGroup, Mandate, Policy
from cds.validation import error_path

BUILT_IN = Path(__file__).resolve().parent.parent / "policies"
MANDATES = "mandates"  # the subdirectory of a policy directory that holds mandate files
SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024
_OVERRIDES = TypeAdapter(dict[str, Annotated[list[DiagnosisGroup], Field(min_length=1)]])
Model = TypeVar("Model", bound=BaseModel)


class PolicyError(ValueError):
    """A policy or mandate file the service cannot use; the message names the file and the field."""


class DiagnosesFileError(PolicyError):
    """The file of qualifying diagnoses replacing the mandates' own cannot be used."""


def load_policies(extra_dirs: Iterable[str | Path] = (), url_template: str = "", *,
                  child_age_limit: int = DEFAULT_CHILD_AGE_LIMIT, diagnoses_file: str | Path = "",
                  ) -> tuple[CompiledPolicy, ...]:
    """The built-in policies and those in `extra_dirs`, compiled with the mandates they reference, in order of
    policy id. `child_age_limit` and `diagnoses_file` (qualifying diagnosis groups by mandate id, replacing those
    of the mandate files) configure the mandates."""
    directories = (BUILT_IN, *map(Path, extra_dirs))
    for directory in directories:
        if not directory.is_dir():
            raise PolicyError(f"{directory}: policy directory does not exist")
    mandates = load_mandates(directories, child_age_limit, diagnoses_file)
    policies: dict[str, tuple[Path, CompiledPolicy]] = {}
    for directory in directories:
        for path in _files(directory):
            spec = _read(path, Policy)
            if spec.id in policies:
                raise PolicyError(f"{path}: id: policy {spec.id} is already defined in {policies[spec.id][0]}")
            missing = [name for name in spec.mandates if name not in mandates]
            if missing:
                raise PolicyError(f"{path}: mandates: no mandate file defines {', '.join(missing)} (looked in the "
                                  f"{MANDATES}/ folder of each policy directory)")
            compiled = compile_policy(spec, policy_url(spec, url_template), [mandates[m] for m in spec.mandates],
                                      path.name)
            policies[spec.id] = (path, compiled)
    return tuple(compiled for _, compiled in sorted(policies.values(), key=lambda item: item[1].id))


def load_mandates(directories: Iterable[Path], child_age_limit: int = DEFAULT_CHILD_AGE_LIMIT,
                  diagnoses_file: str | Path = "") -> dict[str, CompiledMandate]:
    """The mandates in the `mandates/` folder of each policy directory, compiled, by id."""
    specs: dict[str, tuple[Path, Mandate]] = {}
    for directory in directories:
        for path in _files(directory / MANDATES):
            spec = _read(path, Mandate)
            if spec.id in specs:
                raise PolicyError(f"{path}: id: mandate {spec.id} is already defined in {specs[spec.id][0]}")
            specs[spec.id] = (path, spec)
    overrides = read_diagnoses_overrides(diagnoses_file) if diagnoses_file else {}
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise DiagnosesFileError(f"{diagnoses_file}: no mandate file defines {', '.join(unknown)}")
    unnamed = sorted(name for name in overrides if not specs[name][1].diagnoses_label)
    if unnamed:
        raise DiagnosesFileError(f"{diagnoses_file}: the mandate files of {', '.join(unnamed)} have no diagnoses_label "
                          "to say in words what the qualifying diagnoses are")
    return {
        name: CompiledMandate(
            spec=spec,
            diagnoses=DiagnosisGroups.compile(overrides.get(name, spec.qualifying_diagnoses))
            if spec.qualifying_diagnoses or name in overrides else None,
            child_age_limit=child_age_limit if spec.children else None,
            source_file=f"{MANDATES}/{path.name}",
        )
        for name, (path, spec) in specs.items()
    }


def read_diagnoses_overrides(path: str | Path) -> Mapping[str, list[DiagnosisGroup]]:
    """A file of qualifying diagnosis groups by mandate id (CDS_MANDATE_DIAGNOSES_FILE)."""
    try:
        return _validated(Path(path), _load_yaml(Path(path)), _OVERRIDES.validate_python)
    except PolicyError as exc:
        raise DiagnosesFileError(str(exc)) from None


def policy_url(spec: Policy, template: str) -> str:
    """The policy page: the file's own link, or the deployment's template ({id}, {effective} as YYYY-MM-DD)."""
    if not template:
        return str(spec.link)
    return template.format(id=spec.id, effective=spec.effective.isoformat())


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def _read(path: Path, model: type[Model]) -> Model:
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: must hold a mapping of {model.__name__.lower()} fields")
    return _validated(path, data, model.model_validate)


def _load_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PolicyError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None


def _validated(path: Path, data: Any, validate: Callable[[Any], Any]) -> Any:
    try:
        return validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{error_path(error['loc']) or 'file'}: {error['msg']}" for error in exc.errors()[:5])
        raise PolicyError(f"{path}: {problems}") from None

