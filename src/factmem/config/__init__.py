"""Experiment settings: the schema (schema.py), config files and `--set` (loader.py), and the
generated reference (docs.py). Import from here: `from factmem.config import load_config`."""

from factmem.config.docs import describe_fields
from factmem.config.loader import (
    PRESET_DIRS,
    apply_overrides,
    config_to_yaml,
    find_config,
    load_config,
    parse_key,
    parse_override,
    read_config_data,
    split_override,
)
from factmem.config.schema import (
    FINGERPRINT_VERSION,
    EvaluationConfig,
    ExperimentConfig,
    LoraSettings,
    MixingConfig,
    RegularizerConfig,
    ReplayConfig,
    StageConfig,
    StopRule,
    TrainingConfig,
    check_folder_name,
    format_errors,
)

__all__ = [
    "FINGERPRINT_VERSION", "PRESET_DIRS", "EvaluationConfig", "ExperimentConfig", "LoraSettings",
    "MixingConfig", "RegularizerConfig", "ReplayConfig", "StageConfig", "StopRule",
    "TrainingConfig", "apply_overrides", "check_folder_name", "config_to_yaml",
    "describe_fields", "find_config", "format_errors", "load_config", "parse_key",
    "parse_override", "read_config_data", "split_override",
]  # fmt: skip
