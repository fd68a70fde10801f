"""
What a lab result *is*: plain attrs classes, no I/O.

``LabResult`` is the one declaration of a lab result's fields. Each attribute's type
gives its kind and nullability (``X | None``; the others are required on the wire), and
``column(...)`` the few facts a type cannot say. Every layer (wire decoders, SQLite,
CSV, Arrow/Parquet, dlt) derives its tables from ``FIELDS``: adding a field the API
starts sending is one line here.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Final

import attrs

from lodresults._records.schema import FieldSpec, column, fields_of

__all__ = ["FIELDS", "CompletionStatus", "LabResult"]


class CompletionStatus(enum.IntEnum):
    """
    How a lab instance ended, as documented by the API.

    Codes that no document lists yet do not fail: they become members named
    ``UNKNOWN_<code>`` that compare equal to their integer (``int(x) == 70``).
    """

    CANCELLED = 1
    NO_SHOW = 2
    INCOMPLETE = 3
    COMPLETE = 4
    STORAGE_PROVISIONING_FAILED = 10
    LAB_CREATION_FAILED = 20
    RESUME_FAILED = 30
    SAVE_FAILED = 40
    SUBMITTED_FOR_GRADING = 50
    GRADING_IN_PROGRESS = 60

    @classmethod
    def _missing_(cls, value: object) -> CompletionStatus | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        # Cache it so that the same unknown code is always the same object.
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]

    @property
    def is_known(self) -> bool:
        """Whether the code is one the API documents."""
        return not self.name.startswith("UNKNOWN_")


@attrs.frozen(slots=True)
class LabResult:
    """
    One lab instance result, typed.

    Times are timezone-aware UTC datetimes; ``exam_score``, ``latitude`` and ``longitude``
    are exact ``Decimal`` values; fields the API documents as nullable are ``X | None``.

    .. versionadded:: 0.1.0
    """

    lab_instance_id: int = attrs.field(metadata=column(key=True, ge=1))
    lab_profile_id: int = attrs.field(metadata=column(ge=1))
    start: datetime
    end: datetime | None
    last_activity: datetime | None
    user_id: str | None
    class_id: str | None
    completion_status: CompletionStatus
    total_run_time_seconds: int
    task_complete_percent: int
    is_exam: bool
    exam_passed: bool | None
    exam_score: Decimal | None
    exam_max_possible_score: int | None
    exam_passing_score: int | None
    ip_address: str | None
    country: str | None
    region: str | None
    city: str | None
    latitude: Decimal | None
    longitude: Decimal | None
    lab_host_id: int | None
    datacenter_id: int | None
    delivery_region_id: int | None

    @property
    def is_running(self) -> bool:
        """True while the lab has no end time."""
        return self.end is None


#: The fields of LabResult, derived once (see ``_schema.FieldSpec``).
FIELDS: Final[tuple[FieldSpec, ...]] = fields_of(LabResult)
