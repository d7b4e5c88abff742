"""The building blocks of the schema's sections: a strict section, and the number types YAML must not blur."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

# whole numbers are strict: YAML's `true` must not pass as 1
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


