"""Peer 3: decode-only ceilings on the same bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson


class Record(msgspec.Struct, gc=False):
    """A typed record as msgspec decodes it: aware datetimes and Decimals, no attrs."""

    LabInstanceId: int
    LabProfileId: int
    Start: datetime
    CompletionStatus: int
    TotalRunTimeSeconds: int
    TaskCompletePercent: int
    IsExam: bool
    End: datetime | None = None
    LastActivity: datetime | None = None
    UserId: str | None = None
    ClassId: str | None = None
    ExamPassed: bool | None = None
    ExamScore: Decimal | None = None
    ExamMaxPossibleScore: int | None = None
    ExamPassingScore: int | None = None
    IpAddress: str | None = None
    Country: str | None = None
    Region: str | None = None
    City: str | None = None
    Latitude: Decimal | None = None
    Longitude: Decimal | None = None
    LabHostId: int | None = None
    DatacenterId: int | None = None
    DeliveryRegionId: int | None = None


class Envelope(msgspec.Struct, gc=False):
    Results: list[Record]
    Status: int
    Error: str | None = None


_TYPED = msgspec.json.Decoder(Envelope, strict=False)


def orjson_dicts(body: bytes) -> list[dict[str, Any]]:
    """The physical limit of parsing into dicts."""
    return orjson.loads(body)["Results"]  # type: ignore[no-any-return]


def msgspec_typed(body: bytes) -> list[Record]:
    """Straight into typed structs (datetimes from epoch via strict=False)."""
    return _TYPED.decode(body).Results
