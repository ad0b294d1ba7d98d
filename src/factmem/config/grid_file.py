"""The grid file (configs/grids/*.yaml) as a pydantic model: its fields, their types and an
error naming the file and line, as for a config. What the axes and vars mean is factmem.grid's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from factmem.config.loader import yaml_with_lines
from factmem.config.schema import check_folder_name, format_errors
from factmem.errors import ConfigError


class GridFile(BaseModel):
    """A base config, labelled overrides along axes (every combination is a run), vars."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The grid's folder under output_dir; runs go inside it.")
    base: str = Field(description="The base config: a preset name, or a path (beside the grid "
                      "file first).")  # fmt: skip
    output_dir: str | None = Field(None, description="Where grid folders go (default: runs).")
    set: dict[str, Any] = Field(default_factory=dict,
                                description="{field path: value} for every run.")  # fmt: skip
    axes: dict[str, Any] = Field(default_factory=dict, description="axis -> list of values, "
                                 "or label -> {field path: value}")  # fmt: skip
    vars: dict[str, Any] = Field(default_factory=dict,
                                 description="`{name}` in a value is replaced by its var.")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named var sets, e.g. paper (--profile)."
    )

    @field_validator("set", "axes", "vars", "profiles", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, name: str) -> str:
        return check_folder_name(name)


def read_grid_file(path: Path) -> GridFile:
    """The grid file at `path`, validated; errors name the file, line and field."""
    data, lines = yaml_with_lines(path)
    try:
        return GridFile.model_validate(data)
    except ValidationError as err:
        fields = ", ".join(GridFile.model_fields)
        raise ConfigError(format_errors(err, str(path), lines, title="invalid grid file",
                                        unknown=f"unknown grid field; a grid has {fields}")
                          ) from None  # fmt: skip
