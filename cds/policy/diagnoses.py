"""Diagnosis groups compiled for matching: which of a patient's diagnoses falls in which ICD-10-CM group."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cds.policy.facts import ICD10CM, Diagnosis
from cds.policy.model import DiagnosisGroup

MAX_DISPLAY = 160  # a diagnosis' display is the EHR's free text: bound what a card repeats of it


@dataclass(frozen=True)
class DiagnosisMatch:
    group: str
    diagnosis: Diagnosis

    def describe(self) -> str:
        """The diagnosis as a clinician reads it: code, display and where it was recorded."""
        d = self.diagnosis
        where = "the order's reason" if ".reason" in d.source else "an active condition"
        display = " ".join((d.display or "").split())[:MAX_DISPLAY]
        return " ".join(part for part in (d.code, display) if part) + f" ({where})"


@dataclass(frozen=True)
class DiagnosisGroups:
    """Groups in order, each as a tuple of stems: a diagnosis matches the first group with a stem it starts with."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def compile(cls, groups: Iterable[DiagnosisGroup]) -> DiagnosisGroups:
        return cls(tuple((group.name, tuple(group.icd10cm)) for group in groups))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.groups)

    def first(self, diagnoses: Iterable[Diagnosis]) -> DiagnosisMatch | None:
        """The first ICD-10-CM diagnosis (the order's reasons come first) that falls in a group."""
        for diagnosis in diagnoses:
            if diagnosis.system != ICD10CM:
                continue
            for name, stems in self.groups:
                if diagnosis.code.startswith(stems):
                    return DiagnosisMatch(name, diagnosis)
        return None
